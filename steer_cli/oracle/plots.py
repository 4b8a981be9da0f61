"""The oracle's PNGs, drawn from its JSON dict alone (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

PLOTS = ("sanity", "mlp_share", "low_rank", "kl_curve", "expressivity", "error_control")
JOINT_PLOT = "joint_alignment"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(result: dict, out: Path) -> list[str]:
    """Every plot the result has data for, as ``out/<name>.png``; returns the file names."""
    plt = _pyplot()
    drawers = {
        "sanity": _sanity,
        "mlp_share": _mlp_share,
        "low_rank": _low_rank,
        "kl_curve": _kl_curve,
        "expressivity": _expressivity,
        "error_control": _error_control,
    }
    if any(run.get("diagnostics") for run in result["runs"]):
        drawers[JOINT_PLOT] = _joint
    written = []
    for name, draw in drawers.items():
        _save(plt, draw(plt, result), out / f"{name}.png")
        written.append(f"{name}.png")
    return written


def write_joint_plot(runs: list[dict], path: Path) -> None:
    """The joint runs' alignment plot alone, as the oracle draws it beside its others (each of
    ``runs``: ``method`` and the run's ``diagnostics``)."""
    plt = _pyplot()
    _save(plt, _joint(plt, {"runs": runs}), path)


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _layers(result: dict) -> list[int]:
    return [entry["layer"] for entry in result["layers"]]


def _sanity(plt, result: dict):
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    kl = result["sanity"]["kl_mean"]
    names = list(kl)
    values = [max(kl[n], 1e-12) for n in names]
    ax.barh(names, values, color=["tab:green" if "block" in n else "tab:orange" for n in names])
    ax.set_xscale("log")
    ax.axvline(result["sanity"]["tolerance"], color="k", ls="--", lw=1, label="tolerance")
    ax.set_xlabel("mean KL(FT || steered base) per token (nats; 1e-12 = exactly 0)")
    ax.set_title("Oracle steering per site (FT head unless noted)")
    ax.legend(loc="lower right")
    return fig


_SHARES = (  # key, axis label, title
    ("of_block_output", "||m|| / ||O||", "MLP write over the block output (Fig. 2's words)"),
    ("of_writes", "||m|| / (||a|| + ||m||)", "MLP share of the block's two writes"),
    ("of_update", "||m|| / ||O - I||", "MLP write over the whole update (> 1: writes cancel)"),
)


def _mlp_share(plt, result: dict):
    """The three MLP shares, each in its own panel: the paper's band only beside the one its
    own words define (``||m|| / ||O||``, "average MLP output norm with respect to the layer's
    block output")."""
    fig, axes = plt.subplots(1, len(_SHARES), figsize=(15, 3.8))
    layers = _layers(result)
    shares = [e["mlp_share"] for e in result["layers"]]
    axes[0].axhspan(0.4, 0.7, color="0.9", label="paper: 40-70%")
    for ax, (key, label, title) in zip(axes, _SHARES, strict=True):
        for who, marker, name in (("base", "o-", "base"), ("ft", "s-", "fine-tuned")):
            ax.plot(layers, [s[who][key] for s in shares], marker, label=name)
        ax.set_xlabel("layer")
        ax.set_ylabel(label)
        ax.set_title(title, fontsize=9)
        ax.legend()
    axes[0].set_ylim(0, 1)
    axes[1].set_ylim(0, 1)
    axes[2].axhline(1, color="k", lw=0.5)
    return fig


