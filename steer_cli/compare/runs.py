"""Reading run directories for ``steer compare``: what each run is, and what its score means.

A score enters a test column only if it was scored on the test split: a sweep's ``lr-*`` trials
are scored on validation (``steer_cli.sweep``) and are kept apart, as what they are.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from steer_cli.errors import SteerError
from steer_cli.evaluate.instructions import OUT_SUBDIR, SUMMARY
from steer_cli.published import Variant

ALPACA_SUMMARY = OUT_SUBDIR / SUMMARY  # what `steer eval RUN --instructions` writes

TASK_ORDER = ("boolq", "winogrande", "arc_challenge", "gsm8k", "aqua", "listops", "alpaca")
_TASK_ALIASES = {"arc": "arc_challenge", "arc_c": "arc_challenge", "wino": "winogrande"}
HELD_OUT = "held-out"  # a finished run scored on another split than test (a sweep's LR trial)
_SWEEP_LR_TRIAL = re.compile(r"lr-[0-9.e+-]+")  # steer_cli.sweep's names for validation trials


@dataclass(frozen=True)
class Judging:
    """How a judged (``alpaca``) score was measured: the judge, what it was compared with, and on
    which instructions; what makes two win rates comparable, beyond the variant."""

    judge: str | None
    reference: str | None
    instructions: str | None
    n: int | None

    @classmethod
    def read(cls, summary: dict) -> Judging:
        """From ``steer eval --instructions``'s summary.json (None where it does not say)."""
        n = summary.get("n_total")
        return cls(
            summary.get("judge"),
            summary.get("reference_generator"),
            summary.get("instructions"),
            n if isinstance(n, int) else None,
        )

    def describe(self) -> str:
        """``judged by smollm2-135m against Llama-3.1-8B (base) on everyday (40)``."""
        where = self.instructions or "unrecorded instructions"
        if self.n is not None:
            where += f" ({self.n})"
        return (
            f"judged by {self.judge or 'an unrecorded judge'} against "
            f"{self.reference or 'an unrecorded reference'} on {where}"
        )


@dataclass
class Record:
    """One run directory as found on disk."""

    path: str
    status: str  # "ok", "held-out" (not a test score), "incomplete", "failed" or "skipped"
    reason: str = ""
    model: str = ""
    task: str = ""
    label: str = ""
    seed: int | None = None
    score: float | None = None  # accuracy on the split below, %
    params: float | None = None  # trainable share of the base model, %
    split: str = "test"  # the split ``score`` was measured on
    variant: Variant | None = None
    se: float | None = None  # alpaca: the LC win rate's standard error (AlpacaEval's)
    judging: Judging | None = None  # alpaca: how the score was judged


def task_key(name: str) -> str:
    key = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return _TASK_ALIASES.get(key, key)


def model_key(name: str) -> str:
    """``meta-llama/Llama-3.2-1B`` and ``Llama-3.2-1B`` are the same model for comparison."""
    return name.rstrip("/").split("/")[-1]


def _preset(method: str) -> tuple[str | None, dict]:
    from steer_cli.methods import METHODS

    found = METHODS.get(method)
    return (found.kind, found.defaults) if found else (None, {})


def variant_of(config: dict, results: dict | None = None) -> Variant:
    """The settings of a resolved recipe that make it a variant worth its own row."""
    method = config.get("method", "?")
    kind, preset = _preset(method)
    adapter = config.get("adapter") or {}
    lora = config.get("lora") or {}
    rank = activation = layers = lora_rank = mode = rank_match = positions = site = None
    if kind in ("adapter", "joint", None):
        if adapter.get("parameterization") in ("lowrank", "loreft"):
            rank = adapter.get("rank", (preset.get("adapter") or {}).get("rank", 8))
            if rank == "auto":  # the rank the run chose, in results.json, and by which rule
                rank = ((results or {}).get("rank_search") or {}).get("rank", "auto")
                rank_match = adapter.get("match")
            activation = adapter.get("activation", "none")
        chosen = adapter.get("layers", "all")
        layers = len(chosen) if isinstance(chosen, list) else chosen
        steered = adapter.get("positions")  # e.g. ReFT at f7+l7 besides its last_prompt
        if steered is not None and steered != (preset.get("adapter") or {}).get("positions", "all"):
            positions = steered
        # e.g. a premlp run from before premlp moved to mlp_input (it steered attn_output)
        where = adapter.get("site")
        if where is not None and where != (preset.get("adapter") or {}).get("site", where):
            site = where
    if kind in ("lora", "joint") or (kind is None and lora):
        lora_rank = lora.get("rank", (preset.get("lora") or {}).get("rank", 8))
    if kind == "joint":
        mode = (config.get("eval") or {}).get("joint_mode", "both")
    objective = (config.get("train") or {}).get("objective", "sft")
    return Variant(
        method, rank, lora_rank, activation, layers, mode, rank_match, positions, site, objective
    )


