"""Where a task's rows come from, and how they become our train/validation/test examples.

- ``hub``: the Hugging Face hub (:mod:`steer_cli.data.hub`), failing fast offline.
- ``local``: files in the hub's schema (:mod:`steer_cli.data.files`).
- ``generator``: the seeded ListOps generator (``data.listops``).

Our train/validation/test are then cut from the source splits by the task's split plan (or
``data.splits``), capped at ``data.*_size`` (a seeded subset; :mod:`steer_cli.data.splits`), and
formatted; a malformed row is a :class:`SteerError` naming the file (or hub split), the row and
the field. The names other modules use from here before the split (``hub_reachable``,
``read_rows``, ``permutation``, ...) are re-exported.
"""

from __future__ import annotations

from steer_cli.data import listops
from steer_cli.data.base import Example, RowError, SourceSplit, Task
from steer_cli.data.files import FORMATS, SPLIT_ALIASES, load_local, local_files, read_rows
from steer_cli.data.hub import (
    HUB_PROBE_SECONDS,
    hub_offline_by_env,
    hub_offline_mode,
    hub_reachable,
    load_hub,
)
from steer_cli.data.splits import (
    LISTOPS_SIZES,
    OUR_SPLITS,
    Splits,
    permutation,
    select,
    spec_text,
    split_plan,
)
from steer_cli.data.templates import format_listops
from steer_cli.errors import SteerError

__all__ = [
    "FORMATS",
    "HUB_PROBE_SECONDS",
    "LISTOPS_SIZES",
    "OUR_SPLITS",
    "SPLIT_ALIASES",
    "SourceSplit",
    "hub_offline_by_env",
    "hub_offline_mode",
    "hub_reachable",
    "load_hub",
    "load_listops",
    "load_local",
    "load_splits",
    "local_files",
    "permutation",
    "read_rows",
    "resolve_source",
    "spec_text",
    "split_plan",
]


def resolve_source(task: Task, data) -> str:
    """``data.source`` with ``auto`` resolved: local when files are given, the generator for
    ListOps, the hub otherwise."""
    source = getattr(data, "source", "auto")
    if source != "auto":
        return source
    if getattr(data, "files", None) or getattr(data, "path", None):
        return "local"
    if task.name == "listops":
        return "generator"
    if task.source is None:
        raise SteerError(
            f"task {task.name!r} has no hub dataset; point it at files",
            "set data.path=DIR (train.jsonl, validation.jsonl, test.jsonl) or "
            "data.files.train=FILE",
        )
    return "hub"


def load_splits(task: Task, data) -> Splits:
    """The formatted train/validation/test examples a recipe's ``data`` section asks for (a
    dict, which also knows how much each split's plan held: see :func:`.splits.size_report`)."""
    source = resolve_source(task, data)
    if source == "generator":
        return _generate_listops(task, data)
    plan = split_plan(task, data)
    needed = sorted({spec.source for spec in plan.values() if spec is not None})
    if source == "hub":
        sources = load_hub(task, needed)
    elif source == "local":
        sources = load_local(task, data, needed)
    else:  # pragma: no cover - the recipe schema allows nothing else
        raise SteerError(f"unknown data.source {source!r}", "use auto, hub, local or generator")
    indices, available = select(plan, {name: len(s.rows) for name, s in sources.items()}, data)
    examples = {
        split: _format(task, sources[spec.source], indices[split]) if spec else []
        for split, spec in plan.items()
    }
    return Splits(examples, source=source, available=available, plan=plan)


def _format(task: Task, source: SourceSplit, indices: list[int]) -> list[Example]:
    examples = []
    for i in indices:
        try:
            examples.append(task.format(source.rows[i]))
        except RowError as exc:
            raise SteerError(
                f"{source.where(i)}: {exc}",
                _schema_hint(task),
            ) from None
        except SteerError as exc:
            raise SteerError(f"{source.where(i)}: {exc.message}", exc.hint) from None
        except Exception as exc:  # a value of an unexpected shape deep in a row
            raise SteerError(
                f"{source.where(i)}: cannot read this row ({type(exc).__name__}: {exc})",
                _schema_hint(task),
            ) from None
    return examples


def _schema_hint(task: Task) -> str:
    fields = ", ".join(task.fields) or "the fields of its templates"
    where = f" ({task.source})" if task.source else ""
    return f"{task.name} rows use the hub's schema{where}: {fields}"


# ----------------------------------------------------------------------------- generator


def load_listops(
    train: int = LISTOPS_SIZES["train"],
    validation: int = LISTOPS_SIZES["validation"],
    test: int = LISTOPS_SIZES["test"],
    *,
    seed: int = 42,
    depth: int = listops.DEFAULT_DEPTH,
    arity: int = listops.DEFAULT_ARITY,
    branch_p: float = listops.DEFAULT_BRANCH_P,
    max_length: int | None = None,
    min_length: int | None = None,
) -> dict[str, list[Example]]:
    """Generated ListOps splits, formatted. Defaults are the paper's split sizes
    (96,000 / 2,000 / 2,000, seed 42); see :func:`steer_cli.data.listops.make_splits`."""
    try:
        rows = listops.make_splits(
            train,
            validation,
            test,
            seed=seed,
            depth=depth,
            arity=arity,
            branch_p=branch_p,
            max_length=max_length,
            min_length=min_length,
        )
    except ValueError as exc:
        raise SteerError(
            f"cannot generate ListOps data: {exc}",
            hint="Check the ListOps generator settings (depth >= 1, arity >= 2, 0 <= branch_p "
            "<= 1) and that the split sizes fit the expression space.",
        ) from exc
    return {split: [format_listops(row) for row in rows[split]] for split in rows}


def _generate_listops(task: Task, data) -> Splits:
    if task.name != "listops":
        raise SteerError(
            f"data.source=generator is for ListOps, not {task.name!r}",
            "use data.source=hub or local",
        )
    cfg = data.listops
    sizes = {
        "train": data.train_size,
        "validation": data.validation_size,
        "test": data.test_size,
    }
    sizes = {k: LISTOPS_SIZES[k] if v is None else v for k, v in sizes.items()}
    generated = load_listops(
        sizes["train"],
        sizes["validation"],
        sizes["test"],
        seed=data.seed,
        depth=cfg.depth,
        arity=cfg.arity,
        branch_p=cfg.branch_p,
        max_length=cfg.max_length,
        min_length=cfg.min_length,
    )
    # data.splits may rename whole generated splits (a sweep evaluates on "validation").
    out = {}
    plan = split_plan(task, data)
    for split, spec in plan.items():
        if spec is not None and (spec.sliced or spec.source not in generated):
            raise SteerError(
                f"data.splits.{split}={spec_text(spec)!r}: the ListOps generator makes whole "
                "train, validation and test splits",
                "set their sizes with data.train_size, data.validation_size, data.test_size",
            )
        out[split] = generated[spec.source] if spec is not None else []
    return Splits(out, source="generator", available=dict.fromkeys(OUR_SPLITS), plan=plan)
