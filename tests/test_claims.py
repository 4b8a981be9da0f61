"""``make claims``: its verdict rules, its recipes, and the whole command on a random tiny model.

The smoke run goes through ``scripts/claims.py`` in a fresh process, as a user runs it (with
``--set`` overrides that make every run one step long, and seeds other than the recipes' own),
then checks the page it wrote against the runs' own files, and that a second invocation resumes
instead of training again. No figure on the page is typed: the tests change the seeds, and the
paper's figures in ``steer_cli.published``, and see the page follow.
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
import claims_report  # noqa: E402
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
    "--set",
    "train.seed=7",  # not the recipes' 42: the page must say what ran
    "--seeds",
    "2",
]
SMOKE_SEEDS = (7, 8)


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
    seeds = set()
    for key, path in found.items():
        recipe = load_recipe(path)
        assert recipe.data.task == "listops", key
        assert recipe.data.test_size >= 200, key
        assert recipe.model.name == "smollm2-135m", key
        seeds.add(recipe.train.seed)
    assert len(seeds) == 1  # the oracle compares runs of one seed
    first = seeds.pop()
    assert claims.seeds_of(found["location/sft"], [], claims.SEEDS) == [
        first + k for k in range(claims.SEEDS)
    ]
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
    assert len(scores) == len(SMOKE_SEEDS)
    mean, std = statistics.fmean(scores), statistics.stdev(scores)
    assert f"`postblock` {mean:.1f} ± {std:.1f} (n={len(SMOKE_SEEDS)})" in page


def test_a_second_make_claims_resumes_and_writes_the_same_page(smoke):
    runs, docs, page, log = smoke
    assert log.count(": done before, kept") == len(claims.recipes()) * len(SMOKE_SEEDS) + 1
    assert "oracle: done before, kept" in log
    assert (docs / "claims.md").read_text() == page


def _results(runs: Path, key: str) -> list[dict]:
    paths = sorted((runs / key).glob("seed-*/results.json"))
    return [json.loads(p.read_text()) for p in paths]


def test_the_page_takes_seeds_counts_and_sizes_from_the_runs(smoke):
    runs, _, page, _ = smoke
    seeds = " ".join(map(str, SMOKE_SEEDS))
    first = f"seed-{SMOKE_SEEDS[0]}"
    assert f"`for s in {seeds}; do steer train recipes/claims/location/sft.yaml" in page
    assert f"- **Seeds**: {', '.join(map(str, SMOKE_SEEDS))} per recipe" in page
    assert "with steer's own commands on `tiny-llama`, two seeds each," in page
    # the oracle ran on the first seed's runs, and the page names that seed
    assert f"`steer oracle tiny-llama runs/claims/location/sft/{first} --samples 4" in page
    assert f"with the {first} runs of `location/postblock`" in page
    assert f"`steer oracle` on the {first} SFT run, 4 prompts" in page
    assert f"the trained {first} ReFT run" in page
    assert f"| trained `postblock` (seed {SMOKE_SEEDS[0]}) |" in page
    # the model's size and the budget, from results.json and config.yaml
    base = _results(runs, "location/postblock")[0]["base_params"]
    assert base < 1e6 and f"of a {base / 1e3:.0f}K model, against the paper's 1B–8B models" in page
    assert f"one {base / 1e3:.0f}K model cannot show a trend" in page
    assert "(one epoch, batches of 8)" in page
    # joint/adapter's rank, from its rank search, and its first two seeds' scores
    adapter = _results(runs, "joint/adapter")
    rank = adapter[0]["rank_search"]["rank"]
    scores = [f"{100 * r['eval']['after']['accuracy']:.1f}%" for r in adapter]
    assert f"That adapter (rank {rank}, `joint/adapter`) scores" in page
    assert f"its first two seeds ({scores[0]} and {scores[1]}, " in page
    diagnostics = json.loads((runs / "joint/joint" / first / "diagnostics.json").read_text())
    assert f"({diagnostics['sample']['examples']} training examples)" in page
    k = diagnostics["layers"][0]["subspace_overlap"]["k"]
    assert f"overlap of the top-{k} subspaces" in page
    # what the committed recipes' page types nowhere any more
    for typed in ("42", "three seeds", "rank 71", "10.5%", "135M"):
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
    ctx = claims_verdicts.Context(runs, SMOKE_SEEDS)
    before = claims_list.claims(ctx)
    close = _by_title(before, "Post-block steering comes close")
    assert (
        "SFT 66.2, Ours 65.4; the ListOps gaps over the four models are 0.8, 0.6, 3.1 and "
        "−1.9 points" in close.paper
    )
    assert "at most 3.1 points (the paper's largest ListOps gap)" in close.finding.rule

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
    found = claims_list.claims(claims_verdicts.Context(runs, SMOKE_SEEDS))

    close = _by_title(found, "Post-block steering comes close")
    assert (
        "SFT 70.0, Ours 65.4; the ListOps gaps over the four models are 4.6, 0.6, 3.1 and "
        "−1.9 points" in close.paper
    )
    assert "at most 4.6 points (the paper's largest ListOps gap)" in close.finding.rule
    lora = _by_title(found, "On 1B-scale models")
    assert "(0.05% against 0.50% of the weights)" in lora.paper
    nonlinear = _by_title(found, "A nonlinearity adds little")
    assert nonlinear.paper.endswith("nonlinear 12.00, linear 11.00")
    assert nonlinear.source.endswith("Table 3's 1.00-point gap")
    share = _by_title(found, "MLP outputs are")
    assert share.title == "MLP outputs are 35–80% of what a block writes"
    assert share.paper == "35–80% across layers"
    assert share.finding.rule == "shown if the median layer's share of writes lies in 35–80%"
    page = claims_report.render(claims_verdicts.Context(runs, SMOKE_SEEDS), found, {}, [])
    assert "The paper picks each LR on validation from four;" in page
    assert "(four LRs on validation, then six seeds on test)" in page
    assert "--sweep --seeds 6 \\" in page


def test_the_verdict_on_sft_follows_the_papers_largest_gap(smoke, monkeypatch):
    """Claim 1's margin is Table 1's largest ListOps gap: move every model's SFT cell to put it
    a point above, then a point below, the runs' own gap, and the verdict turns."""
    from steer_cli import published

    runs, _, _, _ = smoke
    ctx = claims_verdicts.Context(runs, SMOKE_SEEDS)
    gap = ctx.cell("location/sft").mean - ctx.cell("location/postblock").mean
    for margin, verdict in ((gap + 1, SHOWN), (gap - 1, NOT_SHOWN)):
        for model in published.PUBLISHED["table1"].models:
            ours = claims_verdicts.paper("table1", "Ours", "listops", model)
            sft = claims_verdicts.paper_row("table1", "SFT", model)
            listops = round(ours + margin, 1)
            _with_row(
                monkeypatch, "table1", model, "SFT", scores={**sft.scores, "listops": listops}
            )
        found = claims_list.claims(claims_verdicts.Context(runs, SMOKE_SEEDS))
        close = _by_title(found, "Post-block steering comes close")
        assert close.finding.verdict == verdict, (gap, margin)


