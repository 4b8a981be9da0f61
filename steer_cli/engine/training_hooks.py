"""The training loop's hooks of ``Interventions`` (see ``loop.Parts``): optimizer groups,
LoFiT's two stages and head selection, LoFiT's L1 and JoLA's expected-L0 penalties, and what a
run ended with (LoFiT's heads, JoLA's open gates).

A mixin: ``Interventions`` holds the adapters (``self.adapters``, keyed by layer), its
``spec``, ``layer_ids`` and head geometry; this module holds what the methods do with them while
training, so ``attach`` stays about hooks, positions and persistence.
"""

from __future__ import annotations

import math

import torch


def heads_to_keep(wanted: float | str, total: int) -> int:
    """LoFiT's k: ``lofit_heads`` as a fraction of ``total`` heads (at least 1), a count, or
    ``"all"`` (Table 2's LoFiT: "we intervene on all heads")."""
    from steer_cli.errors import SteerError

    if wanted == "all":
        return total
    k = max(1, round(wanted * total)) if wanted < 1 else int(wanted)
    if k > total:
        raise SteerError(
            f"adapter.lofit_heads={wanted:g} asks for {k} heads; the steered layers have {total}",
            f"keep at most {total}, a fraction below 1, or adapter.lofit_heads=all",
        )
    return k


def lofit_stages(shape) -> list[dict] | None:
    """The per-stage overrides of train's settings of an ``AdapterShape``: LoFiT's two
    trainings (``lr``, ``epochs`` where set), None for one training."""
    if shape.parameterization != "lofit" or shape.lofit_stage_split is not None:
        return None
    stages = (
        {"lr": shape.lofit_lr_stage1, "epochs": shape.lofit_epochs_stage1},
        {"lr": shape.lofit_lr_stage2, "epochs": shape.lofit_epochs_stage2},
    )
    return [{k: v for k, v in stage.items() if v is not None} for stage in stages]


