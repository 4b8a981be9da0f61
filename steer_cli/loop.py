"""The training loop shared by every method.

The loop knows parameters, batches and a loss, not methods: whatever ``parts.build_parts`` made
(adapters, LoRA, the full weights) hands it its parameters and optional hooks. Accelerate places
it on the device and carries it across processes.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from steer_cli.data.batching import MEGA_BATCHES, batch_stream, batches_per_epoch
from steer_cli.data.encode import IGNORE_INDEX, collate_right_padded
from steer_cli.recipe import TrainSection


@dataclass
class StepStats:
    step: int
    total_steps: int
    loss: float
    lr: float  # the first optimizer group's (joint runs: the adapter's)
    tokens: int  # non-pad tokens processed in this step
    seconds: float
    group_lrs: list[float] | None = None  # every group's LR, when they differ
    stage: int | None = None  # which training of a staged run (LoFiT: 1, 2)
    grad_norm: float | None = None  # the gradients' total L2 norm, before any clipping


@dataclass
class LoopSummary:
    steps: int
    tokens: int
    supervised_tokens: int
    seconds: float
    final_loss: float
    padded_tokens: int = 0  # tokens processed, padding included

    @property
    def padding_fraction(self) -> float:
        return 1 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0


class Parts(Protocol):
    """What the loop needs from the trained parts of a method (adapters, LoRA, full weights).

    Only ``parameters`` is required; the loop uses the others when a part defines them:

    - ``module``: the ``nn.Module`` holding parameters that live outside the model (adapters),
      registered beside the model so DDP sees them (a part that is a module counts as its own);
    - ``param_groups(lr)``: optimizer groups, e.g. separate learning rates in joint training;
    - ``penalty(step)``: a regulariser added to the loss (L1 for LoFiT, expected L0 for JoLA);
    - ``begin_training(total_steps)``: called once before step 1 (e.g. to plan stage switches);
    - ``training_stages()``: a list of per-stage overrides of train's settings (``lr``,
      ``epochs``) when the part trains in separate stages (LoFiT), else None;
    - ``begin_stage(stage)``: called before each of those stages (1, 2, ...);
    - ``begin_epoch(epoch)``: called before the first step of each epoch (1, 2, ...);
    - ``after_step(step)``: called after each optimizer step (projections, stage switches);
    - ``batch_context(batch)``: a context manager active during the forward of a micro-batch,
      given the collated batch (with ``prompt_lengths``), e.g. to tell adapters which tokens
      are the prompt.
    """

    def parameters(self) -> Iterator[nn.Parameter]: ...


class _Trainable(nn.Module):
    """Model plus its trainable parts as one module, so DDP sees the adapters' parameters."""

    def __init__(self, model: nn.Module, parts: Parts | None):
        super().__init__()
        self.model = model
        extra = parts if isinstance(parts, nn.Module) else getattr(parts, "module", None)
        self.extra = extra if isinstance(extra, nn.Module) and extra is not model else None

    def forward(self, **batch):
        return self.model(**batch)


def _keep_logits(model: nn.Module, n: int) -> dict:
    """``logits_to_keep=n`` for models whose forward takes it (transformers' causal LMs do)."""
    base = getattr(model, "get_base_model", lambda: model)()
    return {"logits_to_keep": n} if _takes_logits_to_keep(type(base)) else {}


@functools.cache
def _takes_logits_to_keep(model_class: type) -> bool:
    """Asked once per class, not on every micro-batch."""
    import inspect

    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def supervised_loss(
    forward: Callable, model: nn.Module, inputs: dict, labels: torch.Tensor, prompt_lengths
) -> torch.Tensor:
    """The summed next-token cross-entropy over the supervised tokens of a right-padded batch.

    Only positions that predict a supervised token need the vocabulary head: logits start at the
    shortest prompt's last token (a large saving for short answers). ``forward`` is the call
    (the model, or its DDP wrapper); ``model`` is asked whether it takes ``logits_to_keep``.
    """
    first = max(0, int(prompt_lengths.min()) - 1)
    width = labels.shape[1]
    logits = forward(**inputs, **_keep_logits(model, width - first)).logits
    first = width - logits.shape[1]  # the model may have ignored logits_to_keep
    return nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        labels[:, first + 1 :].flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def plan_steps(n_examples: int, cfg: TrainSection) -> int:
    if cfg.max_steps:
        return cfg.max_steps
    return max(1, math.ceil(batches_per_epoch(n_examples, cfg.batch_size) * cfg.epochs))


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Every draw from torch's global RNG inside (peft's LoRA dropout, a model's own dropout)
    follows ``seed``, and the caller's RNG state is restored afterwards: the same recipe gives
    the same bytes whatever ran before it in the process (sweep trials in any order)."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@dataclass