def variant_label(variant: Variant) -> str:
    """``postblock r=1 act=silu``: the method, plus what differs from its preset."""
    _, preset = _preset(variant.method)
    parts = [variant.method]
    if variant.rank is not None and variant.rank != (preset.get("adapter") or {}).get("rank", 8):
        parts.append(f"r={variant.rank}")
    if variant.activation not in (None, "none"):
        parts.append(f"act={variant.activation}")
    if variant.layers not in (None, "all"):  # e.g. Table 3's ReFT on 4 layers
        parts.append(f"layers={variant.layers}")
    if variant.positions is not None:
        parts.append(f"positions={variant.positions}")
    if variant.site is not None:
        parts.append(f"site={variant.site}")
    lora_default = (preset.get("lora") or {}).get("rank", 8)
    if variant.lora_rank is not None and variant.lora_rank != lora_default:
        parts.append(f"r={variant.lora_rank}")
    if variant.mode not in (None, "both"):  # a joint run evaluated with one part only
        parts.append(f"{variant.mode} only")
    return " ".join(parts)


def method_label(config: dict) -> str:
    """The method, plus the settings that make it a variant worth its own row."""
    return variant_label(variant_of(config))


def find_runs(paths: list[Path]) -> list[Record]:
    """Every run under ``paths`` (run directories, or folders of them such as sweeps)."""
    records: list[Record] = []
    for path in paths:
        if not path.exists():
            raise SteerError(
                f"no such directory: {path}", "pass run directories or folders of runs"
            )
        if path.is_dir():
            _walk(path, records)
        else:  # e.g. a log file caught by a shell glob such as runs/*
            records.append(Record(str(path), "skipped", "not a run directory"))
    return records


def _walk(directory: Path, records: list[Record]) -> None:
    if ".partial-" in directory.name or directory.name.endswith(".partial"):
        records.append(Record(str(directory), "incomplete", "interrupted or still running"))
        return
    if (directory / "results.json").exists() or (directory / "config.yaml").exists():
        records.append(_read_run(directory))
        return
    for child in sorted(p for p in directory.iterdir() if p.is_dir()):
        _walk(child, records)


def scored_split(directory: Path, config: dict, results: dict) -> str:
    """The split a run's "after" accuracy was measured on.

    A sweep's validation trial is an ordinary run whose test split *is* the validation split:
    its recipe sets ``data.splits.test`` to the validation plan and ``data.splits.validation``
    to nothing (``steer_cli.sweep.validation_recipe``). A ``split`` in results.json wins.
    """
    after = (results.get("eval") or {}).get("after") or {}
    declared = results.get("eval_split") or after.get("split")
    if isinstance(declared, str):
        return declared
    splits = (config.get("data") or {}).get("splits") or {}
    emptied = "validation" in splits and splits["validation"] in (None, "", "none")
    if not (emptied and splits.get("test")):
        return "test"
    if _SWEEP_LR_TRIAL.fullmatch(directory.name) or splits["test"] == _validation_plan(config):
        return "validation"
    return "test"


def _validation_plan(config: dict) -> str | None:
    from steer_cli.data.tasks import get_task

    try:
        return get_task((config.get("data") or {}).get("task", "")).splits.get("validation")
    except (SteerError, KeyError, AttributeError, TypeError):
        return None


def _read_run(directory: Path) -> Record:
    import yaml

    if not (directory / "results.json").exists():
        return Record(str(directory), "incomplete", "no results.json")
    try:
        results = json.loads((directory / "results.json").read_text())
        config = yaml.safe_load((directory / "config.yaml").read_text()) or {}
        accuracy = results["eval"]["after"]["accuracy"]
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as err:
        return Record(str(directory), "failed", f"unreadable results: {err}")
    task = task_key(results.get("task") or config.get("data", {}).get("task", "?"))
    score = 100.0 * accuracy
    se = judging = None
    split = scored_split(directory, config, results)
    if task == "alpaca" and split == "test":  # Table 3's figure is the judged LC win rate
        judged = directory / ALPACA_SUMMARY
        try:
            summary = json.loads(judged.read_text())
            score = summary["length_controlled_winrate"]
            se, judging = summary.get("lc_standard_error"), Judging.read(summary)
        except FileNotFoundError:
            return Record(
                str(directory),
                "incomplete",
                f"no {ALPACA_SUMMARY} (run `steer eval {directory} --instructions ...`)",
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            return Record(str(directory), "failed", f"unreadable {ALPACA_SUMMARY}: {err}")
    variant = variant_of(config, results)
    reason = ""
    if split != "test":
        lr = (config.get("train") or {}).get("lr")
        at = f" at lr {lr:g}" if isinstance(lr, int | float) else ""
        reason = f"scored on the {split} split{at}: {score:.1f}; not a test score"
    return Record(
        path=str(directory),
        status="ok" if split == "test" else HELD_OUT,
        reason=reason,
        model=model_key(results.get("model") or config.get("model", {}).get("name", "?")),
        task=task,
        label=variant_label(variant),
        seed=(config.get("train") or {}).get("seed"),
        score=score,
        params=results.get("trainable_percent"),
        split=split,
        variant=variant,
        se=se if isinstance(se, int | float) else None,
        judging=judging,
    )
