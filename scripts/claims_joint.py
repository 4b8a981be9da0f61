"""The joint-training claims (§4.1, §6.4, §6.5): Joint-Orth's accuracy against the single methods
and naive Joint, and what the two trained parts write (each joint run's diagnostics.json)."""

from __future__ import annotations

import statistics

from claims_verdicts import (
    AT_LEAST_RULE,
    GREATER_RULE,
    NOT_RUN,
    NOT_SHOWN,
    SHOWN,
    Claim,
    Context,
    Finding,
    at_least,
    best,
    diff_text,
    greater,
    in_words,
    layer_mean,
    listed,
    majority,
    mean_std,
    pair,
    paper,
    recipe_setting,
    run_name,
    seed_values,
    versus,
)

_T4 = "Table 4, Llama-3.2-1B (no ListOps in Table 4), GSM8K / BoolQ / WinoG: "


def joint_claims(ctx: Context) -> list[Claim]:
    return [
        _strongest_claim(ctx),
        Claim(
            "The orthogonality constraint helps: Joint-Orth beats naive Joint",
            "§6.4 and Table 4 (Proposition 4.2's functional redundancy)",
            _T4 + "; ".join(_row(r) for r in ("Joint", "Joint-Orth")),
            pair(ctx, "joint/joint-orth", "joint/joint", greater, GREATER_RULE),
            ("joint/joint-orth", "joint/joint"),
        ),
        _alignment_claim(ctx),
        _magnitude_claim(ctx),
        _overlap_claim(ctx),
    ]


def _row(name: str) -> str:
    return f"{name} " + " / ".join(
        f"{paper('table4', name, t):.1f}" for t in ("gsm8k", "boolq", "winogrande")
    )


def _strongest_claim(ctx: Context) -> Claim:
    strongest = best(ctx, ["location/lora", "location/postblock"])
    orth = ctx.cell("joint/joint-orth")
    lora_rank = recipe_setting(ctx, "location/lora", "lora", "rank")
    adapter_rank = recipe_setting(ctx, "location/postblock", "adapter", "rank")
    return Claim(
        "Joint-Orth matches or exceeds the strongest single method",
        "§6.4 and Table 4",
        _T4 + "; ".join(_row(r) for r in ("LoRA (r=8)", "Adapter", "Joint-Orth")),
        Finding(
            f"A = `joint-orth` {orth.text()}; B = the better of LoRA r={lora_rank} and the "
            f"rank-{adapter_rank} adapter ({run_name(strongest.key)}, {strongest.text()}): "
            f"A − B = {diff_text(orth, strongest)}",
            at_least(orth.scores, strongest.scores),
            AT_LEAST_RULE,
            versus(orth, strongest),
        ),
        ("joint/joint-orth", "location/lora", "location/postblock", "joint/adapter"),
        matched_adapter_note(ctx),
    )


def _alignment_claim(ctx: Context) -> Claim:
    cosine = layer_mean(("shift_cosine", "mean_abs"))
    cos_naive = seed_values(ctx.runs, "joint/joint", cosine)
    cos_orth = seed_values(ctx.runs, "joint/joint-orth", cosine)
    writer_orth = seed_values(
        ctx.runs, "joint/joint-orth", layer_mean(("writer_cosine", "mean_abs"))
    )
    if cos_naive and cos_orth:
        aligned = greater(cos_naive, cos_orth)
        aligned = aligned if aligned != SHOWN or statistics.fmean(cos_orth) <= 0.1 else NOT_SHOWN
    else:
        aligned = NOT_RUN
    examples = seed_values(ctx.runs, "joint/joint", lambda d: d["sample"]["examples"])
    examples += seed_values(ctx.runs, "joint/joint-orth", lambda d: d["sample"]["examples"])
    return Claim(
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
    )


def _magnitude_claim(ctx: Context) -> Claim:
    shift = layer_mean(("adapter_shift_norm",))
    norm_naive = seed_values(ctx.runs, "joint/joint", shift)
    norm_orth = seed_values(ctx.runs, "joint/joint-orth", shift)
    if norm_naive and norm_orth:
        ratio = statistics.fmean(norm_orth) / statistics.fmean(norm_naive)
        kept = SHOWN if ratio >= 0.5 else NOT_SHOWN
    else:
        ratio, kept = float("nan"), NOT_RUN
    return Claim(
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
    )


def _overlap_claim(ctx: Context) -> Claim:
    overlap_naive = seed_values(
        ctx.runs, "joint/joint", layer_mean(("subspace_overlap", "down_proj"))
    )
    first = lambda d: d["layers"][0]["subspace_overlap"]  # noqa: E731
    chances = seed_values(ctx.runs, "joint/joint", lambda d: first(d)["chance"])
    chance = chances[0] if chances else float("nan")  # k/d
    tops = seed_values(ctx.runs, "joint/joint", lambda d: first(d)["k"])
    top = _one(tops) if tops else "k"
    if not overlap_naive:
        verdict = NOT_RUN
    else:
        verdict = SHOWN if statistics.fmean(overlap_naive) >= 2 * chance else NOT_SHOWN
    return Claim(
        "Steering and LoRA learn overlapping top singular subspaces when trained together",
        "§4.1 and Figure 3 (aligned top left-singular subspaces)",
        "Figure 3: 'nearly diagonal' inner products of the top singular vectors",
        Finding(
            f"naive Joint, overlap of the top-{top} subspaces of W_up and LoRA's down_proj B, "
            f"mean over layers: {mean_std(overlap_naive)} (chance {chance:.3f})",
            verdict,
            "shown if the overlap is at least twice chance (k/d)",
            f"{statistics.fmean(overlap_naive):.3f} vs chance {chance:.3f}"
            if overlap_naive
            else "",
        ),
        ("joint/joint",),
        "A proxy: the paper compares gradient updates on Winogrande; we compare what the two "
        "trained parts write.",
    )


def _one(values: list) -> str:
    """The value every seed shares ("32"), or their range if they differ ("16–32")."""
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}–{high}"


def matched_adapter_note(ctx: Context) -> str:
    """Why the joint runs pair LoRA with a smaller adapter, from ``joint/adapter``'s own runs."""
    matched = ctx.cell("joint/adapter")
    lead = "Table 4 matches the adapter's count to LoRA's."
    if not matched.n:
        return f"{lead} That adapter (`joint/adapter`) has not run."
    search = matched.results[0].get("rank_search") or {}
    rank = search.get("rank", matched.setting("adapter", "rank"))  # the rank its search chose
    first = matched.scores[:2]
    floor = majority(matched.runs[0])
    against = (
        "below always answering the most common value"
        if max(first) < floor
        else f"against {floor:.1f}% for always answering the most common value"
    )
    seeds = f"its first {in_words(len(first))} seeds" if len(first) > 1 else "its first seed"
    return (
        f"{lead} That adapter (rank {rank}, `joint/adapter`) scores {matched.text()} here, at "
        f"the preset's LR and this budget; {seeds} "
        f"({listed([f'{v:.1f}%' for v in first])}, {against}) made the joint runs pair LoRA "
        f"with a rank-{recipe_setting(ctx, 'joint/joint', 'adapter', 'rank')} adapter "
        "instead, whose run alone is `location/postblock`."
    )


def _means(what: str, naive: list[float], orth: list[float]) -> str:
    if not naive or not orth:
        return "not run"
    return f"{what} Joint {statistics.fmean(naive):.3f} vs Joint-Orth {statistics.fmean(orth):.3f}"
