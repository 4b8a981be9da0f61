"""``steer train``: one loop for every method, and the run it writes.

The loop knows parameters, batches and a loss, not methods: whatever ``parts.build_parts`` made
(adapters, LoRA, the full weights) hands it its parameters and optional hooks. Accelerate places
it on the device and carries it across processes.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from steer_cli.data.batching import MEGA_BATCHES, batch_stream, batches_per_epoch
from steer_cli.data.encode import IGNORE_INDEX, collate_right_padded
from steer_cli.recipe import Recipe, TrainSection


@dataclass
class StepStats:
    step: int
    total_steps: int
    loss: float
    lr: float  # the first optimizer group's (joint runs: the adapter's)
    tokens: int  # non-pad tokens processed in this step
    seconds: float
    group_lrs: list[float] | None = None  # every group's LR, when they differ


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

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    def step(self, step: int, batch: list[dict]) -> tuple[float, int, int, int]:
        """One optimizer step over ``batch`` (this process's share, in micro-batches).

        Returns the effective batch's mean loss per supervised token, its supervised token
        count, and this process's non-pad and padded token counts.
        """
        world, rank = self.world, self.accelerator.process_index
        # Next-token targets are labels[1:]; count them over the whole effective batch.
        supervised = sum(sum(t != IGNORE_INDEX for t in r["labels"][1:]) for r in batch)
        local = batch[rank::world]
        micro = self.cfg.micro_batch_size or self.cfg.batch_size
        chunks = [local[i : i + micro] for i in range(0, len(local), micro)]
        loss_sum = 0.0
        tokens = padded = 0
        for k, chunk in enumerate(chunks):
            collated = collate_right_padded(chunk, self.pad_id)
            inputs = {
                key: collated[key].to(self.accelerator.device)
                for key in ("input_ids", "attention_mask")
            }
            labels = collated["labels"].to(self.accelerator.device)
            tokens += int(inputs["attention_mask"].sum())
            padded += inputs["attention_mask"].numel()
            sync = k == len(chunks) - 1
            with (
                nullcontext() if sync else self.accelerator.no_sync(self.wrapped),
                self.batch_context(collated),
            ):
                # Only positions that predict a supervised token need the vocabulary head:
                # skip the prompt before the shortest prompt (a large saving for short answers).
                first = max(0, int(collated["prompt_lengths"].min()) - 1)
                width = inputs["input_ids"].shape[1]
                logits = self.wrapped(**inputs, **_keep_logits(self.model, width - first)).logits
                first = width - logits.shape[1]  # the model may have ignored logits_to_keep
                token_losses = nn.functional.cross_entropy(
                    logits[:, :-1].flatten(0, 1).float(),
                    labels[:, first + 1 :].flatten(),
                    ignore_index=IGNORE_INDEX,
                    reduction="sum",
                )
                # DDP averages gradients over processes: scale so the result is the global mean.
                loss = token_losses * world / supervised
                if self.penalty is not None and k == 0:
                    penalty = self.penalty(step)
                    if penalty is not None:
                        loss = loss + penalty
                self.accelerator.backward(loss)
            loss_sum += float(token_losses.detach())
        if self.cfg.max_grad_norm:
            self.accelerator.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum / supervised * world, supervised, tokens, padded


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


def train_loop(
    model: nn.Module,
    trainable: Parts | None,
    rows: list[dict],
    cfg: TrainSection,
    *,
    pad_id: int,
    on_step: Callable[[StepStats], None] | None = None,
    mega_batches: int = MEGA_BATCHES,
) -> LoopSummary:
    """AdamW over the parameters that require grad, effective batch by gradient accumulation.

    The loss is the mean over the supervised (answer + EOS) tokens of the whole effective batch,
    however it is split into micro-batches or processes. Batches group similar lengths
    (:mod:`steer_cli.data.batching`; ``mega_batches=0``: plain seeded shuffling). ``cfg.seed``
    seeds the data order and every random draw of the steps (dropout), process by process.
    """
    from accelerate import Accelerator

    device = next(model.parameters()).device
    accelerator = Accelerator(cpu=device.type == "cpu")
    params = _trained_params(model, trainable)
    total = plan_steps(len(rows), cfg)
    optimizer, scheduler = _optimizer(trainable, params, cfg, total)
    wrapped, optimizer = accelerator.prepare(_Trainable(model, trainable), optimizer)
    loop = _Loop(
        model=model,
        wrapped=wrapped,
        accelerator=accelerator,
        optimizer=optimizer,
        scheduler=scheduler,
        params=params,
        cfg=cfg,
        pad_id=pad_id,
        batch_context=getattr(trainable, "batch_context", None) or (lambda batch: nullcontext()),
        penalty=getattr(trainable, "penalty", None),
    )
    order = batch_stream(
        [len(r["input_ids"]) for r in rows],
        cfg.batch_size,
        seed=cfg.seed,
        mega_batches=mega_batches,
        min_last=loop.world,  # every process gets an example of every batch
    )
    after_step = getattr(trainable, "after_step", None)
    begin_epoch = getattr(trainable, "begin_epoch", None)
    per_epoch = max(1, batches_per_epoch(len(rows), cfg.batch_size))
    if (begin_training := getattr(trainable, "begin_training", None)) is not None:
        begin_training(total)
    wrapped.train()
    start = time.perf_counter()
    tokens_total = supervised_total = padded_total = 0
    loss_value = float("nan")
    with seeded(cfg.seed + accelerator.process_index, accelerator.device):
        for step in range(1, total + 1):
            step_start = time.perf_counter()
            if begin_epoch is not None and (step - 1) % per_epoch == 0:
                begin_epoch((step - 1) // per_epoch + 1)
            batch = [rows[i] for i in next(order)]
            loss_value, supervised, step_tokens, padded = loop.step(step, batch)
            if after_step is not None:
                after_step(step)
            tokens_total += step_tokens
            supervised_total += supervised
            padded_total += padded
            if on_step:
                lrs = scheduler.get_last_lr()
                on_step(
                    StepStats(
                        step=step,
                        total_steps=total,
                        loss=loss_value,
                        lr=lrs[0],
                        group_lrs=lrs if len(set(lrs)) > 1 else None,
                        tokens=step_tokens,
                        seconds=time.perf_counter() - step_start,
                    )
                )
    wrapped.eval()
    return LoopSummary(
        steps=total,
        tokens=tokens_total,
        supervised_tokens=supervised_total,
        seconds=time.perf_counter() - start,
        final_loss=loss_value,
        padded_tokens=padded_total,
    )


# -- the command ---------------------------------------------------------------------------------


@dataclass
class TrainedRun:
    """What ``run`` leaves in memory: the results, and the trained model for further use.

    ``model`` is ``parts.model``: the model to call (for LoRA, the peft model).
    """

    results: dict
    model: nn.Module
    tokenizer: object
    parts: object  # parts.AdapterParts | LoraParts | SftParts | JointParts

    @property
    def interventions(self) -> nn.Module | None:
        """The adapters of an adapter run (None for weight-space runs)."""
        return getattr(self.parts, "interventions", None)


def run(recipe: Recipe, output: Path, *, overwrite: bool = False) -> TrainedRun:
    """Train ``recipe``, evaluate before and after, and write its run directory."""
    import yaml

    from steer_cli import models, rundir
    from steer_cli.atomic import write_json, write_text
    from steer_cli.data.encode import encode_for_training, prompt_token_ids, uses_chat_template
    from steer_cli.data.tasks import load_splits, task_for
    from steer_cli.errors import SteerError
    from steer_cli.evaluate.generation import evaluate_accuracy
    from steer_cli.parts import build_parts, count_base, kind_of, resolve_rank
    from steer_cli.report import (
        StepProgress,
        console,
        err_console,
        human_count,
        results_footer,
        results_table,
    )

    wall_start = time.perf_counter()
    staged = rundir.StagedRun(output, overwrite=overwrite)
    staged.check()
    task = task_for(recipe.data)
    splits = load_splits(task, recipe.data)

    err_console.print(f"loading model [bold]{recipe.model.name}[/]")
    # No training seed here: a base model (tiny-* included) is defined by its name alone.
    model, tokenizer = models.load_model(
        recipe.model.name, dtype=recipe.model.dtype, device=recipe.model.device
    )
    model.requires_grad_(False)
    base_params = count_base(model)
    recipe, rank_choice = resolve_rank(model, recipe)  # adapter.rank: auto -> a number
    if rank_choice is not None:
        err_console.print(rank_choice.describe(), highlight=False)
    chat = uses_chat_template(tokenizer, recipe.data.chat_template)
    train_rows, encode_stats = encode_for_training(
        tokenizer, splits["train"], chat=chat, max_length=recipe.data.max_length
    )
    if not train_rows:
        raise SteerError(
            f"no training example fits data.max_length={recipe.data.max_length}",
            "raise data.max_length",
        )
    test = splits["test"]
    test_prompts = [prompt_token_ids(tokenizer, ex.prompt, chat) for ex in test]
    max_new = recipe.eval.max_new_tokens or task.max_new_tokens

    def evaluate(label: str, model) -> tuple[dict, list[dict]]:
        with StepProgress(f"eval {label}", len(test), every=max(1, len(test) // 4)) as bar:
            return evaluate_accuracy(
                model,
                tokenizer,
                task,
                test,
                test_prompts,
                max_new_tokens=max_new,
                batch_size=recipe.eval.batch_size,
                on_batch=lambda n: bar.advance(n),
            )

    with staged as run_dir:
        write_text(run_dir / rundir.CONFIG, yaml.safe_dump(recipe.resolved(), sort_keys=False))
        results: dict = {
            "method": recipe.method,
            "kind": kind_of(recipe),
            "model": recipe.model.name,
            "task": task.name,
            "eval": {},
        }
        if rank_choice is not None:
            results["rank_search"] = rank_choice.as_dict()
        # The base model, before any part exists: right for every kind (SFT has no other time).
        if recipe.eval.before:
            results["eval"]["before"], _ = evaluate("before", model)

        parts = build_parts(model, recipe)
        model = parts.model  # for LoRA, the peft model wrapping the base
        weight_dtype = next(model.parameters()).dtype
        if parts.kind == "sft" and weight_dtype in (torch.bfloat16, torch.float16):
            # Pure low-precision AdamW rounds most small updates away (no fp32 master weights).
            err_console.print(
                f"[yellow]warning:[/] full fine-tuning with {weight_dtype} weights loses small "
                "updates; set model.dtype=float32 for faithful SFT",
                highlight=False,
            )
        trainable = parts.num_parameters()
        percent = 100 * trainable / base_params
        err_console.print(
            f"trainable parameters: [bold]{trainable:,}[/] ({human_count(trainable)}, "
            f"{percent:.4f}% of {human_count(base_params)})  ·  "
            f"{len(train_rows)} examples, {encode_stats.truncated} truncated, "
            f"{encode_stats.dropped} dropped"
        )

        metrics_path = run_dir / rundir.METRICS
        with (
            metrics_path.open("w") as metrics,
            StepProgress(
                "train", plan_steps(len(train_rows), recipe.train), every=recipe.train.log_every
            ) as bar,
        ):

            def on_step(s: StepStats) -> None:
                metrics.write(
                    json.dumps(
                        {
                            "step": s.step,
                            "loss": s.loss,
                            "lr": s.lr,
                            **({"group_lrs": s.group_lrs} if s.group_lrs else {}),
                            "tokens": s.tokens,
                            "seconds": s.seconds,
                        }
                    )
                    + "\n"
                )
                metrics.flush()
                bar.advance(
                    1, loss=f"{s.loss:.4f}", lr=f"{s.lr:.1e}", tok_s=f"{s.tokens / s.seconds:,.0f}"
                )

            summary = train_loop(
                model,
                parts,
                train_rows,
                recipe.train,
                pad_id=tokenizer.pad_token_id,
                on_step=on_step,
            )

        if parts.kind == "joint":
            with parts.mode(recipe.eval.joint_mode):
                results["eval"]["after"], records = evaluate("after", model)
            results["eval"]["after"]["joint_mode"] = recipe.eval.joint_mode
        else:
            results["eval"]["after"], records = evaluate("after", model)
        parts.save(run_dir, metadata={"base_model": recipe.model.name}, tokenizer=tokenizer)
        with (run_dir / rundir.PREDICTIONS).open("w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        results.update(
            trainable_params=trainable,
            base_params=base_params,
            trainable_percent=percent,
            steps=summary.steps,
            train_tokens=summary.tokens,
            supervised_tokens=summary.supervised_tokens,
            final_loss=summary.final_loss,
            padding_fraction=summary.padding_fraction,
            examples={"train": len(train_rows), "test": len(test), **encode_stats.as_dict()},
            train_seconds=summary.seconds,
            wall_seconds=time.perf_counter() - wall_start,
        )
        if parts.kind == "adapter":  # e.g. LoFiT's chosen heads, JoLA's open gates
            results["adapter"] = parts.interventions.summary()
        diagnostics = None
        if parts.kind == "joint":
            from steer_cli.diagnostics import joint_diagnostics

            results["joint"] = parts.summary()
            diagnostics = joint_diagnostics(
                parts, train_rows, pad_id=tokenizer.pad_token_id, seed=recipe.train.seed
            )
            write_json(run_dir / rundir.DIAGNOSTICS, diagnostics)
        write_json(run_dir / rundir.RESULTS, results)
    if diagnostics is not None and diagnostics["layers"]:
        from steer_cli.report import diagnostics_table

        console.print(diagnostics_table(diagnostics, title=f"{recipe.method} diagnostics"))
    console.print(results_table(results))
    console.print(results_footer(results), highlight=False, soft_wrap=True)
    console.print(f"run written to [bold]{output}[/]")
    return TrainedRun(results, model, tokenizer, parts)
