"""steer's benchmark suite: speed and memory as ratios, measured in one process and one sitting.

    make bench                                   # = python bench/run.py, then bench/report.py
    python bench/run.py --model tiny-llama --steps 4   # a smoke run
    python bench/run.py --device cuda --dtype bfloat16 --shape llama-3.2-1b --seq-len 512

Writes ``bench/results.json`` and prints a table with each ratio beside its target. Benchmarks
are not tests: nothing here fails a build; a missed target is printed as missed.

What is measured (medians over ``--steps`` timed steps after ``--warmup`` untimed ones). Every
method and the floor run on the same batches: the first ``warmup + steps`` batches that steer's
training loop draws with the recipe's seed (``measure.batch_order``), same rows, same order, same
padding; ``results.json`` records each timed step's tokens and padded tokens, and whether each
method's matched the floor's.

- **step time** of each method (a full optimizer step of steer's training loop, as ``steer
  train`` runs it: batch, forward, backward, optimizer, hooks) against the **floor**: the least
  work any method steering post-block's layers must do. The frozen model's forward, the backward
  from the loss down to the output of the first steered layer (layer 0 for post-block on every
  layer: the layers below it build no graph), logits only where the loss is taken, no optimizer
  (``measure.floor``).
- **activation memory** kept for backward per step on the first batch: the bytes of the
  storages autograd saves (``torch.autograd.graph.saved_tensors_hooks``), each storage once,
  weights excluded, so the figure is exact and the same on every device (``reference_bytes``
  beside it counts a tensor again each time another op saves it); and, on CUDA, peak memory
  during the steps and what was resident before them (SFT's measured with the shared frozen base
  moved off the GPU: only its own copy is resident).
- **generation** with the adapter attached vs the same model with it disabled, same prompts,
  same forced length, at each ``--decode-batches`` size; **log-likelihood scoring** (lm-eval's
  request shape) likewise.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
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
    "postblock_vs_floor": ("<=", 1.05, None),
    "lora_vs_postblock": (">=", 1.25, None),
    "postblock_vs_lora_activation_memory": ("<=", 0.60, "bfloat16"),
    "postblock_vs_lora_peak_memory": ("<=", 0.60, None),
    "generation_b1_overhead": ("<=", 1.10, None),
    "generation_b16_overhead": ("<=", 1.03, None),
    "generation_b1_compiled_overhead": ("<=", 1.10, None),
    "generation_b16_compiled_overhead": ("<=", 1.03, None),
}
# H100 SXM / H200 dense bf16, NVIDIA's datasheet (about 790 measured on this workplace's H200)
H200_BF16_TFLOPS = 989.0


def ratios(m: dict) -> dict:
    methods = m["methods"]
    floor = m["floor"]["step_seconds"]
    out = {f"{k}_vs_floor": v["step_seconds"] / floor for k, v in methods.items()}
    post, lora = methods.get("postblock", {}), methods.get("lora", {})
    if lora and post:
        out["lora_vs_postblock"] = lora["step_seconds"] / post["step_seconds"]
        out["postblock_vs_lora_activation_memory"] = (
            post["activation"]["bytes"] / lora["activation"]["bytes"]
        )
        out["postblock_vs_lora_activation_reference_bytes"] = (
            post["activation"]["reference_bytes"] / lora["activation"]["reference_bytes"]
        )
        if "peak_bytes" in post:
            out["postblock_vs_lora_peak_memory"] = post["peak_bytes"] / lora["peak_bytes"]
            out["postblock_vs_lora_peak_above_resident"] = (
                post["peak_bytes"] - post["resident_bytes"]
            ) / (lora["peak_bytes"] - lora["resident_bytes"])
    if "activation_checkpointed" in post:
        out["postblock_checkpointed_vs_plain_activation_memory"] = (
            post["activation_checkpointed"]["bytes"] / post["activation"]["bytes"]
        )
    if isinstance(m.get("pyreft"), dict) and "reft-original" in methods:
        ours = methods["reft-original"]["step_seconds"]
        for variant, v in m["pyreft"]["variants"].items():
            out[f"pyreft_{variant}_vs_reft_original"] = v["step_seconds"] / ours
    names = [f"generation_b{n}" for n in post.get("decode_batches", [])]
    names += [f"generation_b{n}_compiled" for n in post.get("compiled_decode_batches", [])]
    for name in [*names, "scoring"]:
        if f"{name}_overhead" in post:
            out[f"{name}_overhead"] = post[f"{name}_overhead"]
    return out


def mfu(m: dict, peak_tflops: float) -> dict:
    """Model FLOPs utilisation: ``k N T / (seconds * peak)``, N the parameters outside the
    embeddings, T the padded tokens of a timed step (padding is computed too), k = 6 for SFT
    (forward, backward to activations and to weights) and 4 for the floor and the others (their
    trained parameters are a rounding error of N). Attention's own FLOPs are left out."""
    n = m["non_embedding_params"]
    out = {}
    for name, v in {"floor": m["floor"], **m["methods"]}.items():
        tokens = sum(v["padded_tokens"]) / len(v["padded_tokens"])
        k = 6 if name == "sft" else 4
        out[name] = k * n * tokens / (v["step_seconds"] * peak_tflops * 1e12)
    return out


def verdict(name: str, value: float, dtype: str) -> str:
    """``<= 1.05 (met)``, ``>= 1.25 (MISSED)``, the target stated for another dtype, or ``""``."""
    if name not in TARGETS:
        return ""
    op, limit, stated = TARGETS[name]
    if stated not in (None, dtype):
        return f"{op} {limit:.2f} on {stated} (this run: {dtype})"
    ok = value <= limit if op == "<=" else value >= limit
    return f"{op} {limit:.2f} ({'met' if ok else 'MISSED'})"


