"""``make claims``: its verdict rules, its recipes, and the whole command on a random tiny model.

The smoke run goes through ``scripts/claims.py`` in a fresh process, as a user runs it (with
``--set`` overrides that make every run one step long), then checks the page it wrote against
the runs' own files, and that a second invocation resumes instead of training again.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import claims  # noqa: E402
import claims_list  # noqa: E402
import claims_verdicts  # noqa: E402
from claims_verdicts import NOT_SHOWN, OPPOSITE, SHOWN, at_least, greater, within  # noqa: E402

SMOKE = [
    "--set",
    "model.name=tiny-llama",
    "--set",
    "train.max_steps=1",
    "--set",
    "data.test_size=8",
    "--samples",
    "4",
]


def test_greater_needs_twice_the_standard_error_either_way():
    assert greater([50, 51, 52], [40, 41, 42]) == SHOWN
    assert greater([40, 41, 42], [50, 51, 52]) == OPPOSITE
    # 1 point apart, seeds spread by ~10: noise
    assert greater([50, 40, 60], [49, 39, 59]) == NOT_SHOWN
    # d = 2, se = sqrt(1/3 + 1/3) = 0.816: 2 > 1.63, shown; d = 1.5 is not
    assert greater([52, 53, 54], [50, 51, 52]) == SHOWN
    assert greater([51.5, 52.5, 53.5], [50, 51, 52]) == NOT_SHOWN


def test_at_least_is_a_match_within_noise_and_opposite_beyond():
    assert at_least([49, 50, 51], [50, 51, 52]) == SHOWN
    assert at_least([60, 61, 62], [50, 51, 52]) == SHOWN
    assert at_least([30, 31, 32], [50, 51, 52]) == OPPOSITE


def test_within_compares_the_gap_of_the_means_with_the_margin():
    assert within([60, 61, 62], [63, 64, 65], 3.1) == SHOWN  # 3.0 below
    assert within([60, 61, 62], [63.2, 64.2, 65.2], 3.1) == NOT_SHOWN  # 3.2 below
    assert within([70, 71, 72], [63, 64, 65], 3.1) == SHOWN  # above


def test_no_seeds_is_not_run_not_a_verdict():
    assert greater([], [1.0]) == at_least([1.0], []) == within([], [], 1) == claims_verdicts.NOT_RUN


def test_every_claims_recipe_is_valid_and_holds_out_200_expressions():
    from steer_cli.recipe import load_recipe

    found = claims.recipes()
    assert {k.split("/")[0] for k in found} == {"location", "tiny", "joint", "nonlinear"}
    for key, path in found.items():
        recipe = load_recipe(path)
        assert recipe.data.task == "listops", key
        assert recipe.data.test_size >= 200, key
        assert recipe.model.name == "smollm2-135m", key
        assert recipe.train.seed == claims.SEEDS[0], key
    for key in claims.claims_report.ORACLE_RUNS:
        assert key in found


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("claims")
    runs, docs = out / "runs", out / "docs"
    command = [
        sys.executable,
        "scripts/claims.py",
        *SMOKE,
        "--runs",
        str(runs),
        "--docs",
        str(docs),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    page = (docs / "claims.md").read_text()
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    return runs, docs, page, second.stderr


def test_make_claims_writes_a_verdict_for_every_claim(smoke):
    runs, docs, page, _ = smoke
    assert "Not the committed recipes: run with `--set model.name=tiny-llama" in page
    found = claims_list.claims(claims_verdicts.Context(runs))
    assert len(found) >= 19
    for n, claim in enumerate(found, 1):
        assert f"### {n}. {claim.title}: {claim.finding.verdict}" in page
        assert claim.finding.verdict != claims_verdicts.NOT_RUN, claim.title
    # every image the page shows is there
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", page):
        assert (docs / image).is_file(), image
    assert len(re.findall(r"!\[", page)) >= 8  # 4 compare charts and the oracle's plots


def test_the_page_reports_the_runs_own_accuracies(smoke):
    runs, _, page, _ = smoke
    scores = [
        100 * json.loads(p.read_text())["eval"]["after"]["accuracy"]
        for p in sorted((runs / "location/postblock").glob("seed-*/results.json"))
    ]
    assert len(scores) == len(claims.SEEDS)
    expected = f"`postblock` {statistics.fmean(scores):.1f} ± {statistics.stdev(scores):.1f} (n=3)"
    assert expected in page


def test_a_second_make_claims_resumes_and_writes_the_same_page(smoke):
    runs, docs, page, log = smoke
    assert log.count(": done before, kept") == len(claims.recipes()) * len(claims.SEEDS) + 1
    assert "oracle: done before, kept" in log
    assert (docs / "claims.md").read_text() == page
