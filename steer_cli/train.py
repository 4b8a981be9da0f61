"""``steer train``: load the data and the model, train with :mod:`steer_cli.loop`, evaluate before
and after, and write the run directory (staged, then renamed into place)."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from steer_cli.errors import SteerError
from steer_cli.loop import StepStats, plan_steps, planned_steps, train_loop
from steer_cli.prepare import Prepared, announce, prepare
from steer_cli.recipe import Recipe
from steer_cli.recompute import recomputing

__all__ = ["TrainedRun", "run", "train_loop", "plan_steps", "StepStats", "recomputing"]


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


def _train_logged(
    parts, prepared: Prepared, metrics_path: Path, tracker, checkpointer, resume, objective
):
    """The loop, with one ``metrics.jsonl`` line per step, a progress bar and the trackers;
    from ``resume`` (a checkpoint), the metrics of the steps after it are written again."""
    from steer_cli.loop import NonFinite
    from steer_cli.report import StepProgress

    recipe = prepared.recipe
    passes = getattr(objective, "passes", 1)
    total = planned_steps(len(prepared.train_rows), parts, recipe.train, passes)
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
            line.update(s.metrics or {})
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
                objective=objective,
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
    values.update({f"train/{k}": v for k, v in (s.metrics or {}).items()})
    return values


def _evaluate_after(parts, prepared: Prepared, objective) -> tuple[dict, list[dict], dict | None]:
    """The trained model's accuracy, and (DPO) its held-out preference figures; a joint run
    in the recipe's ``eval.joint_mode``."""
    joint = parts.kind == "joint"
    mode = prepared.recipe.eval.joint_mode
    with parts.mode(mode) if joint else nullcontext():
        after, records = prepared.evaluate("after", parts.model)
        preferences = None
        if prepared.preference_test is not None:
            from steer_cli.objectives import evaluate_preferences

            preferences = evaluate_preferences(
                objective,
                parts.model,
                prepared.preference_test,
                pad_id=prepared.tokenizer.pad_token_id,
                batch_size=prepared.recipe.eval.batch_size,
                batch_context=getattr(parts, "batch_context", None),
            )
    return ({**after, "joint_mode": mode} if joint else after), records, preferences