def _mib(entry: dict | None) -> str:
    return "-" if not entry else f"{entry['bytes'] / 2**20:.1f}"


def _estimate(entry: dict) -> str:
    """The dry run's estimate beside the measured bytes: ``x.xx`` times them."""
    if not entry or "dry_run_estimate" not in entry:
        return "-"
    return f"{entry['dry_run_estimate'] / entry['bytes']:.3f}x"


def render(m: dict, r: dict) -> str:
    floor = m["floor"]
    lines = [
        f"steer bench · {m['model']} · {m['dtype']} · {m['device']} · floor "
        f"{1000 * floor['step_seconds']:.0f} ms/step (backward to layer {floor['stops_at_layer']}"
        f"'s output), {_mib(floor['activation'])} MiB saved for backward",
        "",
        "| ratio | value | target |",
        "|---|---|---|",
    ]
    post = m["methods"].get("postblock", {})
    for k, v in r.items():
        rounds = post.get(f"{k}_rounds")  # the per-round ratios an overhead's median is of
        spread = f" (rounds {min(rounds):.3f}-{max(rounds):.3f})" if rounds else ""
        lines.append(f"| {k} | {v:.3f}{spread} | {verdict(k, v, m['dtype'])} |")
    cuda = "peak_bytes" in floor
    rows = {"floor": floor, **m["methods"]}
    # results measured before the dry run's estimate was recorded have no such column
    estimated = any("dry_run_estimate" in (v["activation"] or {}) for v in rows.values())
    columns = ["method", "ms/step", "tokens/s", "padded tokens/step", "params"]
    columns += ["MiB saved for backward"] + ["dry-run estimate"] * estimated + ["peak GiB"] * cuda
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name, v in rows.items():
        padded = sum(v["padded_tokens"]) / len(v["padded_tokens"])
        cells = [name, f"{1000 * v['step_seconds']:.0f}", f"{v['tokens_per_second']:,.0f}"]
        cells += [f"{padded:,.0f}", f"{v.get('params', 0):,}", _mib(v["activation"])]
        if estimated:
            cells.append(_estimate(v["activation"]))
        if cuda:
            cells.append(f"{v['peak_bytes'] / 2**30:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    if "mfu" in m:
        lines += [
            "",
            f"MFU against {m['peak_tflops']:g} TFLOP/s: "
            + ", ".join(f"{k} {100 * v:.1f}%" for k, v in m["mfu"].items()),
        ]
    if not all(v["same_batches_as_floor"] for v in m["methods"].values()):
        lines += ["", "WARNING: a method's batches differ from the floor's; see results.json"]
    lines.append("")
    if isinstance(m["pyreft"], dict):
        p = m["pyreft"]
        lines.append(
            f"pyreft {p['pyreft']} (pyvene {p['pyvene']}) LoReFT at reft-original's sites, "
            f"{p['params']:,} params: "
            + ", ".join(
                f"{k} {1000 * v['step_seconds']:.0f} ms/step" for k, v in p["variants"].items()
            )
        )
    else:
        lines.append(f"pyreft: {m['pyreft']}")
    return "\n".join(lines)


def machine(device: str) -> dict:
    """What the figures were measured on: the host, the stack and, on CUDA, the GPU."""
    from importlib.metadata import version

    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    info = {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        **{name: version(name) for name in ("torch", "transformers", "peft", "accelerate")},
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
        info["cuda"] = torch.version.cuda
    return info


def measured_matmul_tflops(device: str, dtype: torch.dtype = torch.bfloat16) -> float:
    """A large bf16 matrix product's rate on this GPU: the ceiling MFU is read against."""
    from bench.measure import median_seconds

    n = 8192
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    seconds = median_seconds(lambda: a @ b, 3, 10, torch.device(device))
    return 2 * n**3 / seconds / 1e12


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="random weights of this shape")
    parser.add_argument("--seq-len", type=int, help="rows of exactly this many tokens")
    parser.add_argument(
        "--peak-tflops", type=float, help=f"the device's dense peak, for MFU (H200 bf16: "
        f"{H200_BF16_TFLOPS:g})",
    )  # fmt: skip
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--decode-batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument(
        "--compiled-decode-batches", type=int, nargs="*", default=[], help="also decode at these "
        "batch sizes under torch.compile with a static KV cache (CUDA graphs on a GPU)",
    )  # fmt: skip
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating adapter on/off rounds of generation "
        "and scoring (after one warm-up round); the overhead is their ratios' median",
    )  # fmt: skip
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--no-pyreft", action="store_true", help="skip measuring pyreft")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (a step's time runs from the one before)")
    return args


def main() -> None:
    args = parse()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # forced lengths make generate() warn about min_length
    torch.manual_seed(0)
    measured = {"machine": machine(args.device), **measure(args)}
    measured["pyreft"] = pyreft(args, measured)
    measured["ratios"] = ratios(measured)
    if args.peak_tflops:
        measured["peak_tflops"] = args.peak_tflops
        measured["mfu"] = mfu(measured, args.peak_tflops)
        if measured["device"].startswith("cuda"):
            measured["measured_matmul_tflops"] = measured_matmul_tflops(measured["device"])
    from steer_cli.atomic import write_json

    write_json(args.output, measured)
    print(render(measured, measured["ratios"]))
    print(f"\nwritten: {args.output}")


if __name__ == "__main__":
    main()
