"""The paper's numbers as `steer compare --paper` prints them equal the paper's text, cell by cell.

tests/data/paper_tables.md holds the paper's table lines verbatim; these tests parse it and compare
every cell with what `steer compare --paper TABLE --json` prints. `make check-paper`
(scripts/check_paper.py) checks the copy against the paper's text, which is not in the repository
(CI runs it after `make test`); the tests here check that checker on texts made for the purpose.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steer_cli.cli import app
from steer_cli.compare import match_key
from steer_cli.published import PROSE

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from check_paper import blocks as _blocks  # noqa: E402  (scripts/ is not a package)

runner = CliRunner()
CHECK = REPO / "scripts" / "check_paper.py"
TITLES = {
    "BoolQ": "boolq",
    "WinoG": "winogrande",
    "ARC-C": "arc_challenge",
    "GSM8K": "gsm8k",
    "AQuA": "aqua",
    "ListOps": "listops",
}


def _cells(line: str) -> list[str]:
    cells = [c.strip() for c in line.strip()[1:-1].split("|")]
    while cells and not cells[-1]:
        cells.pop()
    return cells


def _columns(header: str) -> list[str]:
    return [TITLES[c] for c in _cells(header) if c in TITLES]


def _accuracy_table(lines: list[str]) -> list[dict]:
    """Tables 1 and 2: Model, Method, Params, then (score, gap to SFT) per task, Avg."""
    tasks = _columns(lines[0])
    rows, model = [], None
    for line in lines[1:]:
        cells = _cells(line)
        if len(cells) == 4 + 2 * len(tasks):  # the first row of a model names it
            model = cells.pop(0)
        name, params, *values = cells
        assert len(values) == 2 * len(tasks) + 1, line
        scores = dict(zip(tasks, map(float, values[0 : 2 * len(tasks) : 2]), strict=True))
        rows.append({"model": model, "name": name, "params": params, "scores": scores})
    return rows


def _table3(lines: list[str]) -> list[dict]:
    assert _cells(lines[0]) == ["Method", "Params (%)", "LC Win Rate", "SE"]
    rows = []
    for line in lines[1:]:
        name, params, score, se = _cells(line)
        # Section 6.2: "we perform instruction tuning using Llama 3.1 8B".
        rows.append(
            {
                "model": "Llama 3.1 8B",
                "name": name,
                "params": params,
                "scores": {"alpaca": float(score)},
                "se": {"alpaca": float(se)},
            }
        )
    return rows


def _table4(lines: list[str]) -> list[dict]:
    """Table 4 is transposed: a row per (model, task), a column per method."""
    methods = _cells(lines[0])[2:]
    rows: dict[tuple[str, str], dict] = {}
    model = None
    for line in lines[1:]:
        cells = _cells(line)
        if len(cells) == 2 + len(methods):
            model = cells.pop(0)
        task, *values = cells
        assert len(values) == len(methods), line
        for method, value in zip(methods, values, strict=True):
            row = rows.setdefault((model, method), {"model": model, "name": method, "scores": {}})
            row["scores"][TITLES[task]] = float(value)
    return list(rows.values())


PARSED = {
    "table1": _accuracy_table(_blocks()["table1"]),
    "table2": _accuracy_table(_blocks()["table2"]),
    "table3": _table3(_blocks()["table3"]),
    "table4": _table4(_blocks()["table4"]),
}


def _printed(name: str) -> str:
    """A row name as the paper's text shows it: math (``r=16``) lost, empty brackets kept."""
    return re.sub(r"\s*r=\d+", "", name)


def _clean(text: str) -> str:
    text = re.sub(r"\(\s*,\s*", "(", text)
    text = re.sub(r",\s*\)", ")", text)
    return re.sub(r"\s*\(\s*\)", "", text).strip()


def _same_name(ours: str, paper: str) -> bool:
    return ours == paper or _clean(_printed(ours)) == _clean(paper)


def _check_paper(paper: Path) -> subprocess.CompletedProcess:
    """``make check-paper PAPER=...`` as CI runs it (the Makefile adds nothing but the path)."""
    command = [sys.executable, str(CHECK), str(paper)]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO)


def _a_text_holding_the_copy(tmp_path: Path, change=lambda text: text) -> Path:
    """A stand-in for the paper's text: every block of the copy and every quote, with prose."""
    parts = ["\n".join(lines) for lines in _blocks().values()]
    parts += [figure.quote for figure in PROSE.values()]
    paper = tmp_path / "002_paper.txt"
    paper.write_text(change("Some prose.\n" + "\nMore prose.\n".join(parts) + "\nThe end.\n"))
    return paper


def test_check_paper_passes_on_a_text_holding_every_block_and_quote(tmp_path) -> None:
    done = _check_paper(_a_text_holding_the_copy(tmp_path).parent)  # a folder with 002_*.txt
    assert done.returncode == 0, done.stderr
    assert f"{len(_blocks())} table blocks and {len(PROSE)} prose figures" in done.stdout