def _low_rank(plt, result: dict):
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    layers = _layers(result)
    spectra = [e["spectrum"] for e in result["layers"]]
    left.plot(layers, [s["effective_rank"] for s in spectra], "o-", label="effective (entropy)")
    left.plot(layers, [s["rank_90"] for s in spectra], "s--", label="90% energy")
    left.plot(layers, [s["rank_99"] for s in spectra], "^--", label="99% energy")
    covariance = [e["covariance"] for e in result["layers"]]
    left.plot(layers, [c["delta"]["effective_rank"] for c in covariance], "D-", label="covariance")
    left.plot(
        layers,
        [c["hidden"]["effective_rank"] for c in covariance],
        "v:",
        label="hidden states' covariance",
    )
    left.set_xlabel("layer")
    left.set_ylabel("rank")
    left.set_title("Rank of the oracle vectors (second moment unless noted)")
    left.legend()
    changed = [e for e in result["layers"] if any(e["spectrum"]["top_energy_fractions"])]
    for e in changed[:: max(1, len(changed) // 6)]:  # an oracle of 0 has no spectrum to draw
        fractions = e["spectrum"]["top_energy_fractions"]
        right.plot(range(1, len(fractions) + 1), fractions, label=f"layer {e['layer']}")
    if changed:
        right.set_yscale("log")
    right.set_xlabel("eigenvalue index")
    right.set_ylabel("share of energy")
    right.set_title("Second-moment spectrum of delta h")
    right.legend(fontsize=7)
    return fig


def _kl_curve(plt, result: dict):
    fig, ax = plt.subplots(figsize=(7, 4))
    rank = result["rank"]
    shown = ["base", "oracle block_output (base head)", "linear full", f"linear rank {rank}"]
    for name in shown:
        curve = result["kl"][name]["curve"]
        ax.plot(range(len(curve)), curve, "o-", ms=3, label=name)
    for run in result["runs"]:
        curve = run["kl"]["curve"]
        ax.plot(range(len(curve)), curve, "s--", ms=3, label=f"{run['method']}: {run['path']}")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("generated token index (FT greedy continuation, teacher-forced)")
    ax.set_ylabel("mean KL(FT || model), nats")
    ax.set_title("Distance to the fine-tuned model along its generation")
    ax.legend(fontsize=7)
    return fig


def _expressivity(plt, result: dict):
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    layers = _layers(result)
    exp = [e["expressivity"] for e in result["layers"]]
    errors = [math.nan if x["relative_error"] is None else x["relative_error"] for x in exp]
    ax.plot(layers, errors, "o-", color="tab:red")
    ax.set_xlabel("layer")
    ax.set_ylabel("optimal relative error", color="tab:red")
    twin = ax.twinx()
    twin.plot(layers, [x["max_angle_deg"] for x in exp], "s--", color="tab:blue")
    twin.set_ylabel("largest principal angle (deg)", color="tab:blue")
    title = f"Post-block matching a rank-{result['rank']} post-MLP steer (Thm 3.1)"
    if result["tokens"] <= result["hidden_size"]:
        title += "\n(trivially 0: no more tokens than the hidden size)"
    ax.set_title(title)
    return fig


def _error_control(plt, result: dict):
    """Each fitted map's worst held-out layer error against the KL it reaches (the blog's
    'Error Control')."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    points = [p for p in result["error_control"] if p["max_layer_error"] is not None]
    ax.plot([p["max_layer_error"] for p in points], [p["kl"] for p in points], "o-")
    for p in points:
        ax.annotate(p["maps"].replace("_", " "), (p["max_layer_error"], p["kl"]), fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel("worst layer's relative error ||delta - delta'|| / ||delta|| (held out)")
    ax.set_ylabel("KL(FT || steered base) per generated token")
    ax.set_title("Linear maps h -> delta_h: per-layer error vs final KL")
    return fig


def _joint(plt, result: dict):
    runs = [r for r in result["runs"] if r.get("diagnostics")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / len(runs)
    for k, run in enumerate(runs):
        layers = run["diagnostics"]["layers"]
        x = [e["layer"] + (k - (len(runs) - 1) / 2) * width for e in layers]
        q = [e["shift_cosine"].get("quantiles", {}) for e in layers]
        median = [v.get("0.5", 0.0) for v in q]
        low = [m - v.get("0.25", m) for m, v in zip(median, q, strict=True)]
        high = [v.get("0.75", m) - m for m, v in zip(median, q, strict=True)]
        left.errorbar(x, median, yerr=[low, high], fmt="o", ms=3, label=run["method"])
        overlap = [e.get("subspace_overlap", {}).get("down_proj") for e in layers]
        right.plot(
            [e["layer"] for e in layers],
            [v if v is not None else float("nan") for v in overlap],
            "o-",
            label=f"{run['method']} (down_proj)",
        )
        chance = [e.get("subspace_overlap", {}).get("chance") for e in layers]
        if any(c is not None for c in chance):
            right.plot(
                [e["layer"] for e in layers],
                [c if c is not None else float("nan") for c in chance],
                ":",
                color="0.5",
            )
    left.axhline(0, color="k", lw=0.5)
    left.set_xlabel("layer")
    left.set_ylabel("cos(adapter shift, LoRA shift): median, IQR")
    left.set_title("Shift alignment (Fig. 5)")
    left.legend(fontsize=7)
    right.set_xlabel("layer")
    right.set_ylabel("mean cos^2 of principal angles")
    right.set_title("W_up vs LoRA B subspace overlap (Fig. 3); dotted: chance")
    right.legend(fontsize=7)
    return fig
