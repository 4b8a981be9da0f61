"""``steer eval`` behind the CLI: load what to evaluate, run one protocol, write ``eval/`` files.

A *target* is a run directory (base model + the run's trained parts, any kind) or a plain model
(``smollm2-135m``, ``tiny-*``, a hub id, a local model directory). Protocols:

- ``harness``: lm-evaluation-harness in-process (:mod:`steer_cli.evaluate.harness`), any lm-eval
  task plus the bundled ``steer_*`` tasks;
- ``paper``: the run's own end-of-training evaluation (greedy generation + the task's parser on
  the recipe's test split, :func:`steer_cli.evaluate.generation.evaluate_accuracy`), for numbers
  that line up with ``results.json`` and the published tables;
- ``alpaca``: AlpacaEval-style pairwise judging (:mod:`steer_cli.evaluate.instructions`), which
  writes its own files into ``RUN_DIR/eval/alpaca/``.

A harness or paper evaluation writes ``<protocol>-<time>.json`` (``summary`` + the protocol's
``results``, and ``baseline_results`` with ``--baseline``) and, on request,
``<protocol>-<time>.samples.jsonl`` (and ``.baseline.samples.jsonl``) into ``RUN_DIR/eval/`` (or
``--output DIR``).

Like for like: a run is prompted as it was trained (its chat template or none), a plain model as
lm-eval prompts it (no chat template), so a run's numbers and its base model's from two commands
may differ by the prompt alone. ``--baseline`` scores the run's base model in the same command,
under the run's prompts; every table says which prompts it used.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from steer_cli import rundir
from steer_cli.atomic import write_text
from steer_cli.errors import SteerError

PROTOCOLS = ("harness", "paper", "alpaca")
EVAL_DIR = "eval"


@dataclass
class Target:
    """What ``steer eval`` evaluates: a loaded model and, for a run, its recipe and parts."""

    spec: str
    model: object
    tokenizer: object
    run_dir: Path | None = None
    recipe: object | None = None
    parts: object | None = field(default=None, repr=False)
    device: str | None = None  # as asked for (None: the run's own, or auto)
    dtype: str | None = None

    @property
    def base_model(self) -> str:
        return self.recipe.model.name if self.recipe is not None else self.spec

    @property
    def method(self) -> str | None:
        return self.recipe.method if self.recipe is not None else None

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """The model as the run evaluated it: a joint run in its recipe's ``eval.joint_mode``."""
        if self.parts is not None and getattr(self.parts, "kind", None) == "joint":
            with self.parts.mode(self.recipe.eval.joint_mode):
                yield
        else:
            yield

    @contextmanager
    def base(self) -> Iterator[Target]:
        """The run's base model, with the run's tokenizer: its trained parts off (an SFT run's
        weights are the trained part: the base model is loaded beside it)."""
        if self.recipe is None:
            raise SteerError(f"{self.spec} is a model, not a run: it has no base model")
        name = self.recipe.model.name
        if getattr(self.parts, "kind", None) != "sft":
            with self.parts.disabled():
                yield Target(name, self.model, self.tokenizer)
            return
        from steer_cli import models

        model, tokenizer = models.load_model(
            name,
            dtype=self.dtype or self.recipe.model.dtype,
            device=self.device or self.recipe.model.device,
        )
        model.requires_grad_(False)
        try:
            yield Target(name, model, tokenizer)
        finally:
            del model
            gc.collect()


def load_target(
    spec: str, *, device: str | None = None, dtype: str | None = None, force: bool = False
) -> Target:
    """A run directory (it has ``config.yaml``) or anything ``models.load_model`` takes
    (``force``: load a run onto a same-shape base with other weights)."""
    from steer_cli import models
    from steer_cli.runs import load_run, read_config

    path = run_dir_of(spec)
    if path is not None:
        recipe = read_config(path)
        model, tokenizer, parts = load_run(path, device=device, dtype=dtype, force=force)
        return Target(spec, model, tokenizer, path, recipe, parts=parts, device=device, dtype=dtype)
    model, tokenizer = models.load_model(spec, dtype=dtype or "auto", device=device or "auto")
    model.requires_grad_(False)
    return Target(spec, model, tokenizer, device=device, dtype=dtype)


def run_dir_of(spec: str) -> Path | None:
    """The run directory ``spec`` names, None for a model name or model directory; anything else
    (a missing path, a folder that is neither, a run without its trained parts) is an error
    before any model loads."""
    from steer_cli.models.hub import looks_like_path
    from steer_cli.runs import check_finished

    path = Path(spec).expanduser()
    if rundir.is_run_dir(path):
        check_finished(path)
        return path
    if path.is_dir() and not (path / "config.json").is_file():
        raise SteerError(
            f"{spec} is neither a run directory (no {rundir.CONFIG}) nor a model directory "
            "(no config.json)",
            "pass a directory written by `steer train`, or a model name",
        )
    if not path.exists() and looks_like_path(spec):
        raise SteerError(
            f"no run directory or model at {spec}",
            "pass a directory written by `steer train`, a model directory, or a model name "
            "(smollm2-135m, tiny-llama, a hub id)",
        )
    return None