def _save(
    run_dir: Path, parts, prepared: Prepared, records: list[dict], base: dict | None
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

    rows = prepared.train_rows
    if recipe.train.objective == "dpo":  # pairs: the preferred answers' sequences
        rows = [pair["chosen"] for pair in rows]
    diagnostics = joint_diagnostics(
        parts, rows, pad_id=prepared.tokenizer.pad_token_id, seed=recipe.train.seed
    )
    write_json(run_dir / rundir.DIAGNOSTICS, diagnostics)
    return diagnostics


def _frozen_reference(prepared: Prepared, recipe: Recipe) -> nn.Module | None:
    """DPO (or GRPO with a KL term) on full fine-tuning: a frozen copy of the base model, its
    reference (the other kinds disable their parts instead); announced, as it doubles the
    weights' memory."""
    from steer_cli.objectives import needs_reference
    from steer_cli.parts import kind_of

    if not needs_reference(recipe) or kind_of(recipe) != "sft":
        return None
    from steer_cli.objectives import frozen_copy
    from steer_cli.report import err_console

    err_console.print(
        f"{recipe.train.objective.upper()} with full fine-tuning: a frozen copy of the model is "
        "the reference (the weights' memory twice)",
        highlight=False,
    )
    return frozen_copy(prepared.model)


def _report(results: dict, diagnostics: dict | None, method: str, output: Path) -> None:
    from steer_cli.report import console, diagnostics_table, results_footer, results_table

    if diagnostics is not None and diagnostics["layers"]:
        console.print(diagnostics_table(diagnostics, title=f"{method} diagnostics"))
    console.print(results_table(results))
    console.print(results_footer(results), highlight=False, soft_wrap=True)
    console.print(f"run written to [bold]{output}[/]")


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


def _results_head(prepared: Prepared, processes: int) -> dict:
    """What ``results.json`` says before training: what ran, on what, and how."""
    from steer_cli.parts import kind_of

    recipe = prepared.recipe
    weights = next(prepared.model.parameters())
    results: dict = {
        "method": recipe.method,
        "kind": kind_of(recipe),
        "objective": recipe.train.objective,
        "model": recipe.model.name,
        "task": prepared.task.name,
        "data": prepared.data_sizes,
        "processes": processes,
        "device": str(weights.device),
        "dtype": str(weights.dtype).removeprefix("torch."),
        "eval": {},
    }
    if prepared.rank_choice is not None:
        results["rank_search"] = prepared.rank_choice.as_dict()
    return results


def _summary_fields(prepared: Prepared, parts, trainable: int, summary, wall_start: float) -> dict:
    """What ``results.json`` says after training: sizes, steps, tokens, times, and what the
    parts ended with (LoFiT's chosen heads, JoLA's open gates, a joint run's projections)."""
    fields = {
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
        **({"resumed_from": summary.resumed_from} if summary.resumed_from is not None else {}),
        "train_seconds": summary.seconds,
        "wall_seconds": time.perf_counter() - wall_start,
    }
    if parts.kind == "adapter":
        fields["adapter"] = parts.interventions.summary()
    if parts.kind == "joint":
        fields["joint"] = parts.summary()
    return fields


def _start(prepared: Prepared, resume, results: dict, tracker):
    """The parts to train (from ``train.init_from``'s when set), the base's identity, the
    objective; and the evaluation before training into ``results`` (or the checkpoint's): of
    the base model, before any part exists (right for every kind; SFT has no other), or of the
    parts training starts from."""
    from steer_cli.fingerprint import identity
    from steer_cli.objectives import objective_for
    from steer_cli.parts import build_parts, kind_of
    from steer_cli.warmstart import start_from

    recipe = prepared.recipe
    warm = recipe.train.init_from is not None
    before = resume.state.get("before") if resume is not None else None
    if before is not None:
        results["eval"]["before"] = before
    elif recipe.eval.before and not warm:
        results["eval"]["before"], _ = prepared.evaluate("before", prepared.model)
        _log_accuracy(tracker, "before", results["eval"]["before"], step=0)
    base = None if kind_of(recipe) == "sft" else identity(prepared.model, recipe.model.name)
    parts = build_parts(prepared.model, recipe)  # for LoRA, the peft model
    if warm:
        start_from(parts, recipe, prepared.model)
        if before is None and recipe.eval.before:
            results["eval"]["before"], _ = prepared.evaluate("before", parts.model)
            _log_accuracy(tracker, "before", results["eval"]["before"], step=0)
    reference = _frozen_reference(prepared, recipe)  # SFT: of the weights it starts from
    objective = objective_for(
        recipe, parts, reference, task=prepared.task, tokenizer=prepared.tokenizer
    )
    return parts, base, objective


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
    from steer_cli.warmstart import check_start

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
    check_start(recipe)
    prepared = prepare(recipe)
    recipe = prepared.recipe
    try:
        with staged as run_dir, _tracked(recipe, run_dir, output) as tracker:
            processes.wait_for_everyone()  # the main process has kept or cleared the staging
            resume = checkpoints.resume_point(staged, recipe)
            write_text(run_dir / rundir.CONFIG, yaml.safe_dump(recipe.resolved(), sort_keys=False))
            results = _results_head(prepared, processes.num_processes)
            parts, base, objective = _start(prepared, resume, results, tracker)
            trainable = announce(parts, prepared)
            checkpointer = checkpoints.checkpointer_for(recipe, staged, results)
            metrics = run_dir / rundir.METRICS
            with recomputing(parts.model, recipe.train.gradient_checkpointing):
                summary = _train_logged(
                    parts, prepared, metrics, tracker, checkpointer, resume, objective
                )
            results["eval"]["after"], records, preferences = _evaluate_after(
                parts, prepared, objective
            )
            if preferences is not None:
                results["eval"]["preferences"] = preferences
                if tracker is not None:
                    figures = {k: preferences[k] for k in ("accuracy", "reward_margin")}
                    tracker.log(
                        {f"eval/preference_{k}": v for k, v in figures.items()}, step=summary.steps
                    )
            _log_accuracy(tracker, "after", results["eval"]["after"], step=summary.steps)
            diagnostics = _save(run_dir, parts, prepared, records, base)
            results.update(_summary_fields(prepared, parts, trainable, summary, wall_start))
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
