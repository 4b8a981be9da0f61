"""The oracle's claims (section 3.3 and the blog): read from ``steer oracle``'s oracle.json."""

from __future__ import annotations

import statistics
from pathlib import Path

from claims_verdicts import NOT_RUN, NOT_SHOWN, SHOWN, Claim, Context, Finding, prose

# Each claim's title, where the paper (or the blog) makes it, and the paper's own figure.
SANITY = (
    "Only the post-block oracle reproduces the fine-tuned model",
    "§3.3 ('placing it before or after the MLP captures only the MLP's contribution')",
    "a construction: overwriting the block output reproduces SFT exactly",
)


def _mlp_share() -> tuple[str, str, str]:
    """§3.3's claim, its range from ``steer_cli.published.PROSE`` (checked against the paper)."""
    low, high = prose("mlp_share")
    return (
        f"MLP outputs are {low}–{high}% of what a block writes",
        f"§3.3 ('MLP outputs account for only {low}–{high}% of total block output magnitude', "
        "the figure the text calls Figure 3; SPEC calls it Fig. 2)",
        f"{low}–{high}% across layers",
    )


LOW_RANK = (
    "The oracle's steering vectors are close to low rank",
    "the blog ('their covariance had a concentrated spectrum')",
    "no number",
)
LINEAR = (
    "The best linear map h → δ does about as well as ReFT, or worse",
    "the blog ('the oracle goes from perfect matching to similar-to-or-worse-than ReFT')",
    "the blog's KL plot, no number",
)
THEOREM = (
    "Post-block steering can replicate post-MLP steering",
    "Theorem 3.1 ('as long as the MLP does not perturb the geometry of the data')",
    "a bound, no number",
)


def _kl(entry: dict) -> float:
    return float(entry["mean_generated"])


def oracle_claims(ctx: Context) -> list[Claim]:
    o = ctx.oracle
    keys = ("location/sft",)
    if o is None:
        missing = Finding("the oracle has not run", NOT_RUN, "")
        return [
            Claim(*claim, missing, keys)
            for claim in (SANITY, _mlp_share(), LOW_RANK, LINEAR, THEOREM)
        ]
    seed = Path(o["fine_tuned"]).name  # seed-42: the run the oracle analyses
    where = f"`steer oracle` on the {seed} SFT run, {o['samples']} prompts, {o['tokens']} tokens"
    return [
        Claim(*SANITY, _sanity(o, where), keys),
        Claim(*_mlp_share(), _share(o, where), keys),
        Claim(*LOW_RANK, _low_rank(o, where), keys),
        Claim(
            *LINEAR,
            _linear(o, where),
            (*keys, "location/reft"),
            "The linear maps are fitted on the same prompts they are scored on (in-sample).",
        ),
        Claim(*THEOREM, _theorem(o, where), keys),
    ]


def _sanity(o: dict, where: str) -> Finding:
    kl, tol = o["kl"], o["sanity"]["tolerance"]
    block, mlp, attn = (
        _kl(kl[f"oracle {s}"]) for s in ("block_output", "mlp_output", "attn_output")
    )
    sub_ok = block <= tol and min(mlp, attn) > 10 * tol
    return Finding(
        f"{where}. KL(SFT ‖ ·) per generated token, nats: block-output oracle {block:.2e}, "
        f"MLP-output oracle {mlp:.3g}, attention-output oracle {attn:.3g}; the base "
        f"model {_kl(kl['base']):.3g}",
        SHOWN if sub_ok else NOT_SHOWN,
        f"shown if the block-output oracle's KL is within the sanity tolerance ({tol:g}) "
        "and both sub-layer oracles' exceed ten times it",
        f"KL block {block:.1e}, MLP {mlp:.2g}, attention {attn:.2g}",
    )


def _share(o: dict, where: str) -> Finding:
    shares = [layer["mlp_share"]["ft"]["of_writes"] for layer in o["layers"]]
    updates = [layer["mlp_share"]["ft"]["of_update"] for layer in o["layers"]]
    median = statistics.median
    low, high = prose("mlp_share")
    return Finding(
        f"{where}. Per layer of the SFT model, ||m|| / (||a|| + ||m||): median "
        f"{median(shares):.0%}, range {min(shares):.0%}–{max(shares):.0%} over "
        f"{len(shares)} layers; ||m|| / ||block update||: median {median(updates):.0%}, "
        f"range {min(updates):.0%}–{max(updates):.0%}",
        SHOWN if low / 100 <= median(shares) <= high / 100 else NOT_SHOWN,
        f"shown if the median layer's share of writes lies in {low}–{high}%",
        f"median {median(shares):.0%} ({min(shares):.0%}–{max(shares):.0%})",
    )


def _low_rank(o: dict, where: str) -> Finding:
    ranks = [layer["spectrum"]["effective_rank"] for layer in o["layers"]]
    hidden, median = o["hidden_size"], statistics.median(ranks)
    return Finding(
        f"{where}. Effective rank of δ per layer: median {median:.1f}, range "
        f"{min(ranks):.1f}–{max(ranks):.1f}, of a hidden size of {hidden}",
        SHOWN if median <= hidden / 10 else NOT_SHOWN,
        f"shown if the median effective rank is at most a tenth of the hidden size "
        f"({hidden / 10:.0f})",
        f"median effective rank {median:.1f} of {hidden}",
    )


def _linear(o: dict, where: str) -> Finding:
    reft = next((r for r in o["runs"] if r["method"] == "reft"), None)
    if reft is None:
        return Finding("no ReFT run beside the oracle", NOT_RUN, "")
    kl = o["kl"]
    linear = _kl(kl[f"linear rank {o['rank']}"])
    ratio = linear / max(_kl(reft["kl"]), 1e-12)
    return Finding(
        f"{where}. KL per generated token: the rank-{o['rank']} linearized oracle {linear:.3g} "
        f"(full rank {_kl(kl['linear full']):.3g}), the trained {Path(reft['path']).name} "
        f"ReFT run {_kl(reft['kl']):.3g} (ratio {ratio:.2f}), the base model "
        f"{_kl(kl['base']):.3g}",
        SHOWN if ratio >= 2 / 3 else NOT_SHOWN,
        "shown if the linearized oracle's KL is at least two thirds of ReFT's",
        f"KL linear {linear:.3g} vs ReFT {_kl(reft['kl']):.3g}",
    )


def _theorem(o: dict, where: str) -> Finding:
    errors = [layer["expressivity"]["relative_error"] for layer in o["layers"]]
    median = statistics.median(errors)
    return Finding(
        f"{where}. Optimal relative error of a linear post-block steer matching the best "
        f"rank-{o['rank']} post-MLP one, per layer: median {median:.2f}, range "
        f"{min(errors):.2f}–{max(errors):.2f}",
        SHOWN if median <= 0.5 else NOT_SHOWN,
        "shown if the median layer's relative error is at most 0.5",
        f"median relative error {median:.2f}",
    )
