"""``docs/claims.md`` and its PNGs (``docs/claims/``) from the claims runs alone: the claims
of :mod:`claims_list`, ``steer compare``'s tables and charts, and the oracle's plots."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from claims_list import NOT_RUN, NOT_SHOWN, OPPOSITE, SHOWN, Claim, Context, claims
from claims_verdicts import in_words, majority, prose

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {
    "location": "Where to steer (Table 1's shape)",
    "tiny": "Tiny budgets (Table 2's shape)",
    "joint": "Joint training (Table 4's shape)",
    "nonlinear": "Nonlinearity (section 6.3's question)",
}
# The runs (the oracle's seed) whose KL curves `steer oracle` draws beside the linearized one.
ORACLE_RUNS = (
    "location/postblock",
    "location/postmlp",
    "location/premlp",
    "location/reft",
    "location/lora",
    "joint/joint",
    "joint/joint-orth",
)
ORACLE_PLOTS = ("kl_curve", "mlp_share", "low_rank", "joint_alignment", "expressivity", "sanity")


# -- the report --------------------------------------------------------------------------------


def _compare(group: Path, plot: Path) -> str:
    """``steer compare`` as a user runs it: its markdown table, and its bar chart."""
    command = [sys.executable, "-m", "steer_cli", "compare", str(group), "--format", "markdown"]
    done = subprocess.run(
        [*command, "--plot", str(plot)], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return done.stdout.strip()


def _recipe_rows(ctx: Context, keys: list[str]) -> list[str]:
    rows = [
        "| recipe | method | trainable | LR | steps | test accuracy per seed (%) | mean ± std |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for key in keys:
        cell = ctx.cell(key)
        if not cell.n:
            rows.append(f"| `{key}` | | | | | not run | |")
            continue
        config = cell.config
        per_seed = ", ".join(f"{s}: {v:.1f}" for s, v in zip(cell.seeds, cell.scores, strict=True))
        lr = f"{config['train']['lr']:g}"
        stage1 = (config.get("adapter") or {}).get("lofit_lr_stage1")
        if config["method"] == "lofit" and stage1:  # LoFiT's two trainings
            lr = f"{stage1:g}, then {lr}"
        rows.append(
            f"| `{key}` | {config['method']} | {cell.params:.4f}% | {lr} "
            f"| {cell.results[0]['steps']} | {per_seed} | {cell.mean:.1f} ± {cell.std:.1f} |"
        )
    return rows


def _first(ctx: Context, keys: list[str]):
    """The first recipe that ran (its cell), or ``None``."""
    return next((ctx.cell(k) for k in keys if ctx.cell(k).n), None)


def _setting(ctx: Context, keys: list[str]) -> list[str]:
    first = _first(ctx, keys)
    if first is None:
        return ["No run has finished yet: run `make claims`."]
    config = first.config
    data = config["data"]
    wall = sum(r["wall_seconds"] for k in keys for r in ctx.cell(k).results)
    runs = sum(ctx.cell(k).n for k in keys)
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
    return [
        f"- **Model**: `{config['model']['name']}`{embedded}. **Task**: generated "
        f"ListOps, depth at most {listops.get('depth')}, arity at most {listops.get('arity')}; "
        f"{data['train_size']} training expressions ({_epochs(config['train']['epochs'])}, "
        "batches of "
        f"{config['train']['batch_size']}), {data['test_size']} held-out test expressions, "
        f"disjoint from training (one seeded stream, cut test first).{base}",
        "- **Seeds**: " + ", ".join(str(s) for s in first.seeds) + " per recipe; a score is the "
        "mean ± sample std over seeds, n = seeds. The test items are the same for every run, so "
        "the spread is training noise only.",
        "- **Learning rates**: each method's preset (the middle of its grid). The paper picks "
        f"each LR on validation from {in_words(prose('lr_grid'))}; this report has no room for "
        "that sweep, which weighs against methods whose best LR at this budget is far from the "
        "preset's.",
        f"- **Cost**: {runs} runs, {wall / 60:.0f} min of wall time on {os.cpu_count()} CPU "
        f"cores ({platform.machine()}, torch {_version('torch')}, transformers "
        f"{_version('transformers')}, peft {_version('peft')}).",
        f"- **Scale**: {steps} optimizer steps (LoFiT: that, twice) of a "
        f"{_size(first.results[0]['base_params'])} model, against the paper's {_paper_sizes()} "
        "models on full datasets. 'Not shown at this scale' means what it says.",
    ]


def _epochs(n: int) -> str:
    return f"{in_words(n)} epoch" + ("s" if n != 1 else "")


def _size(parameters: int) -> str:
    """A parameter count as models are named: 134,515,008 -> "135M"."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if parameters >= scale:
            return f"{parameters / scale:.0f}{unit}"
    return str(parameters)


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


def _command(ctx: Context, key: str) -> str:
    group, name = key.split("/")
    return (
        f"for s in {' '.join(map(str, ctx.seeds_of(key)))}; do steer train "
        f"recipes/claims/{key}.yaml train.seed=$s -o runs/claims/{group}/{name}/seed-$s; done"
    )


def _model(ctx: Context, keys: list[str]) -> str:
    """The model the runs trained: the embedded one by its name, another by its spec."""
    from steer_cli.models.names import EMBEDDED

    ran = _first(ctx, keys)
    name = ran.setting("model", "name") if ran else EMBEDDED
    return "the embedded SmolLM2-135M" if name == EMBEDDED else f"`{name}`"


def _seed_count(ctx: Context, keys: list[str]) -> str:
    """How many seeds each recipe ran with, in words: "three", or "two to three"."""
    counts = sorted({ctx.cell(k).n for k in keys if ctx.cell(k).n}) or [len(ctx.seeds)]
    return " to ".join(dict.fromkeys(in_words(n) for n in (counts[0], counts[-1])))


