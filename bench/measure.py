"""The measurements: step time against the floor, saved-for-backward bytes, generation and
scoring with the adapter attached vs disabled (see ``bench/run.py`` for what each means)."""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext

import torch

from bench.workload import fixed_rows, load, quickstart_rows


def loss(model, batch: dict, *, from_embeddings: bool) -> torch.Tensor:
    """The training loss of ``batch`` as steer's loop computes it (``loop.supervised_loss``).
    ``from_embeddings``: start from input embeddings that require grad (the floor's input)."""
    from steer_cli.loop import supervised_loss

    inputs = {"attention_mask": batch["attention_mask"]}
    if from_embeddings:
        embeds = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)
        inputs["inputs_embeds"] = embeds
    else:
        inputs["input_ids"] = batch["input_ids"]
    return supervised_loss(model, model, inputs, batch["labels"], batch["prompt_lengths"])


def floor_step(model, batch: dict) -> None:
    """The floor: forward from the input embeddings (which require grad) and backward to them,
    weights frozen, logits only where the loss is taken. Every trainable method does at least
    this much: it runs the model and backpropagates through it to reach its parameters."""
    loss(model, batch, from_embeddings=True).backward()


def saved(run, params: set[int]) -> dict[str, int]:
    """What autograd saves for backward while ``run()`` builds its graph, parameters out.

    ``bytes``: each storage once, whole (a saved view keeps its whole storage alive), which is
    the memory the graph holds. ``reference_bytes``: each saved tensor's own bytes, counted
    again every time another op saves it (what a per-op tally adds up to; not memory).
    ``params``: the storage addresses of the weights, which stay resident anyway.
    """
    storages: dict[int, torch.UntypedStorage] = {}  # held: no address is reused meanwhile
    references = 0

    def pack(tensor):
        nonlocal references
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            references += tensor.numel() * tensor.element_size()
            storages[storage.data_ptr()] = storage
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return {"bytes": sum(s.nbytes() for s in storages.values()), "reference_bytes": references}


def saved_bytes(run, params: set[int]) -> int:
    """Bytes autograd holds for backward while ``run()`` builds its graph, each storage once."""
    return saved(run, params)["bytes"]


def parameter_storages(model) -> set[int]:
    """The storage addresses of ``model``'s parameters and buffers, for :func:`saved`."""
    tensors = [*model.parameters(), *model.buffers()]
    return {t.untyped_storage().data_ptr() for t in tensors}


def median_seconds(fn, warmup: int, steps: int, device) -> float:
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


def measure(args) -> dict:
    from steer_cli.data.encode import collate_right_padded
    from steer_cli.loop import train_loop
    from steer_cli.parts import build_parts
    from steer_cli.recipe import build_recipe
    from steer_cli.train import recomputing

    model, tokenizer = load(args)
    model.requires_grad_(False)
    device = next(model.parameters()).device
    rows, test = quickstart_rows(tokenizer, args.batch * (args.warmup + args.steps), chat=True)
    if args.seq_len:
        rows = fixed_rows(len(rows), args.seq_len, min(len(tokenizer), model.config.vocab_size))
    batch = {
        k: v.to(device) if torch.is_tensor(v) else v
        for k, v in collate_right_padded(rows[: args.batch], tokenizer.pad_token_id).items()
    }
    params = parameter_storages(model)
    out: dict = {"model": args.model, "dtype": str(next(model.parameters()).dtype)[6:]}
    out["device"] = str(device)
    embed = model.get_input_embeddings().weight.numel()
    out["non_embedding_params"] = sum(p.numel() for p in model.parameters()) - embed
    out["mean_row_tokens"] = statistics.mean(len(r["input_ids"]) for r in rows)
    out["floor_seconds"] = median_seconds(
        lambda: floor_step(model, batch), args.warmup, args.steps, device
    )
    out["floor_activation_bytes"] = saved_bytes(lambda: floor_step(model, batch), params)
    out["methods"] = {}
    for method in args.methods:
        if method == "sft":  # trains every weight: a copy of the model
            target, _ = load(args)
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
                loss(parts.model, batch, from_embeddings=False)

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
            entry.update(generation_and_scoring(parts, tokenizer, test, args, device))
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


def generation_and_scoring(parts, tokenizer, test, args, device) -> dict:
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
            times.setdefault(f"{name}_seconds", []).append(median_seconds(fn, 0, 1, device))
            with parts.disabled():
                times.setdefault(f"{name}_seconds_disabled", []).append(
                    median_seconds(fn, 0, 1, device)
                )
    out = {key: statistics.median(values[1:]) for key, values in times.items()}  # 1st: warm-up
    for name in ("generation", "scoring"):
        pairs = zip(
            times[f"{name}_seconds"][1:], times[f"{name}_seconds_disabled"][1:], strict=True
        )
        out[f"{name}_overhead"] = statistics.median(on / off for on, off in pairs)
    return out
