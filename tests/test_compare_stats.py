"""steer compare's statistics, through the CLI, on run directories with hand-made predictions:
intervals over seeds and test items, paired differences, p-values and verdicts, checked against
scipy.stats and against answers known without it."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from compare_dirs import compare_json, write_run
from scipy import stats
from typer.testing import CliRunner

from steer_cli.cli import app
from steer_cli.evaluate.winrate import win_rate_stats

runner = CliRunner()
MODEL = "meta-llama/Llama-3.2-1B"


def predicted(root: Path, name: str, method: str, seed: int, correct, task="boolq") -> Path:
    """A finished run whose predictions.jsonl marks item i right or wrong as ``correct[i]``
    (items q0, q1, ...); its results.json accuracy agrees."""
    correct = [bool(c) for c in correct]
    accuracy = sum(correct) / len(correct)
    run = write_run(root, name, model=MODEL, task=task, method=method, seed=seed, accuracy=accuracy)
    lines = [
        json.dumps({"prompt": f"q{i}", "gold": "yes", "output": "", "parsed": None, "correct": c})
        for i, c in enumerate(correct)
    ]
    (run / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    return run


def cell(data: dict, method: str, task: str = "boolq") -> dict:
    [row] = [r for r in data["rows"] if r["method"] == method]
    return row["cells"][task]


def two_way_reference(matrix: np.ndarray, resamples=9999, seed=12345) -> tuple[float, float]:
    """The two-way percentile bootstrap written out plainly (its own RNG): seeds and items drawn
    independently with replacement, the mean of the drawn seeds x items."""
    rng = np.random.default_rng(seed)
    seeds, items = matrix.shape
    means = [
        matrix[np.ix_(rng.integers(0, seeds, seeds), rng.integers(0, items, items))].mean()
        for _ in range(resamples)
    ]
    return tuple(np.percentile(means, [2.5, 97.5]))


def test_one_run_gets_scipys_item_bootstrap_and_the_binomial_interval(tmp_path):
    """One seed, 240 of 400 right: the interval is scipy.stats.bootstrap's percentile interval
    of the item scores, to the digit, and about the binomial 60 +- 1.96 * 2.45."""
    correct = [1] * 240 + [0] * 160
    predicted(tmp_path, "pb", "postblock", 1, correct)
    got = cell(compare_json(str(tmp_path)), "postblock")["interval"]
    scores = 100.0 * np.array(correct)
    ci = stats.bootstrap(
        (scores,), np.mean, method="percentile", rng=np.random.default_rng(0)
    ).confidence_interval
    assert (got["low"], got["high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    half = 1.96 * 100 * np.sqrt(0.6 * 0.4 / 400)
    assert got["low"] == pytest.approx(60 - half, abs=0.5)
    assert got["high"] == pytest.approx(60 + half, abs=0.5)
    assert (got["seeds"], got["items"]) == (1, 400)


def test_seed_variation_widens_the_interval(tmp_path):
    """Three seeds that disagree: the interval is the two-way bootstrap's (a plain reference,
    its own draws) and wider than items alone would give."""
    rng = np.random.default_rng(7)
    rows = np.array([rng.random(60) < p for p in (0.4, 0.6, 0.8)], dtype=float)
    for seed, row in enumerate(rows, start=1):
        predicted(tmp_path, f"pb-{seed}", "postblock", seed, row)
    got = cell(compare_json(str(tmp_path)), "postblock")
    assert got["mean"] == pytest.approx(100 * rows.mean())
    low, high = two_way_reference(100 * rows)
    assert got["interval"]["low"] == pytest.approx(low, abs=1.0)
    assert got["interval"]["high"] == pytest.approx(high, abs=1.0)
    items_only = stats.bootstrap(
        (100 * rows.mean(axis=0),), np.mean, method="percentile", rng=np.random.default_rng(0)
    ).confidence_interval
    assert got["interval"]["high"] - got["interval"]["low"] > 1.3 * (
        items_only.high - items_only.low
    )
    assert (got["interval"]["seeds"], got["interval"]["items"]) == (3, 60)


def _pair(root: Path, ours, theirs, seeds=(1, 2)) -> None:
    for seed, (a, b) in zip(seeds, zip(ours, theirs, strict=True), strict=True):
        predicted(root, f"pb-{seed}", "postblock", seed, a)
        predicted(root, f"sft-{seed}", "sft", seed, b)


def test_a_clearly_better_method_is_better(tmp_path):
    """Right wherever SFT is, and on 10 more of 50 items per seed: +20 points exactly."""
    base = [[1] * 20 + [0] * 30, [1] * 25 + [0] * 25]
    ours = [[1] * 30 + [0] * 20, [1] * 35 + [0] * 15]
    _pair(tmp_path, ours, base)
    paired = cell(compare_json(str(tmp_path), "--baseline", "sft"), "postblock")["paired"]
    assert paired["baseline"] == "sft" and paired["difference"] == pytest.approx(20.0)
    assert paired["low"] > 0 and paired["low"] <= 20 <= paired["high"]
    assert paired["p"] < 0.001  # McNemar: 20 discordant pairs, all ours: p = 2 * 0.5**20
    assert paired["verdict"] == "better" and (paired["seeds"], paired["items"]) == (2, 50)


def test_a_clearly_worse_method_is_worse(tmp_path):
    base = [[1] * 40 + [0] * 10] * 2
    ours = [[1] * 25 + [0] * 25] * 2
    _pair(tmp_path, ours, base)
    paired = cell(compare_json(str(tmp_path), "--baseline", "sft"), "postblock")["paired"]
    assert paired["difference"] == pytest.approx(-30.0) and paired["high"] < 0
    assert paired["verdict"] == "worse"


def test_p_is_mcnemars_exact_test(tmp_path):
    """8 items only ours gets right, 2 only SFT: 10 discordant pairs, every arrangement
    enumerated: p is the exact binomial test's, to the digit."""
    ours = [[1] * 8 + [0] * 2 + [1] * 10 + [0] * 10]
    base = [[0] * 8 + [1] * 2 + [1] * 10 + [0] * 10]
    _pair(tmp_path, ours, base, seeds=(1,))
    paired = cell(compare_json(str(tmp_path), "--baseline", "sft"), "postblock")["paired"]
    assert paired["p"] == pytest.approx(stats.binomtest(8, 10).pvalue, rel=1e-12)
    assert paired["difference"] == pytest.approx(100 * 6 / 30)