class _Loop:
    """What every optimizer step needs: built once by :func:`train_loop`."""

    model: nn.Module
    wrapped: nn.Module
    accelerator: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    params: list[nn.Parameter]
    cfg: TrainSection
    pad_id: int
    batch_context: Callable
    penalty: Callable | None
    after_step: Callable | None = None
    begin_epoch: Callable | None = None
    on_step: Callable[[StepStats], None] | None = None
    parts: Parts | None = None
    checkpointer: object | None = None  # checkpoints.Checkpointer

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    def step(self, step: int, batch: list[dict]) -> tuple[float, int, int, int, float | None]:
        """One optimizer step over ``batch`` (this process's share, in micro-batches).

        Returns the effective batch's mean loss per supervised token, its supervised token
        count, its non-pad and padded token counts (every process's), and the gradient norm
        (before clipping). A NaN/inf loss or gradient raises :class:`NonFinite`
        (``on_nonfinite: stop``) or skips the update (``skip``).
        """
        world, rank = self.world, self.accelerator.process_index
        # Next-token targets are labels[1:]; count them over the whole effective batch.
        supervised = sum(sum(t != IGNORE_INDEX for t in r["labels"][1:]) for r in batch)
        local = batch[rank::world]
        micro = self.cfg.micro_batch_size or self.cfg.batch_size
        chunks = [local[i : i + micro] for i in range(0, len(local), micro)]
        losses = []  # on the device: read once per step, with the gradient norm
        tokens = padded = 0
        for k, chunk in enumerate(chunks):
            collated = collate_right_padded(chunk, self.pad_id)
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
                token_losses = supervised_loss(
                    self.wrapped, self.model, inputs, labels, collated["prompt_lengths"]
                )
                # DDP averages gradients over processes: scale so the result is the global mean.
                loss = token_losses * world / supervised
                if self.penalty is not None and k == 0:
                    penalty = self.penalty(step)
                    if penalty is not None:
                        loss = loss + penalty
                self.accelerator.backward(loss)
            losses.append(token_losses.detach().float())
        if self.cfg.max_grad_norm:  # clipping measures the norm (before clipping) already
            norm = self.accelerator.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        else:
            norm = None
        if norm is None:
            norm = _grad_norm(self.params)
        # One read of both (a device sync on a GPU), before the update that depends on them.
        *parts, norm = torch.stack([*losses, norm.detach().float()]).tolist()
        loss_sum = sum(parts)  # in order, as the per-micro-batch reads summed before
        if world > 1:  # the whole batch's loss and tokens, not this process's share of them
            shares = torch.tensor([loss_sum, tokens, padded], dtype=torch.float64)
            loss_sum, tokens, padded = self.accelerator.reduce(
                shares.to(self.accelerator.device), reduction="sum"
            ).tolist()
            tokens, padded = int(tokens), int(padded)
        loss = loss_sum / supervised
        if not (math.isfinite(loss) and math.isfinite(norm)):
            self.optimizer.zero_grad(set_to_none=True)
            if self.cfg.on_nonfinite == "stop":
                raise NonFinite(step, loss, norm)
            return loss, supervised, tokens, padded, norm  # skip: no update from this batch
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, supervised, tokens, padded, norm

    def run(
        self,
        rows: list[dict],
        order: Iterator,
        counts: _Counts,
        steps: int,
        *,
        stage: int | None,
        done: int = 0,
    ) -> None:
        """Steps ``done + 1 .. steps`` of this stage over batches from ``order``, numbered on
        from ``counts.steps``; what they processed is added to ``counts``; checkpoints when
        the checkpointer says so."""
        per_epoch = max(1, batches_per_epoch(len(rows), self.cfg.batch_size))
        for local in range(done + 1, steps + 1):
            step = counts.steps + 1
            step_start = time.perf_counter()
            if self.begin_epoch is not None and (local - 1) % per_epoch == 0:
                self.begin_epoch((local - 1) // per_epoch + 1)
            batch = [rows[i] for i in next(order)]
            loss, supervised, tokens, padded, norm = self.step(step, batch)
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
                    )
                )
            if self.checkpointer is not None and self.checkpointer.due(step, counts.total):
                self.save(stage or 1, local, counts)

    def save(self, stage: int, local: int, counts: _Counts) -> None:
        from steer_cli.checkpoints import loop_state

        tensors, state = loop_state(self, self.parts, stage=stage, local=local, counts=counts)
        if self.accelerator.is_main_process:
            self.checkpointer.save(counts.steps, tensors, state)
        self.accelerator.wait_for_everyone()


