"""steer compare --paper: the paper's rows beside the runs', like for like."""

import json
import statistics
from pathlib import Path

import pytest
import yaml
from compare_dirs import SWEEP, compare_json, sample_runs, swept, trained, write_run
from typer.testing import CliRunner

from steer_cli.cli import app
from steer_cli.compare import build_rows, find_runs, method_label
from steer_cli.published import PUBLISHED

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def runs(tmp_path):
    return sample_runs(tmp_path)


def test_paper_rows_sit_beside_matching_runs(runs):
    rows = build_rows(find_runs([runs]), paper="table1").rows
    sources = [(r.method, r.source, r.name) for r in rows]
    i = sources.index(("postblock", "runs", ""))
    assert sources[i + 1] == ("postblock", "paper", "Ours")
    paper = rows[i + 1]
    assert paper.cells["listops"].mean == 65.4 and paper.params == 0.04 and paper.same_variant
    # r=1 is Table 2's variant: beside Table 1's Ours it is marked, not passed off as its row
    j = sources.index(("postblock r=1", "runs", ""))
    assert sources[j + 1][1:] == ("paper", "Ours")
    assert rows[j + 1].differs == ["r=8, not r=1"]


def test_paper_alone_prints_the_published_table():
    comparison = build_rows([], paper="table2")
    assert len(comparison.columns) == 6 and {r.source for r in comparison.rows} == {"paper"}
    assert {r.method for r in comparison.rows} == {
        "lofit",
        "jola",
        "postblock-vector",
        "postblock r=1",
    }
    assert len(comparison.rows) == len(PUBLISHED["table2"].rows) == 16


def test_lora_rank_variant_and_paper_fallback(tmp_path):
    model = "meta-llama/Llama-3.2-1B"
    d = write_run(tmp_path, "l16", model=model, task="gsm8k", method="lora", seed=1, accuracy=0.3)
    config = yaml.safe_load((d / "config.yaml").read_text())
    config["lora"] = {"rank": 16}
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    write_run(
        tmp_path, "r6", model=model, task="gsm8k", method="postblock", seed=1, accuracy=0.3, rank=6
    )
    rows = build_rows(find_runs([tmp_path]), paper="table4").rows
    pairs = [(r.method, r.source, r.cells["gsm8k"].mean) for r in rows]
    assert ("lora r=16", "paper", 31.2) in pairs  # the exact variant
    assert ("postblock", "paper", 31.3) in pairs  # r=6 meets the method's row (the Adapter)
    assert ("postblock r=6", "runs", 30.0) in pairs
    by_name = {r.name: r for r in rows if r.source == "paper"}
    assert by_name["LoRA (r=16)"].same_variant
    # ... marked: section 6.4 sizes the Adapter by LoRA r=8's count, not a rank of its own
    assert by_name["Adapter"].differs == ["rank matched to LoRA r=8's count, not r=6"]


def test_table3_runs_meet_their_own_paper_rows(tmp_path):
    """Each Table 3 recipe, trained and judged, sits beside its own published row, as the same
    variant: the nonlinear adapter beside 'Ours (nonlinear)', LoRA r=8 beside 0.26%'s row."""
    from steer_cli.recipe import load_recipe

    recipes = sorted((ROOT / "recipes" / "paper" / "table3").rglob("*.yaml"))
    assert len(recipes) == len(PUBLISHED["table3"].rows) == 7
    labels = {}
    for i, path in enumerate(recipes):
        d = tmp_path / path.stem
        (d / "eval" / "alpaca").mkdir(parents=True)
        config = load_recipe(path, []).model_dump(mode="json")
        labels[method_label(config)] = path.stem
        (d / "config.yaml").write_text(yaml.safe_dump(config))
        results = {"eval": {"after": {"accuracy": 0.0}}, "trainable_percent": 0.02}
        (d / "results.json").write_text(json.dumps(results))
        summary = {"length_controlled_winrate": float(i)}
        (d / "eval" / "alpaca" / "summary.json").write_text(json.dumps(summary))

    rows = build_rows(find_runs([tmp_path]), paper="table3").rows
    pairs = [
        (ours, paper)
        for ours, paper in zip(rows, rows[1:], strict=False)
        if ours.source == "runs" and paper.source == "paper"
    ]
    beside = {labels[ours.method]: paper.name for ours, paper in pairs}
    assert beside == {
        "sft": "Full SFT",
        "postblock-silu": "Ours (nonlinear, r=16)",
        "postblock": "Ours (linear, r=16)",
        "lora-r16": "LoRA (r=16)",
        "lora": "LoRA (r=8)",
        "reft": "ReFT (r=16, all layers)",
        "reft-4layers": "ReFT (4 layers)",
    }
    assert [paper.differs for _, paper in pairs] == [[]] * 7  # each is the paper's variant


