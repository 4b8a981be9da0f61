"""steer's benchmark suite: speed and memory as ratios, measured in one process and one sitting.

    make bench                                   # = python bench/run.py (the embedded model)
    python bench/run.py --model tiny-llama --steps 4   # a smoke run
    python bench/run.py --device cuda --dtype bfloat16

Writes ``bench/results.json`` and prints a table with each ratio beside its target. Benchmarks
are not tests: nothing here fails a build; a missed target is printed as such.

What is measured (medians over ``--steps`` timed steps after ``--warmup`` untimed ones, all on
the same batches of the quickstart's data):

- **step time** of each method (a full optimizer step of steer's training loop, as ``steer
  train`` runs it) against the **floor**: the frozen model's forward from the input embeddings
  plus the backward to them, with logits only where the loss is taken (``measure.floor_step``).
  No trainable method can do less work than that: it must run the model and backpropagate
  through it to reach its parameters.
- **activation memory** kept for backward per step: the bytes of every tensor autograd saves
  (``torch.autograd.graph.saved_tensors_hooks``), parameters excluded, so the figure is exact
  and the same on every device; and peak memory where the device reports it (CUDA).
- **generation** with the adapter attached vs the same model with it disabled, same prompts,
  same forced length; **log-likelihood scoring** (lm-eval's request shape) likewise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import measure  # noqa: E402 (after the path insert above)
from bench.peers import pyreft  # noqa: E402
from bench.workload import SHAPES  # noqa: E402

METHODS = ("postblock", "postblock-vector", "reft", "reft-original", "lora", "joint-orth", "sft")
# name -> (comparison, limit, the dtype the target is stated for; None: any)
TARGETS = {
    "postblock_vs_floor": ("<=", 1.00, None),
    "lora_vs_postblock": (">=", 1.25, None),
    "generation_overhead": ("<=", 1.02, None),
    "postblock_vs_lora_activation_memory": ("<=", 0.60, "bfloat16"),
}


def ratios(m: dict) -> dict:
    methods = m["methods"]
    out = {f"{k}_vs_floor": v["step_seconds"] / m["floor_seconds"] for k, v in methods.items()}
    post = methods.get("postblock", {})
    if "lora" in methods and post:
        out["lora_vs_postblock"] = methods["lora"]["step_seconds"] / post["step_seconds"]
        if post.get("activation_bytes") and methods["lora"].get("activation_bytes"):
            out["postblock_vs_lora_activation_memory"] = (
                post["activation_bytes"] / methods["lora"]["activation_bytes"]
            )
    if post.get("activation_bytes_checkpointed"):
        out["postblock_checkpointed_vs_plain_activation_memory"] = (
            post["activation_bytes_checkpointed"] / post["activation_bytes"]
        )
    if isinstance(m.get("pyreft"), dict) and "reft-original" in methods:
        out["pyreft_vs_reft_original"] = (
            m["pyreft"]["step_seconds"] / methods["reft-original"]["step_seconds"]
        )
    for name in ("generation_overhead", "scoring_overhead"):
        if name in post:
            out[name] = post[name]
    return out


def mfu(m: dict, args) -> dict:
    """Model FLOPs utilisation per method: ``k N tokens / (seconds * peak)``, N the parameters
    outside the embeddings, k = 6 for SFT (forward, backward to activations and to weights) and
    4 for the others (their trained parameters are a rounding error of N)."""
    n = m["non_embedding_params"]
    tokens = args.batch * (args.seq_len or m["mean_row_tokens"])
    out = {}
    for name, v in m["methods"].items():
        k = 6 if name == "sft" else 4
        out[name] = k * n * tokens / (v["step_seconds"] * args.peak_tflops * 1e12)
    return out


def render(m: dict, r: dict) -> str:
    lines = [
        f"steer bench · {m['model']} · {m['dtype']} · {m['device']} · floor "
        f"{1000 * m['floor_seconds']:.0f} ms/step, {m['floor_activation_bytes'] / 2**20:.1f} MiB "
        "saved for backward",
        "",
        "| ratio | value | target |",
        "|---|---|---|",
    ]
    for name, value in r.items():
        target = TARGETS.get(name)
        mark = ""
        if target is not None:
            op, limit, dtype = target
            ok = value <= limit if op == "<=" else value >= limit
            if dtype not in (None, m["dtype"]):
                mark = f"{op} {limit:.2f} on {dtype} (this run: {m['dtype']})"
            else:
                mark = f"{op} {limit:.2f} ({'met' if ok else 'MISSED'})"
        lines.append(f"| {name} | {value:.3f} | {mark} |")
    lines += [
        "",
        "| method | ms/step | tokens/s | params | MiB saved for backward |",
        "|---|---|---|---|---|",
    ]
    for name, v in m["methods"].items():
        saved = "-" if v["activation_bytes"] is None else f"{v['activation_bytes'] / 2**20:.1f}"
        lines.append(
            f"| {name} | {1000 * v['step_seconds']:.0f} | {v['tokens_per_second']:,.0f} | "
            f"{v['params']:,} | {saved} |"
        )
    if "mfu" in m:
        lines += ["", "MFU: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in m["mfu"].items())]
    if "peak_bytes" in next(iter(m["methods"].values()), {}):
        peaks = ", ".join(f"{k} {v['peak_bytes'] / 2**30:.2f} GiB" for k, v in m["methods"].items())
        lines += ["", f"peak memory: {peaks}"]
    lines.append("")
    if isinstance(m["pyreft"], dict):
        p = m["pyreft"]
        lines.append(
            f"pyreft {p['pyreft']} (pyvene {p['pyvene']}) LoReFT at reft-original's sites: "
            f"{1000 * p['step_seconds']:.0f} ms/step, {p['params']:,} params"
        )
    else:
        lines.append(f"pyreft: {m['pyreft']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="random weights of this shape")
    parser.add_argument("--seq-len", type=int, help="rows of exactly this many tokens")
    parser.add_argument(
        "--peak-tflops", type=float, help="the device's dense peak, for MFU (H200 bf16: 989)"
    )
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--no-pyreft", action="store_true", help="skip measuring pyreft")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # forced lengths make generate() warn about min_length
    torch.manual_seed(0)
    measured = measure(args)
    measured["pyreft"] = pyreft(args, measured)
    measured["ratios"] = ratios(measured)
    if args.peak_tflops:
        measured["mfu"] = mfu(measured, args)
    from steer_cli.atomic import write_json

    write_json(args.output, measured)
    print(render(measured, measured["ratios"]))
    print(f"\nwritten: {args.output}")


if __name__ == "__main__":
    main()
