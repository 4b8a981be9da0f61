"""The measurements: each method's optimizer step and the floor on the same batches,
saved-for-backward bytes, peak memory, generation and scoring with the adapter attached vs
disabled (see ``bench/run.py`` for what each means)."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch

from bench.workload import fixed_rows, load, quickstart_rows


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
        # Detached: the same storage, without the grad_fn an op's saved output would point back
        # to (returning the tensor itself makes a cycle that keeps an un-backwarded graph alive).
        return tensor.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return {"bytes": sum(s.nbytes() for s in storages.values()), "reference_bytes": references}


def saved_bytes(run, params: set[int]) -> int:
    """Bytes autograd holds for backward while ``run()`` builds its graph, each storage once."""
    return saved(run, params)["bytes"]


def parameter_storages(*modules) -> set[int]:
    """The storage addresses of the modules' parameters and buffers, for :func:`saved`."""
    tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
    return {t.untyped_storage().data_ptr() for t in tensors}


def _collated(rows: list[dict], pad_id: int, device) -> dict:
    """A right-padded batch on ``device``, as the training loop collates it."""
    from steer_cli.data.encode import collate_right_padded

    batch = collate_right_padded(rows, pad_id)
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _loss(model, batch: dict) -> torch.Tensor:
    """The training loss of ``batch`` as steer's loop computes it (``loop.supervised_loss``)."""
    from steer_cli.loop import supervised_loss

    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    return supervised_loss(model, model, inputs, batch["labels"], batch["prompt_lengths"])


@contextmanager
def backward_stops_at(model, layer: int) -> Iterator[None]:
    """Decoder layer ``layer``'s output becomes a leaf that requires grad: the forward below it
    builds no graph and the backward ends there, as for an adapter steering from that layer."""
    from steer_cli.engine.sites import find_decoder_layers

    def leaf(module, args, output):
        if isinstance(output, tuple):  # some releases return (hidden, ...)
            return (output[0].detach().requires_grad_(True), *output[1:])
        return output.detach().requires_grad_(True)

    handle = find_decoder_layers(model)[layer].register_forward_hook(leaf)
    try:
        yield
    finally:
        handle.remove()


def estimate(model, recipe, batch: dict) -> int:
    """``steer train --dry-run``'s estimate of the bytes saved for backward on ``batch``
    (``steer_cli.memory``), for the same shapes the bench measures; from ``model``'s config
    (the model itself may carry the method's parts by now)."""
    from steer_cli.memory import saved_for_backward

    rows, tokens = batch["input_ids"].shape
    kept = tokens - max(0, int(batch["prompt_lengths"].min()) - 1)
    padding = bool((batch["attention_mask"] == 0).any())
    dtype = next(model.parameters()).dtype
    return saved_for_backward(
        model.config, recipe, rows=rows, tokens=tokens, kept=kept, padding=padding, dtype=dtype
    )


def floor_layer(model, method: str = "postblock") -> int:
    """The first decoder layer ``method`` steers (its preset's layers on this model)."""
    from steer_cli.engine.sites import find_decoder_layers, resolve_layers
    from steer_cli.recipe import build_recipe

    layers = build_recipe({"method": method}).adapter.layers
    return min(resolve_layers(layers, len(find_decoder_layers(model))))


def _synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn, warmup: int, steps: int, device) -> float:
    times = []
    for i in range(warmup + steps):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def batch_order(rows: list[dict], batch: int, steps: int, seed: int) -> list[list[dict]]:
    """The first ``steps`` batches ``train_loop(..., mega_batches=0)`` draws with ``seed``:
    the floor replays them, so it runs on exactly the rows, order and padding the methods do."""
    from steer_cli.data.batching import batch_stream

    order = batch_stream([len(r["input_ids"]) for r in rows], batch, seed=seed, mega_batches=0)
    return [[rows[i] for i in next(order)] for _ in range(steps)]


def _padded(rows: list[dict]) -> int:
    return len(rows) * max(len(r["input_ids"]) for r in rows)


def _tokens(rows: list[dict]) -> int:
    return sum(len(r["input_ids"]) for r in rows)


def _timed_steps(per_step: dict, warmup: int) -> dict:
    """The timed steps' figures (warm-up steps out): per step, and their summary."""
    timed = {k: v[warmup:] for k, v in per_step.items()}
    return {
        **timed,
        "step_seconds": statistics.median(timed["seconds"]),
        "tokens_per_second": sum(timed["tokens"]) / sum(timed["seconds"]),
    }


