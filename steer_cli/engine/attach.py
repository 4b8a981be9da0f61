"""Attach adapters to a model with forward hooks, detach them, save and reload them.

The adapters live in an ``Interventions`` module of their own, never inside the base model: the
model's ``state_dict``/``save_pretrained`` stay untouched, peft wrapping keeps working, and
detaching restores the exact original computation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from steer_cli.atomic import atomic_write, write_json
from steer_cli.engine.adapters import AdapterShape, build_adapter
from steer_cli.engine.names import SITES
from steer_cli.engine.sites import find_decoder_layers, hidden_size, resolve_layers

IMPLEMENTED_SITES = ("block_output",)
IMPLEMENTED_POSITIONS = ("all",)
ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"
FORMAT = "steer-adapter"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class InterventionSpec:
    """Where (site, layers), how (shape) and on which tokens (positions) to steer."""

    site: str = "block_output"
    shape: AdapterShape = field(default_factory=AdapterShape)
    layers: str | tuple[int, ...] = "all"
    positions: str = "all"

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise ValueError(f"unknown site {self.site!r}; choose from {', '.join(SITES)}")
        if self.site not in IMPLEMENTED_SITES:
            raise ValueError(f"site {self.site!r} is not implemented yet")
        if self.positions not in IMPLEMENTED_POSITIONS:
            raise ValueError(f"positions {self.positions!r} are not implemented yet")


class Interventions(nn.Module):
    """One adapter per selected layer, applied as ``h <- h + delta(h)`` at the spec's site."""

    def __init__(self, spec: InterventionSpec, d: int, layer_ids: list[int]):
        super().__init__()
        self.spec = spec
        self.hidden_size = d
        self.layer_ids = list(layer_ids)
        self.adapters = nn.ModuleDict({str(i): build_adapter(spec.shape, d) for i in layer_ids})
        self.enabled = True
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    # -- attaching -----------------------------------------------------------------------------
    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self, model: nn.Module) -> Interventions:
        if self.attached:
            raise RuntimeError("these interventions are already attached; detach() first")
        layers = find_decoder_layers(model)
        if max(self.layer_ids) >= len(layers):
            raise ValueError(
                f"adapter has layers up to {max(self.layer_ids)}, model has {len(layers)}"
            )
        for i in self.layer_ids:
            layer = layers[i]
            adapter = self.adapters[str(i)]
            device = next(layer.parameters()).device
            adapter.to(device)
            self._handles.append(layer.register_forward_hook(self._hook(adapter)))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """Run the base model alone (hooks stay registered but do nothing)."""
        previous, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = previous

    def _hook(self, adapter: nn.Module):
        def hook(module: nn.Module, args: tuple, output):
            if not self.enabled:
                return None
            h = output[0] if isinstance(output, tuple) else output
            # Adapters compute in fp32 (a no-op cast for fp32 models).
            new = h + adapter(h.to(torch.float32)).to(h.dtype)
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return hook

    # -- accounting ----------------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- persistence ---------------------------------------------------------------------------
    def config(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "site": self.spec.site,
            **asdict(self.spec.shape),
            "layers": self.layer_ids,
            "positions": self.spec.positions,
            "hidden_size": self.hidden_size,
        }

    def save(self, directory: str | Path, metadata: dict | None = None) -> None:
        """Write ``adapter.safetensors`` and ``adapter.json`` (each atomically)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        atomic_write(directory / ADAPTER_WEIGHTS, lambda p: save_file(tensors, str(p)))
        write_json(directory / ADAPTER_CONFIG, {**self.config(), **(metadata or {})})

    @classmethod
    def load(cls, directory: str | Path) -> Interventions:
        """Rebuild saved interventions (not yet attached: call ``.attach(model)``)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        config = json.loads((directory / ADAPTER_CONFIG).read_text())
        if config.get("format") != FORMAT:
            raise ValueError(f"{directory / ADAPTER_CONFIG} is not a steer adapter config")
        shape = AdapterShape(
            parameterization=config["parameterization"],
            rank=config["rank"],
            activation=config["activation"],
            bias=config["bias"],
        )
        spec = InterventionSpec(
            site=config["site"],
            shape=shape,
            layers=tuple(config["layers"]),
            positions=config["positions"],
        )
        interventions = cls(spec, config["hidden_size"], config["layers"])
        interventions.load_state_dict(load_file(str(directory / ADAPTER_WEIGHTS)))
        return interventions


def attach(model: nn.Module, spec: InterventionSpec, *, seed: int | None = None) -> Interventions:
    """Build freshly initialised adapters for ``model`` and attach them.

    With ``seed``, initialisation is reproducible and leaves the global RNG untouched.
    """
    n_layers = len(find_decoder_layers(model))
    layer_ids = resolve_layers(spec.layers, n_layers)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        interventions = Interventions(spec, hidden_size(model), layer_ids)
    return interventions.attach(model)