@pytest.mark.parametrize(
    ("hub_id", "paper_model"),
    [
        ("google/gemma-3-1b-pt", "gemma-3-1b"),
        ("Qwen/Qwen3-4B-Base", "Qwen3-4B"),
        ("Qwen/Qwen3-4B", "Qwen3-4B"),
        ("meta-llama/Meta-Llama-3.1-8B", "Llama-3.1-8B"),
        ("/models/llama-3.2-1b/", "Llama-3.2-1B"),
    ],
)
def test_base_checkpoints_meet_their_paper_rows(tmp_path, hub_id, paper_model):
    trained(tmp_path, "run", {"model": hub_id, "data": {"task": "boolq"}}, 0.8)
    data = compare_json(str(tmp_path), "--paper", "table1")
    ours, paper = data["rows"]
    assert (ours["source"], paper["source"]) == ("runs", "paper")
    assert (paper["model"], paper["name"], paper["same_variant"]) == (paper_model, "Ours", True)
    assert data["notes"] == []


def test_a_run_without_a_paper_row_is_said_so(tmp_path):
    trained(tmp_path, "small", {"model": "smollm2-135m", "data": {"task": "listops"}}, 0.4)
    it = {"model": "google/gemma-3-1b-it", "data": {"task": "boolq"}}  # instruction-tuned
    trained(tmp_path, "it", it, 0.7)
    vector = {"model": "meta-llama/Llama-3.2-1B", "method": "postblock-vector"}
    trained(tmp_path, "vector", vector, 0.6)
    data = compare_json(str(tmp_path), "--paper", "table1")
    assert {r["source"] for r in data["rows"]} == {"runs"}
    notes = "\n".join(data["notes"])
    assert "no paper row for smollm2-135m postblock: table1 has no smollm2-135m" in notes
    assert "no paper row for gemma-3-1b-it postblock" in notes
    assert "table1 has no postblock-vector on Llama-3.2-1B; see --paper table2" in notes
    result = runner.invoke(app, ["compare", str(tmp_path), "--paper", "table1"])
    assert result.exit_code == 0 and "no paper row for smollm2-135m" in result.output


def test_paper_rows_of_another_variant_are_marked_in_every_cell(tmp_path):
    llama = "meta-llama/Llama-3.2-1B"
    r1 = {"model": llama, "adapter": {"rank": 1}, "data": {"task": "boolq"}}
    trained(tmp_path, "r1", r1, 0.8)
    lora = {"model": llama, "method": "lora", "lora": {"rank": 16}, "data": {"task": "boolq"}}
    trained(tmp_path, "lora16", lora, 0.85)
    rows = compare_json(str(tmp_path), "--paper", "table1")["rows"]
    paper = {row["name"]: row for row in rows if row["source"] == "paper"}
    assert paper["Ours"]["differs"] == ["r=8, not r=1"]
    assert paper["LoRA"]["differs"] == ["LoRA r=8, not LoRA r=16"]
    assert not paper["Ours"]["same_variant"] and not paper["LoRA"]["same_variant"]

    result = runner.invoke(app, ["compare", str(tmp_path), "--paper", "table1", "-f", "markdown"])
    lines = [line for line in result.output.splitlines() if line.startswith("| Llama")]
    marked = [line for line in lines if "paper:" in line]
    assert len(marked) == 2
    for line in marked:
        numbers = [c.strip() for c in line.strip("|").split("|")][3:]
        assert numbers and all(c.endswith("*") or "*" in c for c in numbers), line
    assert "r=8, not r=1" in result.output