def test_p_resampled_is_close_to_the_exact_one(tmp_path):
    """18 discordant pairs over 2 seeds (2**18 arrangements: 9999 resamples): within Monte
    Carlo error of the exact binomial test, and the interval within that of a plain bootstrap."""
    ours = [[1] * 6 + [0] * 3 + [1] * 21, [1] * 6 + [0] * 3 + [0] * 21]
    base = [[0] * 6 + [1] * 3 + [1] * 21, [0] * 6 + [1] * 3 + [0] * 21]
    _pair(tmp_path, ours, base)
    paired = cell(compare_json(str(tmp_path), "--baseline", "sft"), "postblock")["paired"]
    assert paired["p"] == pytest.approx(stats.binomtest(12, 18).pvalue, abs=0.025)
    low, high = two_way_reference(100 * (np.array(ours, float) - np.array(base, float)))
    assert (paired["low"], paired["high"]) == (
        pytest.approx(low, abs=1),
        pytest.approx(high, abs=1),
    )
    assert paired["verdict"] == "inconclusive"


def test_identical_methods_are_equivalent_within_a_margin(tmp_path):
    rows = [[1, 0, 1, 1, 0] * 8, [0, 1, 1, 0, 1] * 8]
    _pair(tmp_path, rows, rows)
    data = compare_json(str(tmp_path), "--baseline", "sft", "--margin", "1")
    paired = cell(data, "postblock")["paired"]
    assert (paired["difference"], paired["low"], paired["high"], paired["p"]) == (0, 0, 0, 1)
    assert paired["verdict"] == "equivalent"
    assert data["statistics"]["margin"] == 1 and data["statistics"]["baseline"] == "sft"
    assert "inside +-1 points" in "\n".join(data["statistics"]["method"])
    # no margin, no equivalence
    paired = cell(compare_json(str(tmp_path), "--baseline", "sft"), "postblock")["paired"]
    assert paired["verdict"] == "inconclusive"


def test_a_small_gap_inside_the_margin_is_equivalent(tmp_path):
    """One item of 400 apart, per seed: +0.25 points, interval well inside +-2."""
    base = [[1] * 200 + [0] * 200] * 2
    ours = [[1] * 201 + [0] * 199] * 2
    _pair(tmp_path, ours, base)
    paired = cell(compare_json(str(tmp_path), "--baseline", "sft", "--margin", "2"), "postblock")[
        "paired"
    ]
    assert paired["difference"] == pytest.approx(0.25)
    assert -2 < paired["low"] <= 0.25 <= paired["high"] < 2
    assert paired["verdict"] == "equivalent"


