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
  plus the backward to them, with logits only where the loss is taken (``floor_step`` below). No
  trainable method can do less work than that: it must run the model and backpropagate through
  it to reach its parameters.
- **activation memory** kept for backward per step: the bytes of every tensor autograd saves
  (``torch.autograd.graph.saved_tensors_hooks``), parameters excluded, so the figure is exact
  and the same on every device; and peak memory where the device reports it (CUDA).
- **generation** with the adapter attached vs the same model with it disabled, same prompts,
  same forced length; **log-likelihood scoring** (lm-eval's request shape) likewise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ("postblock", "postblock-vector", "reft", "reft-original", "lora", "joint-orth", "sft")
# pyreft's LoReFT beside steer's reft-original, from a throw-away folder (bench/pyreft_step.py)
PYREFT = ("pyreft==0.1.0", "pyvene==0.1.8")
# name -> (comparison, limit, the dtype the target is stated for; None: any)
TARGETS = {
    "postblock_vs_floor": ("<=", 1.00, None),
    "lora_vs_postblock": (">=", 1.25, None),
    "generation_overhead": ("<=", 1.02, None),
    "postblock_vs_lora_activation_memory": ("<=", 0.60, "bfloat16"),
}


def _rows(tokenizer, n: int, chat: bool):
    from steer_cli.data.encode import encode_for_training
    from steer_cli.data.tasks import load_splits, task_for
    from steer_cli.recipe import build_recipe

    recipe = build_recipe({"data": {"train_size": n, "test_size": 32}})
    task = task_for(recipe.data)
    splits = load_splits(task, recipe.data)
    rows, _ = encode_for_training(
        tokenizer, splits["train"], chat=chat, max_length=recipe.data.max_length
    )
    return rows, splits["test"]


def _loss(model, batch: dict, *, from_embeddings: bool) -> torch.Tensor:
    """The training loss of ``batch`` as steer's loop computes it: logits only from the first
    position that predicts a supervised token. ``from_embeddings``: start from input embeddings
    that require grad (the floor's input)."""
    from steer_cli.data.encode import IGNORE_INDEX

    first = max(0, int(batch["prompt_lengths"].min()) - 1)
    width = batch["input_ids"].shape[1]
    if from_embeddings:
        embeds = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)
        inputs = {"inputs_embeds": embeds}
    else:
        inputs = {"input_ids": batch["input_ids"]}
    logits = model(
        **inputs, attention_mask=batch["attention_mask"], logits_to_keep=width - first
    ).logits
    labels = batch["labels"][:, width - logits.shape[1] + 1 :]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX
    )


def floor_step(model, batch: dict) -> None:
    """The floor: forward from the input embeddings (which require grad) and backward to them,
    weights frozen, logits only where the loss is taken. Every trainable method does at least
    this much: it runs the model and backpropagates through it to reach its parameters."""
    _loss(model, batch, from_embeddings=True).backward()


def saved_bytes(run, params: set[int]) -> int:
    """Bytes of the tensors autograd saves while ``run()`` builds its graph (parameters out)."""
    total = 0

    def pack(tensor):
        nonlocal total
        if tensor.data_ptr() not in params:
            total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return total


def _median_seconds(fn, warmup: int, steps: int, device) -> float:
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


# Model shapes built from a config with random weights (no download), for --shape.
SHAPES = {
    "llama-3.2-1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "max_position_embeddings": 4096,
        "rope_theta": 500000.0,
        "tie_word_embeddings": True,
    },
    "small": {  # for checking the --shape path on a CPU
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "vocab_size": 1024,
        "max_position_embeddings": 1024,
    },
}


def _load(args):
    """``--model`` through steer's loader, or ``--shape`` as random weights on the device."""
    from steer_cli.models import load_model, resolve_device, resolve_dtype

    if args.shape is None:
        return load_model(args.model, dtype=args.dtype, device=args.device)
    from transformers import LlamaConfig, LlamaForCausalLM

    from steer_cli.models.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    device = resolve_device(args.device)
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**SHAPES[args.shape]))
    return model.to(resolve_dtype(args.dtype, device)).eval(), tokenizer


def _fixed_rows(n: int, length: int, vocab: int, supervised: int = 16) -> list[dict]:
    """``n`` rows of exactly ``length`` tokens, the last ``supervised`` of them the answer."""
    from steer_cli.data.encode import IGNORE_INDEX

    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (length,), generator=generator).tolist()
        rows.append(
            {"input_ids": ids, "labels": [IGNORE_INDEX] * (length - supervised) + ids[-supervised:]}
        )
    return rows


