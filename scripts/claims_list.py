"""The paper's claims as data: each claim, its figure in the paper, steer's measurement and a
verdict by a rule stated beside it (rendered by :mod:`claims_report`, run by ``claims.py``).

Nothing here is typed by hand but the claims and their rules: the paper's numbers come from
``steer_cli.published`` (checked cell by cell against the paper's text), the measurements from
each run's ``results.json`` / ``diagnostics.json`` and the oracle's ``oracle.json``.
"""

from __future__ import annotations

import re

from claims_joint import joint_claims
from claims_oracle import oracle_claims
from claims_verdicts import (
    AT_LEAST_RULE,
    GREATER_RULE,
    NOT_RUN,
    NOT_SHOWN,
    OPPOSITE,
    SHOWN,
    Claim,
    Context,
    Finding,
    at_least,
    best,
    diff_text,
    greater,
    in_words,
    listed,
    pair,
    paper,
    paper_row,
    recipe_setting,
    run_name,
    se_of_difference,
    signed,
    versus,
    within,
)

__all__ = ["NOT_RUN", "NOT_SHOWN", "OPPOSITE", "SHOWN", "Claim", "Context", "claims"]


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


def claims(ctx: Context) -> list[Claim]:
    return [
        *_location_claims(ctx),
        *_baseline_claims(ctx),
        _tiny_claim(ctx),
        *joint_claims(ctx),
        _nonlinear_claim(ctx),
        *oracle_claims(ctx),
    ]


def _location_claims(ctx: Context) -> list[Claim]:
    """Where to steer: post-block against SFT and against the sub-layer sites."""
    gaps = _sft_gaps()
    margin = max(gaps)
    return [
        Claim(
            "Post-block steering comes close to full fine-tuning",
            "§6.1 and Table 1 ('within a margin of full-parameter fine-tuning')",
            _T1 + _listops("table1", ["SFT", "Ours"]) + f"; the ListOps gaps over the "
            f"{in_words(len(gaps))} models are {listed([signed(g) for g in gaps])} points",
            Finding(
                f"A = `postblock` {ctx.cell('location/postblock').text()}; B = `sft` "
                f"{ctx.cell('location/sft').text()}; A − B = "
                f"{diff_text(ctx.cell('location/postblock'), ctx.cell('location/sft'))}",
                within(
                    ctx.cell("location/postblock").scores, ctx.cell("location/sft").scores, margin
                ),
                f"shown if post-block's mean is at most {signed(margin)} points (the paper's "
                "largest ListOps gap) below SFT's",
                versus(ctx.cell("location/postblock"), ctx.cell("location/sft")),
            ),
            ("location/postblock", "location/sft"),
        ),
        Claim(
            "Post-block beats the same adapter on the MLP output",
            "§1 contributions ('consistently outperforms interventions at isolated sub-layer "
            "sites') and Takeaway 2",
            "no table: the paper's evidence is Table 1's ReFT rows (post-MLP) and Theorem 3.1",
            pair(ctx, "location/postblock", "location/postmlp", greater, GREATER_RULE),
            ("location/postblock", "location/postmlp"),
        ),
        Claim(
            "Post-block beats the same adapter on the MLP input",
            "§1 contributions ('isolated sub-layer sites')",
            "no table (the paper's Figure 1 places pre-MLP, post-MLP and post-block)",
            pair(ctx, "location/postblock", "location/premlp", greater, GREATER_RULE),
            ("location/postblock", "location/premlp"),
        ),
        Claim(
            "Post-MLP steering covers updates that pre-MLP steering cannot",
            "Takeaway 1 (§3.2), a first-order argument",
            "no table",
            pair(ctx, "location/postmlp", "location/premlp", greater, GREATER_RULE),
            ("location/postmlp", "location/premlp"),
        ),
    ]


