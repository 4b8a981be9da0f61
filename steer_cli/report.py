"""Terminal output shared by every command: rich when on a terminal, plain lines otherwise."""

from __future__ import annotations

import os
import time

from rich.console import Console
from rich.table import Table


def _console(stderr: bool = False) -> Console:
    """Rich console; off a terminal (logs, pipes) wide enough that tables are not squeezed."""
    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, width=200)
    return console


console = _console()
err_console = _console(stderr=True)


def human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def human_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class StepProgress:
    """A progress display for ``total`` steps with live fields (loss, tok/s, ...).

    On a terminal: a rich bar with ETA. Elsewhere (CI logs, pipes): one plain line every
    ``every`` steps and at the end, so logs stay readable.
    """

    def __init__(self, label: str, total: int, *, every: int = 10, stream: Console = err_console):
        self.label = label
        self.total = total
        self.every = every
        self.stream = stream
        self.done = 0
        self.start = time.perf_counter()
        self._progress = None
        self._task = None

    def __enter__(self) -> StepProgress:
        if self.stream.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.stream,
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.label, total=self.total, info="")
        return self

    def advance(self, n: int = 1, **fields: str) -> None:
        self.done += n
        info = "  ".join(f"{k} {v}" for k, v in fields.items())
        if self._progress is not None:
            self._progress.update(self._task, advance=n, info=info)
            return
        if self.done % self.every == 0 or self.done >= self.total:
            elapsed = time.perf_counter() - self.start
            eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
            self.stream.print(
                f"{self.label} {self.done}/{self.total}  {info}  eta {human_duration(eta)}",
                highlight=False,
                soft_wrap=True,
            )

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def results_table(results: dict) -> Table:
    """The accuracy table printed at the end of ``steer train``."""
    table = Table(title=f"{results['method']} on {results['task']} ({results['model']})")
    table.add_column("")
    table.add_column("accuracy", justify="right")
    table.add_column("correct", justify="right")
    for label, key in (("base model", "before"), ("trained", "after")):
        ev = results.get("eval", {}).get(key)
        if ev:
            table.add_row(label, f"{100 * ev['accuracy']:.1f}%", f"{ev['correct']}/{ev['total']}")
    pairs = results.get("eval", {}).get("preferences")
    if pairs and pairs.get("pairs"):  # DPO: the held-out pairs the trained model ranks right
        right = round(pairs["accuracy"] * pairs["pairs"])
        table.add_row(
            f"held-out pairs (margin {pairs['reward_margin']:+.3f})",
            f"{100 * pairs['accuracy']:.1f}%",
            f"{right}/{pairs['pairs']}",
        )
    return table


def results_footer(results: dict) -> str:
    return (
        f"trainable {human_count(results['trainable_params'])} params "
        f"({results['trainable_percent']:.4f}% of {human_count(results['base_params'])})  ·  "
        f"{results['steps']} steps  ·  train {human_duration(results['train_seconds'])}  ·  "
        f"total {human_duration(results['wall_seconds'])}"
    )


def method_summary(recipe) -> dict[str, str]:
    """Where and how a resolved recipe's method steers, in words for the methods table."""
    from steer_cli.methods import METHODS

    method = METHODS[recipe.method]
    targets = ",".join(t.removesuffix("_proj") for t in recipe.lora.target_modules)
    lora = f"LoRA r={recipe.lora.rank}"
    a = recipe.adapter
    how = a.parameterization
    if a.parameterization in ("lowrank", "loreft"):
        how += f" r={a.rank}"
    if a.parameterization == "lowrank":
        how += " linear" if a.activation == "none" else f" {a.activation}"
    if method.kind == "lora":
        where, how = f"weights: {targets}", lora
    elif method.kind == "sft":
        where, how = "all weights", "full"
    elif method.kind == "joint":
        where, how = f"{a.site} + weights: {targets}", f"{how} + {lora}"
        if recipe.orth.enabled:
            how += f" (orth {recipe.orth.side})"
    else:
        where = a.site
    positions = recipe.adapter.positions if method.kind in ("adapter", "joint") else "all"
    return {"kind": method.kind, "site": where, "parameterization": how, "positions": positions}


def methods_table(
    recipes: dict,
    counts: dict[str, int | None] | None = None,
    base_params: int | None = None,
    model: str | None = None,
) -> Table:
    """``steer methods``: every preset, and with a model its trainable parameters."""
    from steer_cli.methods import METHODS

    title = "methods" if model is None else f"methods on {model} ({human_count(base_params)})"
    table = Table(title=title)
    for column in ("method", "kind", "site", "parameterization", "positions"):
        table.add_column(column, no_wrap=column == "method")
    table.add_column("lr", justify="right")
    if counts is not None:
        table.add_column("params", justify="right")
        table.add_column("% of base", justify="right")
    table.add_column("description")
    for name, recipe in recipes.items():
        summary = method_summary(recipe)
        lr = f"{recipe.train.lr:g}"
        if summary["kind"] == "joint":  # the adapter's, then LoRA's
            lr += f" / {recipe.lora.lr:g}"
        row = [name, *summary.values(), lr]
        if counts is not None:
            n = counts.get(name)
            row += ["-", "-"] if n is None else [f"{n:,}", f"{100 * n / base_params:.4f}%"]
        table.add_row(*row, METHODS[name].description)
    return table


def diagnostics_table(diagnostics: dict, title: str = "joint diagnostics") -> Table:
    """Per layer: how aligned the adapter's and LoRA's shifts and subspaces are, and norms."""

    def num(value, fmt: str = ".3f") -> str:
        return "-" if value is None else format(value, fmt)

    chance = next(
        (r["subspace_overlap"]["chance"] for r in diagnostics["layers"] if "subspace_overlap" in r),
        None,
    )
    table = Table(
        title=f"{title} ({diagnostics['sample']['examples']} training examples)",
        caption=(
            "cos: adapter shift vs LoRA's shift of the MLP output, per token · |cos| B: vs what "
            "LoRA's o/down_proj write through B · overlap: top-k "
            f"singular subspaces of W_up and LoRA's B (chance {num(chance, '.3f')}) · in span: "
            "||Q^T W_up|| / ||W_up||, Q spanning [B_o, B_down]"
        ),
    )
    for column in (
        "layer",
        "mean |cos|",
        "cos q05..q95",
        "|cos| B",
        "overlap down",
        "overlap o",
        "W_up in span",
        "||W_up||",
        "||W_down||",
        "|Δ adapter|",
        "|Δ LoRA|",
    ):
        table.add_column(column, justify="right")
    for row in diagnostics["layers"]:
        cos = row["shift_cosine"]
        q = cos.get("quantiles", {})
        overlap = row.get("subspace_overlap", {})
        norms = row.get("norms", {})
        spread = f"{num(q.get('0.05'), '+.2f')}..{num(q.get('0.95'), '+.2f')}" if q else "-"
        table.add_row(
            str(row["layer"]),
            num(cos.get("mean_abs")),
            spread,
            num(row.get("writer_cosine", {}).get("mean_abs"), ".1e"),
            num(overlap.get("down_proj")),
            num(overlap.get("o_proj")),
            num(row.get("W_up_in_lora_span"), ".1e"),
            num(norms.get("W_up_fro"), ".3g"),
            num(norms.get("W_down_fro"), ".3g"),
            num(row["adapter_shift_norm"], ".3g"),
            num(row["lora_shift_norm"], ".3g"),
        )
    return table
