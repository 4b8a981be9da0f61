"""What a training is made of before its first step (see :mod:`steer_cli.loop`): what it needs
from the parts it trains, its stages and their steps, its parameters and their optimizer, and
the launches it refuses."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Protocol

import torch
from torch import nn

from steer_cli.data.batching import batches_per_epoch
from steer_cli.recipe import TrainSection


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
    - ``begin_step(step, generator)``: called before each optimizer step with a CPU generator
      seeded by the run's seed and the step, the same in every process: what a part draws from
      it (JoLA's gate noise) does not depend on how the batch is split into processes or
      micro-batches;
    - ``after_step(step)``: called after each optimizer step (projections, stage switches);
    - ``batch_context(batch)``: a context manager active during the forward of a micro-batch,
      given the collated batch (with ``prompt_lengths``), e.g. to tell adapters which tokens
      are the prompt.
    """

    def parameters(self) -> Iterator[nn.Parameter]: ...


def plan_steps(n_examples: int, cfg: TrainSection, passes: int = 1) -> int:
    """Optimizer steps: ``train.max_steps``, or the batches of ``train.epochs`` each taken
    ``passes`` times (GRPO's passes over a batch's samples)."""
    if cfg.max_steps:
        return cfg.max_steps
    batches = max(1, math.ceil(batches_per_epoch(n_examples, cfg.batch_size) * cfg.epochs))
    return batches * passes


def trained_params(model: nn.Module, trainable: Parts | None) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if trainable is not None:
        seen = {id(p) for p in params}
        params += [p for p in trainable.parameters() if p.requires_grad and id(p) not in seen]
    if not params:
        raise ValueError("nothing to train: no parameter requires grad")
    return params


def optimizer_for(trainable: Parts | None, params: list, cfg: TrainSection, total: int):
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


def planned_steps(
    n_examples: int, trainable: Parts | None, cfg: TrainSection, passes: int = 1
) -> int:
    """Optimizer steps of the whole run, every stage together."""
    return sum(plan_steps(n_examples, c, passes) for c in stage_configs(trainable, cfg))


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