def floor(model, batches: list[list[dict]], pad_id: int, layer: int, warmup: int) -> dict:
    """The floor, step by step on ``batches``: collate, forward, backward down to ``layer``'s
    output, logits only where the loss is taken; no optimizer (nothing is trained)."""
    device = next(model.parameters()).device
    per_step: dict[str, list] = {"seconds": [], "tokens": [], "padded_tokens": []}
    with backward_stops_at(model, layer):
        for rows in batches:
            _synchronize(device)
            start = time.perf_counter()
            _loss(model, _collated(rows, pad_id, device)).backward()
            _synchronize(device)
            per_step["seconds"].append(time.perf_counter() - start)
            per_step["tokens"].append(_tokens(rows))
            per_step["padded_tokens"].append(_padded(rows))
    return _timed_steps(per_step, warmup)


def train_steps(parts, rows: list[dict], batches: list[list[dict]], cfg, pad_id: int, warmup: int):
    """``len(batches)`` optimizer steps of steer's training loop, as ``steer train`` runs them.
    A step's time runs from the end of the one before it (the device synchronised at each end),
    so it holds everything the loop does: batch, forward, backward, optimizer, hooks."""
    from steer_cli.loop import train_loop

    device = next(parts.model.parameters()).device
    per_step: dict[str, list] = {"seconds": [], "tokens": [], "padded_tokens": []}
    last = [None]

    def record(stats):
        _synchronize(device)
        now = time.perf_counter()
        per_step["seconds"].append(stats.seconds if last[0] is None else now - last[0])
        per_step["tokens"].append(stats.tokens)
        last[0] = now

    _synchronize(device)
    train_loop(
        parts.model, parts, rows, cfg.model_copy(update={"max_steps": len(batches)}),
        pad_id=pad_id, on_step=record, mega_batches=0,
    )  # fmt: skip
    per_step["padded_tokens"] = [_padded(b) for b in batches]
    return _timed_steps(per_step, warmup)


def _peak(device, run: Callable[[], dict]) -> dict:
    """``run()``'s result, with the device's peak memory during it and what was resident before
    (the weights and the trained parts), where the device reports memory (CUDA)."""
    if device.type != "cuda":
        return run()
    gc.collect()
    torch.cuda.empty_cache()
    resident = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = run()
    out.update(peak_bytes=torch.cuda.max_memory_allocated(), resident_bytes=resident)
    return out


@contextmanager
def _moved_off(model, device) -> Iterator[None]:
    """On CUDA, ``model``'s weights live on the CPU meanwhile, so a method that trains a copy of
    every weight (SFT) is measured without the shared frozen base resident beside it."""
    if device.type != "cuda":
        yield
        return
    model.to("cpu")
    try:
        yield
    finally:
        model.to(device)


def measure(args) -> dict:
    from steer_cli.parts import build_parts
    from steer_cli.recipe import build_recipe
    from steer_cli.train import recomputing

    model, tokenizer = load(args)
    model.requires_grad_(False)
    device = next(model.parameters()).device
    n_steps = args.warmup + args.steps
    rows, test = quickstart_rows(tokenizer, args.batch * n_steps, chat=True)
    if args.seq_len:
        rows = fixed_rows(len(rows), args.seq_len, min(len(tokenizer), model.config.vocab_size))
    seed = build_recipe({}).train.seed
    batches = batch_order(rows, args.batch, n_steps, seed)
    first = _collated(batches[0], tokenizer.pad_token_id, device)  # for the memory counts
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    out: dict = {"model": args.shape or args.model, "dtype": dtype}
    out["device"] = str(device)
    embed = model.get_input_embeddings().weight.numel()
    out["non_embedding_params"] = sum(p.numel() for p in model.parameters()) - embed
    out["seed"] = seed
    out["memory_batch_padded_tokens"] = _padded(batches[0])
    layer = floor_layer(model)
    out["floor"] = _peak(
        device, lambda: floor(model, batches, tokenizer.pad_token_id, layer, args.warmup)
    )
    out["floor"]["stops_at_layer"] = layer

    def floor_memory():
        with backward_stops_at(model, layer):
            return saved(lambda: _loss(model, first), parameter_storages(model))

    out["floor"]["activation"] = floor_memory()
    out["methods"] = {}
    for method in args.methods:
        recipe = build_recipe(
            {"method": method, "train": {"batch_size": args.batch, "report_to": "none"}}
        )
        with _moved_off(model, device) if method == "sft" else nullcontext():
            target = load(args)[0] if method == "sft" else model  # SFT trains a copy
            parts = build_parts(target, recipe)
            entry = _peak(
                device,
                lambda parts=parts, recipe=recipe: train_steps(
                    parts, rows, batches, recipe.train, tokenizer.pad_token_id, args.warmup
                ),
            )
            entry["params"] = parts.num_parameters()
            entry["same_batches_as_floor"] = entry["tokens"] == out["floor"]["tokens"]

            def forward_loss(parts=parts):
                context = getattr(parts, "batch_context", None)
                with context(first) if context else nullcontext():
                    _loss(parts.model, first)

            params = parameter_storages(parts.model) | {
                p.untyped_storage().data_ptr() for p in parts.parameters()
            }
            entry["activation"] = saved(forward_loss, params)
            entry["activation"]["dry_run_estimate"] = estimate(target, recipe, first)
            if method == "postblock":
                entry.update(generation_and_scoring(parts, tokenizer, test, args, device))
                # the same step with train.gradient_checkpointing, as steer train turns it on
                with recomputing(parts.model, True):
                    parts.model.train()
                    entry["activation_checkpointed"] = saved(forward_loss, params)
                    parts.model.eval()
            out["methods"][method] = entry
            if method == "sft":
                del parts, target
                gc.collect()
            else:
                parts.remove()
    return out


