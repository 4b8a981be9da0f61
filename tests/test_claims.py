"""``make claims``: its verdict rules on hand-made runs with known answers, its recipes, and the
whole command on a random tiny model.

The rules (three outcomes each; "matches" against the paper's own gap; "beats" one-sided with
Holm's correction across the report) are checked on run directories written here, whose
predictions make the answer known without the code under test. The smoke run goes through
``scripts/claims.py`` in a fresh process, as a user runs it (with ``--set`` overrides that make
every run one step long, one LR per grid and seeds other than the recipes' own), then checks the
page it wrote against the runs' own files, and that a second invocation resumes instead of
training again. No figure on the page is typed: the tests change the seeds, and the paper's
figures in ``steer_cli.published``, and see the page follow.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import claims  # noqa: E402
import claims_joint  # noqa: E402
import claims_list  # noqa: E402
import claims_oracle  # noqa: E402
import claims_paper  # noqa: E402
import claims_report  # noqa: E402
import claims_runs  # noqa: E402
from claims_runs import Pair  # noqa: E402
from claims_verdicts import (  # noqa: E402
    INCONCLUSIVE,
    NOT_RUN,
    OPPOSITE,
    PENDING,
    SHOWN,
    Claim,
    Finding,
    OneSided,
    at_least,
    at_most,
    decide,
    holm,
    split_half,
)

SMOKE = [
    "--set",
    "model.name=tiny-llama",
    "--set",
    "train.max_steps=1",
    "--set",
    "data.test_size=8",
    "--set",
    "data.validation_size=8",
    "--samples",
    "4",
    "--set",
    "train.seed=7",  # not the recipes' 42: the page must say what ran
    "--seeds",
    "2",
    "--grid",
    "1",
]
SMOKE_SEEDS = (7, 8)

# -- the rules, on hand-made runs --------------------------------------------------------------

ITEMS = 200


def _run(root: Path, key: str, seed: int, correct: list[bool], validation: float = 0.5) -> None:
    """A finished test seed of recipe ``key`` as a sweep leaves it: config.yaml, results.json
    and predictions.jsonl marking item i right or wrong as ``correct[i]``; and the sweep's
    summary.json with one LR's validation accuracy."""
    run = root / key / f"seed-{seed}"
    run.mkdir(parents=True)
    config = {
        "method": "sft" if key.endswith("/sft") else "postblock",
        "model": {"name": "smollm2-135m"},
        "adapter": {"parameterization": "lowrank", "rank": 8, "activation": "none"},
        "data": {"task": "listops"},
        "train": {"seed": seed, "lr": 0.002},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    accuracy = sum(correct) / len(correct)
    results = {"task": "listops", "eval": {"after": {"accuracy": accuracy}}, "steps": 40}
    (run / "results.json").write_text(json.dumps(results))
    rows = [
        json.dumps({"prompt": f"q{i}", "gold": str(i % 10), "correct": c})
        for i, c in enumerate(correct)
    ]
    (run / "predictions.jsonl").write_text("\n".join(rows) + "\n")
    summary = {"validation_accuracy": {"0.002": validation}, "best_lr": 0.002}
    (root / key / "summary.json").write_text(json.dumps(summary))


def _method(root: Path, key: str, right: list[int], validation: float = 0.5) -> None:
    """Five seeds of ``key``; seed s gets the first ``right[s]`` of the 200 items right."""
    for seed, n in zip(range(42, 47), right, strict=True):
        _run(root, key, seed, [i < n for i in range(ITEMS)], validation)


def test_a_pair_is_steer_compares_paired_difference(tmp_path):
    """The claims' pair of two recipes is `steer compare --baseline`'s paired difference and
    interval (its own code, run here through the CLI), and the one-sided p comes from the same
    bootstrap: a gap of exactly 10 points on every seed lies far above 0."""
    from compare_dirs import compare_json

    _method(tmp_path, "location/postblock", [130, 120, 140, 125, 135])
    _method(tmp_path, "location/sft", [110, 100, 120, 105, 115])
    pair = claims_runs.compare_pair(
        claims_runs.Context(tmp_path), "location/postblock", "location/sft"
    )
    assert pair.difference == pytest.approx(10.0) and (pair.seeds, pair.items) == (5, ITEMS)
    both = [str(tmp_path / "location/postblock"), str(tmp_path / "location/sft")]
    data = compare_json(*both, "--baseline", "sft")
    [row] = [r for r in data["rows"] if r["method"] != "sft"]
    cli = row["cells"]["listops"]["paired"]
    assert (pair.low, pair.high) == pytest.approx((cli["low"], cli["high"]))
    assert 0 < pair.low < 10 < pair.high
    assert pair.p_greater == pytest.approx(1 / 10000)  # no resample at or below 0
    assert pair.p_less == pytest.approx(1.0)


def test_one_sided_p_is_the_share_of_resampled_means_on_the_wrong_side():
    """Against a plain two-way bootstrap written out here (its own RNG): the share at or below
    0 agrees within Monte Carlo error, and the two sides add up to about 1."""
    import numpy as np

    from steer_cli.compare.stats import one_sided_p

    rng = np.random.default_rng(5)
    matrix = rng.choice([-100.0, 0.0, 100.0], size=(5, 60), p=[0.3, 0.45, 0.25])
    p_greater, p_less = one_sided_p(matrix)
    means = [
        matrix[np.ix_(rng.integers(0, 5, 5), rng.integers(0, 60, 60))].mean() for _ in range(4000)
    ]
    assert p_greater == pytest.approx(np.mean(np.array(means) <= 0), abs=0.03)
    assert 0.2 < p_greater < 0.9 and p_greater + p_less == pytest.approx(1, abs=0.05)


def test_holm_adjusts_like_the_hand_computation():
    """Holm (1979) on four p-values: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 is 0.02,
    0.03, 0.06, 0.04, made non-decreasing: 0.02, 0.03, 0.06, 0.06."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def _pending(p_greater: float, p_less: float) -> Claim:
    return Claim(
        "t", "s", "p", Finding("m", PENDING, "{family} tests", "", OneSided(p_greater, p_less))
    )


def test_decide_corrects_every_one_sided_test_of_the_report_together():
    """Four tests: 0.01 is below 0.05 after Holm (x 4: 0.04), 0.03 and 0.04 are not (x 3 and
    x 2: 0.09); the fourth, whose reverse p is 0.005 (x 4: 0.02), is opposite; a claim without
    a test keeps its verdict and is not in the family."""
    untested = Claim("u", "s", "p", Finding("m", SHOWN, "r"))
    found = decide(
        [
            _pending(0.01, 0.99),
            untested,
            _pending(0.04, 0.96),
            _pending(0.03, 0.97),
            _pending(0.995, 0.005),
        ]
    )
    assert [c.finding.verdict for c in found] == [
        SHOWN,
        SHOWN,
        INCONCLUSIVE,
        INCONCLUSIVE,
        OPPOSITE,
    ]
    assert found[0].finding.adjusted == pytest.approx((0.04, 1.0))
    assert found[2].finding.adjusted == pytest.approx((0.09, 1.0))
    assert found[4].finding.adjusted == pytest.approx((0.995, 0.02))
    assert found[0].finding.rule == "four tests"  # the family's size, said in the rule
    alone = decide([_pending(0.04, 0.96)])  # a family of one: no correction
    assert alone[0].finding.verdict == SHOWN


def _pair(low: float, high: float) -> Pair:
    return Pair((low + high) / 2, low, high, 0.5, 0.5, 5, ITEMS)


@pytest.mark.parametrize(
    ("low", "high", "verdict"),
    [
        (-3.0, 4.0, SHOWN),  # whole interval above -3.1
        (-9.0, -4.0, OPPOSITE),  # wholly below -3.1
        (-5.0, 2.0, INCONCLUSIVE),  # straddles -3.1
        (1.0, 9.0, SHOWN),  # better is a match too
    ],
)
def test_a_match_has_three_outcomes_against_the_margin(low, high, verdict):
    assert at_least(_pair(low, high), 3.1) == verdict


@pytest.mark.parametrize(
    ("low", "high", "verdict"),
    [(-6.0, 0.3, SHOWN), (0.5, 4.0, OPPOSITE), (-2.0, 2.0, INCONCLUSIVE)],
)
def test_adds_little_is_the_mirror_image(low, high, verdict):
    assert at_most(_pair(low, high), 0.34) == verdict


def test_split_half_needs_both_halves():
    inside, outside = (lambda v: v <= 0.5), (lambda v: v > 0.5)
    assert split_half([0.2, 0.4], inside, outside) == SHOWN
    assert split_half([0.7, 0.9], inside, outside) == OPPOSITE
    assert split_half([0.4, 0.7], inside, outside) == INCONCLUSIVE


def _close(found: list[Claim]) -> Claim:
    return _by_title(found, "Post-block steering comes close")


@pytest.mark.parametrize(
    ("extra_wrong", "verdict"),
    [(0, SHOWN), (20, OPPOSITE), (6, INCONCLUSIVE)],
)
def test_claim_1_on_runs_with_a_known_gap(tmp_path, extra_wrong, verdict):
    """Post-block wrong on ``extra_wrong`` more of 200 items than SFT, on every seed: a gap of
    0 (a match), 10 points (wholly beyond the 3.1-point margin) or 3 points (whose interval
    straddles it)."""
    sft = [120, 110, 130, 115, 125]
    _method(tmp_path, "location/sft", sft)
    _method(tmp_path, "location/postblock", [n - extra_wrong for n in sft])
    found = claims_list.claims(claims_runs.Context(tmp_path))
    close = _close(found)
    assert close.finding.verdict == verdict
    assert "M = 3.1 points (Table 1's largest ListOps gap of Ours below SFT)" in close.finding.rule
    assert f"A − B = {claims_paper.signed(-extra_wrong / 2, plus=True)} points" in (
        close.finding.measured
    )


def test_beats_claims_on_runs_are_decided_together(tmp_path):
    """Post-block 20 points above post-MLP (every seed), post-MLP 20 below pre-MLP: claim 2
    shown, claim 4 opposite, claim 3 (post-block = pre-MLP) inconclusive; the family is every
    one-sided test that ran (these three)."""
    base = [100, 90, 110, 95, 105]
    _method(tmp_path, "location/postblock", [n + 40 for n in base])
    _method(tmp_path, "location/premlp", [n + 40 for n in base])
    _method(tmp_path, "location/postmlp", base)
    found = claims_list.claims(claims_runs.Context(tmp_path))
    assert [c.title for c in found[1:4]] == [
        "Post-block beats the same adapter on the MLP output",
        "Post-block beats the same adapter on the MLP input",
        "Post-MLP steering covers updates that pre-MLP steering cannot",
    ]
    assert [c.finding.verdict for c in found[1:4]] == [SHOWN, INCONCLUSIVE, OPPOSITE]
    tested = [c for c in found if c.finding.adjusted is not None]
    assert len(tested) == 3
    assert "across the report's three one-sided tests" in found[1].finding.rule


def test_the_tiny_claim_picks_each_side_on_validation(tmp_path):
    """The representative of each side is the one with the better validation accuracy, not
    the better test score: here r=1 (validation 0.6) over the vector (0.4, though better on
    test), and JoLA (0.7) over LoFiT."""
    _method(tmp_path, "tiny/postblock-vector", [150] * 5, validation=0.4)
    _method(tmp_path, "tiny/postblock-r1", [100] * 5, validation=0.6)
    _method(tmp_path, "tiny/lofit", [60] * 5, validation=0.5)
    _method(tmp_path, "tiny/jola", [80] * 5, validation=0.7)
    tiny = _by_title(claims_list.claims(claims_runs.Context(tmp_path)), "Post-block is the best")
    assert "(`postblock-r1`), B = the better of LoFiT and JoLA on validation (`jola`)" in (
        tiny.finding.measured
    )
    assert "A − B = +10.0 points" in tiny.finding.measured


def test_recipes_without_runs_are_not_run_not_a_verdict(tmp_path):
    found = claims_list.claims(claims_runs.Context(tmp_path))
    for claim in found:
        if claim.title.startswith("Post-block trains about a tenth"):
            continue  # a count on the paper's model shape: needs no run
        assert claim.finding.verdict == NOT_RUN, claim.title


def test_the_budget_claim_counts_on_the_papers_model_shape():
    """steer's counts on Llama-3.2-1B's shape: 16 layers of 2 x 2048 x 8 for the adapter, and
    LoRA r=8 on its seven linear maps, over 1,235,814,400 weights (tied head)."""
    model, shares = claims_list.paper_shape_shares()
    assert model == "Llama-3.2-1B"
    adapter = 16 * 2 * 2048 * 8
    lora = 16 * 8 * (2 * (2048 + 2048) + 2 * (2048 + 512) + 3 * (2048 + 8192))
    assert shares["location/postblock"] == pytest.approx(100 * adapter / 1_235_814_400)
    assert shares["location/lora"] == pytest.approx(100 * lora / 1_235_814_400)


def test_the_budget_verdict_follows_the_papers_printed_figures(tmp_path, monkeypatch):
    """Table 1's 0.04% and 0.45% allow a ratio of 9.89 to 13.0; steer's 10.75 is inside. Print
    LoRA as 0.60% instead and the ratio's range (13.2 to 17.3) excludes it."""
    budget = _by_title(claims_list.claims(claims_runs.Context(tmp_path)), "Post-block trains")
    assert budget.finding.verdict == SHOWN
    assert "between 9.89 and 13.00" in budget.paper
    _with_row(monkeypatch, "table1", "Llama-3.2-1B", "LoRA", params="0.60%")
    budget = _by_title(claims_list.claims(claims_runs.Context(tmp_path)), "Post-block trains")
    assert budget.finding.verdict == OPPOSITE


def test_the_matches_margins_are_the_papers_own_gaps(monkeypatch):
    """Claim 7's margin is the most the 1B-scale Ours rows fall below LoRA in Table 1 (2.7:
    gemma-3-1b BoolQ), claim 9's the most Joint-Orth falls below the better of LoRA r=8 and
    Adapter in Table 4 (1.1: Qwen3-4B WinoGrande); move a cell and they follow."""
    assert claims_paper.largest_shortfall(
        "table1", "Ours", ["LoRA"], models=("Llama-3.2-1B", "gemma-3-1b")
    ) == (2.7, ("gemma-3-1b", "boolq"))
    assert claims_paper.largest_shortfall("table4", "Joint-Orth", ["LoRA (r=8)", "Adapter"]) == (
        1.1,
        ("Qwen3-4B", "winogrande"),
    )
    lora = claims_paper.paper_row("table1", "LoRA", "Llama-3.2-1B")
    _with_row(
        monkeypatch, "table1", "Llama-3.2-1B", "LoRA", scores={**lora.scores, "aqua": 41.0}
    )  # Ours 36.5: 4.5 below
    assert claims_paper.largest_shortfall(
        "table1", "Ours", ["LoRA"], models=("Llama-3.2-1B", "gemma-3-1b")
    ) == (4.5, ("Llama-3.2-1B", "aqua"))


# -- the oracle's claims, on a hand-made oracle.json -------------------------------------------


def _oracle(share: tuple[float, float], ratio: tuple[float, float], kl_linear: float) -> dict:
    """An oracle.json with two layers: each half's MLP share and effective-rank ratio given,
    a linear map's per-prompt KL against two ReFT seeds' 0.03 (four prompts)."""

    def half(s, r):
        return {
            "mlp_share": {"of_block_output": s},
            "covariance_effective_rank": {"delta": 10 * r, "hidden": 10.0},
            "relative_error": 0.1,
        }

    layer = {
        "oracle_norm": 1.0,
        "mlp_share": {"ft": {"of_block_output": 0.5, "of_writes": 0.6, "of_update": 0.8}},
        "covariance": {"delta": {"effective_rank": 5.0}, "hidden": {"effective_rank": 10.0}},
        "spectrum": {"effective_rank": 6.0},
        "expressivity": {"relative_error": 0.1},
        "halves": [half(share[0], ratio[0]), half(share[1], ratio[1])],
    }

    def per_prompt(v: float, spread: float = 0.1) -> dict:
        return {"mean_generated": v, "per_prompt": [v * (1 - spread), v * (1 + spread), v, v]}

    reft = [{"path": f"/r/location/reft/seed-{s}", "kl": per_prompt(0.03)} for s in (42, 43)]
    return {
        "fine_tuned": "runs/claims/location/sft/seed-42",
        "samples": 4,
        "tokens": 400,
        "folds": [[0, 2], [2, 4]],
        "hidden_size": 64,
        "rank": 8,
        "layers": [layer, layer],
        "kl": {
            "linear rank 8": per_prompt(kl_linear, 0.5),
            "linear full": per_prompt(kl_linear),
            "base": per_prompt(1.0),
            **{f"oracle {s}": per_prompt(0.0) for s in ("block_output", "mlp_output")},
            "oracle attn_output": per_prompt(0.0),
        },
        "sanity": {"tolerance": 1e-5},
        "runs": reft,
        "error_control": [],
    }


def _oracle_claim(o: dict, start: str) -> Claim:
    ctx = claims_runs.Context(Path("/nonexistent"))
    ctx.oracle = o
    return _by_title(claims_oracle.oracle_claims(ctx), start)


@pytest.mark.parametrize(
    ("share", "verdict"),
    [((0.45, 0.6), SHOWN), ((0.2, 0.3), OPPOSITE), ((0.5, 0.8), INCONCLUSIVE)],
)
def test_the_mlp_share_verdict_reads_the_papers_words_in_both_halves(share, verdict):
    claim = _oracle_claim(_oracle(share, (0.3, 0.3), 0.03), "MLP outputs are")
    assert claim.finding.verdict == verdict
    assert (
        "'average MLP output norm with respect to the layer's block output'" in claim.finding.rule
    )


@pytest.mark.parametrize(
    ("ratio", "verdict"),
    [((0.3, 0.4), SHOWN), ((1.2, 1.5), OPPOSITE), ((0.4, 0.8), INCONCLUSIVE)],
)
def test_low_rank_is_against_the_hidden_states_own_spectrum(ratio, verdict):
    claim = _oracle_claim(_oracle((0.5, 0.5), ratio, 0.03), "The oracle's steering vectors")
    assert claim.finding.verdict == verdict


@pytest.mark.parametrize(
    ("kl", "verdict"), [(0.05, SHOWN), (0.001, OPPOSITE), (0.02, INCONCLUSIVE)]
)
def test_the_linear_map_against_refts_kl_on_held_out_prompts(kl, verdict):
    """Against ReFT's 0.03 per prompt (give or take 10%): 0.05 (give or take 50%) is above two
    thirds of it on every prompt, 0.001 far below; 0.02 is two thirds of it on average, above
    on one prompt and below on another (the interval straddles 0)."""
    claim = _oracle_claim(_oracle((0.5, 0.5), (0.3, 0.3), kl), "The best linear map")
    assert claim.finding.verdict == verdict


# -- the recipes -------------------------------------------------------------------------------


def test_every_claims_recipe_is_valid_and_says_how_make_claims_runs_it():
    from steer_cli.recipe import load_recipe

    found = claims.recipes()
    assert {k.split("/")[0] for k in found} == {"location", "tiny", "joint", "nonlinear"}
    seeds = set()
    for key, path in found.items():
        recipe = load_recipe(path)
        assert recipe.data.task == "listops", key
        assert recipe.data.test_size >= 200 and recipe.data.validation_size >= 100, key
        assert recipe.model.name == "smollm2-135m", key
        seeds.add(recipe.train.seed)
        grid = claims.lr_grid(key, recipe.method)
        assert len(grid) == claims.GRID and recipe.train.lr == grid[len(grid) // 2], key
        # the header's command is the page's
        assert claims_report.command(key, claims.SEEDS, grid) in path.read_text(), key
    assert len(seeds) == 1  # the oracle compares runs of one seed
    first = seeds.pop()
    assert claims.seeds_of(found["location/sft"], [], claims.SEEDS) == [
        first + k for k in range(claims.SEEDS)
    ]
    assert claims.SEEDS >= 5
    for key in claims_report.ORACLE_RUNS:
        assert key in found
    # the rank-1 adapter and the adapter with LoRA's count have their own grids
    assert claims.lr_grid("tiny/postblock-r1", "postblock") != claims.lr_grid(
        "location/postblock", "postblock"
    )
    assert max(claims.lr_grid("joint/adapter", "postblock")) < min(
        claims.lr_grid("location/postblock", "postblock")
    )


# -- the whole command, on a tiny model --------------------------------------------------------


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
    found = claims_list.claims(claims_runs.Context(runs))
    assert len(found) >= 21
    for n, claim in enumerate(found, 1):
        assert f"### {n}. {claim.title}: {claim.finding.verdict}" in page
        assert claim.finding.verdict not in (NOT_RUN, PENDING), claim.title
        assert claim.limits, claim.title  # each says what limits it at this scale
    assert f"- **What limits it at this scale**: {found[0].limits}." in page
    judged = [c.finding.verdict for c in found if not c.sanity]
    counts = [judged.count(v) for v in (SHOWN, OPPOSITE, INCONCLUSIVE)]
    assert (
        f"## Verdicts: {counts[0]} shown, {counts[1]} opposite, {counts[2]} inconclusive at "
        "this scale (and one sanity check, claim 15: " in page
    )
    # every image the page shows is there
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", page):
        assert (docs / image).is_file(), image
    assert len(re.findall(r"!\[", page)) >= 9  # 4 compare charts and the oracle's plots


def test_the_page_reports_the_runs_own_accuracies(smoke):
    runs, _, page, _ = smoke
    scores = [
        100 * json.loads(p.read_text())["eval"]["after"]["accuracy"]
        for p in sorted((runs / "location/postblock").glob("seed-*/results.json"))
    ]
    assert len(scores) == len(SMOKE_SEEDS)
    mean, std = statistics.fmean(scores), statistics.stdev(scores)
    assert f"`postblock` {mean:.1f} ± {std:.1f} (n={len(SMOKE_SEEDS)}), 95% interval [" in page
    summary = json.loads((runs / "location/postblock/summary.json").read_text())
    assert f"LR {summary['best_lr']:g}" in page


def test_a_second_make_claims_resumes_and_writes_the_same_page(smoke):
    runs, docs, page, log = smoke
    trials = len(claims.recipes()) * (len(SMOKE_SEEDS) + 1)  # one LR and the seeds each
    assert log.count(": done before, kept") == trials + 1
    assert "oracle: done before, kept" in log
    assert (docs / "claims.md").read_text() == page


def _results(runs: Path, key: str) -> list[dict]:
    paths = sorted((runs / key).glob("seed-*/results.json"))
    return [json.loads(p.read_text()) for p in paths]


def test_the_page_takes_seeds_counts_and_sizes_from_the_runs(smoke):
    runs, _, page, _ = smoke
    first = f"seed-{SMOKE_SEEDS[0]}"
    assert (
        "`steer train recipes/claims/location/sft.yaml --sweep --seeds 2 --lrs 2e-05 "
        "-o runs/claims/location/sft`" in page
    )
    assert f"- **Seeds**: {', '.join(map(str, SMOKE_SEEDS))} per recipe" in page
    assert "with steer's own commands on `tiny-llama`, each learning rate picked on " in page
    assert "then two seeds, with" in page
    # the oracle ran on the first seed's runs, and the page names that seed
    assert f"`steer oracle tiny-llama runs/claims/location/sft/{first} --samples 4" in page
    assert f"with the {first} runs of `location/postblock`" in page
    assert f"`steer oracle` on the {first} SFT run, 4 prompts (2 and 2 in its two halves)" in page
    assert f"the trained ReFT runs ({first}, seed-{SMOKE_SEEDS[1]})" in page
    assert f"| trained `postblock` (seed {SMOKE_SEEDS[0]}) |" in page
    # the model's size and the budget, from results.json and config.yaml
    base = _results(runs, "location/postblock")[0]["base_params"]
    assert base < 1e6 and f"of a {base / 1e3:.0f}K model, against the paper's 1B–8B models" in page
    assert f"one {base / 1e3:.0f}K model cannot show a trend" in page
    assert f"a {base / 1e3:.0f}K model is not 1B-scale" in page
    assert "(one epoch, batches of 8)" in page
    # joint/adapter's rank, from its rank search
    adapter = _results(runs, "joint/adapter")
    rank = adapter[0]["rank_search"]["rank"]
    assert f"That adapter (rank {rank}, `joint/adapter`, its own LR grid) scores" in page
    diagnostics = json.loads((runs / "joint/joint" / first / "diagnostics.json").read_text())
    assert f"({diagnostics['sample']['examples']} training examples)" in page
    k = diagnostics["layers"][0]["subspace_overlap"]["k"]
    assert f"overlap of the top-{k} subspaces" in page
    # the LR grid's validation accuracies, from summary.json
    summary = json.loads((runs / "tiny/jola/summary.json").read_text())
    (lr, accuracy), *_ = summary["validation_accuracy"].items()
    assert f"| {lr}: {100 * accuracy:.1f} |" in page
    # what the committed recipes' page types nowhere
    for typed in ("seed-42", "seeds 42", "--seeds 5 --lrs", "three seeds", "rank 71", "135M"):
        assert typed not in page, typed


def _with_row(monkeypatch, table: str, model: str, row: str, **changes) -> None:
    """Change one row of ``steer_cli.published.PUBLISHED`` for this test."""
    from steer_cli import published

    old = published.PUBLISHED[table]
    rows = tuple(
        dataclasses.replace(r, **changes) if (r.model, r.name) == (model, row) else r
        for r in old.rows
    )
    monkeypatch.setitem(published.PUBLISHED, table, dataclasses.replace(old, rows=rows))


def _by_title(found: list, start: str):
    return next(claim for claim in found if claim.title.startswith(start))


def test_the_papers_figures_come_from_published(smoke, monkeypatch):
    from steer_cli import published

    runs, _, _, _ = smoke
    ctx = claims_runs.Context(runs, SMOKE_SEEDS)
    before = claims_list.claims(ctx)
    close = _close(before)
    assert (
        "SFT 66.2, Ours 65.4; the ListOps gaps over the four models are 0.8, 0.6, 3.1 and "
        "−1.9 points" in close.paper
    )
    assert "M = 3.1 points (Table 1's largest ListOps gap" in close.finding.rule

    sft = published.PUBLISHED["table1"].rows[0]
    assert (sft.model, sft.name) == ("Llama-3.2-1B", "SFT")
    _with_row(monkeypatch, "table1", "Llama-3.2-1B", "SFT", scores={**sft.scores, "listops": 70.0})
    _with_row(monkeypatch, "table1", "Llama-3.2-1B", "LoRA", params="0.50%")
    _with_row(monkeypatch, "table1", "Llama-3.2-1B", "Ours", params="0.05%")
    _with_row(
        monkeypatch, "table3", "Llama-3.1-8B", "Ours (nonlinear, r=16)", scores={"alpaca": 12.0}
    )
    quote = published.PROSE["mlp_share"].quote
    monkeypatch.setitem(published.PROSE, "mlp_share", published.Quoted((35, 80), quote))
    monkeypatch.setitem(published.PROSE, "lr_grid", published.Quoted(4, "four"))
    monkeypatch.setitem(published.PROSE, "runs", published.Quoted(6, "six"))
    found = claims_list.claims(claims_runs.Context(runs, SMOKE_SEEDS))

    close = _close(found)
    assert (
        "SFT 70.0, Ours 65.4; the ListOps gaps over the four models are 4.6, 0.6, 3.1 and "
        "−1.9 points" in close.paper
    )
    assert "M = 4.6 points (Table 1's largest ListOps gap" in close.finding.rule
    lora = _by_title(found, "On 1B-scale models")
    assert "(0.05% against 0.50% of the weights)" in lora.paper
    nonlinear = _by_title(found, "A nonlinearity adds little")
    assert nonlinear.paper.endswith("nonlinear 12.00, linear 11.00")
    assert nonlinear.source.endswith("Table 3's 1.00-point gap")
    assert "M = 1.00 points (Table 3's gap" in nonlinear.finding.rule
    share = _by_title(found, "MLP outputs are")
    assert share.title == "MLP outputs are 35–80% of what a block writes"
    assert share.paper == "35–80% across layers"
    assert "Shown if the median layer's share lies in 35–80% in both halves" in share.finding.rule
    page = claims_report.render(claims_runs.Context(runs, SMOKE_SEEDS), found, {}, [])
    assert "(it picks each LR from four values)" in page
    assert "(four LRs on validation, then six seeds on test)" in page
    assert "--sweep --seeds 6 \\" in page


def test_the_verdict_on_sft_follows_the_papers_largest_gap(smoke, monkeypatch):
    """Claim 1's margin is Table 1's largest ListOps gap: move every model's SFT cell to put it
    a point beyond the runs' whole interval, then a point short of it, and the verdict turns
    from shown to opposite."""
    from steer_cli import published

    runs, _, _, _ = smoke
    ctx = claims_runs.Context(runs, SMOKE_SEEDS)
    pair = ctx.pair("location/postblock", "location/sft")
    for margin, verdict in ((1 - pair.low, SHOWN), (-pair.high - 1, OPPOSITE)):
        for model in published.PUBLISHED["table1"].models:
            ours = claims_paper.paper("table1", "Ours", "listops", model)
            sft = claims_paper.paper_row("table1", "SFT", model)
            listops = round(ours + margin, 1)
            _with_row(
                monkeypatch, "table1", model, "SFT", scores={**sft.scores, "listops": listops}
            )
        found = claims_list.claims(claims_runs.Context(runs, SMOKE_SEEDS))
        assert _close(found).finding.verdict == verdict, (pair, margin)


def _fake_adapter_runs(runs: Path, accuracies: list[float], rank: int, golds: list[str]) -> None:
    """joint/adapter's files as a finished seed leaves them, with these numbers in them."""
    for seed, accuracy in zip((42, 43, 44, 45, 46), accuracies, strict=False):
        run = runs / "joint/adapter" / f"seed-{seed}"
        run.mkdir(parents=True)
        results = {"eval": {"after": {"accuracy": accuracy}}, "rank_search": {"rank": rank}}
        (run / "results.json").write_text(json.dumps(results))
        (run / "config.yaml").write_text(yaml.safe_dump({"adapter": {"rank": "auto"}}))
        rows = [json.dumps({"gold": g}) for g in golds]
        (run / "predictions.jsonl").write_text("\n".join(rows) + "\n")


def test_the_matched_adapters_note_comes_from_its_runs(tmp_path):
    golds = ["3"] * 26 + [f"other {i}" for i in range(174)]  # the commonest: 26 of 200
    low = tmp_path / "low"
    _fake_adapter_runs(low, [0.105, 0.095, 0.0, 0.1, 0.1], 71, golds)
    assert claims_runs.majority(low / "joint/adapter/seed-42") == 13.0
    note = claims_joint.matched_adapter_note(claims_runs.Context(low))
    assert note == (
        "Table 4 matches the adapter's count to LoRA's. That adapter (rank 71, `joint/adapter`, "
        "its own LR grid) scores 8.0 ± 4.5 (n=5) over five seeds here (below always answering "
        "the most common value); the joint runs pair LoRA with a rank-8 adapter, whose run "
        "alone is `location/postblock`."
    )
    other = tmp_path / "other"
    _fake_adapter_runs(other, [0.2, 0.15], 33, golds)
    note = claims_joint.matched_adapter_note(claims_runs.Context(other))
    assert "That adapter (rank 33, `joint/adapter`, its own LR grid) scores 17.5 ± 3.5" in note
    assert "(against 13.0% for always answering the most common value)" in note
    assert "has not run" in claims_joint.matched_adapter_note(claims_runs.Context(tmp_path))
