"""The oracle's terminal summary (rich), from its JSON dict alone."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.table import Table


def _num(value, fmt: str = ".3g") -> str:
    return "-" if value is None else format(value, fmt)


def sanity_panel(result: dict) -> Panel:
    sanity = result["sanity"]
    params = result["parameters"]
    lines = []
    for name, mean in sanity["kl_mean"].items():
        head = "base head" if "base head" in name else "FT head"
        site = name.replace(" (base head)", "").replace("oracle ", "")
        lines.append(
            f"  {site:<13} {head:<9}  KL/token {mean:.3g}  (max {sanity['kl_max'][name]:.3g})"
        )
    if sanity["ok"]:
        verdict = (
            f"[bold green]ok[/]: the block_output oracle reproduces the fine-tuned model "
            f"(max KL {sanity['kl_max']['oracle block_output']:.2g} <= {sanity['tolerance']:g})"
        )
    else:
        verdict = (
            "[bold red]FAILED[/]: steering the base model with the oracle at block_output does "
            f"NOT reproduce the fine-tuned model (max KL "
            f"{sanity['kl_max']['oracle block_output']:.3g} > {sanity['tolerance']:g})"
        )
    changed = params["changed"]
    if changed:
        names = ", ".join(f"{c['name']} ({c['relative_change']:.2g})" for c in changed)
        tied = " (lm_head is tied to the embeddings)" if params["lm_head_tied"] else ""
        note = (
            f"outside the blocks the fine-tune changed: {names}{tied}. Hidden-state steering "
            "cannot reach the final norm / head: the FT head rows check the oracle; the base-head "
            "row is the floor under any steering of the base model."
        )
    else:
        note = "only the decoder blocks differ: the base and FT heads are the same."
    body = "\n".join([verdict, *lines, f"[dim]{note}[/]"])
    return Panel(body, title="oracle sanity", border_style="green" if sanity["ok"] else "red")


def layers_table(result: dict) -> Table:
    rank = result["rank"]
    table = Table(
        title="per layer",
        caption=(
            "MLP m/|O|: ||m|| / ||O||, the MLP write over the block output (the paper's words "
            "for its Fig. 2: 40-70%) · m/(a+m): ||m|| / (||a|| + ||m||), MLP and attention "
            "writes · m/|O-I|: ||m|| / ||O - I||, above 100% where the writes cancel · ranks of "
            "the oracle vectors: entropy-effective (second moment; covariance, and the hidden "
            "states' covariance), 90% / 99% energy · R2: linearized oracle h -> delta h, "
            f"in-sample · held-out err: rank-{rank} map fitted on the other half of the prompts "
            f"· Thm 3.1: a linear post-block steer matching the best rank-{rank} post-MLP one "
            "· -: the oracle is 0 there"
        ),
    )
    for column in (
        "layer",
        "m/|O| FT",
        "m/(a+m) base",
        "m/(a+m) FT",
        "m/|O-I| base",
        "m/|O-I| FT",
        "|dh|/|h|",
        "eff. rank",
        "cov. dh / h",
        "r90",
        "r99",
        "R2 full",
        f"R2 r={rank}",
        "held-out err",
        "Thm 3.1 rel. err",
        "max angle",
    ):
        table.add_column(column, justify="right")
    for e in result["layers"]:
        s, cov = e["spectrum"], e["covariance"]
        table.add_row(
            str(e["layer"]),
            f"{e['mlp_share']['ft']['of_block_output']:.0%}",
            f"{e['mlp_share']['base']['of_writes']:.0%}",
            f"{e['mlp_share']['ft']['of_writes']:.0%}",
            f"{e['mlp_share']['base']['of_update']:.0%}",
            f"{e['mlp_share']['ft']['of_update']:.0%}",
            _num(e["oracle_relative_norm"], ".3f"),
            f"{s['effective_rank']:.1f}",
            f"{cov['delta']['effective_rank']:.1f} / {cov['hidden']['effective_rank']:.1f}",
            str(s["rank_90"]),
            str(s["rank_99"]),
            _num(e["linear_r2"]["full"], ".3f"),
            _num(e["linear_r2"][f"rank_{rank}"], ".3f"),
            _num(e["held_out_error"][f"rank_{rank}"], ".3f"),
            _num(e["expressivity"]["relative_error"], ".3f"),
            f"{e['expressivity']['max_angle_deg']:.1f}°",
        )
    return table


def kl_table(result: dict) -> Table:
    table = Table(
        title="KL(FT || model) on the FT's greedy continuations (teacher-forced)",
        caption="nats per token; curve: first / middle / last generated index",
    )
    for column in ("model", "mean (generated)", "curve"):
        table.add_column(column, justify="right" if column != "model" else "left")
    rows = [(name, kl) for name, kl in result["kl"].items()]
    rows += [(f"{r['method']}: {r['path']}", r["kl"]) for r in result["runs"]]
    for name, kl in rows:
        curve = kl["curve"]
        picks = [curve[0], curve[len(curve) // 2], curve[-1]] if curve else []
        table.add_row(name, _num(kl["mean_generated"]), " / ".join(_num(v) for v in picks))
    return table


def print_summary(result: dict, console: Console, out_dir) -> None:
    from steer_cli.report import diagnostics_table

    console.print(
        f"[bold]steer oracle[/]: {result['base']} vs {result['fine_tuned']} on {result['task']}"
        f" · {result['samples']} prompts, {result['tokens']} tokens "
        f"({result['generated_tokens']} generated by the fine-tuned model)"
    )
    console.print(sanity_panel(result))
    console.print(layers_table(result))
    console.print(kl_table(result))
    for run in result["runs"]:
        if run.get("diagnostics") and run["diagnostics"].get("layers"):
            console.print(diagnostics_table(run["diagnostics"], f"{run['method']}: {run['path']}"))
    console.print(f"written to [bold]{out_dir}[/]")
