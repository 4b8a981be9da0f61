"""Per-item scores of a run, for ``steer compare``'s intervals and paired tests.

A run scored on a task keeps one line per test item in ``predictions.jsonl`` (``prompt``,
``gold``, ``correct``): the item scores 100 when correct, 0 otherwise, and their mean is the
run's accuracy. A judged (``alpaca``) run keeps ``eval/alpaca/annotations.json``: the item is
the instruction, its score the length-controlled preference ``q_i`` in % (the GLM's fit held
fixed, as AlpacaEval's own LC standard error does; ``steer_cli.evaluate.winrate``), and their
mean is the LC win rate. An item is named by its prompt and answer (instruction and input),
numbered when the same one occurs twice, so that two runs on one test set pair item by item.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from steer_cli.compare.runs import Record
from steer_cli.errors import SteerError
from steer_cli.evaluate.instructions import ANNOTATIONS, OUT_SUBDIR
from steer_cli.rundir import PREDICTIONS

ALPACA_ITEMS = OUT_SUBDIR / ANNOTATIONS
_AGREE = 1e-6  # relative: how far the items' mean may be from the run's recorded score


@dataclass(frozen=True)
class Items:
    """One run's item scores (points, 0-100), keyed by item."""

    scores: dict[tuple, float]

    def on(self, keys: list[tuple]) -> np.ndarray:
        return np.array([self.scores[k] for k in keys])


def read_items(record: Record) -> Items | str:
    """The run's item scores, or why there are none (a missing or unreadable file, or one that
    disagrees with the score in results.json)."""
    directory = Path(record.path)
    judged = record.task == "alpaca"
    name = ALPACA_ITEMS if judged else PREDICTIONS
    try:
        pairs = _judged(directory / name) if judged else _predictions(directory / name)
    except FileNotFoundError:
        return f"no {name}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SteerError) as err:
        return f"unreadable {name} ({str(err).splitlines()[0][:80]})"
    scores = _numbered(pairs)
    if not scores:
        return f"no items in {name}"
    mean = float(np.mean(list(scores.values())))
    if record.score is not None and abs(mean - record.score) > _AGREE * max(1.0, record.score):
        return f"its {name} gives {mean:.4g}, not the recorded {record.score:.4g}"
    return Items(scores)


def _predictions(path: Path) -> list[tuple[tuple, float]]:
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            key = (json.dumps(row["prompt"]), json.dumps(row["gold"]))
            out.append((key, 100.0 * row["correct"]))
    return out


def _judged(path: Path) -> list[tuple[tuple, float]]:
    from steer_cli.evaluate.winrate import lc_preferences

    rows = json.loads(path.read_text())
    q = lc_preferences(
        [r["preference"] for r in rows],
        [r["length_2"] for r in rows],
        [r["length_1"] for r in rows],
    )
    keys = [(r["instruction"], r.get("input") or "") for r in rows]
    return list(zip(keys, (100.0 * q).tolist(), strict=True))


def _numbered(pairs: list[tuple[tuple, float]]) -> dict[tuple, float]:
    """Keys made unique: the k-th occurrence of an item is ``(*item, k)``."""
    seen: dict[tuple, int] = {}
    out = {}
    for key, score in pairs:
        k = seen[key] = seen.get(key, -1) + 1
        out[(*key, k)] = score
    return out
