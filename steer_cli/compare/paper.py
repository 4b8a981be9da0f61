"""The paper's rows beside the user's: which published row a run meets, and how they differ.

A run meets the row of its model (hub ids, ``-pt`` / ``-Base`` checkpoints and the paper's
spellings are one model) and method whose variant is closest to the run's. Every difference
left (rank, activation, layers, ...) marks the paper's row; a run with no row at all is said so.
A judged score (Table 3's) is also compared for how it was judged: the paper's are AlpacaEval
2.0's (GPT-4 Turbo judging against GPT-4 Turbo's outputs on AlpacaEval's 805 instructions), and
a run judged otherwise marks the paper's row too.
"""

from __future__ import annotations

import re

from steer_cli.compare.rows import Cell, Row
from steer_cli.compare.runs import Judging, model_key, variant_label
from steer_cli.errors import SteerError
from steer_cli.published import PUBLISHED, PaperRow, PaperTable, Variant

# Checkpoint suffixes that name the same pretrained model: gemma's "-pt", Qwen's "-Base", the
# old Llama "-hf" mirrors. Instruction-tuned checkpoints ("-it", "-Instruct") are other models.
_SAME_MODEL_SUFFIXES = ("pt", "base", "hf")


def check_paper(name: str) -> PaperTable:
    if name not in PUBLISHED:
        raise SteerError(f"unknown published table {name!r}", f"choose from {', '.join(PUBLISHED)}")
    return PUBLISHED[name]


def match_key(model: str) -> str:
    """``google/gemma-3-1b-pt``, ``gemma-3-1b`` and ``Gemma 3 1b`` are one model; so are
    ``Qwen/Qwen3-4B-Base`` and the paper's ``Qwen 3 4B``."""
    tokens = re.findall(r"[a-z]+|[0-9]+(?:\.[0-9]+)*", model_key(model).lower())
    while len(tokens) > 1 and tokens[-1] in _SAME_MODEL_SUFFIXES:
        tokens.pop()
    if tokens[:2] == ["meta", "llama"]:  # meta-llama/Meta-Llama-3.1-8B, the older hub name
        tokens.pop(0)
    return "-".join(tokens)


ALPACA_EVAL_N = 805
PAPER_JUDGING = {"alpaca": Judging("GPT-4 Turbo", "GPT-4 Turbo", "alpaca_eval", ALPACA_EVAL_N)}
"""How the paper's judged tasks were judged: Table 3 is AlpacaEval 2.0's LC win rate."""


def _gpt4_turbo(name: str | None) -> bool:
    """AlpacaEval 2.0's judge (``weighted_alpaca_eval_gpt4_turbo``) and reference outputs
    (``gpt4_turbo``), or GPT-4 Turbo by its API name (``gpt-4-1106-preview``)."""
    flat = re.sub(r"[^a-z0-9]", "", (name or "").lower())
    return "gpt4turbo" in flat or "gpt41106preview" in flat


def judged_otherwise(ours: Judging | None, theirs: Judging) -> list[str]:
    """How a run's judging is not the paper's (``judge smollm2-135m, not GPT-4 Turbo``)."""
    if ours is None:
        return ["judging not recorded (re-run `steer eval RUN --instructions`)"]
    out = []
    if not _gpt4_turbo(ours.judge):
        out.append(f"judge {ours.judge or 'not recorded'}, not {theirs.judge}")
    if not _gpt4_turbo(ours.reference):
        out.append(f"reference {ours.reference or 'not recorded'}, not {theirs.reference}'s")
    if ours.instructions != theirs.instructions or ours.n != theirs.n:
        on = ours.instructions or "not recorded"
        on += f" ({ours.n})" if ours.n is not None else ""
        out.append(f"instructions {on}, not AlpacaEval's {theirs.n}")
    return out


def paper_row(entry: PaperRow) -> Row:
    cells = {
        task: Cell(mean=value, n=entry.n, se=entry.se.get(task), judging=PAPER_JUDGING.get(task))
        for task, value in entry.scores.items()
    }
    return Row(
        entry.model,
        variant_label(entry.variant),
        "paper",
        entry.params_percent,
        cells,
        name=entry.name,
        params_text=entry.params,
        variant=entry.variant,
    )


