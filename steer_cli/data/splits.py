"""Split plans: how our train/validation/test are cut from a source's splits, and capped.

A plan maps each of our splits to a string over the source's split names: ``"train"`` is the
whole split, ``"train[:20%]"`` / ``"train[20%:]"`` are the head and tail of a seeded permutation
(numpy ``default_rng(seed)``, cut at ``ceil(p * n)``), which is exactly what ``datasets``'
``train_test_split(test_size=p, seed=seed)`` returns as ``test`` / ``train``. So the paper's rule
for a source with two splits (appendix F.1: "split train set with ratio 80:20 and random seed 42,
and take the :20 split as validation") is ``validation="train[:20%]"``, ``train="train[20%:]"``.

Each split is then capped at ``data.<split>_size`` (a seeded subset; ``null``: all of it). Caps
make a recipe a subsample of the paper's data, so :func:`size_report` says what was kept of how
much, for the run header and ``results.json``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from steer_cli.errors import SteerError

OUR_SPLITS: tuple[str, ...] = ("train", "validation", "test")
# ListOps in the paper (Table 6): LRA's released split sizes; a generator size of null means these.
LISTOPS_SIZES = {"train": 96_000, "validation": 2_000, "test": 2_000}

_SPLIT_SPEC = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9_.-]+)\s*"
    r"(?:\[\s*(?P<lo>\d+(?:\.\d+)?)?\s*%?\s*:\s*(?P<hi>\d+(?:\.\d+)?)?\s*%?\s*\])?\s*$"
)


@dataclass(frozen=True)
class SplitSpec:
    """``name[lo%:hi%]``: the rows of source split ``name`` at positions ``ceil(lo*n)`` to
    ``ceil(hi*n)`` of its seeded permutation (no slice: the whole split, in file order)."""

    source: str
    lo: float | None = None
    hi: float | None = None

    @property
    def sliced(self) -> bool:
        return self.lo is not None or self.hi is not None

    def bounds(self, n: int) -> tuple[int, int]:
        lo = 0 if self.lo is None else math.ceil(self.lo * n - 1e-9)
        hi = n if self.hi is None else math.ceil(self.hi * n - 1e-9)
        return lo, hi


def parse_split_spec(text: str) -> SplitSpec:
    """``"validation[20%:]"`` -> ``SplitSpec("validation", 0.2, None)``."""
    match = _SPLIT_SPEC.match(str(text))
    if match is None:
        raise SteerError(
            f"cannot read the split {text!r}",
            'write a source split name, optionally sliced by percent: "train", '
            '"validation[:20%]", "test[20%:]", "train[10%:30%]"',
        )
    lo, hi = match["lo"], match["hi"]
    spec = SplitSpec(
        match["name"],
        None if lo is None else float(lo) / 100,
        None if hi is None else float(hi) / 100,
    )
    bad = [v for v in (spec.lo, spec.hi) if v is not None and not 0 <= v <= 1]
    if bad or (spec.lo is not None and spec.hi is not None and spec.lo > spec.hi):
        raise SteerError(f"the split {text!r} does not slice within 0%..100% in order")
    return spec


def spec_text(spec: SplitSpec) -> str:
    """``SplitSpec`` back to its text (``validation[20%:]``)."""
    if not spec.sliced:
        return spec.source
    lo = "" if spec.lo is None else f"{spec.lo * 100:g}%"
    hi = "" if spec.hi is None else f"{spec.hi * 100:g}%"
    return f"{spec.source}[{lo}:{hi}]"


def split_plan(task, data) -> dict[str, SplitSpec | None]:
    """Our split -> the part of a source split it is (``None``: empty), ``data.splits`` first."""
    override = getattr(data, "splits", None) or {}
    unknown = set(override) - set(OUR_SPLITS)
    if unknown:
        raise SteerError(
            f"data.splits has unknown split(s) {sorted(unknown)}",
            "its keys are train, validation and test",
        )
    plan: dict[str, SplitSpec | None] = {}
    for split in OUR_SPLITS:
        text = override[split] if split in override else task.splits.get(split)
        plan[split] = None if text in (None, "", "none") else parse_split_spec(text)
    return plan


def caps(data) -> dict[str, int | None]:
    """``data.<split>_size`` per split (``None``: no cap)."""
    return {split: getattr(data, f"{split}_size") for split in OUR_SPLITS}


def permutation(n: int, seed: int) -> list[int]:
    """The seeded permutation ``datasets``' ``train_test_split`` uses (numpy PCG64)."""
    import numpy as np

    return np.random.default_rng(seed).permutation(n).tolist()


