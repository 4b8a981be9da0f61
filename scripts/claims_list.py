"""The paper's claims as data: each claim, its figure in the paper, steer's measurement and a
verdict by a rule stated beside it (rendered by :mod:`claims_report`, run by ``claims.py``).

Nothing here is typed by hand but the claims and their rules: the paper's numbers come from
``steer_cli.published`` (checked cell by cell against the paper's text), the measurements from
each run's ``results.json`` / ``diagnostics.json`` and the oracle's ``oracle.json``.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from pathlib import Path

from claims_oracle import oracle_claims
from claims_verdicts import (
    AT_LEAST_RULE,
    GREATER_RULE,
    NOT_RUN,
    NOT_SHOWN,
    OPPOSITE,
    SHOWN,
    Cell,
    Claim,
    Context,
    Finding,
    at_least,
    diff_text,
    greater,
    in_words,
    layer_mean,
    majority,
    mean_std,
    paper,
    paper_row,
    se_of_difference,
    seed_values,
    signed,
    within,
)

__all__ = ["NOT_RUN", "NOT_SHOWN", "OPPOSITE", "SHOWN", "Claim", "Context", "claims"]

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "claims"


def _pair(ctx: Context, a: str, b: str, verdict: Callable, rule: str) -> Finding:
    ca, cb = ctx.cell(a), ctx.cell(b)
    measured = (
        f"A = {_name(a)} {ca.text()}; B = {_name(b)} {cb.text()}; A − B = {diff_text(ca, cb)}"
    )
    return Finding(measured, verdict(ca.scores, cb.scores), rule, _versus(ca, cb))


def _versus(a: Cell, b: Cell) -> str:
    if not a.n or not b.n:
        return "not run"
    return f"{a.key.split('/')[-1]} {a.mean:.1f} vs {b.key.split('/')[-1]} {b.mean:.1f}"


def _name(key: str) -> str:
    return f"`{key.split('/')[-1]}`"


def _best(ctx: Context, keys: list[str]) -> Cell:
    """The cell with the best mean (an empty one if none ran)."""
    ran = [ctx.cell(k) for k in keys if ctx.cell(k).n]
    return max(ran, key=lambda c: c.mean) if ran else Cell(" or ".join(keys))


def _listops(table: str, rows: list[str]) -> str:
    return ", ".join(f"{r} {paper(table, r, 'listops'):.1f}" for r in rows)


def _listed(items: list[str]) -> str:
    """``a, b and c``."""
    return " and ".join(filter(None, [", ".join(items[:-1]), items[-1]])) if items else ""


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


def _setting(ctx: Context, key: str, *path: str):
    """A recipe's setting as its runs resolved it, or as its file states it if none ran."""
    value = ctx.cell(key).setting(*path)
    if value is None:
        import yaml

        value = yaml.safe_load((RECIPES / f"{key}.yaml").read_text())
        for part in path:
            value = (value or {}).get(part)
    return value


def _first_and_last(ctx: Context, key: str) -> str:
    """``f7+l7`` positions as words: "first and last 7"."""
    positions = _setting(ctx, key, "adapter", "positions")
    first, last = re.fullmatch(r"f(\d+)\+l(\d+)", positions).groups()
    return f"first and last {first}" if first == last else f"first {first} and last {last}"


