"""Data sources: local files in every format, split plans, sizes, malformed rows, hub offline."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from steer_cli.data import hub, sources
from steer_cli.data.sources import load_splits, local_files, permutation, read_rows
from steer_cli.data.splits import size_line, size_report
from steer_cli.data.tasks import GSM8K, get_task, task_for
from steer_cli.errors import SteerError
from steer_cli.recipe import DataSection, build_recipe

FIXTURES = Path(__file__).parent / "fixtures"
ALL = {"train_size": None, "validation_size": None, "test_size": None}


def _data(**values) -> DataSection:
    return DataSection.model_validate({**ALL, **values})


def _load(task: str, **values):
    data = _data(task=task, **values)
    return load_splits(task_for(data), data)


# --------------------------------------------------------------------- local fixtures


@pytest.mark.parametrize(
    ("task", "sizes"),
    [
        ("boolq", (3, 1, 10)),  # train 80:20 into train/val; test: all of validation
        ("winogrande", (3, 3, 3)),  # validation.csv halved; the unlabeled test.jsonl unused
        ("arc-challenge", (2, 2, 2)),  # train.json, its own validation/test
        ("gsm8k", (3, 1, 10)),  # train 80:20 into train/val; test: all of test
        ("aqua", (3, 2, 2)),
        ("listops", (3, 1, 1)),  # LRA's TSV files: basic_train.tsv, basic_val.tsv, ...
    ],
)
def test_every_task_loads_its_fixture_directory(task, sizes) -> None:
    folder = {"arc-challenge": "arc"}.get(task, task)
    splits = _load(task, path=str(FIXTURES / folder))
    assert tuple(len(splits[s]) for s in ("train", "validation", "test")) == sizes
    t = get_task(task)
    for examples in splits.values():
        for ex in examples:
            assert t.is_correct(ex.target, ex)


def test_listops_lra_tsv_values() -> None:
    splits = _load("listops", path=str(FIXTURES / "listops"))
    assert [ex.answer for ex in splits["train"]] == ["9", "5", "4"]
    assert "Expression: [MAX 2 9 [MIN 4 7 ] ]\n" in splits["train"][0].prompt


def test_alpaca_single_file_is_carved_and_disjoint(tmp_path) -> None:
    rows = [{"instruction": f"Say {i}.", "input": "", "output": f"{i}"} for i in range(300)]
    path = tmp_path / "alpaca.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    splits = _load("alpaca", path=str(path))
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [294, 3, 3]
    targets = [{ex.target for ex in splits[s]} for s in ("train", "validation", "test")]
    assert not (targets[0] & targets[1] or targets[0] & targets[2] or targets[1] & targets[2])
    assert set().union(*targets) == {str(i) for i in range(300)}
    fixture = _load("alpaca", path=str(FIXTURES / "alpaca"))
    assert len(fixture["train"]) + len(fixture["validation"]) + len(fixture["test"]) == 6


def test_same_rows_in_every_format(tmp_path) -> None:
    rows = [
        json.loads(line) for line in (FIXTURES / "gsm8k" / "test.jsonl").read_text().splitlines()
    ]
    (tmp_path / "t.json").write_text(json.dumps(rows))
    (tmp_path / "w.json").write_text(json.dumps({"data": rows}))
    import csv

    with (tmp_path / "t.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["question", "answer"])
        writer.writeheader()
        writer.writerows(rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    for name in ("t.json", "w.json", "t.csv", "t.parquet"):
        got, _ = read_rows(tmp_path / name)
        assert got == rows, name
    via_files = _load(
        "gsm8k",
        files={
            "train": str(FIXTURES / "gsm8k" / "train.jsonl"),
            "test": str(tmp_path / "t.parquet"),
        },
    )
    assert via_files == _load("gsm8k", path=str(FIXTURES / "gsm8k"))


def test_local_files_by_name(tmp_path) -> None:
    for name in (
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
        "dev.csv",
        "notes.txt",
    ):
        (tmp_path / name).write_text("")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.jsonl").write_text("")
    found = local_files(_data(path=str(tmp_path)))
    assert {k: [p.name for p in v] for k, v in found.items()} == {
        "train": ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"],
        "validation": ["dev.csv"],
        "test": ["test.jsonl"],
    }
    (tmp_path / "train_test.jsonl").write_text("")
    with pytest.raises(SteerError, match="matches the splits"):
        local_files(_data(path=str(tmp_path)))


# ---------------------------------------------------------------------------- splits


def _numbered(tmp_path: Path, n: int, split: str = "train") -> Path:
    """GSM8K files whose ``split`` holds ``n`` rows numbered by their answer, the other one."""
    rows = [{"question": f"q{i}", "answer": f"r\n#### {i}"} for i in range(n)]
    other = "test" if split == "train" else "train"
    (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / f"{other}.jsonl").write_text(json.dumps({"question": "t", "answer": "#### 1"}))
    return tmp_path


def test_split_ratios_disjoint_deterministic_and_like_datasets(tmp_path) -> None:
    folder = _numbered(tmp_path, 7473)  # GSM8K's train size
    splits = _load("gsm8k", path=str(folder))
    train = [int(ex.answer) for ex in splits["train"]]
    val = [int(ex.answer) for ex in splits["validation"]]
    assert (len(train), len(val)) == (5978, 1495)  # ceil(0.2 * 7473) = 1495
    assert not set(val) & set(train) and set(val) | set(train) == set(range(7473))
    assert splits == _load("gsm8k", path=str(folder))  # deterministic for seed 42
    assert splits["validation"] != _load("gsm8k", path=str(folder), seed=7)["validation"]
    # Exactly datasets' train_test_split(test_size=0.2, seed=42): its "test" is our validation.
    from datasets import Dataset

    parts = Dataset.from_dict({"i": list(range(7473))}).train_test_split(test_size=0.2, seed=42)
    assert val == parts["test"]["i"] and train == parts["train"]["i"]
    assert permutation(10, 42) == permutation(10, 42) != permutation(10, 43)


def test_sizes_cap_each_split_with_a_seeded_subset(tmp_path) -> None:
    folder = _numbered(tmp_path, 200)
    full = _load("gsm8k", path=str(folder))
    capped = _load("gsm8k", path=str(folder), train_size=20, validation_size=10)
    assert (len(capped["train"]), len(capped["validation"])) == (20, 10)
    assert set(capped["train"]) <= set(full["train"])
    assert set(capped["validation"]) <= set(full["validation"])
    assert capped == _load("gsm8k", path=str(folder), train_size=20, validation_size=10)
    assert _load("gsm8k", path=str(folder), validation_size=0)["validation"] == []


def test_split_override_and_overlap_check(tmp_path) -> None:
    folder = _numbered(tmp_path, 100, split="test")
    splits = _load(
        "gsm8k",
        path=str(folder),
        splits={"train": "test[30%:]", "validation": "test[:10%]", "test": "test[10%:30%]"},
    )
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [70, 10, 20]
    with pytest.raises(
        SteerError, match="the validation and test splits share 50 rows of source split 'test'"
    ):
        _load("gsm8k", path=str(folder), splits={"validation": "test[:50%]", "test": "test"})
    assert _load("gsm8k", path=str(folder), splits={"validation": None})["validation"] == []


# ------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("task", "file", "fragments"),
    [
        ("boolq", "boolq_bad_answer.jsonl", ["boolq_bad_answer.jsonl line 3", "'answer'", "maybe"]),
        ("gsm8k", "gsm8k_no_final.jsonl", ["gsm8k_no_final.jsonl line 2", "'answer'", "####"]),
        ("boolq", "broken.jsonl", ["broken.jsonl line 2 is not JSON"]),
        ("winogrande", "winogrande_extra.csv", ["winogrande_extra.csv line 3", "more values"]),
        ("arc-challenge", "arc_missing_choices.jsonl", ["line 1", "'choices'", "missing"]),
    ],
)
def test_malformed_rows_name_file_row_and_field(task, file, fragments) -> None:
    path = FIXTURES / "malformed" / file
    with pytest.raises(SteerError) as info:
        plan = {"train": "train", "validation": None, "test": None}
        _load(task, files={"train": str(path)}, splits=plan)
    for fragment in fragments:
        assert fragment in info.value.message
    assert info.value.hint


def test_missing_inputs_are_clear(tmp_path) -> None:
    with pytest.raises(
        SteerError,
        match=re.escape("task 'boolq' needs the source split(s) validation but no local file"),
    ):
        _load("boolq", files={"train": str(FIXTURES / "boolq" / "train.jsonl")})
    with pytest.raises(SteerError, match=f"data.path '{tmp_path / 'nowhere'}' does not exist"):
        _load("boolq", path=str(tmp_path / "nowhere"))
    with pytest.raises(SteerError, match="test_sources.py: unsupported file type '.py'"):
        read_rows(Path(__file__))
    with pytest.raises(SteerError, match="no data files"):
        _load("boolq", path=str(tmp_path))
    with pytest.raises(SteerError, match="data.source=generator is for ListOps, not 'gsm8k'"):
        _load("gsm8k", source="generator")
    with pytest.raises(SteerError, match="no hub dataset"):
        _load("listops", source="hub")


# --------------------------------------------------------------------------- local task


def test_local_task_from_a_recipe() -> None:
    recipe = build_recipe(
        {
            "data": {
                "task": "local",
                "path": str(FIXTURES / "local" / "reviews.jsonl"),
                "splits": {
                    "train": "train[20%:]",
                    "validation": "train[:10%]",
                    "test": "train[10%:20%]",
                },
                "local": {
                    "prompt": "Review: {text}\nIs it positive or negative?\n",
                    "target": "Answer: {label}",
                    "parser": "regex:Answer: (positive|negative)",
                },
                **ALL,
            }
        }
    )
    assert recipe.data.max_length == 1024 and recipe.train.epochs == 1
    task = task_for(recipe.data)
    splits = load_splits(task, recipe.data)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [8, 1, 1]
    ex = splits["train"][0]
    assert ex.prompt.startswith("Review: ") and ex.answer in ("positive", "negative")
    assert task.is_correct(f"Answer: {ex.answer}", ex)


def test_local_task_recipe_errors() -> None:
    with pytest.raises(
        SteerError, match="data.task=local needs data.local.prompt and data.local.target"
    ):
        task_for(_data(task="local"))
    with pytest.raises(
        SteerError,
        match=re.escape(
            "'data.local.parser' should be exact, number, letter or regex:<pattern>, got 'fuzzy'"
        ),
    ):
        build_recipe({"data": {"task": "local", "local": {"parser": "fuzzy"}}})
    with pytest.raises(
        SteerError, match="'data.local.prompt' expected '}' before end of string, got '{unclosed'"
    ):
        build_recipe({"data": {"task": "local", "local": {"prompt": "{unclosed"}}})
    with pytest.raises(SteerError, match="unknown task 'gsm9k'"):
        build_recipe({"data": {"task": "gsm9k"}})
    with pytest.raises(
        SteerError, match="data.task=local needs data.local.prompt and data.local.target"
    ):
        build_recipe({"data": {"task": "local", "path": "x.jsonl"}})
    with pytest.raises(
        SteerError,
        match=re.escape("data.source=local needs data.path (a file or directory) or data.files"),
    ):
        build_recipe({"data": {"task": "boolq", "source": "local"}})
    with pytest.raises(SteerError, match="data.source=generator is for ListOps, not 'aqua'"):
        build_recipe({"data": {"task": "aqua", "source": "generator"}})


def test_recipe_task_defaults() -> None:
    gsm = build_recipe({"data": {"task": "gsm8k"}})
    assert gsm.train.epochs == 3 and gsm.data.max_length == GSM8K.max_length
    assert build_recipe({"data": {"task": "gsm8k"}, "train": {"epochs": 1}}).train.epochs == 1
    assert build_recipe({"data": {"task": "boolq", "max_length": 300}}).data.max_length == 300
    assert build_recipe({}).data.max_length == 512
    lra = build_recipe({"data": {"listops": {"preset": "lra"}}}).data
    assert (lra.listops.depth, lra.listops.arity, lra.listops.min_length) == (10, 10, 500)
    assert lra.listops.max_length == 2000 and lra.max_length == 4096
    assert (
        build_recipe({"data": {"listops": {"preset": "lra", "depth": 3}}}).data.listops.depth == 3
    )


def test_listops_generator_lra_lengths() -> None:
    data = _data(
        task="listops",
        train_size=3,
        validation_size=1,
        test_size=1,
        listops={"preset": "lra", "min_length": 60, "max_length": 120},
    )
    splits = load_splits(task_for(data), data)
    for ex in splits["train"]:
        expression = ex.prompt.split("Expression: ")[1].strip()
        assert 60 <= len(expression.split()) <= 120


# -------------------------------------------------------------------------------- hub


def test_hub_offline_fails_fast_and_names_the_dataset(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    start = time.perf_counter()
    with pytest.raises(SteerError) as info:
        _load("boolq")
    assert time.perf_counter() - start < 30
    assert "google/boolq" in info.value.message
    assert "data.source=local" in info.value.hint and "passage" in info.value.hint


def test_hub_unreachable_is_treated_as_offline(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    import datasets.config

    before = datasets.config.HF_HUB_OFFLINE
    with pytest.raises(
        SteerError, match="from the Hugging Face hub: no network and not in the datasets cache"
    ) as info:
        _load("winogrande")
    assert "allenai/winogrande (winogrande_debiased)" in info.value.message
    assert datasets.config.HF_HUB_OFFLINE is before  # the offline switch is undone


def test_hub_probe_times_out(monkeypatch) -> None:
    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://10.255.255.1")  # unroutable: connect hangs
    start = time.perf_counter()
    assert sources.hub_reachable(timeout=0.5) is False
    assert time.perf_counter() - start < 2


def test_hub_dataset_to_our_splits(monkeypatch) -> None:
    """The hub path end to end, with datasets.load_dataset answering from the fixtures."""
    import datasets

    rows = {
        split: [json.loads(line) for line in (FIXTURES / "boolq" / f"{split}.jsonl").open()]
        for split in ("train", "validation")
    }
    calls = []

    def fake_load_dataset(name, config=None, **kwargs):
        calls.append((name, config))
        return datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in rows.items()})

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    loaded = _load("boolq")
    assert calls == [("google/boolq", None)]
    assert loaded == _load("boolq", path=str(FIXTURES / "boolq"))
    with pytest.raises(SteerError, match="no split 'test'"):
        _load("boolq", splits={"test": "test"})
    bad = {**rows, "train": [{**rows["train"][0], "answer": "perhaps"}]}
    rows.update(bad)
    with pytest.raises(SteerError, match=r"google/boolq split 'train' row 1: field 'answer'"):
        _load("boolq")


# The hub's split sizes (the paper's Table 6 prints them rounded): what appendix F.1's plan cuts.
HUB = {
    "boolq": {"train": 9427, "validation": 3270},
    "gsm8k": {"train": 7473, "test": 1319},
    "winogrande": {"train": 9248, "validation": 1267, "test": 1767},
}


def _hub_rows(task: str, split: str, n: int) -> list[dict]:
    if task == "boolq":
        return [
            {"question": f"{split} {i}", "passage": "p", "answer": i % 2 == 0} for i in range(n)
        ]
    if task == "gsm8k":
        return [{"question": f"{split} {i}", "answer": f"r\n#### {i}"} for i in range(n)]
    answer = (lambda i: "") if split == "test" else (lambda i: str(1 + i % 2))  # test: unlabeled
    return [
        {"sentence": f"{split} {i} _", "option1": "a", "option2": "b", "answer": answer(i)}
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("task", "ours"),
    [
        ("boolq", (7541, 1886, 3270)),  # test: all of the hub's validation split
        ("gsm8k", (5978, 1495, 1319)),  # test: all of the hub's test split
        ("winogrande", (9248, 634, 633)),  # the hub's test is unlabeled: validation halved
    ],
)
def test_hub_splits_follow_appendix_f1(monkeypatch, task, ours) -> None:
    """Appendix F.1: the hub's train and test splits; with only two, train is split 80:20 with
    seed 42 and its :20 part is validation (datasets' train_test_split 'test')."""
    import datasets

    rows = {split: _hub_rows(task, split, n) for split, n in HUB[task].items()}
    hub_dict = datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in rows.items()})
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None, **kw: hub_dict)
    splits = _load(task)
    assert tuple(len(splits[s]) for s in ("train", "validation", "test")) == ours
    t = get_task(task)
    prompts = {s: [ex.prompt for ex in splits[s]] for s in splits}
    if task == "winogrande":
        halves = prompts["validation"] + prompts["test"]
        assert sorted(halves) == sorted(t.format(row).prompt for row in rows["validation"])
        assert prompts["train"] == [t.format(row).prompt for row in rows["train"]]
        return
    test_split = "validation" if task == "boolq" else "test"
    assert prompts["test"] == [t.format(row).prompt for row in rows[test_split]]
    parts = hub_dict["train"].train_test_split(test_size=0.2, seed=42)
    assert prompts["validation"] == [t.format(row).prompt for row in parts["test"]]
    assert prompts["train"] == [t.format(row).prompt for row in parts["train"]]