def test_tiny_n_is_inconclusive(tmp_path):
    """Three items, one seed: +66.7 points, but the interval reaches 0 (p = 0.5, exact)."""
    _pair(tmp_path, [[1, 1, 0]], [[0, 0, 0]], seeds=(1,))
    paired = cell(compare_json(str(tmp_path), "--baseline", "sft", "--margin", "5"), "postblock")[
        "paired"
    ]
    assert paired["difference"] == pytest.approx(200 / 3) and paired["low"] <= 0
    assert paired["p"] == pytest.approx(0.5)
    assert paired["verdict"] == "inconclusive"


def test_pairs_only_shared_seeds_and_items(tmp_path):
    """Seeds 1-3 against SFT's 2-3; SFT scored on one item more: paired on 2 seeds x 4 items."""
    for seed in (1, 2, 3):
        predicted(tmp_path, f"pb-{seed}", "postblock", seed, [1, 1, 1, 0])
    for seed in (2, 3):
        predicted(tmp_path, f"sft-{seed}", "sft", seed, [0, 1, 1, 0, 1])
    data = compare_json(str(tmp_path), "--baseline", "sft")
    paired = cell(data, "postblock")["paired"]
    assert (paired["seeds"], paired["items"]) == (2, 4)
    assert paired["difference"] == pytest.approx(25.0)
    assert cell(data, "postblock")["delta"] == pytest.approx(75 - 60)  # the means' gap, as before


def test_no_shared_seed_is_said(tmp_path):
    predicted(tmp_path, "pb", "postblock", 1, [1, 0, 1])
    predicted(tmp_path, "sft", "sft", 2, [1, 0, 0])
    data = compare_json(str(tmp_path), "--baseline", "sft")
    got = cell(data, "postblock")
    assert got["paired"] is None and got["interval"] is not None
    assert got["paired_missing"] == "no seed in common (seeds 1 vs 2)"
    assert any(
        "no paired difference with sft: no seed in common" in n
        for n in data["statistics"]["missing"]
    )


def test_runs_without_predictions_keep_their_cells_and_say_what_is_missing(tmp_path):
    predicted(tmp_path, "pb-1", "postblock", 1, [1, 0, 1, 1])
    bare = write_run(
        tmp_path, "pb-2", model=MODEL, task="boolq", method="postblock", seed=2, accuracy=0.5
    )
    write_run(tmp_path, "sft", model=MODEL, task="boolq", method="sft", seed=1, accuracy=0.5)
    data = compare_json(str(tmp_path), "--baseline", "sft")
    got = cell(data, "postblock")
    assert got["mean"] == pytest.approx(62.5) and got["n"] == 2 and got["delta"] == 12.5
    assert got["interval"] is None and got["paired"] is None
    assert got["interval_missing"] == f"no predictions.jsonl in {bare}"
    assert got["paired_missing"] == f"no predictions.jsonl in {tmp_path / 'sft'}"
    assert data["statistics"]["method"] == []  # nothing was computed
    result = runner.invoke(app, ["compare", str(tmp_path), "--baseline", "sft"])
    assert result.exit_code == 0, result.output
    assert "no interval: no predictions.jsonl" in result.output
    assert "62.5" in result.output and "(+12.5)" in result.output


def test_paired_needs_one_run_per_seed_and_judged_alike(tmp_path):
    predicted(tmp_path, "pb-a", "postblock", 1, [1, 0, 1])
    predicted(tmp_path, "pb-b", "postblock", 1, [1, 1, 1])
    predicted(tmp_path, "sft", "sft", 1, [1, 0, 0])
    got = cell(compare_json(str(tmp_path), "--baseline", "sft"), "postblock")
    assert got["paired_missing"].startswith("this method: seed 1 has two runs")
    assert got["interval"] is not None  # two runs, each a seed of the cell


def test_judged_otherwise_is_not_paired(tmp_path):
    _judged(tmp_path, "pb", "postblock", [1.0, 0.0, 1.0])
    _judged(tmp_path, "sft", "sft", [0.0, 0.0, 1.0])
    summary = tmp_path / "sft" / "eval" / "alpaca" / "summary.json"
    summary.write_text(json.dumps(json.loads(summary.read_text()) | {"judge": "another"}))
    got = cell(compare_json(str(tmp_path), "--baseline", "sft"), "postblock", "alpaca")
    assert got["paired"] is None and got["paired_missing"].startswith("not all judged alike")
    assert got["interval"] is not None