def claims(ctx: Context) -> list[Claim]:
    t1 = "Table 1, Llama-3.2-1B, ListOps: "
    gaps = _sft_gaps()
    margin = max(gaps)
    out = [
        Claim(
            "Post-block steering comes close to full fine-tuning",
            "§6.1 and Table 1 ('within a margin of full-parameter fine-tuning')",
            t1 + _listops("table1", ["SFT", "Ours"]) + f"; the ListOps gaps over the "
            f"{in_words(len(gaps))} models are {_listed([signed(g) for g in gaps])} points",
            Finding(
                f"A = `postblock` {ctx.cell('location/postblock').text()}; B = `sft` "
                f"{ctx.cell('location/sft').text()}; A − B = "
                f"{diff_text(ctx.cell('location/postblock'), ctx.cell('location/sft'))}",
                within(
                    ctx.cell("location/postblock").scores, ctx.cell("location/sft").scores, margin
                ),
                f"shown if post-block's mean is at most {signed(margin)} points (the paper's "
                "largest ListOps gap) below SFT's",
                _versus(ctx.cell("location/postblock"), ctx.cell("location/sft")),
            ),
            ("location/postblock", "location/sft"),
        ),
        Claim(
            "Post-block beats the same adapter on the MLP output",
            "§1 contributions ('consistently outperforms interventions at isolated sub-layer "
            "sites') and Takeaway 2",
            "no table: the paper's evidence is Table 1's ReFT rows (post-MLP) and Theorem 3.1",
            _pair(ctx, "location/postblock", "location/postmlp", greater, GREATER_RULE),
            ("location/postblock", "location/postmlp"),
        ),
        Claim(
            "Post-block beats the same adapter on the MLP input",
            "§1 contributions ('isolated sub-layer sites')",
            "no table (the paper's Figure 1 places pre-MLP, post-MLP and post-block)",
            _pair(ctx, "location/postblock", "location/premlp", greater, GREATER_RULE),
            ("location/postblock", "location/premlp"),
        ),
        Claim(
            "Post-MLP steering covers updates that pre-MLP steering cannot",
            "Takeaway 1 (§3.2), a first-order argument",
            "no table",
            _pair(ctx, "location/postmlp", "location/premlp", greater, GREATER_RULE),
            ("location/postmlp", "location/premlp"),
        ),
        Claim(
            "Post-block beats ReFT at the same budget, most on ListOps",
            f"§6.1 and Table 1 (ReFT: LoReFT on every MLP output, "
            f"r={paper_row('table1', 'ReFT').variant.rank} as Ours)",
            t1 + _listops("table1", ["Ours", "ReFT"]),
            _pair(ctx, "location/postblock", "location/reft", greater, GREATER_RULE),
            ("location/postblock", "location/reft"),
            "ReFT at its paper position, the last prompt token.",
        ),
        Claim(
            f"… and ReFT at pyreft's {_first_and_last(ctx, 'location/reft-f7l7')} tokens",
            "§6.1 (the paper sweeps ReFT's positions; SPEC 5)",
            t1 + _listops("table1", ["Ours", "ReFT"]) + " (the best of the positions swept)",
            _pair(ctx, "location/postblock", "location/reft-f7l7", greater, GREATER_RULE),
            ("location/postblock", "location/reft-f7l7"),
        ),
        Claim(
            "On 1B-scale models post-block matches or outperforms LoRA with fewer parameters",
            "§6.1 and Table 1",
            t1
            + _listops("table1", ["Ours", "LoRA"])
            + f" ({paper_row('table1', 'Ours').params} against "
            f"{paper_row('table1', 'LoRA').params} of the weights)",
            _pair(ctx, "location/postblock", "location/lora", at_least, AT_LEAST_RULE),
            ("location/postblock", "location/lora"),
        ),
    ]
    ours = _best(ctx, ["tiny/postblock-vector", "tiny/postblock-r1"])
    theirs = _best(ctx, ["tiny/lofit", "tiny/jola"])
    tiny = "; ".join(
        f"{_name(k)} {ctx.cell(k).text()}"
        for k in ("tiny/postblock-vector", "tiny/postblock-r1", "tiny/lofit", "tiny/jola")
    )
    out.append(
        Claim(
            "Post-block is the best method at tiny budgets",
            "§6.1 and Table 2 (vs LoFiT and JoLA)",
            "Table 2, Llama-3.2-1B, ListOps: "
            + _listops("table2", ["Ours (1-vec)", "Ours r=1", "LoFIT", "JoLA"]),
            Finding(
                f"{tiny}. A = the better of ours ({_name(ours.key)}), B = the better of LoFiT "
                f"and JoLA ({_name(theirs.key)}): A − B = {diff_text(ours, theirs)}",
                greater(ours.scores, theirs.scores),
                GREATER_RULE + " (A and B chosen by their means)",
                _versus(ours, theirs),
            ),
            ("tiny/postblock-vector", "tiny/postblock-r1", "tiny/lofit", "tiny/jola"),
        )
    )
    out += _joint_claims(ctx)
    out += _nonlinear_claims(ctx)
    out += oracle_claims(ctx)
    return out