def test_size_report_says_what_the_caps_cut(monkeypatch) -> None:
    """A plain ``data.task: boolq`` keeps 1000 / 100 / 200 of the hub's splits: the report and
    its header line say so, and how much there is; ``null`` caps take (and say) all of it."""
    import datasets

    rows = {split: _hub_rows("boolq", split, n) for split, n in HUB["boolq"].items()}
    hub_dict = datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in rows.items()})
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None, **kw: hub_dict)
    data = DataSection(task="boolq")  # the recipe defaults
    report = size_report(data, load_splits(task_for(data), data))
    assert report["source"] == "hub" and report["capped"] == ["train", "validation", "test"]
    assert report["splits"]["test"] == {
        "plan": "validation",
        "examples": 200,
        "cap": 200,
        "available": 3270,
    }
    assert report["splits"]["train"]["available"] == 7541
    line = size_line(report)
    assert "train 1,000 of 7,541" in line and "test 200 of 3,270" in line
    assert "a subsample" in line and "data.train_size" in line and "null: all" in line

    everything = _data(task="boolq")
    report = size_report(everything, load_splits(task_for(everything), everything))
    assert report["capped"] == [] and report["splits"]["test"]["examples"] == 3270
    assert "test 3,270 · all of each split" in size_line(report)

    generated = DataSection(train_size=16, validation_size=2, test_size=4)
    report = size_report(generated, load_splits(task_for(generated), generated))
    assert report["source"] == "generator" and report["capped"] == []
    assert report["splits"]["train"] == {
        "plan": "train",
        "examples": 16,
        "cap": 16,
        "available": None,
    }
    assert "96,000 / 2,000 / 2,000" in size_line(report)