def _baseline_claims(ctx: Context) -> list[Claim]:
    """Post-block against the paper's baselines at Table 1's budgets: ReFT and LoRA."""
    return [
        Claim(
            "Post-block beats ReFT at the same budget, most on ListOps",
            f"§6.1 and Table 1 (ReFT: LoReFT on every MLP output, "
            f"r={paper_row('table1', 'ReFT').variant.rank} as Ours)",
            _T1 + _listops("table1", ["Ours", "ReFT"]),
            pair(ctx, "location/postblock", "location/reft", greater, GREATER_RULE),
            ("location/postblock", "location/reft"),
            "ReFT at its paper position, the last prompt token.",
        ),
        Claim(
            f"… and ReFT at pyreft's {_first_and_last(ctx, 'location/reft-f7l7')} tokens",
            "§6.1 (the paper sweeps ReFT's positions; SPEC 5)",
            _T1 + _listops("table1", ["Ours", "ReFT"]) + " (the best of the positions swept)",
            pair(ctx, "location/postblock", "location/reft-f7l7", greater, GREATER_RULE),
            ("location/postblock", "location/reft-f7l7"),
        ),
        Claim(
            "On 1B-scale models post-block matches or outperforms LoRA with fewer parameters",
            "§6.1 and Table 1",
            _T1
            + _listops("table1", ["Ours", "LoRA"])
            + f" ({paper_row('table1', 'Ours').params} against "
            f"{paper_row('table1', 'LoRA').params} of the weights)",
            pair(ctx, "location/postblock", "location/lora", at_least, AT_LEAST_RULE),
            ("location/postblock", "location/lora"),
        ),
    ]


def _tiny_claim(ctx: Context) -> Claim:
    ours = best(ctx, ["tiny/postblock-vector", "tiny/postblock-r1"])
    theirs = best(ctx, ["tiny/lofit", "tiny/jola"])
    tiny = "; ".join(
        f"{run_name(k)} {ctx.cell(k).text()}"
        for k in ("tiny/postblock-vector", "tiny/postblock-r1", "tiny/lofit", "tiny/jola")
    )
    return Claim(
        "Post-block is the best method at tiny budgets",
        "§6.1 and Table 2 (vs LoFiT and JoLA)",
        "Table 2, Llama-3.2-1B, ListOps: "
        + _listops("table2", ["Ours (1-vec)", "Ours r=1", "LoFIT", "JoLA"]),
        Finding(
            f"{tiny}. A = the better of ours ({run_name(ours.key)}), B = the better of LoFiT "
            f"and JoLA ({run_name(theirs.key)}): A − B = {diff_text(ours, theirs)}",
            greater(ours.scores, theirs.scores),
            GREATER_RULE + " (A and B chosen by their means)",
            versus(ours, theirs),
        ),
        ("tiny/postblock-vector", "tiny/postblock-r1", "tiny/lofit", "tiny/jola"),
    )


def _nonlinear_claim(ctx: Context) -> Claim:
    from steer_cli import published

    silu, linear = ctx.cell("nonlinear/postblock-silu"), ctx.cell("location/postblock")
    if silu.n and linear.n:
        gap = abs(silu.mean - linear.mean)
        verdict = (
            SHOWN
            if gap <= 2 * se_of_difference(silu.scores, linear.scores) or gap <= 1.0
            else NOT_SHOWN
        )
    else:
        verdict = NOT_RUN
    digits = published.PUBLISHED["table3"].decimals
    t3 = {
        kind: paper("table3", f"Ours ({kind}, r=16)", "alpaca", "Llama-3.1-8B")
        for kind in ("nonlinear", "linear")
    }
    return Claim(
        "A nonlinearity adds little to the post-block adapter",
        "§6.3 and Figure 5 (Qwen3 0.6B to 8B on Winogrande); Table 3's "
        f"{t3['nonlinear'] - t3['linear']:.{digits}f}-point gap",
        f"Table 3 (Llama-3.1-8B, AlpacaEval LC): nonlinear {t3['nonlinear']:.{digits}f}, "
        f"linear {t3['linear']:.{digits}f}",
        Finding(
            f"A = `postblock-silu` {silu.text()}; B = `postblock` {linear.text()}; A − B = "
            f"{diff_text(silu, linear)}",
            verdict,
            "shown if the two differ by less than twice the standard error of the difference "
            "or by at most 1 point",
            versus(silu, linear),
        ),
        ("nonlinear/postblock-silu", "location/postblock"),
    )
