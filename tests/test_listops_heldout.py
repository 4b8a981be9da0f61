"""The bundled ``steer_listops`` test split shares no expression with any recipe's train split.

Checked by hashing: every shipped recipe under ``recipes/`` that generates ListOps is resolved
as ``steer train`` resolves it (and as ``--sweep`` resolves its trials), its train split is
generated and hashed, and no hash is among the bundled test split's, read as lm-eval reads it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from steer_cli.data.listops import SETTINGS, Stream
from steer_cli.data.sources import load_splits, resolve_source
from steer_cli.data.splits import LISTOPS_SIZES
from steer_cli.data.tasks import task_for
from steer_cli.evaluate import harness
from steer_cli.evaluate.tasks import listops as bundled
from steer_cli.recipe import load_recipe
from steer_cli.sweep import validation_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
_EXPRESSION = re.compile(r"^Expression: (.*)$", re.MULTILINE)


def _hashes(prompts) -> set[str]:
    """SHA-256 of each prompt's expression."""
    out = set()
    for prompt in prompts:
        (expression,) = _EXPRESSION.findall(prompt)
        out.add(hashlib.sha256(expression.encode()).hexdigest())
    return out


@pytest.fixture(scope="module")
def bundled_docs():
    """The bundled task's docs, as ``steer eval --tasks steer_listops`` has lm-eval load them."""
    task = harness.resolve_tasks(["steer_listops"]).load(["steer_listops"])["tasks"]
    return task["steer_listops"]


def _generated_listops_recipes() -> dict[tuple, list[str]]:
    """Every shipped recipe that trains on generated ListOps, and each of its sweep's
    validation trials, grouped by what its train split is cut from: (seed, sizes, settings)."""
    groups: dict[tuple, list[str]] = {}
    for path in sorted(RECIPES.rglob("*.yaml")):
        recipe = load_recipe(path)
        if recipe.data.task != "listops":
            continue
        for variant in (recipe, validation_recipe(recipe)):
            data = variant.data
            if resolve_source(task_for(data), data) != "generator":
                continue
            sizes = tuple(
                LISTOPS_SIZES[s]
                if getattr(data, f"{s}_size") is None
                else getattr(data, f"{s}_size")
                for s in ("train", "validation", "test")
            )
            settings = tuple(getattr(data.listops, key) for key in SETTINGS)
            name = str(path.relative_to(RECIPES))
            groups.setdefault((data.seed, sizes, settings), []).append(name)
    return groups


def _stream(key: tuple) -> Stream:
    seed, sizes, settings = key
    return Stream(seed=seed, count=sum(sizes), **dict(zip(SETTINGS, settings, strict=True)))


def test_every_shipped_listops_recipe_trains_inside_an_excluded_stream() -> None:
    groups = _generated_listops_recipes()
    names = [name for recipes in groups.values() for name in recipes]
    assert "quickstart.yaml" in names and "methods/postblock.yaml" in names
    assert any(name.startswith("paper/") for name in names)
    for (seed, sizes, settings), recipes in groups.items():
        as_dict = dict(zip(SETTINGS, settings, strict=True))
        held = [s for s in bundled.TRAINED if s.holds(sum(sizes), seed=seed, settings=as_dict)]
        assert held, f"{recipes[0]} trains outside every stream the bundled test excludes"


def test_no_shipped_recipe_trains_on_the_bundled_listops_test(bundled_docs) -> None:
    test = _hashes(doc["prompt"] for doc in bundled_docs.test_docs())
    assert len(test) == 2000  # the paper's test size, every expression distinct
    checked = 0
    for key, recipes in _generated_listops_recipes().items():
        stream = _stream(key)
        if not stream.may_share(bundled.TEST):
            # LRA's 500..2000 tokens never meet a depth-2 expression (26 tokens at most); the
            # generator redraws anything shorter than min_length (tests/test_sources.py checks
            # LRA lengths). Generating its 96,000 to hash them takes minutes, so: a sample.
            assert stream.lengths()[0] > bundled.TEST.lengths()[1]
            sample = Stream(**{**stream.__dict__, "count": 50}).expressions()
            assert min(len(e.split()) for e in sample) >= stream.lengths()[0]
            assert not _hashes(f"Expression: {e}" for e in sample) & test
            continue
        recipe = load_recipe(RECIPES / recipes[0])
        train = load_splits(task_for(recipe.data), recipe.data)["train"]
        shared = _hashes(ex.prompt for ex in train) & test
        assert not shared, f"{recipes} train on {len(shared)} bundled test expressions"
        checked += len(recipes)
    assert checked >= 12  # the quickstart and every methods/ recipe at least


def test_bundled_listops_test_is_disjoint_from_its_own_train_split(bundled_docs) -> None:
    test = _hashes(doc["prompt"] for doc in bundled_docs.test_docs())
    train = _hashes(doc["prompt"] for doc in bundled_docs.training_docs())
    validation = _hashes(doc["prompt"] for doc in bundled_docs.validation_docs())
    assert len(train) == 96_000 and len(validation) == 2000
    assert not test & train and not test & validation
    rows = bundled.held_out_rows()
    assert rows == bundled.held_out_rows()  # deterministic
    assert {r["value"] for r in rows} == set(range(10))
