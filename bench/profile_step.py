"""Where a step's time goes, beside the benchmark's medians: torch.profiler over a few steps of
the floor and of post-block training, and over greedy decoding with the adapter on and off.

    python bench/profile_step.py --device cuda --shape llama-3.2-1b --seq-len 512 --dtype bfloat16

Per case: wall time per step (or per decoded token), device busy time (the kernels' summed
self time), kernels launched, host-device synchronisations, and the top operators by device
time. A wall time well above the busy time is host-bound (launches, Python, syncs), not
arithmetic. Prints a table and writes ``--output`` (JSON).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import (  # noqa: E402
    _synchronize,
    batch_order,
    floor,
    floor_layer,
    train_steps,
)
from bench.workload import SHAPES, fixed_rows, load  # noqa: E402

SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def profiled(run, device, per: int) -> dict:
    """``run()`` once under the profiler; its figures divided by ``per`` (the steps or tokens
    it holds), and the top operators."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    _synchronize(device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        run()
        _synchronize(device)
        wall = time.perf_counter() - start
    events = prof.key_averages()
    kernels = [e for e in events if str(getattr(e, "device_type", "")).endswith("CUDA")]
    busy_us = sum(e.self_device_time_total for e in kernels)
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel"))
    syncs = sum(e.count for e in events if e.key in SYNCS)
    memcpy = sum(e.count for e in events if e.key.startswith("cudaMemcpy"))
    top = sorted(kernels, key=lambda e: -e.self_device_time_total)[:12]
    return {
        "wall_ms": 1000 * wall / per,
        "device_busy_ms": busy_us / 1000 / per,
        "kernel_launches": launches / per,
        "syncs": syncs / per,
        "memcpy_calls": memcpy / per,
        "top_device_ops": [
            {"op": e.key[:80], "ms": e.self_device_time_total / 1000 / per,
             "calls": e.count / per}
            for e in top
        ],
        "top_host_ops": [
            {"op": e.key[:80], "ms": e.cpu_time_total / 1000 / per, "calls": e.count / per}
            for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
        ],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.2-1b")
    parser.add_argument("--model", default=None)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    from steer_cli.atomic import write_json
    from steer_cli.evaluate.generation import generate
    from steer_cli.parts import build_parts
    from steer_cli.recipe import build_recipe

    model, tokenizer = load(args)
    model.requires_grad_(False)
    device = next(model.parameters()).device
    n = 2 + args.steps
    vocab = min(len(tokenizer), model.config.vocab_size)
    rows = fixed_rows(args.batch * n, args.seq_len, vocab)
    recipe = build_recipe({"method": "postblock", "train": {"batch_size": args.batch,
                                                            "report_to": "none"}})  # fmt: skip
    batches = batch_order(rows, args.batch, n, recipe.train.seed)
    pad, layer = tokenizer.pad_token_id, floor_layer(model)
    out = {}
    floor(model, batches[:2], pad, layer, 0)  # warm-up
    out["floor_step"] = profiled(
        lambda: floor(model, batches[2:], pad, layer, 0), device, args.steps
    )
    parts = build_parts(model, recipe)
    train_steps(parts, rows, batches[:2], recipe.train, pad, 1)  # warm-up
    out["postblock_step"] = profiled(
        lambda: train_steps(parts, rows, batches[2:], recipe.train, pad, 0), device, args.steps
    )
    prompt = [rows[0]["input_ids"][:64]]

    def decode():
        generate(parts.model, tokenizer, prompt, max_new_tokens=args.new_tokens, batch_size=1,
                 overrides={"min_new_tokens": args.new_tokens})  # fmt: skip

    decode()
    out["decode_b1_on"] = profiled(decode, device, args.new_tokens)
    with parts.disabled():
        out["decode_b1_off"] = profiled(decode, device, args.new_tokens)
    write_json(args.output, out)
    print("| case (per step / per token) | wall ms | device busy ms | kernels | syncs |")
    print("|---|---|---|---|---|")
    for name, v in out.items():
        print(f"| {name} | {v['wall_ms']:.2f} | {v['device_busy_ms']:.2f} | "
              f"{v['kernel_launches']:.0f} | {v['syncs']:.1f} |")  # fmt: skip
    for name, v in out.items():
        print(f"\n{name}: top device ops")
        for op in v["top_device_ops"][:8]:
            print(f"  {op['ms']:8.3f} ms  {op['calls']:6.1f}x  {op['op']}")


if __name__ == "__main__":
    main()
