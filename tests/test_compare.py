"""steer compare: reading runs (test scores only), grouping, statistics, formats, problems."""

import csv
import io
import json
import statistics
from pathlib import Path

import pytest
from compare_dirs import SWEEP, compare_json, sample_runs, swept, write_run
from typer.testing import CliRunner

from steer_cli.cli import app
from steer_cli.compare import build_rows, find_runs, method_label, render

runner = CliRunner()


@pytest.fixture
def runs(tmp_path):
    return sample_runs(tmp_path)


def test_groups_seeds_with_mean_and_std(runs):
    records = find_runs([runs])
    comparison = build_rows(records)
    columns, rows = comparison.columns, comparison.rows
    assert columns == ["boolq", "listops"]
    by = {(r.model, r.method): r for r in rows}
    cell = by[("Llama-3.2-1B", "postblock")].cells["listops"]
    assert cell.n == 3
    assert cell.mean == pytest.approx(statistics.fmean([60, 62, 67]))
    assert cell.std == pytest.approx(statistics.stdev([60, 62, 67]))
    assert by[("Llama-3.2-1B", "postblock r=1")].cells["boolq"].mean == pytest.approx(80)


def test_incomplete_runs_are_listed_not_dropped(runs):
    records = find_runs([runs])
    problems = {r.path.split("/")[-1]: r.reason for r in records if r.status != "ok"}
    assert problems == {
        "broken": "no results.json",
        ".next.partial-123": "interrupted or still running",
    }
    text = render(build_rows(records), records, "markdown", "t")
    assert "broken" in text and "no results.json" in text


def test_baseline_deltas(runs):
    rows = build_rows(find_runs([runs]), baseline="sft").rows
    postblock = next(r for r in rows if r.method == "postblock")
    assert postblock.cells["listops"].delta == pytest.approx(statistics.fmean([60, 62, 67]) - 66)
    assert next(r for r in rows if r.method == "sft").cells["listops"].delta is None


@pytest.mark.parametrize("fmt", ["markdown", "csv", "latex", "json"])
def test_formats(runs, fmt):
    records = find_runs([runs])
    text = render(build_rows(records, paper="table1"), records, fmt, "title")
    if fmt == "json":
        payload = json.loads(text)
        assert {row["source"] for row in payload["rows"]} == {"runs", "paper"}
        assert len(payload["problems"]) == 2
    elif fmt == "csv":
        table = list(csv.DictReader(io.StringIO(text)))
        pb = next(r for r in table if r["method"] == "postblock" and r["source"] == "runs")
        assert float(pb["listops"]) == pytest.approx(63.0) and pb["listops_n"] == "3"
    elif fmt == "latex":
        assert text.startswith("\\begin{tabular}") and "$\\pm$" in text
    else:
        assert "| paper: Ours, n=5 |" in text


def test_method_label_variants():
    assert (
        method_label({"method": "postblock", "adapter": {"parameterization": "lowrank", "rank": 8}})
        == "postblock"
    )
    assert (
        method_label(
            {
                "method": "postblock",
                "adapter": {"parameterization": "lowrank", "rank": 1, "activation": "silu"},
            }
        )
        == "postblock r=1 act=silu"
    )
    assert (
        method_label({"method": "postblock-vector", "adapter": {"parameterization": "vector"}})
        == "postblock-vector"
    )
    # ReFT's two positions are two rows; its preset's (last_prompt) needs no label
    reft = {"method": "reft", "adapter": {"parameterization": "loreft", "rank": 8}}
    assert (
        method_label(reft | {"adapter": {**reft["adapter"], "positions": "last_prompt"}}) == "reft"
    )
    assert (
        method_label(reft | {"adapter": {**reft["adapter"], "positions": "f7+l7"}})
        == "reft positions=f7+l7"
    )