def test_check_paper_fails_on_one_changed_cell_or_quote(tmp_path) -> None:
    first = _blocks()["table1"][1]  # Llama-3.2-1B's SFT row
    cell = _a_text_holding_the_copy(
        tmp_path, lambda t: t.replace(first, first.replace("66.2", "66.3"))
    )
    done = _check_paper(cell)
    assert done.returncode == 1
    assert "error: table1 in paper_tables.md is not the paper's text" in done.stderr
    assert "table2" not in done.stderr  # only the block that differs
    quote = PROSE["mlp_share"].quote
    prose = _a_text_holding_the_copy(
        tmp_path, lambda t: t.replace(quote, quote.replace("40", "45"))
    )
    done = _check_paper(prose)
    assert done.returncode == 1
    assert "error: steer_cli.published.PROSE['mlp_share']'s quote is not in" in done.stderr


def test_check_paper_fails_not_skips_without_the_text(tmp_path) -> None:
    done = _check_paper(tmp_path / "nowhere")
    assert done.returncode == 1 and not done.stdout
    assert done.stderr.startswith("check-paper: error: the paper's text is not at ")
    assert "make check-paper PAPER=" in done.stderr
    assert len(done.stderr.splitlines()) == 1


_WORDS = {1: "one", 5: "five"}


@pytest.mark.parametrize("name", sorted(PROSE))
def test_each_prose_figure_is_what_its_quote_says(name: str) -> None:
    figure = PROSE[name]
    if isinstance(figure.value, tuple):
        low, high = figure.value
        assert f" {low}–{high}% " in figure.quote
    else:
        assert f" {_WORDS[figure.value]} " in figure.quote


def _printed_rows(table: str) -> list[dict]:
    result = runner.invoke(app, ["compare", "--paper", table, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert {row["source"] for row in rows} == {"paper"}
    return rows


@pytest.mark.parametrize("table", ["table1", "table2", "table3", "table4"])
def test_every_published_cell_is_the_papers(table: str) -> None:
    ours = _printed_rows(table)
    paper = PARSED[table]
    assert len(ours) == len(paper), "a row of the paper is missing, or one too many"
    for mine, theirs in zip(ours, paper, strict=True):
        where = f"{table} {theirs['model']} {theirs['name']}"
        assert match_key(mine["model"]) == match_key(theirs["model"]), where
        assert _same_name(mine["name"], theirs["name"]), (where, mine["name"])
        assert {t: c["mean"] for t, c in mine["cells"].items()} == theirs["scores"], where
        if "params" in theirs:
            assert mine["params_text"] == theirs["params"], where
            assert mine["params"] == float(theirs["params"].rstrip("%")), where
        else:  # Table 4 has no Params column
            assert mine["params_text"] is None, where
        ses = {t: c["se"] for t, c in mine["cells"].items() if c["se"] is not None}
        assert ses == theirs.get("se", {}), where


def _sft(name: str) -> bool:
    return name in ("SFT", "Full SFT")


def test_run_counts_are_the_papers() -> None:
    """Tables 1 and 2: 'the mean accuracy of five independent runs', SFT 'a single run'
    (appendix F.3, whose SFT rows are all 0.0); Table 3: one run each, with AlpacaEval's SE;
    Table 4 states no count, except that its SFT row is Table 1's single run."""
    f3 = _blocks()["f3-table1"]
    sft_rows = [_cells(line) for line in f3[1:] if "SFT" in _cells(line)]
    assert len(sft_rows) == 4
    assert all(cells[-4:] == ["0.0"] * 4 for cells in sft_rows)
    for table in ("table1", "table2", "table3", "table4"):
        for row in _printed_rows(table):
            counts = {c["n"] for c in row["cells"].values()}
            if _sft(row["name"]) or table == "table3":
                expected = 1
            else:
                expected = None if table == "table4" else 5
            assert counts == {expected}, (table, row["model"], row["name"], counts)
            assert all(c["std"] is None for c in row["cells"].values())


def test_table4_sft_is_table1s_single_run() -> None:
    t1 = {(match_key(r["model"]), r["name"]): r["scores"] for r in PARSED["table1"]}
    for row in PARSED["table4"]:
        if row["name"] == "SFT":
            same = t1[(match_key(row["model"]), "SFT")]
            assert all(same[t] == v for t, v in row["scores"].items())


def test_table3_lora_rows_are_r16_and_r8_by_their_params() -> None:
    """The Params column says which LoRA row is which: on Llama-3.1-8B (32 layers, d 4096,
    kv 1024, MLP 14336; 8,030,261,248 parameters) r=8 is 0.26% and r=16 is 0.52%."""
    per_rank = 32 * ((4096 + 4096) * 2 + (4096 + 1024) * 2 + (4096 + 14336) * 3)
    rows = [row for row in _printed_rows("table3") if row["name"].startswith("LoRA")]
    assert len(rows) == 2
    for row in rows:
        rank = row["variant"]["lora_rank"]
        assert f"{100 * rank * per_rank / 8_030_261_248:.2f}%" == row["params_text"]
    by_rank = {row["variant"]["lora_rank"]: row["cells"]["alpaca"]["mean"] for row in rows}
    paper = {row["params"]: row["scores"]["alpaca"] for row in PARSED["table3"]}
    assert by_rank == {16: paper["0.52%"], 8: paper["0.26%"]}


def test_table3_prints_the_papers_precision() -> None:
    result = runner.invoke(app, ["compare", "--paper", "table3", "-f", "markdown"])
    assert result.exit_code == 0, result.output
    for row in PARSED["table3"]:
        score, se = row["scores"]["alpaca"], row["se"]["alpaca"]
        assert f"{score:.2f} (SE {se:.2f})" in result.output
