"""The training loop shared by every method.

The loop knows parameters, batches and a loss, not methods: whatever ``parts.build_parts`` made
(adapters, LoRA, the full weights) hands it its parameters and optional hooks. Accelerate places
it on the device and carries it across processes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from steer_cli.data.batching import MEGA_BATCHES, batch_stream, batches_per_epoch
from steer_cli.loop_plan import (
    Parts,
    check_not_sharded,
    optimizer_for,
    plan_steps,
    planned_steps,
    stage_configs,
    trained_params,
    with_stages,
)
from steer_cli.loop_records import Counts, LoopSummary, NonFinite, StepStats
from steer_cli.loop_rng import seeded, step_generator
from steer_cli.losses import supervised_loss
from steer_cli.objectives import DirectPreference, Supervised
from steer_cli.recipe import TrainSection
from steer_cli.rollouts import GroupRelative

# What other modules import from here: the plan of a training lives in :mod:`steer_cli.loop_plan`,
# what it reports in :mod:`steer_cli.loop_records`, its random draws in :mod:`steer_cli.loop_rng`,
# its loss in :mod:`steer_cli.losses`.
__all__ = [
    "LoopSummary",
    "NonFinite",
    "Parts",
    "StepStats",
    "check_not_sharded",
    "plan_steps",
    "planned_steps",
    "seeded",
    "stage_configs",
    "step_generator",
    "supervised_loss",
    "train_loop",
    "with_stages",
]


class _Trainable(nn.Module):
    """Model plus its trainable parts as one module, so DDP sees the adapters' parameters."""

    def __init__(self, model: nn.Module, parts: Parts | None):
        super().__init__()
        self.model = model
        extra = parts if isinstance(parts, nn.Module) else getattr(parts, "module", None)
        self.extra = extra if isinstance(extra, nn.Module) and extra is not model else None

    def forward(self, **batch):
        return self.model(**batch)