@dataclass
class _Counts:
    """What the steps of a run processed so far, every stage together."""

    total: int
    steps: int = 0
    tokens: int = 0
    supervised: int = 0
    padded: int = 0
    loss: float = float("nan")

    def add(self, loss: float, supervised: int, tokens: int, padded: int) -> None:
        self.steps += 1
        self.loss = loss
        self.supervised += supervised
        self.tokens += tokens
        self.padded += padded


class NonFinite(ArithmeticError):
    """A step's loss or gradient is NaN or infinite (``train.on_nonfinite: stop``)."""

    def __init__(self, step: int, loss: float, grad_norm: float):
        super().__init__(f"step {step}: loss {loss}, gradient norm {grad_norm}")
        self.step, self.loss, self.grad_norm = step, loss, grad_norm


def _grad_norm(params: list[nn.Parameter]) -> torch.Tensor:
    """The gradients' total L2 norm, on their device (read only: nothing is clipped)."""
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device)
    norms = torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])
    return torch.linalg.vector_norm(norms)


def _trained_params(model: nn.Module, trainable: Parts | None) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if trainable is not None:
        seen = {id(p) for p in params}
        params += [p for p in trainable.parameters() if p.requires_grad and id(p) not in seen]
    if not params:
        raise ValueError("nothing to train: no parameter requires grad")
    return params


def _optimizer(trainable: Parts | None, params: list, cfg: TrainSection, total: int):
    """AdamW over the parts' groups (every trained parameter in one), and the LR schedule."""
    from transformers import get_scheduler

    groups_of = getattr(trainable, "param_groups", None)
    groups = groups_of(cfg.lr) if groups_of else [{"params": params}]
    grouped = {id(p) for g in groups for p in g["params"]}
    if missed := [p for p in params if id(p) not in grouped]:
        groups.append({"params": missed})  # e.g. model weights left trainable beside adapters
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(
        cfg.scheduler,
        optimizer,
        num_warmup_steps=round(cfg.warmup_ratio * total),
        num_training_steps=total,
    )
    return optimizer, scheduler


def stage_configs(trainable: Parts | None, cfg: TrainSection) -> list[TrainSection]:
    """The trainings a run is made of: ``[cfg]``, or one per stage of a part's
    ``training_stages()`` (LoFiT), each ``cfg`` with that stage's overrides (lr, epochs)."""
    plan = getattr(trainable, "training_stages", None)
    return with_stages(cfg, plan() if plan is not None else None)


def with_stages(cfg: TrainSection, stages: list[dict] | None) -> list[TrainSection]:
    """``[cfg]``, or ``cfg`` with each stage's overrides."""
    return [cfg.model_copy(update=stage) for stage in stages] if stages else [cfg]


def planned_steps(n_examples: int, trainable: Parts | None, cfg: TrainSection) -> int:
    """Optimizer steps of the whole run, every stage together."""
    return sum(plan_steps(n_examples, c) for c in stage_configs(trainable, cfg))