def alternating(timed: dict[str, Callable], parts, rounds: int, device) -> dict:
    """Each of ``timed`` with the trained parts attached, then disabled, in alternation, for a
    warm-up round and ``rounds`` more: a drift of the machine's speed during the sitting (which a
    block of "on" runs then a block of "off" runs would read as overhead) falls on both alike.
    Per name: the median seconds on and off, the overhead as the median of each round's own
    on/off ratio, and those ratios (their spread)."""
    times: dict[str, list[float]] = {}
    for _ in range(rounds + 1):  # the first round warms up (and compiles, where compiled)
        for name, fn in timed.items():
            times.setdefault(f"{name}_seconds", []).append(median_seconds(fn, 0, 1, device))
            with parts.disabled():
                times.setdefault(f"{name}_seconds_disabled", []).append(
                    median_seconds(fn, 0, 1, device)
                )
    out = {key: statistics.median(values[1:]) for key, values in times.items()}
    for name in timed:
        pairs = zip(
            times[f"{name}_seconds"][1:], times[f"{name}_seconds_disabled"][1:], strict=True
        )
        each = [on / off for on, off in pairs]
        out[f"{name}_overhead"] = statistics.median(each)
        out[f"{name}_overhead_rounds"] = each
    return out


def generation_and_scoring(parts, tokenizer, test, args, device) -> dict:
    """Attached vs disabled, same prompts, same forced length, at each of ``args.decode_batches``
    (batch 1 is launch-bound on a GPU, a full batch is not); log-likelihood likewise."""
    from steer_cli.data.encode import prompt_token_ids
    from steer_cli.evaluate.generation import STATIC_CACHE, compiled_decoding, generate
    from steer_cli.evaluate.scoring import score

    examples = test[: max(args.decode_batches + args.compiled_decode_batches)]
    prompts = [prompt_token_ids(tokenizer, ex.prompt, True) for ex in examples]
    forced = {"min_new_tokens": args.new_tokens}

    def gen(n, **overrides):
        generate(
            parts.model, tokenizer, prompts[:n], max_new_tokens=args.new_tokens,
            batch_size=n, overrides={**forced, **overrides},
        )  # fmt: skip

    contexts = [tokenizer.decode(p) for p in prompts]
    answers = [" " + ex.target for ex in examples]

    def scoring():
        score(parts.model, tokenizer, contexts, answers, batch_size=len(contexts))

    timed = {f"generation_b{n}": lambda n=n: gen(n) for n in args.decode_batches}
    timed["scoring"] = scoring
    out = alternating(timed, parts, args.rounds, device)
    if args.compiled_decode_batches:  # torch.compile + a static cache: CUDA graphs on a GPU
        options = {"mode": "reduce-overhead"} if device.type == "cuda" else {"backend": "aot_eager"}
        compiled = {
            f"generation_b{n}_compiled": lambda n=n: gen(n, **STATIC_CACHE)
            for n in args.compiled_decode_batches
        }
        with compiled_decoding(parts.model, **options):
            out.update(alternating(compiled, parts, args.rounds, device))
        out["compile_options"] = options
    out["compiled_decode_batches"] = list(args.compiled_decode_batches)
    out["decode_batches"] = list(args.decode_batches)
    out["new_tokens"] = args.new_tokens
    return out