@dataclass
class _Loop:
    """What every optimizer step of a stage needs: built by :func:`train_loop` per stage. The
    parts' optional hooks (see :class:`~steer_cli.loop_plan.Parts`) are read from ``parts``."""

    model: nn.Module
    wrapped: nn.Module
    accelerator: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    params: list[nn.Parameter]
    cfg: TrainSection
    pad_id: int
    parts: Parts | None = None
    on_step: Callable[[StepStats], None] | None = None
    checkpointer: object | None = None  # checkpoints.Checkpointer
    objective: Supervised | DirectPreference | GroupRelative = field(default_factory=Supervised)

    def __post_init__(self) -> None:
        parts = self.parts
        self.batch_context = getattr(parts, "batch_context", None) or (lambda b: nullcontext())
        self.penalty = getattr(parts, "penalty", None)
        self.after_step = getattr(parts, "after_step", None)
        self.begin_epoch = getattr(parts, "begin_epoch", None)
        self.begin_step = getattr(parts, "begin_step", None)
        self.passes = getattr(self.objective, "passes", 1)
        self.fresh = True  # this step starts on a new batch
        self.rolled = None  # GRPO: the samples of the current batch

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    def step(
        self, step: int, batch: list[dict]
    ) -> tuple[float, int, int, int, float, dict[str, float]]:
        """One optimizer step over ``batch`` (this process's share, in micro-batches).

        Returns the effective batch's mean loss per unit of the objective (supervised token,
        or preference pair), its supervised token count, its non-pad and padded token counts
        (every process's), the gradient norm (before clipping), and the objective's metrics
        (DPO's reward accuracy and margins; empty for SFT). A NaN/inf loss or gradient raises
        :class:`NonFinite` (``on_nonfinite: stop``) or skips the update (``skip``).
        """
        world = self.world
        objective = self.objective
        chunks, supervised, units = self._chunks(step, batch)
        losses, stats = [], []  # on the device: read once per step, with the gradient norm
        tokens = padded = 0
        for k, chunk in enumerate(chunks):
            collated = objective.collate(chunk, self.pad_id)
            inputs = {
                key: collated[key].to(self.accelerator.device)
                for key in ("input_ids", "attention_mask")
            }
            labels = collated["labels"].to(self.accelerator.device)
            tokens += int(collated["attention_mask"].sum())  # the host's copy: no device sync
            padded += collated["attention_mask"].numel()
            sync = k == len(chunks) - 1
            with (
                nullcontext() if sync else self.accelerator.no_sync(self.wrapped),
                self.batch_context(collated),
            ):
                summed, chunk_stats = objective.loss(
                    self.wrapped, self.model, collated, inputs, labels
                )
                # DDP averages gradients over processes: scale so the result is the global mean.
                loss = summed * world / units
                if self.penalty is not None and k == 0:
                    penalty = self.penalty(step)
                    if penalty is not None:
                        loss = loss + penalty
                self.accelerator.backward(loss)
            losses.append(summed.detach().float())
            if chunk_stats is not None:
                stats.append(chunk_stats)
        if self.cfg.max_grad_norm:  # clipping measures the norm (before clipping) already
            norm = self.accelerator.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        else:
            norm = None
        if norm is None:
            norm = _grad_norm(self.params)
        norm = norm.detach().float()
        stat_sums = torch.stack(stats).sum(0) if stats else norm.new_zeros(len(objective.stats))
        # One read of all (a device sync on a GPU), before the update that depends on them.
        read = torch.cat([torch.stack([*losses, norm]), stat_sums.to(norm.device)]).tolist()
        parts, norm, stat_sums = read[: len(losses)], read[len(losses)], read[len(losses) + 1 :]
        loss_sum = sum(parts)  # in order, as the per-micro-batch reads summed before
        if world > 1:  # the whole batch's loss and tokens, not this process's share of them
            shares = torch.tensor([loss_sum, tokens, padded, *stat_sums], dtype=torch.float64)
            loss_sum, tokens, padded, *stat_sums = self.accelerator.reduce(
                shares.to(self.accelerator.device), reduction="sum"
            ).tolist()
            tokens, padded = int(tokens), int(padded)
        loss = loss_sum / units
        metrics = objective.metrics(stat_sums, units)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            self.optimizer.zero_grad(set_to_none=True)
            if self.cfg.on_nonfinite == "stop":
                raise NonFinite(step, loss, norm)
            return loss, supervised, tokens, padded, norm, metrics  # skip: no update
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, supervised, tokens, padded, norm, metrics

    def _chunks(self, step: int, batch: list[dict]) -> tuple[list[list[dict]], int, int]:
        """This process's micro-batches of ``batch``, the whole batch's supervised tokens, and
        what its loss is a mean over (``units``). An objective that rolls out (GRPO) samples
        its rows from the batch's prompts at the first of its ``passes`` steps over them."""
        world, rank = self.world, self.accelerator.process_index
        local = batch[rank::world]
        rollout = getattr(self.objective, "rollout", None)
        if rollout is not None:
            if self.rolled is None or self.fresh:
                self.rolled = rollout(self, step, local)
            return self.rolled.chunks, self.rolled.tokens, self.rolled.tokens
        micro = self.cfg.micro_batch_size or self.cfg.batch_size
        chunks = [local[i : i + micro] for i in range(0, len(local), micro)]
        return chunks, self.objective.supervised(batch), self.objective.units(batch)

    def run(
        self,
        rows: list[dict],
        order: Iterator,
        counts: Counts,
        steps: int,
        *,
        stage: int | None,
        done: int = 0,
    ) -> None:
        """Steps ``done + 1 .. steps`` of this stage over batches from ``order``, numbered on
        from ``counts.steps``; what they processed is added to ``counts``; checkpoints when
        the checkpointer says so."""
        passes = self.passes
        per_epoch = max(1, batches_per_epoch(len(rows), self.cfg.batch_size)) * passes
        batch: list[dict] = []
        for local in range(done + 1, steps + 1):
            step = counts.steps + 1
            step_start = time.perf_counter()
            if self.begin_epoch is not None and (local - 1) % per_epoch == 0:
                self.begin_epoch((local - 1) // per_epoch + 1)
            self.fresh = (local - 1) % passes == 0  # GRPO: a new batch every `passes` steps
            if self.fresh:
                batch = [rows[i] for i in next(order)]
            if self.begin_step is not None:
                self.begin_step(step, step_generator(self.cfg.seed, step))
            loss, supervised, tokens, padded, norm, metrics = self.step(step, batch)
            if self.after_step is not None:
                self.after_step(step)
            counts.add(loss, supervised, tokens, padded)
            if self.on_step:
                lrs = self.scheduler.get_last_lr()
                self.on_step(
                    StepStats(
                        step=step,
                        total_steps=counts.total,
                        loss=loss,
                        lr=lrs[0],
                        group_lrs=lrs if len(set(lrs)) > 1 else None,
                        tokens=tokens,
                        seconds=time.perf_counter() - step_start,
                        stage=stage,
                        grad_norm=norm,
                        metrics=metrics or None,
                    )
                )
            # A checkpoint after the last pass over a batch: the samples are not saved.
            due = self.checkpointer is not None and self.checkpointer.due(step, counts.total)
            if due and local % passes == 0:
                self.save(stage or 1, local, counts)

    def save(self, stage: int, local: int, counts: Counts) -> None:
        from steer_cli.checkpoints import loop_state

        tensors, state = loop_state(self, self.parts, stage=stage, local=local, counts=counts)
        if self.accelerator.is_main_process:
            self.checkpointer.save(counts.steps, tensors, state)
        self.accelerator.wait_for_everyone()


def _grad_norm(params: list[nn.Parameter]) -> torch.Tensor:
    """The gradients' total L2 norm, on their device (read only: nothing is clipped)."""
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device)
    norms = torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])
    return torch.linalg.vector_norm(norms)


