"""The paper's claims as data: each claim, its figure in the paper, steer's measurement and a
verdict by a rule stated beside it (rendered by :mod:`claims_report`, run by ``claims.py``).

Nothing here is typed by hand but the claims and their rules: the paper's numbers (and the
margins of its "matches" claims, its own gaps) come from ``steer_cli.published`` (checked cell by
cell against the paper's text), the measurements from each run's files, through ``steer
compare``'s own code, and the oracle's ``oracle.json``.
"""

from __future__ import annotations

import re

from claims_joint import joint_claims
from claims_oracle import oracle_claims
from claims_paper import (
    decimals,
    in_words,
    largest_shortfall,
    listed,
    paper,
    paper_row,
    signed,
)
from claims_runs import (
    RECIPES,
    Context,
    best_on_validation,
    model_size,
    recipe_setting,
)
from claims_verdicts import (
    INCONCLUSIVE,
    NOT_RUN,
    OPPOSITE,
    PASSED,
    SHOWN,
    Claim,
    Finding,
    at_least,
    at_least_rule,
    at_most,
    beats,
    decide,
    described,
    measured_pair,
    pair_claim,
    run_name,
    versus,
    within,
)

__all__ = ["INCONCLUSIVE", "NOT_RUN", "OPPOSITE", "PASSED", "SHOWN", "Claim", "Context", "claims"]


def _listops(table: str, rows: list[str]) -> str:
    return ", ".join(f"{r} {paper(table, r, 'listops'):.1f}" for r in rows)


def _sft_gaps() -> list[float]:
    """Table 1's ListOps gap of Ours below SFT, per model, at the table's precision."""
    from steer_cli import published

    table = published.PUBLISHED["table1"]
    return [
        round(
            paper("table1", "SFT", "listops", m) - paper("table1", "Ours", "listops", m),
            table.decimals,
        )
        for m in table.models
    ]


def _first_and_last(ctx: Context, key: str) -> str:
    """``f7+l7`` positions as words: "first and last 7"."""
    positions = recipe_setting(ctx, key, "adapter", "positions")
    first, last = re.fullmatch(r"f(\d+)\+l(\d+)", positions).groups()
    return f"first and last {first}" if first == last else f"first {first} and last {last}"


_T1 = "Table 1, Llama-3.2-1B, ListOps: "
_SCALE = (
    "one task (generated ListOps), one small model and a few dozen optimizer steps, against "
    "the paper's 1B–8B models trained on full datasets"
)


def claims(ctx: Context) -> list[Claim]:
    """Every claim, with the one-sided ones decided together (Holm)."""
    return decide(
        [
            *_location_claims(ctx),
            *_baseline_claims(ctx),
            _tiny_claim(ctx),
            *joint_claims(ctx),
            _nonlinear_claim(ctx),
            *oracle_claims(ctx),
            _budget_claim(ctx),
        ]
    )


def _width(ctx: Context, a: str, b: str) -> str:
    """How wide the paired interval is, for the limits: "±4.2 points"."""
    pair = ctx.pair(a, b)
    return "not measured" if isinstance(pair, str) else f"±{pair.half_width:.1f} points"


def _site_limits(ctx: Context, a: str, b: str) -> str:
    return (
        f"{_SCALE}. The paired interval is {_width(ctx, a, b)} wide (seeds and test items): a "
        "gap between two sites smaller than that cannot be told from noise here"
    )


