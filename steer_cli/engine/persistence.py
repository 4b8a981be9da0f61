"""Save and reload ``Interventions``: ``adapter.safetensors`` (the tensors) and ``adapter.json``
(what they are: site, shape, layers, positions, geometry, and what the run ended with).

A mixin: ``Interventions`` holds the adapters and their spec; this module writes them (each file
atomically) and rebuilds them from what it wrote. The saved config records the site, so a run
keeps the site it was trained on whatever a method preset says today.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

import torch

from steer_cli.atomic import atomic_write, write_json
from steer_cli.engine.adapters import AdapterShape
from steer_cli.engine.spec import InterventionSpec

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"
FORMAT = "steer-adapter"
FORMAT_VERSION = 1


class Persistence:
    """Mixed into ``Interventions``; see the module docstring."""

    def config(self) -> dict:
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "site": self.spec.site,
            **asdict(self.spec.shape),
            "layers": self.layer_ids,
            "positions": self.spec.positions,
            "hidden_size": self.hidden_size,
        }
        if self.spec.site == "attn_heads":
            config.update(n_heads=self.n_heads, head_dim=self.head_dim)
        if self._lofit:
            config["lofit_stage"] = self.lofit_stage
        config["summary"] = self.summary()
        return config

    def tensors(self) -> dict[str, torch.Tensor]:
        """What ``adapter.safetensors`` holds: each adapter's state (LoReFT: its evaluated R)."""
        out = {}
        for i, adapter in self.adapters.items():
            export = getattr(adapter, "export_tensors", None)
            items = export() if export else adapter.state_dict()
            out.update({f"adapters.{i}.{k}": v.detach() for k, v in items.items()})
        return out

    def save(self, directory: str | Path, metadata: dict | None = None) -> None:
        """Write ``adapter.safetensors`` and ``adapter.json`` (each atomically)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.to("cpu").contiguous() for k, v in self.tensors().items()}
        atomic_write(directory / ADAPTER_WEIGHTS, lambda p: save_file(tensors, str(p)))
        write_json(directory / ADAPTER_CONFIG, {**self.config(), **(metadata or {})})

    @classmethod
    def load(cls, directory: str | Path):
        """Rebuild saved interventions (not yet attached: call ``.attach(model)``)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        config = json.loads((directory / ADAPTER_CONFIG).read_text())
        if config.get("format") != FORMAT:
            raise ValueError(f"{directory / ADAPTER_CONFIG} is not a steer adapter config")
        shape = AdapterShape(
            **{f.name: config[f.name] for f in fields(AdapterShape) if f.name in config}
        )
        spec = InterventionSpec(
            site=config["site"],
            shape=shape,
            layers=tuple(config["layers"]),
            positions=config["positions"],
        )
        interventions = cls(
            spec,
            config["hidden_size"],
            config["layers"],
            n_heads=config.get("n_heads"),
            head_dim=config.get("head_dim"),
        )
        tensors = load_file(str(directory / ADAPTER_WEIGHTS))
        for i, adapter in interventions.adapters.items():
            prefix = f"adapters.{i}."
            own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            load = getattr(adapter, "import_tensors", None)
            if load is not None:
                load(own)
            else:
                adapter.load_state_dict(own)
            if hasattr(adapter, "stage"):
                adapter.stage = int(config.get("lofit_stage", 1))
        return interventions