def _fake_adapter_runs(runs: Path, accuracies: list[float], rank: int, golds: list[str]) -> None:
    """joint/adapter's files as a finished seed leaves them, with these numbers in them."""
    for seed, accuracy in zip((42, 43, 44), accuracies, strict=False):
        run = runs / "joint/adapter" / f"seed-{seed}"
        run.mkdir(parents=True)
        results = {"eval": {"after": {"accuracy": accuracy}}, "rank_search": {"rank": rank}}
        (run / "results.json").write_text(json.dumps(results))
        (run / "config.yaml").write_text(yaml.safe_dump({"adapter": {"rank": "auto"}}))
        rows = [json.dumps({"gold": g}) for g in golds]
        (run / "predictions.jsonl").write_text("\n".join(rows) + "\n")


def test_the_matched_adapters_note_comes_from_its_runs(tmp_path):
    """With the committed page's runs (rank 71; 10.5, 9.5, 0.0; 13.0% for the commonest
    answer) the note is the committed page's, word for word; with others it follows them."""
    golds = ["3"] * 26 + [f"other {i}" for i in range(174)]  # the commonest: 26 of 200
    committed = tmp_path / "committed"
    _fake_adapter_runs(committed, [0.105, 0.095, 0.0], 71, golds)
    assert claims_verdicts.majority(committed / "joint/adapter/seed-42") == 13.0
    note = claims_joint.matched_adapter_note(claims_verdicts.Context(committed))
    assert note == (
        "Table 4 matches the adapter's count to LoRA's. That adapter (rank 71, `joint/adapter`) "
        "scores 6.7 ± 5.8 (n=3) here, at the preset's LR and this budget; its first two seeds "
        "(10.5% and 9.5%, below always answering the most common value) made the joint runs "
        "pair LoRA with a rank-8 adapter instead, whose run alone is `location/postblock`."
    )
    other = tmp_path / "other"
    _fake_adapter_runs(other, [0.2, 0.15], 33, golds)
    note = claims_joint.matched_adapter_note(claims_verdicts.Context(other))
    assert "That adapter (rank 33, `joint/adapter`) scores 17.5 ± 3.5 (n=2)" in note
    assert "(20.0% and 15.0%, against 13.0% for always answering the most common value)" in note
    assert "has not run" in claims_joint.matched_adapter_note(claims_verdicts.Context(tmp_path))