def _location_claims(ctx: Context) -> list[Claim]:
    """Where to steer: post-block against SFT and against the sub-layer sites."""
    gaps = _sft_gaps()
    margin = max(gaps)
    close = within(
        ctx.pair("location/postblock", "location/sft"),
        measured_pair(ctx, "location/postblock", "location/sft"),
        lambda pair: at_least(pair, margin),
        at_least_rule(margin, "Table 1's largest ListOps gap of Ours below SFT"),
        versus(ctx.cell("location/postblock"), ctx.cell("location/sft")),
    )
    return [
        Claim(
            "Post-block steering comes close to full fine-tuning",
            "§6.1 and Table 1 ('within a margin of full-parameter fine-tuning')",
            _T1 + _listops("table1", ["SFT", "Ours"]) + f"; the ListOps gaps over the "
            f"{in_words(len(gaps))} models are {listed([signed(g) for g in gaps])} points",
            close,
            ("location/postblock", "location/sft"),
            limits=f"{_SCALE}. SFT here trains every weight for as many steps as the "
            "adapter, under the paper's cosine schedule, at the best LR of a small grid; the "
            "paper's SFT is one run on a full dataset. The interval is "
            f"{_width(ctx, 'location/postblock', 'location/sft')} wide against a margin of "
            f"{signed(margin)}: only a clear match or a clear miss can be read",
        ),
        Claim(
            "Post-block beats the same adapter on the MLP output",
            "§1 contributions ('consistently outperforms interventions at isolated sub-layer "
            "sites') and Takeaway 2",
            "no table: the paper's evidence is Table 1's ReFT rows (post-MLP) and Theorem 3.1",
            pair_claim(ctx, "location/postblock", "location/postmlp"),
            ("location/postblock", "location/postmlp"),
            limits=_site_limits(ctx, "location/postblock", "location/postmlp"),
        ),
        Claim(
            "Post-block beats the same adapter on the MLP input",
            "§1 contributions ('isolated sub-layer sites')",
            "no table (the paper's Figure 1 places pre-MLP, post-MLP and post-block)",
            pair_claim(ctx, "location/postblock", "location/premlp"),
            ("location/postblock", "location/premlp"),
            "Pre-MLP is the MLP's input, after its norm (steer's `mlp_input` site): an edit "
            "there reaches the residual stream only through the MLP.",
            _site_limits(ctx, "location/postblock", "location/premlp"),
        ),
        Claim(
            "Post-MLP steering covers updates that pre-MLP steering cannot",
            "Takeaway 1 (§3.2), a first-order argument",
            "no table",
            pair_claim(ctx, "location/postmlp", "location/premlp"),
            ("location/postmlp", "location/premlp"),
            "Read as accuracy: the takeaway is about which weight updates each site can "
            "express, which an accuracy gap shows only indirectly.",
            _site_limits(ctx, "location/postmlp", "location/premlp"),
        ),
    ]


def _baseline_claims(ctx: Context) -> list[Claim]:
    """Post-block against the paper's baselines at Table 1's budgets: ReFT and LoRA."""
    margin, where = largest_shortfall(
        "table1", "Ours", ["LoRA"], models=("Llama-3.2-1B", "gemma-3-1b")
    )
    source = "the most Table 1's 1B-scale Ours rows fall below LoRA, on any task"
    if where:
        source += f" ({where[0]}, {where[1]})"
    lora = within(
        ctx.pair("location/postblock", "location/lora"),
        measured_pair(ctx, "location/postblock", "location/lora"),
        lambda pair: at_least(pair, margin),
        at_least_rule(margin, source),
        versus(ctx.cell("location/postblock"), ctx.cell("location/lora")),
    )
    gap = paper("table1", "Ours", "listops") - paper("table1", "ReFT", "listops")
    reft_limits = (
        f"{_SCALE}. The paper's ListOps gap over ReFT on Llama-3.2-1B is {gap:.1f} points; "
        "each method has its own small LR grid, so a grid placed badly for this budget weighs "
        "on the method it misses"
    )
    return [
        Claim(
            "Post-block beats ReFT at the same budget, most on ListOps",
            f"§6.1 and Table 1 (ReFT: LoReFT on every MLP output, "
            f"r={paper_row('table1', 'ReFT').variant.rank} as Ours)",
            _T1 + _listops("table1", ["Ours", "ReFT"]),
            pair_claim(ctx, "location/postblock", "location/reft"),
            ("location/postblock", "location/reft"),
            "ReFT at its paper position, the last prompt token.",
            reft_limits,
        ),
        Claim(
            f"… and ReFT at pyreft's {_first_and_last(ctx, 'location/reft-f7l7')} tokens",
            "§6.1 (the paper sweeps ReFT's positions; SPEC 5)",
            _T1 + _listops("table1", ["Ours", "ReFT"]) + " (the best of the positions swept)",
            pair_claim(ctx, "location/postblock", "location/reft-f7l7"),
            ("location/postblock", "location/reft-f7l7"),
            limits=reft_limits,
        ),
        Claim(
            "On 1B-scale models post-block matches or outperforms LoRA with fewer parameters",
            "§6.1 and Table 1",
            _T1
            + _listops("table1", ["Ours", "LoRA"])
            + f" ({paper_row('table1', 'Ours').params} against "
            f"{paper_row('table1', 'LoRA').params} of the weights)",
            lora,
            ("location/postblock", "location/lora"),
            "The parameter counts are claim 21's.",
            f"{_SCALE}; a {model_size(ctx) or 'small'} model is not 1B-scale. LoRA runs under "
            "the paper's cosine schedule with warmup, the adapter at a constant LR, as in the "
            "paper",
        ),
    ]