def _joint_claims(ctx: Context) -> list[Claim]:
    t4 = "Table 4, Llama-3.2-1B (no ListOps in Table 4), GSM8K / BoolQ / WinoG: "

    def row(name: str) -> str:
        return f"{name} " + " / ".join(
            f"{paper('table4', name, t):.1f}" for t in ("gsm8k", "boolq", "winogrande")
        )

    strongest = _best(ctx, ["location/lora", "location/postblock"])
    orth = ctx.cell("joint/joint-orth")
    lora_rank = _setting(ctx, "location/lora", "lora", "rank")
    adapter_rank = _setting(ctx, "location/postblock", "adapter", "rank")
    cosine = layer_mean(("shift_cosine", "mean_abs"))
    cos_naive = seed_values(ctx.runs, "joint/joint", cosine)
    cos_orth = seed_values(ctx.runs, "joint/joint-orth", cosine)
    writer_orth = seed_values(
        ctx.runs, "joint/joint-orth", layer_mean(("writer_cosine", "mean_abs"))
    )
    shift = layer_mean(("adapter_shift_norm",))
    norm_naive = seed_values(ctx.runs, "joint/joint", shift)
    norm_orth = seed_values(ctx.runs, "joint/joint-orth", shift)
    overlap = layer_mean(("subspace_overlap", "down_proj"))
    overlap_naive = seed_values(ctx.runs, "joint/joint", overlap)
    if cos_naive and cos_orth:
        aligned = greater(cos_naive, cos_orth)
        aligned = aligned if aligned != SHOWN or statistics.fmean(cos_orth) <= 0.1 else NOT_SHOWN
    else:
        aligned = NOT_RUN
    if norm_naive and norm_orth:
        ratio = statistics.fmean(norm_orth) / statistics.fmean(norm_naive)
        kept = SHOWN if ratio >= 0.5 else NOT_SHOWN
    else:
        ratio, kept = float("nan"), NOT_RUN
    chance_values = seed_values(
        ctx.runs, "joint/joint", lambda d: d["layers"][0]["subspace_overlap"]["chance"]
    )
    chance = chance_values[0] if chance_values else float("nan")  # k/d
    top = seed_values(ctx.runs, "joint/joint", lambda d: d["layers"][0]["subspace_overlap"]["k"])
    examples = seed_values(ctx.runs, "joint/joint", lambda d: d["sample"]["examples"])
    examples += seed_values(ctx.runs, "joint/joint-orth", lambda d: d["sample"]["examples"])
    return [
        Claim(
            "Joint-Orth matches or exceeds the strongest single method",
            "§6.4 and Table 4",
            t4 + "; ".join(row(r) for r in ("LoRA (r=8)", "Adapter", "Joint-Orth")),
            Finding(
                f"A = `joint-orth` {orth.text()}; B = the better of LoRA r={lora_rank} and the "
                f"rank-{adapter_rank} adapter ({_name(strongest.key)}, {strongest.text()}): "
                f"A − B = {diff_text(orth, strongest)}",
                at_least(orth.scores, strongest.scores),
                AT_LEAST_RULE,
                _versus(orth, strongest),
            ),
            ("joint/joint-orth", "location/lora", "location/postblock", "joint/adapter"),
            _matched_adapter_note(ctx),
        ),
        Claim(
            "The orthogonality constraint helps: Joint-Orth beats naive Joint",
            "§6.4 and Table 4 (Proposition 4.2's functional redundancy)",
            t4 + "; ".join(row(r) for r in ("Joint", "Joint-Orth")),
            _pair(ctx, "joint/joint-orth", "joint/joint", greater, GREATER_RULE),
            ("joint/joint-orth", "joint/joint"),
        ),
        Claim(
            "Naive joint training aligns the adapter's shift with LoRA's; Joint-Orth does not",
            "§6.5 and Figure 5 (cosine of the adapter's shift and LoRA's shift of the MLP output)",
            "Figure 5: naive Joint 'high correlation', Joint-Orth 'very small cosine similarity'",
            Finding(
                f"mean |cos| over layers and tokens (training examples): naive Joint "
                f"{mean_std(cos_naive)}, Joint-Orth {mean_std(cos_orth)}; Joint-Orth's adapter "
                f"against what LoRA writes through B (the constraint's own target) "
                f"{mean_std(writer_orth, 7)}",
                aligned,
                "shown if naive Joint's mean |cos| is above Joint-Orth's by more than twice the "
                "standard error of the difference over seeds and Joint-Orth's is at most 0.1; "
                "opposite if Joint-Orth's is above naive Joint's by as much; otherwise not shown "
                "at this scale",
                _means("mean abs cos", cos_naive, cos_orth),
            ),
            ("joint/joint", "joint/joint-orth"),
            "Measured on each run's own diagnostics.json"
            + (f" ({_one(examples)} training examples)" if examples else "")
            + ", per seed.",
        ),
        Claim(
            "Under the constraint the adapter keeps its magnitude",
            "§6.5 and Figure 6 (appendix G.1)",
            "the adapter matrices' 2-norms stay substantial across layers (the range's numbers "
            "did not survive in the paper's text)",
            Finding(
                f"adapter shift norm, mean over layers: naive Joint {mean_std(norm_naive, 4)}, "
                f"Joint-Orth {mean_std(norm_orth, 4)} (ratio {ratio:.2f})",
                kept,
                "shown if Joint-Orth's adapter shift is at least half of naive Joint's",
                f"ratio {ratio:.2f}",
            ),
            ("joint/joint", "joint/joint-orth"),
        ),
        Claim(
            "Steering and LoRA learn overlapping top singular subspaces when trained together",
            "§4.1 and Figure 3 (aligned top left-singular subspaces)",
            "Figure 3: 'nearly diagonal' inner products of the top singular vectors",
            Finding(
                f"naive Joint, overlap of the top-{_one(top) if top else 'k'} subspaces of W_up "
                f"and LoRA's down_proj B, "
                f"mean over layers: {mean_std(overlap_naive)} (chance {chance:.3f})",
                NOT_RUN
                if not overlap_naive
                else SHOWN
                if statistics.fmean(overlap_naive) >= 2 * chance
                else NOT_SHOWN,
                "shown if the overlap is at least twice chance (k/d)",
                f"{statistics.fmean(overlap_naive):.3f} vs chance {chance:.3f}"
                if overlap_naive
                else "",
            ),
            ("joint/joint",),
            "A proxy: the paper compares gradient updates on Winogrande; we compare what the two "
            "trained parts write.",
        ),
    ]


