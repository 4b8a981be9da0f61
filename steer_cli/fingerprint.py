"""A base model's identity, so a run's trained parts only ever load onto the model they were
trained on.

``base.json`` in a run directory (and ``base`` in ``adapter.json``) records the base model's name,
architecture, hidden size, layer count, vocabulary size and a fingerprint of its weights: a
SHA-256 of a few tensors (the input embeddings, the first and the last decoder layer's first
weight), read in bfloat16 so a checkpoint loaded in fp32 or bf16 gives the same hash. Loading a run
(``load_run``: ``steer eval``, ``steer generate``, ``steer oracle --runs``) onto a base that differs
is an error naming what differs; ``force`` loads it anyway.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from steer_cli.errors import SteerError

BASE = "base.json"
_SHAPE_KEYS = ("architecture", "hidden_size", "num_layers", "vocab_size")


def _tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    from steer_cli.engine.sites import find_decoder_layers

    base = getattr(model, "get_base_model", lambda: model)()
    picked = [("embed_tokens", base.get_input_embeddings().weight)]
    layers = find_decoder_layers(base)
    for label, layer in (("first_layer", layers[0]), ("last_layer", layers[-1])):
        name, weight = next(
            (n, p) for n, p in layer.named_parameters() if p.dim() == 2 and "lora_" not in n
        )
        picked.append((f"{label}.{name}", weight))
    return picked


@torch.no_grad()
def identity(model: nn.Module, name: str) -> dict:
    """What a run records about its base model."""
    from steer_cli.engine.sites import find_decoder_layers, text_config

    config = text_config(model)
    base = getattr(model, "get_base_model", lambda: model)()
    digest = hashlib.sha256()
    for label, tensor in _tensors(model):
        digest.update(label.encode())
        digest.update(tensor.detach().to("cpu", torch.bfloat16).contiguous().view(torch.int16)
                      .numpy().tobytes())  # fmt: skip
    architectures = getattr(base.config, "architectures", None) or [type(base).__name__]
    return {
        "name": name,
        "architecture": architectures[0],
        "hidden_size": int(config.hidden_size),
        "num_layers": len(find_decoder_layers(base)),
        "vocab_size": int(base.get_input_embeddings().weight.shape[0]),
        "fingerprint": digest.hexdigest()[:32],
    }


def recorded(run_dir: Path) -> dict | None:
    """The base a run recorded (None: a run written before steer recorded it)."""
    path = Path(run_dir) / BASE
    return json.loads(path.read_text()) if path.is_file() else None


def check(run_dir: Path, model: nn.Module, *, force: bool = False, what: str | None = None) -> None:
    """Refuse to put ``run_dir``'s trained parts on ``model`` unless it is the base they were
    trained on (``force``: a same-shape model with other weights is allowed)."""
    saved = recorded(run_dir)
    if saved is None:
        return
    actual = identity(model, saved.get("name", ""))
    which = what or "this base model"
    differ = [k for k in _SHAPE_KEYS if saved.get(k) != actual[k]]
    if differ:
        detail = ", ".join(f"{k} {saved.get(k)} (run) vs {actual[k]}" for k in differ)
        raise SteerError(
            f"{run_dir} was trained on {saved.get('name')}; {which} differs: {detail}",
            "load the run onto the model it was trained on (its config.yaml names it)",
        )
    if saved.get("fingerprint") != actual["fingerprint"] and not force:
        raise SteerError(
            f"{run_dir} was trained on {saved.get('name')} with other weights than {which} "
            f"(fingerprint {saved.get('fingerprint')} vs {actual['fingerprint']}): same shapes, "
            "different model",
            "use the base the run was trained on, or pass --force to load it anyway",
        )
