"""``steer train``: load the data and the model, train with :mod:`steer_cli.loop`, evaluate before
and after, and write the run directory (staged, then renamed into place)."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from steer_cli.errors import SteerError
from steer_cli.loop import StepStats, plan_steps, planned_steps, train_loop
from steer_cli.recipe import Recipe

__all__ = ["TrainedRun", "run", "train_loop", "plan_steps", "StepStats"]


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


@dataclass
class _Prepared:
    """Everything a run needs before training: the recipe (rank resolved), task, model, data."""

    recipe: Recipe
    task: object
    model: nn.Module
    tokenizer: object
    base_params: int
    rank_choice: object | None
    train_rows: list[dict]
    encode_stats: object
    test: list
    test_prompts: list[list[int]]
    data_sizes: dict

    def evaluate(self, label: str, model: nn.Module) -> tuple[dict, list[dict]]:
        """The paper's accuracy on the test split: batched greedy generation + the task's parser."""
        from steer_cli.evaluate.generation import evaluate_accuracy
        from steer_cli.report import StepProgress

        test = self.test
        with StepProgress(f"eval {label}", len(test), every=max(1, len(test) // 4)) as bar:
            return evaluate_accuracy(
                model,
                self.tokenizer,
                self.task,
                test,
                self.test_prompts,
                max_new_tokens=self.recipe.eval.max_new_tokens or self.task.max_new_tokens,
                batch_size=self.recipe.eval.batch_size,
                on_batch=lambda n: bar.advance(n),
            )


def _prepare(recipe: Recipe, *, skeleton: bool = False) -> _Prepared:
    """Load the task's splits and the model, resolve an automatic rank, tokenize the data.

    ``skeleton``: the model on the meta device, without its weights (``--dry-run``)."""
    from steer_cli import models
    from steer_cli.data.encode import encode_for_training, prompt_token_ids, uses_chat_template
    from steer_cli.data.splits import size_line, size_report
    from steer_cli.data.tasks import load_splits, task_for
    from steer_cli.errors import SteerError
    from steer_cli.parts import count_base, count_parameters, resolve_rank
    from steer_cli.report import err_console

    task = task_for(recipe.data)
    splits = load_splits(task, recipe.data)
    data_sizes = size_report(recipe.data, splits)
    err_console.print(size_line(data_sizes), markup=False, highlight=False)
    if skeleton:
        from steer_cli.models.skeleton import load_skeleton

        err_console.print(f"reading model [bold]{recipe.model.name}[/] (config, no weights)")
        model, tokenizer = load_skeleton(
            recipe.model.name, trust_remote_code=recipe.model.trust_remote_code
        )
    else:
        err_console.print(f"loading model [bold]{recipe.model.name}[/]")
        # No training seed here: a base model (tiny-* included) is defined by its name alone.
        model, tokenizer = models.load_model(
            recipe.model.name,
            dtype=recipe.model.dtype,
            device=recipe.model.device,
            trust_remote_code=recipe.model.trust_remote_code,
        )
    model.requires_grad_(False)
    base_params = count_base(model)
    recipe, rank_choice = resolve_rank(model, recipe)  # adapter.rank: auto -> a number
    if rank_choice is not None:
        err_console.print(rank_choice.describe(), highlight=False)
    count_parameters(model, recipe)  # what only the model can refuse (LoFiT's heads), up front
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
    return _Prepared(
        recipe=recipe,
        task=task,
        model=model,
        tokenizer=tokenizer,
        base_params=base_params,
        rank_choice=rank_choice,
        train_rows=train_rows,
        encode_stats=encode_stats,
        test=test,
        test_prompts=[prompt_token_ids(tokenizer, ex.prompt, chat) for ex in test],
        data_sizes=data_sizes,
    )


def _announce(parts, prepared: _Prepared) -> int:
    """Print the trainable parameters (and warn about low-precision SFT); return their count."""
    from steer_cli.report import err_console, human_count

    weight_dtype = next(parts.model.parameters()).dtype
    if parts.kind == "sft" and weight_dtype in (torch.bfloat16, torch.float16):
        # Pure low-precision AdamW rounds most small updates away (no fp32 master weights).
        err_console.print(
            f"[yellow]warning:[/] full fine-tuning with {weight_dtype} weights loses small "
            "updates; set model.dtype=float32 for faithful SFT",
            highlight=False,
        )
    trainable = parts.num_parameters()
    base = prepared.base_params
    stats = prepared.encode_stats
    err_console.print(
        f"trainable parameters: [bold]{trainable:,}[/] ({human_count(trainable)}, "
        f"{100 * trainable / base:.4f}% of {human_count(base)})  ·  "
        f"{len(prepared.train_rows)} examples, {stats.truncated} truncated, "
        f"{stats.dropped} dropped"
    )
    return trainable


def _train_logged(parts, prepared: _Prepared, metrics_path: Path, tracker, checkpointer, resume):
    """The loop, with one ``metrics.jsonl`` line per step, a progress bar and the trackers;
    from ``resume`` (a checkpoint), the metrics of the steps after it are written again."""
    from steer_cli.loop import NonFinite
    from steer_cli.report import StepProgress

    recipe = prepared.recipe
    total = planned_steps(len(prepared.train_rows), parts, recipe.train)
    done = resume.step if resume is not None else 0
    kept = metrics_path.read_text().splitlines()[:done] if done and metrics_path.is_file() else []
    metrics_path.write_text("".join(line + "\n" for line in kept))
    with (
        metrics_path.open("a") as metrics,
        StepProgress("train", total, every=recipe.train.log_every) as bar,
    ):
        if done:
            bar.advance(done)

        def on_step(s: StepStats) -> None:
            line = {"step": s.step, "loss": s.loss, "lr": s.lr}
            if s.stage is not None:
                line["stage"] = s.stage
            if s.group_lrs:
                line["group_lrs"] = s.group_lrs
            line.update(tokens=s.tokens, seconds=s.seconds, grad_norm=s.grad_norm)
            metrics.write(json.dumps(line) + "\n")
            metrics.flush()
            bar.advance(
                1, loss=f"{s.loss:.4f}", lr=f"{s.lr:.1e}", tok_s=f"{s.tokens / s.seconds:,.0f}"
            )
            if tracker is not None:
                tracker.log(_step_scalars(s), step=s.step)

        try:
            return train_loop(
                parts.model,
                parts,
                prepared.train_rows,
                recipe.train,
                pad_id=prepared.tokenizer.pad_token_id,
                on_step=on_step,
                checkpointer=checkpointer,
                resume=resume,
            )
        except NonFinite as err:
            raise SteerError(
                f"training stopped at step {err.step}: the loss is {err.loss:g} and the "
                f"gradient norm {err.grad_norm:g}",
                "lower train.lr, set train.max_grad_norm, or train.on_nonfinite=skip to skip "
                "such batches; a checkpoint, if one was saved, is kept for resuming",
            ) from None


def _step_scalars(s: StepStats) -> dict:
    """What the trackers get each step (see ``steer_cli.tracking``)."""
    values = {
        "train/loss": s.loss,
        "train/lr": s.lr,
        "train/tokens_per_second": s.tokens / s.seconds,
    }
    for k, lr in enumerate(s.group_lrs or []):
        values[f"train/lr_group{k}"] = lr
    if s.grad_norm is not None:
        values["train/grad_norm"] = s.grad_norm
    if s.stage is not None:
        values["train/stage"] = s.stage
    return values


def _evaluate_after(parts, prepared: _Prepared) -> tuple[dict, list[dict]]:
    """The trained model's accuracy; a joint run in the recipe's ``eval.joint_mode``."""
    if parts.kind != "joint":
        return prepared.evaluate("after", parts.model)
    mode = prepared.recipe.eval.joint_mode
    with parts.mode(mode):
        after, records = prepared.evaluate("after", parts.model)
    return {**after, "joint_mode": mode}, records


def _save(
    run_dir: Path, parts, prepared: _Prepared, records: list[dict], base: dict | None
) -> dict | None:
    """Write the trained parts (bound to their ``base``, see ``steer_cli.fingerprint``), the
    predictions and (joint runs) the alignment diagnostics."""
    from steer_cli import rundir
    from steer_cli.atomic import write_json
    from steer_cli.fingerprint import BASE

    recipe = prepared.recipe
    metadata = {"base_model": recipe.model.name, **({"base": base} if base else {})}
    parts.save(run_dir, metadata=metadata, tokenizer=prepared.tokenizer)
    if base is not None:
        write_json(run_dir / BASE, base)
    with (run_dir / rundir.PREDICTIONS).open("w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    if parts.kind != "joint":
        return None
    from steer_cli.diagnostics import joint_diagnostics

    diagnostics = joint_diagnostics(
        parts, prepared.train_rows, pad_id=prepared.tokenizer.pad_token_id, seed=recipe.train.seed
    )
    write_json(run_dir / rundir.DIAGNOSTICS, diagnostics)
    return diagnostics


def _report(results: dict, diagnostics: dict | None, method: str, output: Path) -> None:
    from steer_cli.report import console, diagnostics_table, results_footer, results_table

    if diagnostics is not None and diagnostics["layers"]:
        console.print(diagnostics_table(diagnostics, title=f"{method} diagnostics"))
    console.print(results_table(results))
    console.print(results_footer(results), highlight=False, soft_wrap=True)
    console.print(f"run written to [bold]{output}[/]")


@contextmanager
def recomputing(model: nn.Module, enabled: bool):
    """``train.gradient_checkpointing``: transformers' own (non-reentrant) checkpointing of each
    decoder layer while training, off again for evaluation. Adapter hooks run again in the
    recompute and give the same output (positions keep the forward's mask; JoLA's gate noise
    comes from torch's RNG, which the recompute replays)."""
    if not enabled:
        yield
        return
    # transformers 5.x names it activation checkpointing (the gradient_ names warn, and go in
    # v6); older releases have the gradient_ names alone.
    for name in ("activation_checkpointing", "gradient_checkpointing"):
        enable = getattr(model, f"{name}_enable", None)
        if callable(enable):
            break
    else:
        raise SteerError(
            f"train.gradient_checkpointing: {type(model).__name__} does not support it",
            "set train.gradient_checkpointing=false",
        )
    enable(**{f"{name}_kwargs": {"use_reentrant": False}})
    try:
        yield
    finally:
        getattr(model, f"{name}_disable")()


@contextmanager
def _tracked(recipe: Recipe, run_dir: Path, output: Path):
    """The run's trackers (None without ``train.report_to``), closed before the run directory
    moves into place; each logs under the run directory's name."""
    from steer_cli.tracking import Tracking

    if not recipe.train.trackers:
        yield None
        return
    tracker = Tracking(recipe.train.trackers, run_dir, Path(output).name, recipe.resolved())
    try:
        yield tracker.start()
    finally:
        tracker.finish()


def _log_accuracy(tracker, when: str, evaluation: dict, *, step: int) -> None:
    if tracker is not None:
        tracker.log({f"eval/{when}_accuracy": evaluation["accuracy"]}, step=step)


def _display_name(output: Path) -> str:
    """How the card names the run directory: relative to here when it is below here."""
    path = Path(output).expanduser().absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _summary_fields(prepared: _Prepared, trainable: int, summary, wall_start: float) -> dict:
    return {
        "trainable_params": trainable,
        "base_params": prepared.base_params,
        "trainable_percent": 100 * trainable / prepared.base_params,
        "steps": summary.steps,
        "train_tokens": summary.tokens,
        "supervised_tokens": summary.supervised_tokens,
        "final_loss": summary.final_loss,
        "padding_fraction": summary.padding_fraction,
        "examples": {
            "train": len(prepared.train_rows),
            "test": len(prepared.test),
            **prepared.encode_stats.as_dict(),
        },
        "train_seconds": summary.seconds,
        "wall_seconds": time.perf_counter() - wall_start,
    }


def run(
    recipe: Recipe, output: Path, *, overwrite: bool = False, restart: bool = False
) -> TrainedRun:
    """Train ``recipe``, evaluate before and after, and write its run directory; resume from
    the run's newest checkpoint unless ``restart``."""
    import shutil

    import yaml
    from accelerate import PartialState

    from steer_cli import checkpoints, rundir, tracking
    from steer_cli.atomic import write_json, write_text
    from steer_cli.card import CARD, model_card
    from steer_cli.fingerprint import identity
    from steer_cli.parts import build_parts, kind_of

    wall_start = time.perf_counter()
    from steer_cli.models import resolve_device

    # One process, or each of torchrun's / accelerate launch's (the loop's Accelerator shares
    # this state: on CPU it must be asked for, or several processes would each train alone).
    processes = PartialState(cpu=resolve_device(recipe.model.device).type == "cpu")
    if processes.is_main_process:
        staged = rundir.StagedRun(output, overwrite=overwrite, resume=not restart)
    else:  # writes nothing that stays: the main process writes the run
        staged = rundir.ShadowRun(output, resume=not restart)
    staged.check()
    tracking.check(recipe.train.trackers)
    prepared = _prepare(recipe)
    recipe = prepared.recipe
    try:
        with staged as run_dir, _tracked(recipe, run_dir, output) as tracker:
            processes.wait_for_everyone()  # the main process has kept or cleared the staging
            resume = checkpoints.resume_point(staged, recipe)
            write_text(run_dir / rundir.CONFIG, yaml.safe_dump(recipe.resolved(), sort_keys=False))
            results: dict = {
                "method": recipe.method,
                "kind": kind_of(recipe),
                "model": recipe.model.name,
                "task": prepared.task.name,
                "data": prepared.data_sizes,
                "processes": processes.num_processes,
                "device": str(next(prepared.model.parameters()).device),
                "dtype": str(next(prepared.model.parameters()).dtype).removeprefix("torch."),
                "eval": {},
            }
            if prepared.rank_choice is not None:
                results["rank_search"] = prepared.rank_choice.as_dict()
            # The base model, before any part exists: right for every kind (SFT has no other).
            if resume is not None and resume.state.get("before") is not None:
                results["eval"]["before"] = resume.state["before"]
            elif recipe.eval.before:
                results["eval"]["before"], _ = prepared.evaluate("before", prepared.model)
                _log_accuracy(tracker, "before", results["eval"]["before"], step=0)
            base = None if kind_of(recipe) == "sft" else identity(prepared.model, recipe.model.name)
            parts = build_parts(prepared.model, recipe)  # for LoRA, the peft model
            trainable = _announce(parts, prepared)
            checkpointer = checkpoints.checkpointer_for(recipe, staged, results)
            metrics = run_dir / rundir.METRICS
            with recomputing(parts.model, recipe.train.gradient_checkpointing):
                summary = _train_logged(parts, prepared, metrics, tracker, checkpointer, resume)
            results["eval"]["after"], records = _evaluate_after(parts, prepared)
            _log_accuracy(tracker, "after", results["eval"]["after"], step=summary.steps)
            diagnostics = _save(run_dir, parts, prepared, records, base)
            results.update(_summary_fields(prepared, trainable, summary, wall_start))
            if parts.kind == "adapter":  # e.g. LoFiT's chosen heads, JoLA's open gates
                results["adapter"] = parts.interventions.summary()
            if parts.kind == "joint":
                results["joint"] = parts.summary()
            write_json(run_dir / rundir.RESULTS, results)
            card = model_card(recipe, results, prepared.task, _display_name(output))
            write_text(run_dir / CARD, card)
            if not recipe.train.keep_checkpoints:
                shutil.rmtree(staged.checkpoints, ignore_errors=True)
    except BaseException:
        checkpoints.say_if_kept(staged)
        raise
    if processes.is_main_process:
        _report(results, diagnostics, recipe.method, output)
    return TrainedRun(results, parts.model, prepared.tokenizer, parts)