def train_loop(
    model: nn.Module,
    trainable: Parts | None,
    rows: list[dict],
    cfg: TrainSection,
    *,
    pad_id: int,
    on_step: Callable[[StepStats], None] | None = None,
    mega_batches: int = MEGA_BATCHES,
    checkpointer=None,
    resume=None,
    objective: Supervised | DirectPreference | GroupRelative | None = None,
) -> LoopSummary:
    """AdamW over the parameters that require grad, effective batch by gradient accumulation.

    The loss is the mean over the supervised (answer + EOS) tokens of the whole effective batch,
    however it is split into micro-batches or processes. Batches group similar lengths
    (:mod:`steer_cli.data.batching`; ``mega_batches=0``: plain seeded shuffling). ``cfg.seed``
    seeds the data order and every random draw of the steps: torch's RNG (dropout) process by
    process (seed + rank), a part's ``begin_step`` draws (JoLA's gates) from
    :func:`step_generator`, the same in every process.

    A part with ``training_stages`` (LoFiT) is trained once per stage, as separate trainings
    are: a fresh optimizer and schedule, the stage's LR and epochs, the same seeded data order;
    ``begin_stage(k)`` runs before each. Steps are numbered across stages.

    ``checkpointer`` (:class:`steer_cli.checkpoints.Checkpointer`) saves the loop's state when
    due; ``resume`` (a :class:`~steer_cli.checkpoints.Checkpoint`) continues from one, to the
    same bytes an uninterrupted run ends with.

    ``objective`` (:mod:`steer_cli.objectives`; default: supervised) is what a step's loss is:
    the rows are its rows (DPO: preference pairs; GRPO: prompts, whose samples
    :mod:`steer_cli.rollouts` draws at the first of ``grpo.passes`` steps over a batch, each a
    step of its own).
    """
    objective = objective if objective is not None else Supervised()
    accelerator = _accelerator(model, trainable)
    params = trained_params(model, trainable)
    configs = stage_configs(trainable, cfg)
    passes = getattr(objective, "passes", 1)
    totals = [plan_steps(len(rows), c, passes) for c in configs]
    counts = Counts(total=sum(totals))
    begin_stage = getattr(trainable, "begin_stage", None) if len(configs) > 1 else None
    wrapped = None
    start = time.perf_counter()
    resume_stage = resume.state["position"]["stage"] if resume is not None else 0
    resumed_from = None
    for stage, (stage_cfg, steps) in enumerate(zip(configs, totals, strict=True), 1):
        if stage < resume_stage:
            continue  # finished before the checkpoint: its results are in it
        if begin_stage is not None:
            begin_stage(stage)
        optimizer, scheduler = optimizer_for(trainable, params, stage_cfg, steps)
        if wrapped is None:
            wrapped, optimizer = accelerator.prepare(_Trainable(model, trainable), optimizer)
            if (begin_training := getattr(trainable, "begin_training", None)) is not None:
                begin_training(counts.total)
        else:
            optimizer = accelerator.prepare(optimizer)
        loop = _Loop(
            model, wrapped, accelerator, optimizer, scheduler, params, stage_cfg, pad_id,
            parts=trainable, on_step=on_step, checkpointer=checkpointer, objective=objective,
        )  # fmt: skip
        order = batch_stream(
            objective.lengths(rows),
            cfg.batch_size,
            seed=cfg.seed,
            mega_batches=mega_batches,
            min_last=loop.world,  # every process gets an example of every batch
        )
        wrapped.train()
        with seeded(cfg.seed + accelerator.process_index, accelerator.device):
            done = 0
            if stage == resume_stage:
                from steer_cli.checkpoints import restore_loop

                done = restore_loop(loop, trainable, resume, counts)
                resumed_from = counts.steps
                for _ in range(done // loop.passes):
                    next(order)  # the data order is the seed's: replay it to the checkpoint
            label = stage if len(configs) > 1 else None
            loop.run(rows, order, counts, steps, stage=label, done=done)
    wrapped.eval()
    return LoopSummary(
        steps=counts.steps,
        tokens=counts.tokens,
        supervised_tokens=counts.supervised,
        seconds=time.perf_counter() - start,
        final_loss=counts.loss,
        padded_tokens=counts.padded,
        resumed_from=resumed_from,
    )


def _accelerator(model: nn.Module, trainable: Parts | None):
    """Accelerate's handle on this process: the model's device, DDP told about unused
    parameters (LoFiT leaves one kind of its parameters unused in each stage); sharding
    launches refused."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    unused = bool(getattr(trainable, "unused_parameters", False))
    accelerator = Accelerator(
        cpu=next(model.parameters()).device.type == "cpu",
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=unused)],
    )
    check_not_sharded(accelerator)
    return accelerator