def select(
    plan: dict[str, SplitSpec | None], sizes: dict[str, int], data
) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Row indices of each of our splits in its source split, sliced from a seeded permutation
    and capped at ``data.<split>_size`` by a seeded subset (checked disjoint); and how many rows
    each split's plan held before the cap."""
    seed = data.seed
    limit = caps(data)
    out: dict[str, list[int]] = {}
    available: dict[str, int] = {}
    for split, spec in plan.items():
        if spec is None:
            out[split], available[split] = [], 0
            continue
        n = sizes[spec.source]
        if spec.sliced:
            lo, hi = spec.bounds(n)
            chosen = permutation(n, seed)[lo:hi]
        else:
            chosen = list(range(n))
        available[split] = len(chosen)
        cap = limit[split]
        if cap is not None and cap < len(chosen):
            keep = sorted(permutation(len(chosen), seed)[:cap])
            chosen = [chosen[k] for k in keep]
        out[split] = chosen
    _check_disjoint(plan, out)
    return out, available


def _check_disjoint(plan: dict[str, SplitSpec | None], indices: dict[str, list[int]]) -> None:
    for i, a in enumerate(OUR_SPLITS):
        for b in OUR_SPLITS[i + 1 :]:
            spec_a, spec_b = plan[a], plan[b]
            if spec_a and spec_b and spec_a.source == spec_b.source:
                shared = set(indices[a]) & set(indices[b])
                if shared:
                    raise SteerError(
                        f"the {a} and {b} splits share {len(shared)} rows of source split "
                        f"{spec_a.source!r}",
                        'slice it apart, e.g. data.splits.train="train[10%:]" '
                        'data.splits.validation="train[:10%]"',
                    )


class Splits(dict):
    """``{"train": [Example, ...], "validation": [...], "test": [...]}`` as loaded, plus what
    :func:`size_report` needs: where they came from and how many examples each plan held before
    its cap (``available``; ``None`` for generated data, which has no "all")."""

    def __init__(self, examples: dict, *, source: str, available: dict[str, int | None], plan):
        super().__init__(examples)
        self.source = source
        self.available = available
        self.plan = plan


def size_report(data, splits: dict) -> dict:
    """What a run trains and tests on, for ``results.json``: per split the examples kept, the
    cap (``data.<split>_size``) and how many the plan held (``available``), and which splits the
    caps cut (``capped``). Generated ListOps has no "all": its sizes are counts, ``null`` being
    the paper's 96,000 / 2,000 / 2,000."""
    limit = caps(data)
    available = getattr(splits, "available", {})
    plan = getattr(splits, "plan", {})
    source = getattr(splits, "source", None)
    report: dict = {"task": data.task, "source": source, "seed": data.seed, "splits": {}}
    capped = []
    for split in OUR_SPLITS:
        spec = plan.get(split)
        entry = {
            "plan": spec_text(spec) if isinstance(spec, SplitSpec) else spec,
            "examples": len(splits.get(split, [])),
            "cap": limit[split],
            "available": available.get(split),
        }
        if entry["available"] is not None and entry["examples"] < entry["available"]:
            capped.append(split)
        report["splits"][split] = entry
    report["capped"] = capped
    return report


def size_line(report: dict) -> str:
    """One line for the run header: what each split holds, and whether a cap cut it.

    ``data: boolq (the hub) · train 1,000 of 7,541 · validation 100 of 1,886 · test 200 of
    3,270 · a subsample: capped by data.train_size, validation_size, test_size (null: all)``.
    Plain text: print it with ``markup=False``.
    """
    parts = []
    for split, entry in report["splits"].items():
        text = f"{split} {entry['examples']:,}"
        if entry["available"] is not None and entry["examples"] < entry["available"]:
            text += f" of {entry['available']:,}"
        parts.append(text)
    where = {
        "hub": "the hub",
        "local": "local files",
        "generator": f"generated, seed {report['seed']}",
    }.get(report["source"], str(report["source"]))
    head = f"data: {report['task']} ({where})"
    if report["source"] == "generator":
        sizes = " / ".join(f"{n:,}" for n in LISTOPS_SIZES.values())
        tail = f"sizes: data.*_size (null: the paper's {sizes})"
    elif report["capped"]:
        keys = ", ".join(
            f"data.{s}_size" if i == 0 else f"{s}_size" for i, s in enumerate(report["capped"])
        )
        tail = f"a subsample: capped by {keys} (null: all)"
    else:
        tail = "all of each split"
    return " · ".join([head, *parts, tail])