def render(ctx: Context, found: list[Claim], tables: dict[str, str], images: list[str]) -> str:
    keys = [f"{p.parent.name}/{p.stem}" for p in sorted((ROOT / "recipes/claims").glob("*/*.yaml"))]
    counts = {
        v: sum(c.finding.verdict == v for c in found) for v in (SHOWN, NOT_SHOWN, OPPOSITE, NOT_RUN)
    }
    lines = [
        "# The paper's claims, measured by steer",
        "",
        "<!-- Generated by `make claims` (scripts/claims.py, scripts/claims_report.py) from the "
        "runs under runs/claims/. Do not edit: rerun it. -->",
        "",
        "Each claim of *Weight Updates as Activation Shifts* (and of its blog post) that steer can "
        f"test on a CPU, tested with steer's own commands on {_model(ctx, keys)}, "
        f"{_seed_count(ctx, keys)} seeds each, with the paper's own figure beside it and a "
        "verdict by the rule written next to "
        "it. Every claim is listed, whatever its verdict. Reproduce everything with "
        "`make claims` (it resumes: finished runs are kept); `python scripts/claims.py "
        "--report-only` rewrites this page from the runs.",
        "",
        "## Setting",
        "",
        *_setting(ctx, keys),
        "",
        f"## Verdicts: {counts[SHOWN]} shown, {counts[NOT_SHOWN]} not shown at this scale, "
        f"{counts[OPPOSITE]} opposite"
        + (f", {counts[NOT_RUN]} not run" if counts[NOT_RUN] else ""),
        "",
        "| # | claim | where | steer | verdict |",
        "|---:|---|---|---|---|",
    ]
    for n, claim in enumerate(found, 1):
        lines.append(
            f"| [{n}](#{n}) | {claim.title} | {claim.source.split(' (')[0]} | "
            f"{claim.finding.headline} | **{claim.finding.verdict}** |"
        )
    lines += ["", "## The claims", ""]
    for n, claim in enumerate(found, 1):
        lines += _claim_section(ctx, n, claim)
    lines += ["## Every run", ""] + _recipe_rows(ctx, keys) + [""]
    for group, table in tables.items():
        lines += [
            f"### {GROUPS.get(group, group)}: `steer compare runs/claims/{group}`",
            "",
            table,
            "",
        ]
        lines += [f"![{group}](claims/{group}.png)", ""]
    if images and ctx.oracle:
        lines += _oracle_section(ctx, images)
    ran = _first(ctx, keys)
    lines += _not_measured(_size(ran.results[0]["base_params"]) if ran else "") + [""]
    return "\n".join(lines)


def _claim_section(ctx: Context, n: int, claim: Claim) -> list[str]:
    lines = [
        f'<a id="{n}"></a>',
        f"### {n}. {claim.title}: {claim.finding.verdict}",
        "",
        f"- **Where**: {claim.source}.",
        f"- **The paper's figure**: {claim.paper}.",
        f"- **steer**: {claim.finding.measured}.",
    ]
    if claim.note:
        lines.append(f"- **Note**: {claim.note}")
    if claim.finding.rule:
        lines.append(f"- **Rule**: {claim.finding.rule}.")
    if claim.keys:
        lines.append("- **Commands**: " + "; ".join(f"`{_command(ctx, k)}`" for k in claim.keys))
    return [*lines, ""]


def _oracle_section(ctx: Context, images: list[str]) -> list[str]:
    sft = Path(ctx.oracle["fine_tuned"]).name  # seed-42: the oracle's seed
    return [
        "## The oracle",
        "",
        f"`steer oracle {ctx.oracle['base']} runs/claims/location/sft/{sft} --samples "
        f"{ctx.oracle['samples']} --runs ...` "
        f"with the {sft} runs of " + ", ".join(f"`{k}`" for k in ORACLE_RUNS) + " beside it "
        "(their KL curves in the first plot). Its whole output: "
        "`runs/claims/oracle/oracle.json`.",
        "",
        *[f"![{name}](claims/{name}.png)" for name in images],
        "",
        *_oracle_kl_table(ctx),
        "",
    ]


def _oracle_kl_table(ctx: Context) -> list[str]:
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


def _not_measured(size: str) -> list[str]:
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


def write(runs: Path, docs: Path, overrides: list[str] = (), seeds: tuple[int, ...] = ()) -> Path:
    """Render ``docs/claims.md`` and its PNGs (``docs/claims/``) from ``runs``; atomically.
    ``seeds``: those ``make claims`` trains with, for the commands of recipes not yet run."""
    from steer_cli.atomic import write_text

    ctx = Context(runs, seeds)
    found = claims(ctx)
    images_dir = docs / "claims"
    images_dir.mkdir(parents=True, exist_ok=True)
    tables = {
        group: _compare(runs / group, images_dir / f"{group}.png")
        for group in GROUPS
        if any((runs / group).glob("*/seed-*/results.json"))
    }
    images = []
    for name in ORACLE_PLOTS:
        source = runs / "oracle" / f"{name}.png"
        if source.is_file():
            shutil.copyfile(source, images_dir / f"oracle-{name}.png")
            images.append(f"oracle-{name}")
    text = render(ctx, found, tables, images)
    if overrides:  # say so at the top, so it is never mistaken for the committed recipes' report
        changed = " ".join(f"--set {o}" for o in overrides)
        text = text.replace(
            "\n\n", f"\n\n**Not the committed recipes: run with `{changed}`.**\n\n", 1
        )
    write_text(docs / "claims.md", text)
    return docs / "claims.md"