_T2_ROWS = ["Ours (1-vec)", "Ours r=1", "LoFIT", "JoLA"]


def _spread(table: str, rows: list[str]) -> float:
    """How far apart the paper's rows are on Llama-3.2-1B ListOps (max - min)."""
    values = [paper(table, r, "listops") for r in rows]
    return max(values) - min(values)


def _tiny_claim(ctx: Context) -> Claim:
    ours_keys, theirs_keys = (
        ["tiny/postblock-vector", "tiny/postblock-r1"],
        ["tiny/lofit", "tiny/jola"],
    )
    ours, theirs = best_on_validation(ctx, ours_keys), best_on_validation(ctx, theirs_keys)
    tiny = "; ".join(described(ctx, k) for k in (*ours_keys, *theirs_keys))
    chosen = (
        f"A = the better of ours on validation ({run_name(ours.key)}), B = the better of "
        f"LoFiT and JoLA on validation ({run_name(theirs.key)})"
    )
    finding = beats(ctx.pair(ours.key, theirs.key), f"{tiny}. {chosen}", versus(ours, theirs))
    return Claim(
        "Post-block is the best method at tiny budgets",
        "§6.1 and Table 2 (vs LoFiT and JoLA)",
        "Table 2, Llama-3.2-1B, ListOps: " + _listops("table2", _T2_ROWS),
        finding,
        (*ours_keys, *theirs_keys),
        "Each side's representative is picked by its best validation accuracy in its LR sweep, "
        "before any test score is read.",
        f"{_SCALE}. Table 2's four rows lie within {_spread('table2', _T2_ROWS):.1f} points of "
        "each other on Llama-3.2-1B ListOps; the paired interval here is "
        f"{_width(ctx, ours.key, theirs.key)} wide",
    )


def _nonlinear_claim(ctx: Context) -> Claim:
    digits = decimals("table3")
    t3 = {
        kind: paper("table3", f"Ours ({kind}, r=16)", "alpaca", "Llama-3.1-8B")
        for kind in ("nonlinear", "linear")
    }
    margin = round(t3["nonlinear"] - t3["linear"], digits)
    finding = within(
        ctx.pair("nonlinear/postblock-silu", "location/postblock"),
        measured_pair(ctx, "nonlinear/postblock-silu", "location/postblock"),
        lambda pair: at_most(pair, margin),
        f"'adds little' with the margin stated before measuring, M = {margin:.{digits}f} "
        "points (Table 3's gap of the nonlinear adapter over the linear one): shown if the "
        "whole 95% interval of A − B lies below +M; opposite if it lies wholly above +M; "
        "otherwise inconclusive at this scale",
        versus(ctx.cell("nonlinear/postblock-silu"), ctx.cell("location/postblock")),
    )
    return Claim(
        "A nonlinearity adds little to the post-block adapter",
        "§6.3 and Figure 5 (Qwen3 0.6B to 8B on Winogrande); Table 3's "
        f"{margin:.{digits}f}-point gap",
        f"Table 3 (Llama-3.1-8B, AlpacaEval LC): nonlinear {t3['nonlinear']:.{digits}f}, "
        f"linear {t3['linear']:.{digits}f}",
        finding,
        ("nonlinear/postblock-silu", "location/postblock"),
        limits=f"{_SCALE}. The margin is Table 3's own gap, on another metric (a judged win "
        "rate); the paired interval here is "
        f"{_width(ctx, 'nonlinear/postblock-silu', 'location/postblock')} wide, so 'shown' "
        "needs the nonlinear adapter to be clearly worse, not merely equal",
    )