def check_not_sharded(accelerator) -> None:
    """Refuse a sharding launch (``accelerate launch --use_fsdp``, DeepSpeed, Megatron-LM).

    Data parallelism keeps a whole copy of every parameter in each process, which is what the
    loop and the parts read when they save the adapter, project Joint-Orth's, or checkpoint;
    sharding splits them across processes, untested here, so it is refused, not guessed.
    (accelerate does not launch FSDP on a CPU at all; tests/test_multiprocess.py checks both.)
    """
    from accelerate.utils import DistributedType

    sharded = (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)
    if accelerator.distributed_type in sharded:
        from steer_cli.errors import SteerError

        raise SteerError(
            f"steer train does not shard parameters ({accelerator.distributed_type.value} "
            "launch): it saves, projects and checkpoints whole parameters, which sharding splits.",
            "Launch plain data parallelism (torchrun, or accelerate launch without --use_fsdp "
            "or DeepSpeed): adapters train no base weight, so each GPU holds one bf16 copy.",
        )


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
) -> LoopSummary:
    """AdamW over the parameters that require grad, effective batch by gradient accumulation.

    The loss is the mean over the supervised (answer + EOS) tokens of the whole effective batch,
    however it is split into micro-batches or processes. Batches group similar lengths
    (:mod:`steer_cli.data.batching`; ``mega_batches=0``: plain seeded shuffling). ``cfg.seed``
    seeds the data order and every random draw of the steps (dropout), process by process.

    A part with ``training_stages`` (LoFiT) is trained once per stage, as separate trainings
    are: a fresh optimizer and schedule, the stage's LR and epochs, the same seeded data order;
    ``begin_stage(k)`` runs before each. Steps are numbered across stages.

    ``checkpointer`` (:class:`steer_cli.checkpoints.Checkpointer`) saves the loop's state when
    due; ``resume`` (a :class:`~steer_cli.checkpoints.Checkpoint`) continues from one, to the
    same bytes an uninterrupted run ends with.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    device = next(model.parameters()).device
    # LoFiT leaves one kind of its parameters unused in each stage; DDP must be told.
    unused = bool(getattr(trainable, "unused_parameters", False))
    accelerator = Accelerator(
        cpu=device.type == "cpu",
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=unused)],
    )
    check_not_sharded(accelerator)
    params = _trained_params(model, trainable)
    configs = stage_configs(trainable, cfg)
    totals = [plan_steps(len(rows), c) for c in configs]
    counts = _Counts(total=sum(totals))
    begin_stage = getattr(trainable, "begin_stage", None) if len(configs) > 1 else None
    wrapped = None
    start = time.perf_counter()
    resume_stage = resume.state["position"]["stage"] if resume is not None else 0
    for stage, (stage_cfg, steps) in enumerate(zip(configs, totals, strict=True), 1):
        if stage < resume_stage:
            continue  # finished before the checkpoint: its results are in it
        if begin_stage is not None:
            begin_stage(stage)
        optimizer, scheduler = _optimizer(trainable, params, stage_cfg, steps)
        if wrapped is None:
            wrapped, optimizer = accelerator.prepare(_Trainable(model, trainable), optimizer)
            if (begin_training := getattr(trainable, "begin_training", None)) is not None:
                begin_training(counts.total)
        else:
            optimizer = accelerator.prepare(optimizer)
        loop = _Loop(
            model=model,
            wrapped=wrapped,
            accelerator=accelerator,
            optimizer=optimizer,
            scheduler=scheduler,
            params=params,
            cfg=stage_cfg,
            pad_id=pad_id,
            batch_context=getattr(trainable, "batch_context", None)
            or (lambda batch: nullcontext()),
            penalty=getattr(trainable, "penalty", None),
            after_step=getattr(trainable, "after_step", None),
            begin_epoch=getattr(trainable, "begin_epoch", None),
            on_step=on_step,
            parts=trainable,
            checkpointer=checkpointer,
        )
        order = batch_stream(
            [len(r["input_ids"]) for r in rows],
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
                for _ in range(done):
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
    )