@pytest.mark.parametrize(
    ("runs", "reason"),
    [
        ([[1, 0, 1], [1, 0]], "its runs were scored on different test items"),
        ([[1]], "fewer than two test items"),
    ],
)
def test_cells_without_an_interval_say_why(tmp_path, runs, reason):
    for seed, correct in enumerate(runs, start=1):
        predicted(tmp_path, f"pb-{seed}", "postblock", seed, correct)
    data = compare_json(str(tmp_path))
    got = cell(data, "postblock")
    assert got["interval"] is None and got["interval_missing"] == reason
    assert data["statistics"]["missing"] == [
        f"Llama-3.2-1B postblock (boolq): no interval: {reason}"
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json\n", "unreadable predictions.jsonl"),
        ('{"prompt": "q0", "gold": 1, "correct": "yes"}\n', "unreadable predictions.jsonl"),
        ('{"prompt": "q0", "gold": 1, "correct": true}\n' * 2, "gives 100, not the recorded 50"),
    ],
)
def test_bad_predictions_are_named_not_used(tmp_path, text, reason):
    run = predicted(tmp_path, "pb", "postblock", 1, [1, 0])
    (run / "predictions.jsonl").write_text(text)
    got = cell(compare_json(str(tmp_path)), "postblock")
    assert got["interval"] is None and reason in got["interval_missing"]


def test_text_formats_carry_the_interval_the_difference_and_the_method(tmp_path):
    _pair(tmp_path, [[1] * 30 + [0] * 20] * 2, [[1] * 20 + [0] * 30] * 2)
    args = ["compare", str(tmp_path), "--baseline", "sft", "--margin", "2"]
    data = compare_json(*args[1:])
    pb = cell(data, "postblock")
    lo, hi = pb["interval"]["low"], pb["interval"]["high"]
    d = pb["paired"]
    markdown = runner.invoke(app, [*args, "-f", "markdown"]).stdout
    line = next(x for x in markdown.splitlines() if x.startswith("| Llama-3.2-1B | postblock"))
    difference = f"(+20.0 [{d['low']:+.1f}, {d['high']:+.1f}] p<0.001 better)"
    assert f"60.0 ± 0.0 [{lo:.1f}, {hi:.1f}] {difference}" in line
    assert "two-way percentile bootstrap" in markdown and "scipy.stats.permutation_test" in markdown
    table = runner.invoke(app, args).stdout
    assert f"[{lo:.1f}, {hi:.1f}]" in table and "better)" in table
    result = runner.invoke(app, [*args, "-f", "csv"])
    [row] = [r for r in csv.DictReader(io.StringIO(result.stdout)) if r["method"] == "postblock"]
    assert float(row["boolq_low"]) == pytest.approx(lo, abs=1e-3 * abs(lo))
    assert (row["boolq_verdict"], float(row["boolq_diff"])) == ("better", 20.0)
    assert "two-way percentile bootstrap" in result.stderr
    latex = runner.invoke(app, [*args, "-f", "latex"]).stdout
    assert f"[{lo:.1f}, {hi:.1f}]" in latex and "p$<$0.001 better" in latex


def _judged(root: Path, name: str, method: str, preferences, lengths=None) -> None:
    """An alpaca run judged on the same instructions; outputs as long as the reference's unless
    ``lengths`` says (then the LC fit has no length term and each instruction's LC preference is
    its preference)."""
    run = write_run(root, name, model=MODEL, task="alpaca", method=method, seed=1, accuracy=0)
    out = run / "eval" / "alpaca"
    out.mkdir(parents=True)
    lengths = lengths or [10] * len(preferences)
    rows = [
        {"instruction": f"do {i}", "preference": p, "length_1": 10, "length_2": n}
        for i, (p, n) in enumerate(zip(preferences, lengths, strict=True))
    ]
    (out / "annotations.json").write_text(json.dumps(rows))
    summary = win_rate_stats(preferences, lengths, [10] * len(rows))
    summary |= {"judge": "tiny-llama", "reference_generator": "ref", "instructions": "everyday"}
    (out / "summary.json").write_text(json.dumps(summary))


def test_judged_cells_resample_the_per_instruction_preferences(tmp_path):
    ours = [1.0, 0.5, 0.75, 1.0, 0.0, 1.0, 0.25, 1.0]
    base = [0.0, 0.5, 0.25, 1.0, 0.0, 0.0, 0.25, 0.5]
    _judged(tmp_path, "pb", "postblock", ours)
    _judged(tmp_path, "sft", "sft", base)
    got = cell(compare_json(str(tmp_path), "--baseline", "sft"), "postblock", "alpaca")
    assert got["mean"] == pytest.approx(100 * np.mean(ours), abs=1e-3)
    ci = stats.bootstrap(
        (100 * np.array(ours),), np.mean, method="percentile", rng=np.random.default_rng(0)
    ).confidence_interval
    assert got["interval"]["low"] == pytest.approx(ci.low, abs=1e-3)
    assert got["interval"]["high"] == pytest.approx(ci.high, abs=1e-3)
    differences = 100 * (np.array(ours) - np.array(base))
    assert got["paired"]["difference"] == pytest.approx(differences.mean(), abs=1e-3)
    exact = stats.permutation_test(
        (differences[differences != 0],), np.mean, permutation_type="samples"
    ).pvalue  # 4 non-zero differences: 16 arrangements, enumerated
    assert got["paired"]["p"] == pytest.approx(exact)