class TrainingHooks:
    """Mixed into ``Interventions``; see the module docstring."""

    @property
    def _lofit(self) -> bool:
        return self.spec.shape.parameterization == "lofit"

    def lofit_heads_to_keep(self) -> int:
        """LoFiT's k over the steered layers' heads (``heads_to_keep``)."""
        return heads_to_keep(self.spec.shape.lofit_heads, len(self.layer_ids) * (self.n_heads or 0))

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer groups: LoReFT's orthogonal parametrization is kept out of weight decay.

        torch's Householder map reads the sign of the diagonal of its ``original`` tensor (which
        gets no gradient) as an integer: decay shrinks ``-1`` towards ``-0.99`` and R becomes
        all zeros after one step. (pyreft trains with weight decay 0, so it never shows there.)
        """
        trainable = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        orthogonal = [p for n, p in trainable if ".parametrizations." in n]
        decayed = [p for n, p in trainable if ".parametrizations." not in n]
        groups = [{"params": decayed, "lr": lr}]
        if orthogonal:
            groups.append({"params": orthogonal, "lr": lr, "weight_decay": 0.0})
        return groups

    def training_stages(self) -> list[dict] | None:
        """LoFiT's two trainings, as LoFiT's code runs them: stage 1 trains the scales A of
        every head under the L1 penalty, stage 2 (after ``begin_stage(2)`` keeps the top heads)
        the biases v of the kept heads; each stage has its own optimizer, and its LR and epochs
        override train's where set. None for one training (every other method, and LoFiT's
        ``lofit_stage_split`` variant, which switches inside one)."""
        return lofit_stages(self.spec.shape) if self.lofit_stage in (None, 1) else None

    @property
    def unused_parameters(self) -> bool:
        """Whether a step leaves trained parameters unused (LoFiT: v in stage 1, A in 2)."""
        return self._lofit

    @property
    def generator(self) -> torch.Generator:
        """The adapters' own RNG (LoFiT's stage-2 draw): checkpointed."""
        return self._generator

    def training_state(self) -> dict:
        """What a checkpoint needs beyond tensors: LoFiT's stage per layer and its planned
        switch (the split variant)."""
        if not self._lofit:
            return {}
        return {
            "lofit_stages": {k: a.stage for k, a in self.adapters.items()},
            "switch_at": self._switch_at,
        }

    def load_training_state(self, state: dict) -> None:
        for key, stage in state.get("lofit_stages", {}).items():
            self.adapters[key].stage = int(stage)
        if "switch_at" in state:
            self._switch_at = state["switch_at"]

    def begin_stage(self, stage: int) -> None:
        """Called by the training loop before each stage of ``training_stages`` (1, 2)."""
        if stage == 2 and self.lofit_stage == 1:
            self.select_heads()

    def begin_training(self, total_steps: int) -> None:
        """Called by the training loop before step 1: plans the stage switch of LoFiT's
        ``lofit_stage_split`` variant."""
        split = self.spec.shape.lofit_stage_split
        if self._lofit and split is not None and self.lofit_stage == 1:
            stage1 = round(split * total_steps)
            self._switch_at = min(max(1, stage1), max(1, total_steps - 1))

    def begin_step(self, step: int, generator: torch.Generator) -> None:
        """Called by the training loop before each optimizer step with a generator seeded by
        the run's seed and the step, the same in every process: JoLA draws its gates' noise for
        the step from it, layer by layer (see ``JoLAAdapter``)."""
        if self.spec.shape.parameterization == "jola":
            for i in self.layer_ids:
                self.adapters[str(i)].draw_noise(generator)

    def after_step(self, step: int) -> None:
        if self._lofit and self.lofit_stage == 1 and self._switch_at and step >= self._switch_at:
            self.select_heads()

    def penalty(self, step: int) -> torch.Tensor | None:
        """LoFiT stage 1: ``l1 * sum |A|``. JoLA: its expected-L0 penalty at optimizer step
        ``step`` (1, 2, ...), on the scale ``jola_penalty`` names.

        ``jola`` (default), as JoLA's trainer computes it: per layer the mean over heads of each
        gate's open probability (clamped to [1e-6, 1 - 1e-6]), summed over layers and divided
        by ``L * H``; shift gates weighted ``lambda_t``, scale gates ``1 - lambda_t``, with
        ``lambda_t = jola_l0 * exp(-jola_l0_decay * (step - 1))`` (JoLA's first step uses
        ``jola_l0``). ``L`` counts the adapted layers (JoLA adapts all of them).
        ``sum`` (steer 0.1.0): ``jola_l0 * exp(-jola_l0_decay * step)`` times the expected
        number of open gates, every gate alike; ``L * H^2`` times stronger per gate.
        """
        shape = self.spec.shape
        if self._lofit and self.lofit_stage == 1 and shape.lofit_l1:
            return shape.lofit_l1 * sum(a.A.abs().sum() for a in self.adapters.values())
        if shape.parameterization != "jola" or not shape.jola_l0:
            return None
        if shape.jola_penalty == "sum":
            weight = shape.jola_l0 * math.exp(-shape.jola_l0_decay * step)
            return weight * sum(a.expected_l0() for a in self.adapters.values())
        weight = shape.jola_l0 * math.exp(-shape.jola_l0_decay * (step - 1))
        scale = shift = 0.0
        for adapter in self.adapters.values():
            p_scale, p_shift = (p.clamp(1e-6, 1 - 1e-6) for p in adapter.open_probabilities())
            scale, shift = scale + p_scale.mean(), shift + p_shift.mean()
        gates = len(self.adapters) * self.n_heads
        return (weight * shift + (1 - weight) * scale) / gates

    @property
    def lofit_stage(self) -> int | None:
        if not self._lofit:
            return None
        return min(a.stage for a in self.adapters.values())

    def select_heads(self) -> dict[int, list[int]]:
        """End LoFiT's stage 1: keep the top-k heads by ``||A_i||_2`` across all layers."""
        norms = torch.stack([self.adapters[str(i)].A.detach().norm(dim=-1) for i in self.layer_ids])
        k = self.lofit_heads_to_keep()
        # Stable descending sort: ties go to the earlier layer / head.
        order = torch.sort(norms.flatten().cpu(), descending=True, stable=True).indices[:k]
        keep = torch.zeros(norms.numel(), dtype=torch.bool)
        keep[order] = True
        keep = keep.view(norms.shape)
        for row, i in enumerate(self.layer_ids):
            self.adapters[str(i)].select(keep[row], self._generator)
        return self.selected_heads()

    def selected_heads(self) -> dict[int, list[int]]:
        return {
            i: torch.nonzero(self.adapters[str(i)].heads).flatten().tolist()
            for i in self.layer_ids
            if bool(self.adapters[str(i)].heads.any())
        }

    def open_gates(self) -> dict:
        """JoLA: how many gates are open (evaluation gate > 0), per layer and in total."""
        per_layer = {i: self.adapters[str(i)].open_gates() for i in self.layer_ids}
        return {
            "scale": sum(g["scale"] for g in per_layer.values()),
            "shift": sum(g["shift"] for g in per_layer.values()),
            "total": 2 * len(self.layer_ids) * (self.n_heads or 0),
            "per_layer": per_layer,
        }

    def summary(self) -> dict:
        """What this adapter is and ended with: parameters, and LoFiT's heads / JoLA's gates."""
        out: dict = {
            "parameterization": self.spec.shape.parameterization,
            "site": self.spec.site,
            "positions": self.spec.positions,
            "layers": self.layer_ids,
            "trainable_params": self.num_parameters(),
        }
        if self._lofit:
            out.update(
                lofit_stage=self.lofit_stage,
                heads_kept=self.lofit_heads_to_keep(),
                selected_heads={str(k): v for k, v in self.selected_heads().items()},
            )
        if self.spec.shape.parameterization == "jola":
            gates = self.open_gates()
            gates["per_layer"] = {str(k): v for k, v in gates["per_layer"].items()}
            out["open_gates"] = gates
        return out
