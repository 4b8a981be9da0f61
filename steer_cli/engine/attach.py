"""Attach adapters to a model with hooks, detach them, save and reload them.

The adapters live in an ``Interventions`` module of their own, never inside the base model: the
model's ``state_dict``/``save_pretrained`` stay untouched, peft wrapping keeps working, and
detaching restores the exact original computation.

Positions other than ``all`` need to know where each row's prompt is: set it with
``interventions.prompt_span(start, end)`` (or ``prompt_span(model, start, end)`` for every
intervention attached to a model) around the forward passes; see ``positions.py`` for the one
meaning each mode has in training, generation and scoring. Training sets it per batch through
``batch_context``, ``evaluate.generation.generate`` and ``evaluate.scoring.score`` set it
themselves. A forward without a span raises rather than silently steering every token.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from steer_cli.atomic import atomic_write, write_json
from steer_cli.engine.adapters import AdapterShape, build_adapter
from steer_cli.engine.names import SITES, check_positions
from steer_cli.engine.positions import ForwardSignals, find_backbone, position_mask
from steer_cli.engine.sites import (
    find_decoder_layers,
    head_geometry,
    hidden_size,
    resolve_layers,
    site_module,
)
from steer_cli.engine.training_hooks import TrainingHooks

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"
FORMAT = "steer-adapter"
FORMAT_VERSION = 1

# Decoder-layer lists -> the Interventions attached to them, so generation and scoring helpers
# that only see the model can set the prompt span of whatever is attached.
_ATTACHED: weakref.WeakKeyDictionary[nn.Module, weakref.WeakSet] = weakref.WeakKeyDictionary()


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
        if self.shape.head_wise and self.site != "attn_heads":
            raise ValueError(
                f"{self.shape.parameterization} edits attention heads: use site attn_heads, "
                f"not {self.site}"
            )
        try:
            check_positions(self.positions)
        except ValueError as err:
            raise ValueError(f"positions {self.positions!r}: {err}") from None


class Interventions(TrainingHooks, nn.Module):
    """One adapter per selected layer, applied as ``h <- h + delta(h)`` at the spec's site.

    Also the training loop's ``Parts`` (see ``loop.Parts``): ``batch_context`` sets the prompt
    span per batch; ``begin_training``/``after_step``/``penalty`` drive LoFiT's two stages and
    L1 penalty and JoLA's expected-L0 penalty. ``summary()`` reports what a run ended with
    (LoFiT's selected heads, JoLA's open gates). Starts in eval mode (deterministic JoLA gates);
    the training loop switches it to train mode.
    """

    def __init__(
        self,
        spec: InterventionSpec,
        d: int,
        layer_ids: list[int],
        *,
        n_heads: int | None = None,
        head_dim: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if spec.site == "attn_heads" and not (n_heads and head_dim):
            raise ValueError("site attn_heads needs n_heads and head_dim")
        self.spec = spec
        self.hidden_size = d
        self.n_heads = n_heads if spec.site == "attn_heads" else None
        self.head_dim = head_dim if spec.site == "attn_heads" else None
        self.width = n_heads * head_dim if spec.site == "attn_heads" else d
        self.layer_ids = list(layer_ids)
        self.adapters = nn.ModuleDict(
            {
                str(i): build_adapter(
                    spec.shape, self.width, n_heads=n_heads or 0, head_dim=head_dim or 0
                )
                for i in layer_ids
            }
        )
        self.enabled = True
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._layers_ref: weakref.ref | None = None
        self._span: tuple[torch.Tensor, torch.Tensor] | None = None
        self._mask: torch.Tensor | None = None
        # The last model call's mask, for gradient checkpointing's recompute inside the span.
        self._kept_mask: torch.Tensor | None = None
        self._forward: ForwardSignals | None = None  # the backbone call in progress
        self._recorder: list | None = None
        self._switch_at: int | None = None  # LoFiT: the step that ends stage 1
        self._generator = torch.Generator().manual_seed(seed)  # LoFiT's stage-2 draw
        self.eval()

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
        self._check_geometry(model)
        if self.spec.positions != "all":
            # Where this forward's tokens sit comes from the model call's own arguments (read
            # before the forward, checked against the cache it returns); the token mask is
            # computed at layer 0, which runs before every site.
            backbone = find_backbone(model, layers)
            self._handles += [
                backbone.register_forward_pre_hook(self._enter_forward, with_kwargs=True),
                backbone.register_forward_hook(
                    self._leave_forward, with_kwargs=True, always_call=True
                ),
                layers[0].register_forward_pre_hook(self._track_columns, with_kwargs=True),
            ]
        for i in self.layer_ids:
            adapter = self.adapters[str(i)]
            device = next(layers[i].parameters()).device
            adapter.to(device)
            module, where = site_module(layers[i], self.spec.site)
            if where == "input":
                self._handles.append(module.register_forward_pre_hook(self._input_hook(adapter)))
            else:
                self._handles.append(module.register_forward_hook(self._output_hook(adapter)))
        _ATTACHED.setdefault(layers, weakref.WeakSet()).add(self)
        self._layers_ref = weakref.ref(layers)
        return self

    def _check_geometry(self, model: nn.Module) -> None:
        if self.spec.site == "attn_heads":
            geometry = head_geometry(model)
            if geometry != (self.n_heads, self.head_dim):
                raise ValueError(
                    f"adapter is for {self.n_heads} heads of {self.head_dim}, model has "
                    f"{geometry[0]} heads of {geometry[1]}"
                )
        elif hidden_size(model) != self.hidden_size:
            raise ValueError(
                f"adapter is for hidden size {self.hidden_size}, model has {hidden_size(model)}"
            )

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        layers = self._layers_ref() if self._layers_ref else None
        if layers is not None and layers in _ATTACHED:
            _ATTACHED[layers].discard(self)
        self._layers_ref = None

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """Run the base model alone (hooks stay registered but do nothing)."""
        previous, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = previous

    # -- positions -----------------------------------------------------------------------------
    @contextmanager
    def prompt_span(
        self, start: torch.Tensor | Sequence[int], end: torch.Tensor | Sequence[int]
    ) -> Iterator[None]:
        """Columns ``[start[b], end[b])`` of row ``b`` are its prompt, for the forwards inside.

        Columns count from the start of the full sequence, KV cache included.
        """
        start = torch.as_tensor(start, dtype=torch.long).flatten()
        end = torch.as_tensor(end, dtype=torch.long).flatten()
        if start.shape != end.shape or bool((start > end).any()) or bool((start < 0).any()):
            raise ValueError(f"bad prompt span: start {start.tolist()}, end {end.tolist()}")
        previous, self._span = self._span, (start, end)
        try:
            yield
        finally:
            self._span = previous
            self._mask = self._kept_mask = None

    def batch_context(self, batch: dict):
        """Training (right padding, teacher forcing): the first ``prompt_lengths`` tokens."""
        lengths = batch["prompt_lengths"]
        return self.prompt_span(torch.zeros_like(lengths), lengths)

    @contextmanager
    def record_positions(self) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Collect ``(columns, mask)`` of every forward inside (to check what was steered)."""
        previous, self._recorder = self._recorder, []
        try:
            yield self._recorder
        finally:
            self._recorder = previous

    def _enter_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._forward = ForwardSignals.read(args, kwargs) if self.enabled else None

    def _leave_forward(self, module: nn.Module, args: tuple, kwargs: dict, output) -> None:
        signals, self._forward = self._forward, None
        if signals is not None and output is not None:
            signals.check_after(output)

    def _track_columns(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._mask = None
        if not self.enabled:
            return
        hidden = args[0] if args else kwargs["hidden_states"]
        batch, tokens = hidden.shape[:2]
        if self._span is None:
            raise RuntimeError(
                f"positions={self.spec.positions!r} needs to know where the prompt is: run the "
                "model inside `interventions.prompt_span(start, end)` (or use steer's "
                "generate/score helpers, which set it)"
            )
        start, end = self._span
        if start.shape[0] != batch:
            raise RuntimeError(
                f"the prompt span has {start.shape[0]} rows but the forward has {batch} "
                "(beam search and num_return_sequences > 1 are not supported with positions)"
            )
        kept = self._kept_mask
        if self._forward is None and kept is not None and tuple(kept.shape) == (batch, tokens):
            # A recompute: where gradient checkpointing wraps a layer's __call__, hooks included
            # (transformers 4.x; 5.x keeps layer hooks outside), layer 0 runs again after the
            # model call, on the tokens of the forward it repeats: the same mask.
            self._mask = kept
            return
        if self._forward is None:
            raise RuntimeError(
                f"positions={self.spec.positions!r}: decoder layers ran outside a call of the "
                "model, so steer cannot tell which columns their tokens are; call the model"
            )
        columns = self._forward.columns(tokens, span_end=int(end.max()), device=hidden.device)
        self._mask = position_mask(self.spec.positions, columns, start, end)
        self._kept_mask = self._mask
        if self._recorder is not None:
            self._recorder.append((columns.cpu(), self._mask.cpu()))

    # -- the edit ------------------------------------------------------------------------------
    def _edit(self, adapter: nn.Module, h: torch.Tensor) -> torch.Tensor:
        # Adapters get h in the model's dtype and compute in fp32 where their parameters are
        # (fp32): no fp32 copy of the residual stream is made and kept for backward.
        if getattr(adapter, "per_head", False):
            delta = adapter(h.view(*h.shape[:-1], self.n_heads, self.head_dim)).reshape(h.shape)
        else:
            delta = adapter(h)
        new = h + delta.to(h.dtype)
        if self.spec.positions == "all":
            return new
        if self._mask is None:
            raise RuntimeError("no token mask for this forward (was layer 0 skipped?)")
        return torch.where(self._mask[..., None], new, h)

    def _output_hook(self, adapter: nn.Module):
        def hook(module: nn.Module, args: tuple, output):
            if not self.enabled:
                return None
            if isinstance(output, tuple):
                return (self._edit(adapter, output[0]), *output[1:])
            return self._edit(adapter, output)

        return hook

    def _input_hook(self, adapter: nn.Module):
        def hook(module: nn.Module, args: tuple):
            if not self.enabled:
                return None
            return (self._edit(adapter, args[0]), *args[1:])

        return hook

    # -- accounting ----------------------------------------------------------------------------
    def num_parameters(self) -> int:
        """Trainable parameters of the adapter as SPEC 2 counts them.

        LoFiT counts what its code counts for the final model: the biases v, ``d_head`` per
        kept head (the planned k during stage 1), not the all-heads scales stage 1 trains.
        """
        if self._lofit:
            kept = sum(len(v) for v in self.selected_heads().values())
            return self.head_dim * (kept or self.lofit_heads_to_keep())
        return sum(p.numel() for p in self.parameters())

    # -- persistence ---------------------------------------------------------------------------
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
    def load(cls, directory: str | Path) -> Interventions:
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


def attach(model: nn.Module, spec: InterventionSpec, *, seed: int | None = None) -> Interventions:
    """Build freshly initialised adapters for ``model`` and attach them.

    With ``seed``, initialisation (and LoFiT's stage-2 draw) is reproducible
    and leaves the global RNG untouched.
    """
    n_layers = len(find_decoder_layers(model))
    layer_ids = resolve_layers(spec.layers, n_layers)
    n_heads, head_dim = head_geometry(model) if spec.site == "attn_heads" else (None, None)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        interventions = Interventions(
            spec,
            hidden_size(model),
            layer_ids,
            n_heads=n_heads,
            head_dim=head_dim,
            seed=0 if seed is None else seed,
        )
    return interventions.attach(model)


def attached_to(model: nn.Module) -> list[Interventions]:
    """Every ``Interventions`` currently attached to ``model``'s decoder layers."""
    try:
        layers = find_decoder_layers(model)
    except ValueError:
        return []
    return [i for i in _ATTACHED.get(layers, ()) if i.attached]


@contextmanager
def prompt_span(
    model: nn.Module, start: torch.Tensor | Sequence[int], end: torch.Tensor | Sequence[int]
) -> Iterator[None]:
    """Set the prompt span of every intervention attached to ``model`` (a no-op if none)."""
    with ExitStack() as stack:
        for interventions in attached_to(model):
            stack.enter_context(interventions.prompt_span(start, end))
        yield