def check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise SteerError(f"--limit {limit} is not a positive number of examples", "e.g. --limit 50")


def output_dir(spec: str, output: Path | None) -> Path | None:
    """``--output DIR``, else ``RUN_DIR/eval``; None for a plain model (nothing is written unless
    ``--output`` says where, as with lm-eval's own CLI)."""
    if output is not None:
        return output
    return Path(spec).expanduser() / EVAL_DIR if rundir.is_run_dir(spec) else None


def data_paths(items: list[str], tasks: list[str]) -> dict[str, str]:
    """``--data [TASK=]PATH`` options -> ``{task: path}``; a bare PATH is for the one bundled
    task among ``tasks``."""
    from steer_cli.evaluate.harness import BUNDLED

    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            bundled = [t for t in tasks if t in BUNDLED]
            if len(bundled) != 1:
                raise SteerError(
                    f"--data {item}: which task is it for?",
                    "write --data TASK=PATH, e.g. --data steer_boolq=data/boolq/",
                )
            name, path = bundled[0], item
        out[name] = path
    return out


def summary(target: Target, protocol: str, **fields) -> dict:
    """The record a script reads: what was evaluated, how, and the metrics."""
    return {
        "protocol": protocol,
        "model": target.base_model,
        "run": str(target.run_dir) if target.run_dir is not None else None,
        "method": target.method,
        **fields,
    }


@dataclass
class Evaluation:
    """One protocol's outcome: the summary a script reads, the protocol's full results, the
    per-sample records, and (``--baseline``) the base model's results under the same prompts."""

    record: dict
    results: dict
    samples: list[dict]
    baseline_results: dict | None = None
    baseline_samples: list[dict] | None = None


def run_harness(
    target: Target,
    tasks: list[str],
    *,
    apply_chat_template: bool | None,
    baseline: bool = False,
    **options,
) -> Evaluation:
    """lm-eval on ``target``. ``apply_chat_template`` None: as the run was trained (its recipe's
    ``data.chat_template``), off for a plain model (lm-eval's default). ``baseline``: also the
    run's base model, same tasks, options and prompts."""
    from steer_cli.evaluate import harness

    if apply_chat_template is None:
        apply_chat_template = _run_chat(target)
    start = time.perf_counter()
    with target.evaluating():
        results = harness.evaluate(
            target.model,
            target.tokenizer,
            tasks,
            apply_chat_template=apply_chat_template,
            **options,
        )
    base_results = None
    if baseline:
        with target.base() as base:
            base_results = harness.evaluate(
                base.model,
                base.tokenizer,
                tasks,
                apply_chat_template=apply_chat_template,
                **options,
            )
    seconds = time.perf_counter() - start
    samples = _samples(results)
    base_samples = _samples(base_results) if base_results is not None else None
    record = summary(
        target,
        "harness",
        tasks=list(tasks),
        metrics=harness.metrics(results),
        n_samples=harness.sample_counts(results),
        limit=options.get("limit"),
        num_fewshot=options.get("num_fewshot"),
        apply_chat_template=apply_chat_template,
        seconds=round(seconds, 3),
    )
    if base_results is not None:
        record["baseline"] = {
            "model": target.base_model,
            "metrics": harness.metrics(base_results),
            "n_samples": harness.sample_counts(base_results),
        }
    return Evaluation(record, results, samples, base_results, base_samples)


def _samples(results: dict) -> list[dict]:
    """lm-eval's per-task samples (taken out of ``results``), one record each."""
    return [
        {"task": task, **record}
        for task, records in (results.pop("samples", None) or {}).items()
        for record in records
    ]


def _run_chat(target: Target) -> bool:
    if target.recipe is None:
        return False
    from steer_cli.data.encode import uses_chat_template

    return uses_chat_template(target.tokenizer, target.recipe.data.chat_template)


def run_paper(
    target: Target,
    *,
    limit: int | None = None,
    batch_size: int | None = None,
    baseline: bool = False,
) -> Evaluation:
    """The run's own evaluation (as at the end of ``steer train``) on its recipe's test split:
    results ``{accuracy, correct, total}`` and one sample per example. ``baseline``: also the
    run's base model on the same prompts (what ``results.json`` calls ``before``)."""
    from steer_cli.data.tasks import load_splits, task_for

    recipe = target.recipe
    if recipe is None:
        raise SteerError(
            "--protocol paper evaluates a run: its recipe names the task and the test split",
            f"pass a run directory instead of {target.spec}, or use --protocol harness --tasks",
        )
    task = task_for(recipe.data)
    test = load_splits(task, recipe.data)["test"][:limit]
    chat = _run_chat(target)
    options = dict(
        max_new_tokens=recipe.eval.max_new_tokens or task.max_new_tokens,
        batch_size=batch_size or recipe.eval.batch_size,
    )
    start = time.perf_counter()
    with target.evaluating():
        results, records = _accuracy(target, task, test, chat, **options)
    base_results = None
    if baseline:
        with target.base() as base:
            base_results, _ = _accuracy(base, task, test, chat, **options)
    seconds = time.perf_counter() - start
    trained = _trained_results(target.run_dir)
    record = summary(
        target,
        "paper",
        tasks=[task.name],
        metrics={task.name: {"acc,paper": results["accuracy"]}},
        n_samples={task.name: results["total"]},
        limit=limit,
        apply_chat_template=chat,
        trained_accuracy=trained.get("after"),
        trained_before=trained.get("before"),
        seconds=round(seconds, 3),
    )
    if base_results is not None:
        record["baseline"] = {
            "model": target.base_model,
            "metrics": {task.name: {"acc,paper": base_results["accuracy"]}},
            "n_samples": {task.name: base_results["total"]},
        }
    return Evaluation(record, results, records, base_results)


