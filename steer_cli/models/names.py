"""Names every model loader shares: the embedded model, the tiny families, the cache."""

from __future__ import annotations

import os
import pathlib

EMBEDDED = "smollm2-135m"
TINY_FAMILIES: tuple[str, ...] = (
    "tiny-llama",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-gemma3",
    "tiny-mistral",
)

HUB_HINT = (
    "Use a local model directory, `smollm2-135m` (embedded, works offline), a tiny test model "
    f"({', '.join(TINY_FAMILIES)}), or set HF_HUB_OFFLINE=1 with a populated Hugging Face cache."
)


def cache_dir() -> pathlib.Path:
    """Where steer keeps converted models: ``$STEER_CACHE`` or ``~/.cache/steer``."""
    env = os.environ.get("STEER_CACHE")
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path.home() / ".cache" / "steer"
