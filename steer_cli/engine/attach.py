"""Attach adapters to a model with hooks, detach them; apply the edit at the site.

The adapters live in an ``Interventions`` module of their own, never inside the base model: the
model's ``state_dict``/``save_pretrained`` stay untouched, peft wrapping keeps working, and
detaching restores the exact original computation.

Positions other than ``all`` need to know where each row's prompt is: set it with
``interventions.prompt_span(start, end)`` (or ``prompt_span(model, start, end)`` for every
intervention attached to a model) around the forward passes; see ``positions.py`` for the one
meaning each mode has in training, generation and scoring. Training sets it per batch through
``batch_context``, ``evaluate.generation.generate`` and ``evaluate.scoring.score`` set it
themselves. A forward without a span raises rather than silently steering every token.

``Interventions`` is assembled from mixins, one concern each: ``span.PromptSpan`` (the prompt
span and the token mask per forward), ``persistence.Persistence`` (save and reload),
``training_hooks.TrainingHooks`` (what the training loop calls); ``spec.InterventionSpec`` says
what to steer. This module keeps the site hooks, the edit and the registry of what is attached.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from steer_cli.engine.adapters import build_adapter
from steer_cli.engine.persistence import ADAPTER_CONFIG, ADAPTER_WEIGHTS, Persistence
from steer_cli.engine.positions import ForwardSignals
from steer_cli.engine.sites import (
    find_decoder_layers,
    head_geometry,
    hidden_size,
    resolve_layers,
    site_module,
    versions,
)
from steer_cli.engine.span import PromptSpan
from steer_cli.engine.spec import InterventionSpec
from steer_cli.engine.training_hooks import TrainingHooks

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "InterventionSpec",
    "Interventions",
    "attach",
    "attached_to",
    "prompt_span",
]

# Decoder-layer lists -> the Interventions attached to them, so generation and scoring helpers
# that only see the model can set the prompt span of whatever is attached.
_ATTACHED: weakref.WeakKeyDictionary[nn.Module, weakref.WeakSet] = weakref.WeakKeyDictionary()


class Interventions(PromptSpan, Persistence, TrainingHooks, nn.Module):
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
            self._handles += self._position_hooks(model, layers)
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
            return (self._edit(adapter, self._site_input(module, args)), *args[1:])

        return hook

    def _site_input(self, module: nn.Module, args: tuple) -> torch.Tensor:
        """The tensor an input site edits: the module's first positional input, which must be
        ``[batch, tokens, width]``. Transformers calls the MLP and o_proj that way today; a
        release that passes it by keyword or flattens the tokens fails here, loudly."""
        h = args[0] if args else None
        if not isinstance(h, torch.Tensor) or h.dim() != 3 or h.shape[-1] != self.width:
            got = "no positional input" if h is None else str(getattr(h, "shape", type(h)))
            raise RuntimeError(
                f"site {self.spec.site}: {type(module).__name__} was called with {got}, not "
                f"[batch, tokens, {self.width}]: cannot find the tensor to edit ({versions()})"
            )
        return h

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