def _accuracy(target: Target, task, test: list, chat: bool, **options) -> tuple[dict, list]:
    from steer_cli.data.encode import prompt_token_ids
    from steer_cli.evaluate.generation import evaluate_accuracy

    prompts = [prompt_token_ids(target.tokenizer, ex.prompt, chat) for ex in test]
    return evaluate_accuracy(target.model, target.tokenizer, task, test, prompts, **options)


def _trained_results(run_dir: Path) -> dict[str, float]:
    """The test accuracies the run recorded in training (results.json): ``after``, and
    ``before`` (its base model, same prompts) where the recipe's ``eval.before`` asked."""
    path = run_dir / rundir.RESULTS
    try:
        scores = json.loads(path.read_text())["eval"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    out = {}
    for key in ("after", "before"):
        value = (scores.get(key) or {}).get("accuracy") if isinstance(scores, dict) else None
        if isinstance(value, int | float):
            out[key] = value
    return out


def write_outputs(out_dir: Path, evaluation: Evaluation, *, samples: bool) -> list[Path]:
    """``<protocol>-<time>.json`` (+ ``.samples.jsonl``), each written atomically."""
    record = evaluation.record
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    stem = out_dir / f"{record['protocol']}-{stamp}"
    main = stem.with_name(stem.name + ".json")
    document = {"summary": record, "results": evaluation.results}
    if evaluation.baseline_results is not None:
        document["baseline_results"] = evaluation.baseline_results
    write_text(main, json.dumps(document, indent=2, default=_jsonable) + "\n")
    written = [main]
    if samples:
        kept = [("samples", evaluation.samples), ("baseline.samples", evaluation.baseline_samples)]
        for name, records in kept:
            if records is None:
                continue
            path = stem.with_name(f"{stem.name}.{name}.jsonl")
            write_text(path, "".join(json.dumps(r, default=_jsonable) + "\n" for r in records))
            written.append(path)
    return written


def prompts_text(record: dict) -> str:
    """Which prompts a summary's numbers were measured with: a run's and a model's numbers are
    comparable only under the same ones."""
    chat = record.get("apply_chat_template")
    return "prompts unrecorded" if chat is None else "chat template" if chat else "no chat template"


def table(record: dict):
    """The terminal view of a summary: one row per task and metric, stderr beside its value, and
    with ``--baseline`` the base model's value and the difference; the title says the prompts."""
    from rich import box
    from rich.table import Table

    what = record["run"] or record["model"]
    title = f"steer eval · {record['protocol']} · {what}"
    if record["method"]:
        title += f" ({record['method']} on {record['model']})"
    title += f" · {prompts_text(record)}"
    base = record.get("baseline")
    out = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    columns = ["task", "metric", "filter", "value", "± stderr"]
    columns += ["base", "Δ"] if base else []
    for column in [*columns, "n"]:
        out.add_column(
            column, justify="left" if column in ("task", "metric", "filter") else "right"
        )
    for task, values in record["metrics"].items():
        n = record["n_samples"].get(task)
        for key, value in values.items():
            metric, _, filt = key.partition(",")
            if metric.endswith("_stderr"):
                continue
            stderr = values.get(f"{metric}_stderr,{filt}")
            cells = [task, metric, filt, f"{value:.4f}", _number(stderr)]
            if base:
                theirs = base["metrics"].get(task, {}).get(key)
                delta = value - theirs if isinstance(theirs, int | float) else None
                cells += [_number(theirs), "" if delta is None else f"{delta:+.4f}"]
            out.add_row(*cells, "" if n is None else str(n))
    caption = []
    if base:
        caption.append(f"base: {base['model']}, the run's base model, same prompts and options")
    if record.get("trained_accuracy") is not None:
        line = f"results.json (end of training): {record['trained_accuracy']:.4f}"
        if record.get("trained_before") is not None:
            line += f", before training: {record['trained_before']:.4f}"
        caption.append(line)
    if caption:
        out.caption = "\n".join(caption)
        out.caption_justify = "left"
    return out


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else ""


def _jsonable(value):
    """lm-eval's results hold numpy scalars, dtypes and the odd callable: numbers or text."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    return str(value)