def measure(args) -> dict:
    from steer_cli.data.encode import collate_right_padded
    from steer_cli.loop import train_loop
    from steer_cli.parts import build_parts
    from steer_cli.recipe import build_recipe
    from steer_cli.train import recomputing

    model, tokenizer = _load(args)
    model.requires_grad_(False)
    device = next(model.parameters()).device
    rows, test = _rows(tokenizer, args.batch * (args.warmup + args.steps), chat=True)
    if args.seq_len:
        rows = _fixed_rows(len(rows), args.seq_len, min(len(tokenizer), model.config.vocab_size))
    batch = {
        k: v.to(device) if torch.is_tensor(v) else v
        for k, v in collate_right_padded(rows[: args.batch], tokenizer.pad_token_id).items()
    }
    params = {p.data_ptr() for p in model.parameters()}
    out: dict = {"model": args.model, "dtype": str(next(model.parameters()).dtype)[6:]}
    out["device"] = str(device)
    embed = model.get_input_embeddings().weight.numel()
    out["non_embedding_params"] = sum(p.numel() for p in model.parameters()) - embed
    out["mean_row_tokens"] = statistics.mean(len(r["input_ids"]) for r in rows)
    out["floor_seconds"] = _median_seconds(
        lambda: floor_step(model, batch), args.warmup, args.steps, device
    )
    out["floor_activation_bytes"] = saved_bytes(lambda: floor_step(model, batch), params)
    out["methods"] = {}
    for method in args.methods:
        if method == "sft":  # trains every weight: a copy of the model
            target, _ = _load(args)
        else:
            target = model
        recipe = build_recipe(
            {"method": method, "train": {"batch_size": args.batch, "report_to": "none"}}
        )
        parts = build_parts(target, recipe)
        seconds: list[float] = []
        cfg = recipe.train.model_copy(update={"max_steps": args.warmup + args.steps})

        def record(s, seconds=seconds):
            seconds.append(s.seconds)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        train_loop(
            parts.model, parts, rows, cfg, pad_id=tokenizer.pad_token_id,
            on_step=record, mega_batches=0,
        )  # fmt: skip

        def forward_loss(parts=parts):
            with parts.batch_context(batch) if hasattr(parts, "batch_context") else nullcontext():
                _loss(parts.model, batch, from_embeddings=False)

        step_seconds = statistics.median(seconds[args.warmup :])
        entry = {
            "step_seconds": step_seconds,
            "tokens_per_second": args.batch * out["mean_row_tokens"] / step_seconds,
            "params": parts.num_parameters(),
            "activation_bytes": saved_bytes(forward_loss, params) if method != "sft" else None,
        }
        if device.type == "cuda":
            entry["peak_bytes"] = torch.cuda.max_memory_allocated()
        if method == "postblock":
            entry.update(_generation_and_scoring(parts, tokenizer, test, args, device))
            # the same step with train.gradient_checkpointing, as steer train turns it on
            with recomputing(parts.model, True):
                parts.model.train()
                entry["activation_bytes_checkpointed"] = saved_bytes(forward_loss, params)
                parts.model.eval()
        out["methods"][method] = entry
        if method != "sft":
            parts.remove()
    return out


REPEATS = 6  # alternating attached/disabled rounds for generation and scoring; the first warms


def _generation_and_scoring(parts, tokenizer, test, args, device) -> dict:
    """Attached vs disabled, same prompts, same forced length; log-likelihood likewise."""
    from steer_cli.data.encode import prompt_token_ids
    from steer_cli.evaluate.generation import generate
    from steer_cli.evaluate.scoring import score

    prompts = [prompt_token_ids(tokenizer, ex.prompt, True) for ex in test[: args.prompts]]
    forced = {"min_new_tokens": args.new_tokens}

    def gen():
        generate(
            parts.model, tokenizer, prompts, max_new_tokens=args.new_tokens,
            batch_size=len(prompts), overrides=forced,
        )  # fmt: skip

    contexts = [tokenizer.decode(p) for p in prompts]
    answers = [" " + ex.target for ex in test[: args.prompts]]

    def scoring():
        score(parts.model, tokenizer, contexts, answers, batch_size=len(contexts))

    # On and off alternate, so a drift of the machine's speed during the sitting (which a block
    # of "on" runs then a block of "off" runs would read as overhead) falls on both alike; the
    # overhead is the median of each round's own on/off ratio.
    times: dict[str, list[float]] = {}
    for _ in range(REPEATS):
        for name, fn in (("generation", gen), ("scoring", scoring)):
            times.setdefault(f"{name}_seconds", []).append(_median_seconds(fn, 0, 1, device))
            with parts.disabled():
                times.setdefault(f"{name}_seconds_disabled", []).append(
                    _median_seconds(fn, 0, 1, device)
                )
    out = {key: statistics.median(values[1:]) for key, values in times.items()}  # 1st: warm-up
    for name in ("generation", "scoring"):
        pairs = zip(
            times[f"{name}_seconds"][1:], times[f"{name}_seconds_disabled"][1:], strict=True
        )
        out[f"{name}_overhead"] = statistics.median(on / off for on, off in pairs)
    return out


def pyreft(args, m: dict) -> dict | str:
    """pyreft's LoReFT step at steer's reft-original (rank 8, every layer's block output, f7+l7)
    on the same rows, in a subprocess whose ``PYTHONPATH`` adds pyreft and pyvene installed
    ``--no-deps`` into a throw-away folder of steer's cache: pyreft 0.1.0 pins transformers
    4.45.1 and a notebook stack that pip does not resolve beside torch 2.13, and its training
    step needs none of them. Returns the measurement, or why there is none."""
    from steer_cli.models import cache_dir

    if args.no_pyreft or args.shape or "reft-original" not in m["methods"]:
        return "not measured: --no-pyreft, --shape, or reft-original not among --methods"
    if m["device"] != "cpu":
        return "not measured: bench/pyreft_step.py runs on the CPU only"
    site = cache_dir() / "bench" / "-".join(PYREFT).replace("==", "-")
    if not (site / "pyreft").is_dir():
        install = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
             *PYREFT],
            capture_output=True, text=True,
        )  # fmt: skip
        if install.returncode != 0:
            return f"not measured: pip install {' '.join(PYREFT)} failed: {install.stderr[-300:]}"
    command = [
        sys.executable, str(ROOT / "bench" / "pyreft_step.py"), "--model", args.model,
        "--dtype", args.dtype, "--batch", str(args.batch), "--warmup", str(args.warmup),
        "--steps", str(args.steps),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        return f"not measured: bench/pyreft_step.py failed: {run.stderr.strip()[-400:]}"
    return json.loads(run.stdout.strip().splitlines()[-1])


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