def _one(values: list) -> str:
    """The value every seed shares ("32"), or their range if they differ ("16–32")."""
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}–{high}"


def _matched_adapter_note(ctx: Context) -> str:
    """Why the joint runs pair LoRA with a smaller adapter, from ``joint/adapter``'s own runs."""
    matched = ctx.cell("joint/adapter")
    lead = "Table 4 matches the adapter's count to LoRA's."
    if not matched.n:
        return f"{lead} That adapter (`joint/adapter`) has not run."
    search = matched.results[0].get("rank_search") or {}
    rank = search.get("rank", matched.setting("adapter", "rank"))  # the rank its search chose
    first = matched.scores[:2]
    floor = majority(matched.runs[0])
    versus = (
        "below always answering the most common value"
        if max(first) < floor
        else f"against {floor:.1f}% for always answering the most common value"
    )
    seeds = f"its first {in_words(len(first))} seeds" if len(first) > 1 else "its first seed"
    return (
        f"{lead} That adapter (rank {rank}, `joint/adapter`) scores {matched.text()} here, at "
        f"the preset's LR and this budget; {seeds} "
        f"({_listed([f'{v:.1f}%' for v in first])}, {versus}) made the joint runs pair LoRA "
        f"with a rank-{_setting(ctx, 'joint/joint', 'adapter', 'rank')} adapter instead, whose "
        "run alone is `location/postblock`."
    )


def _means(what: str, naive: list[float], orth: list[float]) -> str:
    if not naive or not orth:
        return "not run"
    return f"{what} Joint {statistics.fmean(naive):.3f} vs Joint-Orth {statistics.fmean(orth):.3f}"


def _nonlinear_claims(ctx: Context) -> list[Claim]:
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
    from steer_cli import published

    digits = published.PUBLISHED["table3"].decimals
    t3 = {
        kind: paper("table3", f"Ours ({kind}, r=16)", "alpaca", "Llama-3.1-8B")
        for kind in ("nonlinear", "linear")
    }
    return [
        Claim(
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
                _versus(silu, linear),
            ),
            ("nonlinear/postblock-silu", "location/postblock"),
        )
    ]