def test_a_length_controlled_cell_resamples_each_instructions_lc_preference(tmp_path):
    """Longer outputs win more: the LC win rate is below the raw one, and the interval is built
    on the per-instruction LC preferences, whose mean is the LC win rate in summary.json."""
    preferences = [1.0, 1.0, 0.75, 1.0, 0.0, 0.25, 0.0, 0.5, 1.0, 0.0]
    lengths = [40, 35, 30, 50, 5, 10, 8, 12, 20, 9]
    _judged(tmp_path, "pb", "postblock", preferences, lengths)
    got = cell(compare_json(str(tmp_path)), "postblock", "alpaca")
    raw = 100 * np.mean(preferences)
    assert got["mean"] < raw - 5 and got["interval_missing"] is None
    assert got["interval"]["low"] < got["mean"] < got["interval"]["high"]
    assert got["interval"]["items"] == 10


def test_the_numbers_are_the_same_in_every_fresh_process(tmp_path):
    rng = np.random.default_rng(1)
    _pair(tmp_path, rng.random((2, 80)) < 0.6, rng.random((2, 80)) < 0.5)
    command = [sys.executable, "-m", "steer_cli", "compare", str(tmp_path), "--baseline", "sft"]
    first, second = (
        subprocess.run([*command, "--json"], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    )
    assert json.loads(first) == json.loads(second)
    assert cell(json.loads(first), "postblock")["paired"]["p"] > 0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--margin", "2"], "--margin needs --baseline"),
        (["--baseline", "sft", "--margin", "-1"], "a margin is a positive number"),
        (["--baseline", "sft", "--margin", "nan"], "a margin is a positive number"),
    ],
)
def test_bad_margins(tmp_path, args, fragment):
    predicted(tmp_path, "sft", "sft", 1, [1, 0])
    result = runner.invoke(app, ["compare", str(tmp_path), *args])
    assert result.exit_code == 1 and fragment in result.output
    assert "Traceback" not in result.output


def test_intervals_cover_the_true_mean_of_simulated_runs():
    """Runs drawn from a known population (seed and item effects on the logit, 5 seeds x 100
    items): the 95% interval holds the population's mean in at least 90% of 60 draws (items
    alone: 44 of 60)."""
    from steer_cli.compare.stats import interval

    rng = np.random.default_rng(5)
    a_big, b_big = rng.normal(0, 0.3, (4000, 1)), rng.normal(0, 1.0, (1, 4000))
    truth = 100 * np.mean(1 / (1 + np.exp(-(0.3 + a_big + b_big))))
    hits = 0
    for _ in range(60):
        a, b = rng.normal(0, 0.3, (5, 1)), rng.normal(0, 1.0, (1, 100))
        runs = 100.0 * (rng.random((5, 100)) < 1 / (1 + np.exp(-(0.3 + a + b))))
        got = interval(runs)
        hits += got.low <= truth <= got.high
    assert hits >= 54


def test_the_plots_error_bars_are_the_tables_intervals(tmp_path, monkeypatch):
    """`--plot`'s bars reach from each cell's interval low to its high (asymmetric), not ± std."""
    import matplotlib.axes

    rng = np.random.default_rng(3)
    for seed, p in enumerate((0.3, 0.5, 0.9), start=1):
        predicted(tmp_path, f"pb-{seed}", "postblock", seed, rng.random(50) < p)
    got = cell(compare_json(str(tmp_path)), "postblock")
    drawn = []
    original = matplotlib.axes.Axes.bar

    def bar(self, *args, **kwargs):
        drawn.append(kwargs["yerr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "bar", bar)
    out = tmp_path / "plot.png"
    result = runner.invoke(app, ["compare", str(tmp_path), "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    [[[below], [above]]] = drawn
    assert below == pytest.approx(got["mean"] - got["interval"]["low"])
    assert above == pytest.approx(got["interval"]["high"] - got["mean"])
    assert below != pytest.approx(got["std"])