def test_cli_and_plot(runs, tmp_path):
    out = tmp_path / "bars.png"
    result = runner.invoke(app, ["compare", str(runs), "--paper", "table1", "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert "postblock" in result.output and "65.4" in result.output and "broken" in result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = runner.invoke(app, ["compare", str(runs), "-f", "json"])
    assert json.loads(result.output)["columns"] == ["boolq", "listops"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--paper", "table9"], "unknown published table"),
        (["-f", "xml", "--paper", "table1"], "unknown format"),
        (["--json", "-f", "csv", "--paper", "table1"], "two formats"),
        ([], "nothing to compare"),
        (["/nonexistent/dir"], "no such directory"),
    ],
)
def test_cli_errors(args, fragment):
    result = runner.invoke(app, ["compare", *args])
    assert result.exit_code == 1 and fragment in result.output and "Traceback" not in result.output


def test_files_among_the_arguments_are_listed_and_skipped(runs):
    log = runs / "train.log"
    log.write_text("a log caught by a shell glob")
    result = runner.invoke(app, ["compare", str(runs / "sft"), str(log)])
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "train.log" in result.output


def test_unknown_baseline(runs):
    result = runner.invoke(app, ["compare", str(runs), "--baseline", "lora"])
    assert result.exit_code == 1 and "methods found" in result.output


def test_alpaca_runs_are_scored_by_their_judged_lc_win_rate(tmp_path):
    model = "meta-llama/Llama-3.1-8B"
    judged = write_run(
        tmp_path, "judged", model=model, task="alpaca", method="sft", seed=1, accuracy=0
    )
    (judged / "eval" / "alpaca").mkdir(parents=True)
    summary = {"length_controlled_winrate": 12.5, "win_rate": 10.0}
    (judged / "eval" / "alpaca" / "summary.json").write_text(json.dumps(summary))
    write_run(tmp_path, "unjudged", model=model, task="alpaca", method="lora", seed=1, accuracy=0)

    result = runner.invoke(app, ["compare", str(tmp_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    [row] = data["rows"]
    assert (row["method"], row["cells"]["alpaca"]["mean"]) == ("sft", 12.5)
    [problem] = data["problems"]
    assert problem["path"].endswith("unjudged") and problem["status"] == "incomplete"
    assert "--instructions" in problem["reason"]


def test_a_sweeps_validation_trials_stay_out_of_the_test_mean(tmp_path):
    out = swept(tmp_path)
    tests = [100 * SWEEP["seed-42"], 100 * SWEEP["seed-43"]]
    [row] = compare_json(str(out))["rows"]
    cell = row["cells"]["boolq"]
    assert cell["n"] == 2
    assert cell["mean"] == pytest.approx(statistics.fmean(tests))
    assert cell["std"] == pytest.approx(statistics.stdev(tests))
    held = compare_json(str(out))["held_out"]
    assert sorted(Path(r["path"]).name for r in held) == ["lr-0.001", "lr-0.01"]
    assert {r["split"] for r in held} == {"validation"}

    result = runner.invoke(app, ["compare", str(out)])
    assert result.exit_code == 0, result.output
    expected = f"{statistics.fmean(tests):.1f} ± {statistics.stdev(tests):.1f}"
    assert expected in result.output
    assert "held-out" in result.output and "validation split" in result.output


def test_a_validation_trial_outside_its_sweep_is_still_no_test_score(tmp_path):
    """Its recipe says so (data.splits.test is the validation plan), whatever its folder."""
    out = swept(tmp_path)
    moved = tmp_path / "copied" / "best-trial"
    moved.parent.mkdir()
    (out / "lr-0.01").rename(moved)
    result = runner.invoke(app, ["compare", str(moved.parent)])
    assert result.exit_code == 1
    assert "no finished test runs" in result.output and "validation split" in result.output


def test_json_flag_is_format_json(runs):
    flag = runner.invoke(app, ["compare", str(runs), "--json"])
    option = runner.invoke(app, ["compare", str(runs), "-f", "json"])
    assert flag.exit_code == option.exit_code == 0
    assert json.loads(flag.stdout) == json.loads(option.stdout)
    assert json.loads(flag.stdout)["columns"] == ["boolq", "listops"]