_SAYS = {
    "rank": lambda v: f"r={v}",
    "lora_rank": lambda v: f"LoRA r={v}",
    "activation": lambda v: "linear" if v == "none" else str(v),
    "layers": lambda v: "all layers" if v == "all" else f"{v} layers",
    "mode": lambda v: "both parts" if v == "both" else f"{v} only",
    "rank_match": lambda v: f"rank matched to {'LoRA r=8' if v == 'lora' else v}'s count",
    "objective": lambda v: f"trained by {v}",
}


def differences(run: Variant, paper: Variant) -> list[str]:
    """What the paper's variant states that the run's is not (``r=8, not r=1``)."""
    out = []
    for attr, say in _SAYS.items():
        theirs, ours = getattr(paper, attr), getattr(run, attr)
        if theirs is None:  # the paper does not state it: nothing to compare
            continue
        if attr == "activation" and theirs == "nonlinear" and ours not in (None, "none"):
            continue  # the paper names no nonlinearity, any one is its variant
        if attr == "rank_match" and ours is None:  # a rank of its own, not the paper's rule
            own = "unknown" if run.rank is None else _SAYS["rank"](run.rank)
            out.append(f"{say(theirs)}, not {own}")
        elif ours != theirs:
            out.append(f"{say(theirs)}, not {'unknown' if ours is None else say(ours)}")
    return out


def _elsewhere(model: str, method: str, table: PaperTable) -> str:
    others = [
        name
        for name, other in PUBLISHED.items()
        if other is not table
        and any(
            match_key(r.model) == match_key(model) and r.variant.method == method
            for r in other.rows
        )
    ]
    return f"; see --paper {' or '.join(others)}" if others else ""


def match(row: Row, table: PaperTable) -> tuple[PaperRow | None, list[str], str | None]:
    """The paper's row for a run's row, how its variant differs, or why there is none."""
    found = [r for r in table.rows if match_key(r.model) == match_key(row.model)]
    if not found:
        return None, [], f"{table.name} has no {row.model} (it has {', '.join(table.models)})"
    method = row.variant.method if row.variant else row.method.split(" ")[0]
    candidates = [r for r in found if r.variant.method == method]
    if not candidates:
        missing = f"{table.name} has no {method} on {found[0].model}"
        return None, [], missing + _elsewhere(row.model, method, table)
    candidates = [r for r in candidates if set(r.scores) & set(row.cells)]
    if not candidates:
        tasks = ", ".join(sorted(row.cells))
        return None, [], f"{table.name} has no {method} row on {tasks}"
    run = row.variant or Variant(method)
    best = min(candidates, key=lambda r: len(differences(run, r.variant)))  # ties: paper order
    return best, differences(run, best.variant), None


def with_paper(rows: list[Row], table: PaperTable) -> tuple[list[Row], list[str]]:
    """Each run's row followed by its paper row; notes for the unmatched and the unlike."""
    if not rows:  # nothing of the user's: show the published table itself
        return [paper_row(entry) for entry in table.rows], []
    out: list[Row] = []
    notes: list[str] = []
    for row in rows:
        out.append(row)
        entry, differs, missing = match(row, table)
        if entry is None:
            notes.append(f"no paper row for {row.model} {row.method}: {missing}")
            continue
        theirs = paper_row(entry)
        theirs.differs = differs
        shared = [t for t in row.cells if t in theirs.cells]
        row.average_tasks = theirs.average_tasks = shared
        theirs.judged_otherwise = [
            line
            for task in shared
            if theirs.cells[task].judging is not None
            for line in judged_otherwise(row.cells[task].judging, theirs.cells[task].judging)
        ]
        out.append(theirs)
        if differs:
            notes.append(
                f"* {row.model} {row.method} is beside the paper's {entry.name} "
                f"({entry.model}), another variant: {'; '.join(differs)}"
            )
        if theirs.judged_otherwise:
            notes.append(
                f"* {row.model} {row.method} is beside the paper's {entry.name} "
                f"({entry.model}), judged otherwise: {'; '.join(theirs.judged_otherwise)}"
            )
    return out, notes