def test_averages_cover_the_tasks_both_rows_have(tmp_path):
    model = "meta-llama/Llama-3.2-1B"
    trained(tmp_path, "lo", {"model": model, "data": {"task": "listops"}}, 0.6)
    trained(tmp_path, "bq", {"model": model, "data": {"task": "boolq"}}, 0.8)
    data = compare_json(str(tmp_path), "--paper", "table1")
    ours, paper = data["rows"]
    published = next(
        r for r in PUBLISHED["table1"].rows if r.model == "Llama-3.2-1B" and r.name == "Ours"
    )
    shared = ["boolq", "listops"]
    assert ours["average_tasks"] == paper["average_tasks"] == shared
    assert ours["average"] == pytest.approx(statistics.fmean([60.0, 80.0]))
    assert paper["average"] == pytest.approx(statistics.fmean(published.scores[t] for t in shared))
    result = runner.invoke(app, ["compare", str(tmp_path), "--paper", "table1", "-f", "markdown"])
    assert f"{paper['average']:.1f} (BoolQ, ListOps)" in result.output


def test_the_papers_run_counts_and_precision_are_its_own(tmp_path):
    run = trained(
        tmp_path, "sft", {"model": "meta-llama/Llama-3.1-8B", "method": "sft"}, 0.0, 100.0
    )
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["task"] = "alpaca"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    results = json.loads((run / "results.json").read_text()) | {"task": "alpaca"}
    (run / "results.json").write_text(json.dumps(results))
    (run / "eval" / "alpaca").mkdir(parents=True)
    (run / "eval" / "alpaca" / "summary.json").write_text(
        json.dumps({"length_controlled_winrate": 11.346})
    )
    data = compare_json(str(tmp_path), "--paper", "table3")
    ours, paper = data["rows"]
    assert paper["cells"]["alpaca"]["n"] == 1 and paper["cells"]["alpaca"]["se"] == 0.51
    assert data["decimals"] == {"alpaca": 2}
    result = runner.invoke(app, ["compare", str(tmp_path), "--paper", "table3", "-f", "markdown"])
    assert "| 11.35 |" in result.output and "11.49 (SE 0.51)" in result.output
    sft = next(r for r in compare_json("--paper", "table1")["rows"] if r["name"] == "SFT")
    assert {c["n"] for c in sft["cells"].values()} == {1}


def test_a_sweep_and_three_families_beside_table1(tmp_path):
    """The issue's acceptance: only test means, every run met or said unmet, every unlike paper
    row marked, averages over the tasks both rows have."""
    swept(tmp_path)
    trained(tmp_path, "gemma", {"model": "google/gemma-3-1b-pt", "data": {"task": "listops"}}, 0.6)
    qwen = {"model": "Qwen/Qwen3-4B", "method": "lora", "lora": {"rank": 16}}
    trained(tmp_path, "qwen", qwen | {"data": {"task": "winogrande"}}, 0.83)
    llama8b = {"model": "meta-llama/Llama-3.1-8B", "method": "reft", "data": {"task": "gsm8k"}}
    trained(tmp_path, "llama8b", llama8b, 0.4)
    trained(tmp_path, "tiny", {"model": "tiny-llama"}, 0.1)

    data = compare_json(str(tmp_path), "--paper", "table1")
    rows = data["rows"]
    sweep_row = next(r for r in rows if r["source"] == "runs" and r["model"] == "Llama-3.2-1B")
    assert sweep_row["cells"]["boolq"]["n"] == 2  # the two test seeds, not the two LR trials
    tests = [100 * SWEEP[name] for name in ("seed-42", "seed-43")]
    assert sweep_row["cells"]["boolq"]["mean"] == pytest.approx(statistics.fmean(tests))
    assert len(data["held_out"]) == 2
    unmatched = {note.split(":")[0] for note in data["notes"] if note.startswith("no paper row")}
    assert unmatched == {"no paper row for tiny-llama postblock"}
    for i, row in enumerate(rows):
        if row["source"] != "runs" or row["model"] == "tiny-llama":
            continue
        paper = rows[i + 1]
        assert paper["source"] == "paper", row
        assert paper["average_tasks"] == row["average_tasks"] == list(row["cells"])
        [task] = row["average_tasks"]
        assert paper["average"] == paper["cells"][task]["mean"]
        if not paper["same_variant"]:
            assert any(paper["name"] in note and note.startswith("*") for note in data["notes"])
    marked = {r["model"]: r["differs"] for r in rows if r["source"] == "paper" and r["differs"]}
    assert marked == {"Qwen3-4B": ["LoRA r=8, not LoRA r=16"]}
    assert {r["model"] for r in rows if r["source"] == "paper"} == {
        "Llama-3.2-1B",
        "gemma-3-1b",
        "Qwen3-4B",
        "Llama-3.1-8B",
    }