def _steer_share(model, key: str) -> float:
    """steer's count of a recipe's trainable parameters on ``model``, in % of its weights."""
    from steer_cli.parts.counts import count_base, count_parameters
    from steer_cli.recipe import load_recipe

    recipe = load_recipe(RECIPES / f"{key}.yaml")
    return 100 * count_parameters(model, recipe) / count_base(model)


def paper_shape_shares() -> tuple[str, dict[str, float]]:
    """steer's counts for Table 1's Ours and LoRA recipes on Llama-3.2-1B's shape (the shape
    bench/workload.py builds it from, on the meta device: no weights, no download)."""
    import sys
    from pathlib import Path

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from workload import SHAPES

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**SHAPES["llama-3.2-1b"]))
    keys = ("location/postblock", "location/lora")
    return "Llama-3.2-1B", {k: _steer_share(model, k) for k in keys}


def _percent(text: str) -> tuple[float, int]:
    """A printed percentage and its decimals: "0.04%" -> (0.04, 2)."""
    number = text.rstrip("%")
    return float(number), len(number.partition(".")[2])


def _budget_claim(ctx: Context) -> Claim:
    ours_text, lora_text = paper_row("table1", "Ours").params, paper_row("table1", "LoRA").params
    (ours, d_ours), (lora, d_lora) = _percent(ours_text), _percent(lora_text)
    half = lambda d: 0.5 * 10**-d  # noqa: E731  (the rounding of a printed figure)
    low, high = (
        (lora - half(d_lora)) / (ours + half(d_ours)),
        (lora + half(d_lora)) / (ours - half(d_ours)),
    )
    model, shares = paper_shape_shares()
    ratio = shares["location/lora"] / shares["location/postblock"]
    verdict = SHOWN if low <= ratio <= high else OPPOSITE
    here = ctx.cell("location/postblock"), ctx.cell("location/lora")
    measured_here = ""
    if all(c.n for c in here):
        measured_here = (
            f"; on the model measured here ({here[0].setting('model', 'name')}), the runs' own "
            f"counts: {here[0].params:.4f}% and {here[1].params:.4f}%, a ratio of "
            f"{here[1].params / here[0].params:.1f}"
        )
    return Claim(
        "Post-block trains about a tenth of LoRA's parameters at the same rank",
        "Table 1's Params column; the blog ('0.04% trainable parameters (compared to LoRA's "
        "0.45% using the same rank)')",
        f"Table 1, Llama-3.2-1B: Ours {ours_text}, LoRA {lora_text} (a ratio of "
        f"{lora / ours:.2f}, between {low:.2f} and {high:.2f} within the printed figures' "
        "rounding)",
        Finding(
            f"steer's counts (steer_cli.parts.count_parameters) for `location/postblock` and "
            f"`location/lora` on {model}'s shape (bench/workload.py, on the meta device): "
            f"{shares['location/postblock']:.4f}% and {shares['location/lora']:.4f}% of its "
            f"weights, a ratio of {ratio:.2f}{measured_here}",
            verdict,
            "shown if steer's ratio on the paper's model shape lies within the range the "
            "paper's two printed figures allow at their precision; opposite if outside it "
            "(a count: no noise, so no 'inconclusive')",
            f"ratio {ratio:.2f} (paper {lora / ours:.2f})",
        ),
        ("location/postblock", "location/lora"),
        "The ratio depends on the model's shape (the MLP's width against the hidden size): the "
        "measured model's is printed beside it.",
        "none from the scale: a count of parameters on the paper's own model shape",
    )
