"""The fixed sections of ``docs/claims.md``: the setting, how the verdicts are made, every run,
the oracle's KL table and what is not measured (:mod:`claims_report` puts the page together)."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from claims_paper import in_words, prose, size_text
from claims_runs import Context, cell_interval, majority
from claims_verdicts import ALPHA, Claim


def recipe_rows(ctx: Context, keys: list[str]) -> list[str]:
    rows = [
        "| recipe | method | trainable | LR grid: validation accuracy (%) | LR | steps "
        "| test accuracy per seed (%) | mean ± std | 95% interval |",
        "|---|---|---:|---|---:|---:|---|---:|---:|",
    ]
    for key in keys:
        cell = ctx.cell(key)
        if not cell.n:
            rows.append(f"| `{key}` | | | | | | not run | | |")
            continue
        config = cell.config
        per_seed = ", ".join(f"{s}: {v:.1f}" for s, v in zip(cell.seeds, cell.scores, strict=True))
        lr = f"{config['train']['lr']:g}"
        stage1 = (config.get("adapter") or {}).get("lofit_lr_stage1")
        if config["method"] == "lofit" and stage1:  # LoFiT's two trainings
            lr = f"{stage1:g}, then {lr}"
        grid = ", ".join(f"{g:g}: {v:.1f}" for g, v in cell.validation.items()) or "no sweep"
        spread = cell_interval(ctx, key)
        interval = f"[{spread.low:.1f}, {spread.high:.1f}]" if spread else ""
        rows.append(
            f"| `{key}` | {config['method']} | {cell.params:.4f}% | {grid} | {lr} "
            f"| {cell.results[0]['steps']} | {per_seed} | {cell.mean:.1f} ± {cell.std:.1f} "
            f"| {interval} |"
        )
    return rows


def first_run(ctx: Context, keys: list[str]):
    """The first recipe that ran (its cell), or ``None``."""
    return next((ctx.cell(k) for k in keys if ctx.cell(k).n), None)


def _trials(ctx: Context, keys: list[str]) -> list[dict]:
    """results.json of every trial that ran (validation and test), for the cost line."""
    import json

    return [
        json.loads(path.read_text()) for k in keys for path in (ctx.runs / k).glob("*/results.json")
    ]


def setting(ctx: Context, keys: list[str]) -> list[str]:
    first = first_run(ctx, keys)
    if first is None:
        return ["No run has finished yet: run `make claims`."]
    config = first.config
    data = config["data"]
    trials = _trials(ctx, keys)
    wall = sum(r["wall_seconds"] for r in trials)
    tested = sum(ctx.cell(k).n for k in keys)
    before = ctx.cell("location/postblock")
    base = ""
    if before.n:
        untrained = (before.results[0]["eval"].get("before") or {}).get("accuracy")
        if untrained is not None:
            base = f" The base model, untrained, scores {100 * untrained:.1f}%"
            base += f"; always answering the most common value, {majority(before.runs[0]):.1f}%."
    listops = data.get("listops") or {}
    embedded = " (the embedded default)" if config["model"]["name"] == "smollm2-135m" else ""
    steps = first.results[0]["steps"]
    grid = len(next(iter(ctx.grids.values()), [])) or len(first.validation)
    return [
        f"- **Model**: `{config['model']['name']}`{embedded}. **Task**: generated "
        f"ListOps, depth at most {listops.get('depth')}, arity at most {listops.get('arity')}; "
        f"{data['train_size']} training expressions ({_epochs(config['train']['epochs'])}, "
        "batches of "
        f"{config['train']['batch_size']}), {data['validation_size']} validation expressions "
        f"for picking the LR, {data['test_size']} held-out test expressions, all disjoint (one "
        f"seeded stream, cut test first).{base}",
        f"- **Learning rates**: picked on validation, the paper's protocol (it picks each LR "
        f"from {in_words(prose('lr_grid'))} values): each recipe runs its method's "
        f"{in_words(grid)} middle value{'s' if grid != 1 else ''} (the preset and its "
        "neighbours; the rank-1 adapter "
        "takes the grid of the methods that train as few parameters, the adapter matched to "
        "LoRA's count LoRA's), one run each scored on the validation split, then the seeds at "
        "the best one. Schedules are the paper's: SFT and LoRA cosine with warmup, the "
        "activation methods constant.",
        "- **Seeds**: " + ", ".join(str(s) for s in first.seeds) + " per recipe at its LR; a "
        "score is the mean ± sample std over seeds. Every run is scored on the same test items, "
        "so intervals count both: **95% intervals** are steer compare's two-way bootstrap over "
        "seeds and test items, and pairs are paired over both (see 'How the verdicts are "
        "made').",
        f"- **Cost**: {len(trials)} runs ({tested} on test, the rest on validation), "
        f"{wall / 60:.0f} min of wall time on {os.cpu_count()} CPU cores ({platform.machine()}, "
        f"torch {_version('torch')}, transformers {_version('transformers')}, peft "
        f"{_version('peft')}).",
        f"- **Scale**: {steps} optimizer steps (LoFiT: that, twice) of a "
        f"{size_text(first.results[0]['base_params'])} model, against the paper's {_paper_sizes()} "
        "models on full datasets. 'Inconclusive at this scale' means what it says; each claim "
        "says what limits it.",
    ]


def method_section(found: list[Claim]) -> list[str]:
    """How the verdicts are made, and the family Holm's correction runs over."""
    family = [(n, c) for n, c in enumerate(found, 1) if c.finding.adjusted is not None]
    rows = [
        "| # | claim | one-sided p | Holm-adjusted | reverse, Holm-adjusted | verdict |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for n, claim in family:
        test, (g, s) = claim.finding.test, claim.finding.adjusted
        rows.append(
            f"| [{n}](#{n}) | {claim.title} | {test.p_greater:.4f} | {g:.4f} | {s:.4f} "
            f"| {claim.finding.verdict} |"
        )
    return [
        "## How the verdicts are made",
        "",
        "Every rule has three outcomes, fixed before the numbers: **shown**, **opposite**, or "
        "**inconclusive at this scale**.",
        "",
        "- **Pairs of recipes** are read through steer compare's own code "
        "(`steer_cli.compare`): the mean of the per-(seed, item) differences over the seeds both "
        "ran and the test items both were scored on, and its 95% interval, a two-way percentile "
        "bootstrap that resamples seeds and items independently (scipy.stats.bootstrap, 9999 "
        "resamples).",
        "- **'Beats' claims** are one-sided at 95%. p is the share of the same bootstrap's "
        "resampled mean differences at or below 0 (above 0 for the reverse test); the diagnostic "
        "claims over seeds use Welch's or a one-sample t-test, the error-control claim Kendall's "
        "rank correlation. Holm's correction runs over every one-sided test of the report "
        f"({in_words(len(family))}, below): shown where the Holm-adjusted p is at most "
        f"{ALPHA:g}, opposite where the reverse test's is.",
        "- **'Matches' claims** are tested against a margin M stated before measuring, the "
        "paper's own gap (from steer_cli.published, named in each rule): shown when the whole 95% "
        "interval of A − B lies above −M, opposite when it lies wholly below −M. 'Adds little' is "
        "the mirror image.",
        "- **The oracle's descriptive numbers** (an MLP share, an effective rank, an error) are "
        "read on each half of its sample of prompts: shown when both halves agree with the "
        "claim, opposite when both contradict it. The linear maps are fitted on one half and "
        "scored on the other.",
        "",
        *rows,
        "",
    ]


def _epochs(n: int) -> str:
    return f"{in_words(n)} epoch" + ("s" if n != 1 else "")


def _paper_sizes() -> str:
    """The range of the paper's model sizes, from the names of its tables' models: "1B–8B"."""
    from steer_cli import published

    sizes = [
        float(found.group(1))
        for table in published.PUBLISHED.values()
        for model in table.models
        if (found := re.search(r"(\d+(?:\.\d+)?)[Bb]$", model))
    ]
    return f"{min(sizes):g}B–{max(sizes):g}B"


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def oracle_kl_table(ctx: Context) -> list[str]:
    o = ctx.oracle or {}
    rows = [
        "| model steered | KL per generated token (nats) | over all tokens |",
        "|---|---:|---:|",
    ]
    for name, entry in (o.get("kl") or {}).items():
        rows.append(f"| {name} | {entry['mean_generated']:.4g} | {entry['mean_all_tokens']:.4g} |")
    for run in o.get("runs") or []:
        label, seed = Path(run["path"]).parent.name, Path(run["path"]).name
        rows.append(
            f"| trained `{label}` ({seed.replace('-', ' ')}) | {run['kl']['mean_generated']:.4g} | "
            f"{run['kl']['mean_all_tokens']:.4g} |"
        )
    return rows


def not_measured(size: str) -> list[str]:
    """What the page leaves out; ``size``: the measured model's ("135M"), if one ran."""
    lrs, seeds = prose("lr_grid"), prose("runs")
    return [
        "## Not measured here",
        "",
        "- **Instruction tuning** (§6.2, Table 3: Llama-3.1-8B on Alpaca-cleaned, AlpacaEval 2.0 "
        "LC win rate against GPT-4 Turbo): an 8B model and a judge model. Recipes: "
        "`recipes/paper/table3/`; judge with `steer eval RUN --instructions alpaca_eval --judge "
        "MODEL`.",
        "- **Scale** (Table 2's 'the advantage persisting as model scale increases', §6.3's "
        f"Qwen3 0.6B–8B): one {size + ' ' if size else ''}model cannot show a trend over sizes.",
        "- **The other tasks** (BoolQ, WinoGrande, ARC-C, GSM8K, AQuA): they need the datasets "
        "(this machine has no hub access) and a GPU to train at the paper's size.",
        "",
        "## At the paper's scale, on a GPU",
        "",
        f"Table 1's Llama-3.2-1B ListOps and BoolQ cells with the paper's protocol "
        f"({in_words(lrs)} LRs on validation, then {in_words(seeds)} seeds on test), from the "
        "committed recipes; ListOps is generated "
        "offline, BoolQ needs the `google/boolq` dataset (or a local copy: `data.path=...`) and "
        "the model in the Hugging Face cache:",
        "",
        "```bash",
        "for task in listops boolq; do",
        "  for m in sft lora reft postblock; do",
        "    steer train recipes/paper/table1/llama-3.2-1b/$task/$m.yaml --sweep "
        f"--seeds {seeds} \\",
        "      -o runs/table1/llama-3.2-1b/$task/$m",
        "  done",
        "done",
        "steer compare runs/table1 --paper table1",
        "```",
        "",
        "No GPU was available while this report was made, so these cells are not in it.",
    ]
