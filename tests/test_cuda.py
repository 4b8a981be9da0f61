"""What the CPU tests show, on a CUDA GPU: identity at init, batched equals one-by-one, cached
generation equals recomputation and steers exactly the mode's tokens, checkpointed gradients,
checkpoint and resume, the bf16 adapter path, and ``steer train`` end to end.

Marked ``cuda``: where no GPU exists they are collected and reported as skipped, never passed.
``bash bench/device.sh`` runs them on a GPU; its rehearsal (``--rehearse``, in the suite) runs
them on the CPU with ``STEER_CUDA_TESTS_DEVICE=cpu``, so their code is tested before a GPU is.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONTRACT_SITES, greedy_cached, greedy_uncached, randomize

from steer_cli.engine.adapters import AdapterShape
from steer_cli.engine.attach import InterventionSpec, attach, prompt_span
from steer_cli.engine.sites import find_decoder_layers
from steer_cli.evaluate.generation import generate
from steer_cli.evaluate.scoring import score
from steer_cli.loop import seeded
from steer_cli.models import load_model
from steer_cli.train import recomputing

pytestmark = pytest.mark.cuda
DEVICE = os.environ.get("STEER_CUDA_TESTS_DEVICE", "cuda")
MODES = ("all", "prompt", "generated", "last_prompt", "f2+l2")
PROMPTS = ["[MAX 2 9 [MIN 4 7 ] 0 ]", "Hi", "Evaluate the value of [SM 1 2 3 ]"]
CONTEXTS = ["[MAX 2 9 ]", "Evaluate [SM 1 2 3 ]", "Hi"]
CONTINUATIONS = [" 9", " <answer>6</answer>", " there, friend"]


@pytest.fixture(scope="module")
def llama():
    """tiny-llama in fp32 on the device (tests leave it as they found it)."""
    model, tokenizer = load_model("tiny-llama", dtype="float32", device=DEVICE, seed=0)
    assert next(model.parameters()).device.type == torch.device(DEVICE).type
    return model, tokenizer


def _steered(model, mode, *, site="block_output", shape=None, layers="all", seed=1):
    shape = shape or AdapterShape("lowrank", rank=4, activation="silu")
    handle = attach(model, InterventionSpec(site=site, shape=shape, layers=layers,
                                            positions=mode))  # fmt: skip
    randomize(handle, std=0.3, seed=seed)
    return handle


@pytest.mark.parametrize("site", CONTRACT_SITES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("parameterization", ["vector", "lowrank"])
def test_identity_at_init(dtype, parameterization, site):
    model, tokenizer = load_model("tiny-llama", dtype=dtype, device=DEVICE, seed=0)
    ids = tokenizer(PROMPTS, return_tensors="pt", padding=True)["input_ids"].to(DEVICE)
    with torch.no_grad():
        base = model(input_ids=ids).logits
        handle = attach(model, InterventionSpec(
            site=site, shape=AdapterShape(parameterization, rank=4)), seed=0)  # fmt: skip
        steered = model(input_ids=ids).logits
        assert steered.dtype == getattr(torch, dtype) and steered.device.type == ids.device.type
        assert torch.equal(steered, base)
        randomize(handle, std=0.3)
        assert not torch.equal(model(input_ids=ids).logits, base)  # the edit reaches the logits
    handle.detach()


@pytest.mark.parametrize("site", CONTRACT_SITES)
@pytest.mark.parametrize("mode", MODES)
def test_batched_equals_one_by_one(llama, mode, site):
    model, tokenizer = llama
    prompts = [tokenizer(t)["input_ids"] for t in PROMPTS]
    handle = _steered(model, mode, site=site)
    try:
        batched = generate(model, tokenizer, prompts, max_new_tokens=8, batch_size=len(prompts))
        single = [generate(model, tokenizer, [p], max_new_tokens=8, batch_size=1)[0]
                  for p in prompts]  # fmt: skip
        scored = score(model, tokenizer, CONTEXTS, CONTINUATIONS, batch_size=3)
        pairs = zip(CONTEXTS, CONTINUATIONS, strict=True)
        one = [score(model, tokenizer, [c], [x])[0] for c, x in pairs]
        with handle.disabled():
            base = generate(model, tokenizer, prompts, max_new_tokens=8, batch_size=len(prompts))
    finally:
        handle.detach()
    assert batched == single
    torch.testing.assert_close(torch.tensor(scored), torch.tensor(one), atol=1e-4, rtol=0)
    if mode in ("all", "prompt"):
        assert batched != base, "the adapter must change some generation"


@pytest.mark.parametrize("site", CONTRACT_SITES)
@pytest.mark.parametrize("mode", MODES)
def test_cached_generation_equals_recomputation(llama, mode, site):
    model, tokenizer = llama
    handle = _steered(model, mode, site=site)
    try:
        for text in PROMPTS:
            ids = tokenizer(text, return_tensors="pt")["input_ids"].to(DEVICE)
            with prompt_span(model, [0], [ids.shape[1]]):
                cached = greedy_cached(model, tokenizer, ids, 8)
                uncached = greedy_uncached(model, ids, 8, tokenizer.eos_token_id)
            assert torch.equal(cached, uncached), text
    finally:
        handle.detach()


@pytest.mark.parametrize("mode", MODES)
def test_cached_generation_steers_exactly_the_mode_tokens(llama, mode):
    """A vector on the last layer: in batched, cached generation its output changes at exactly
    the mode's tokens and is bitwise untouched elsewhere (padding, unsteered steps)."""
    model, tokenizer = llama
    last = find_decoder_layers(model)[-1]
    prompts = [tokenizer(t)["input_ids"] for t in PROMPTS]
    raw, edited = [], []

    def recorder(seen):
        def record(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            seen.append(hidden.detach().clone())

        return record

    first = last.register_forward_hook(recorder(raw))  # registered first: the unedited output
    handle = _steered(model, mode, layers="-1", shape=AdapterShape("vector"))
    second = last.register_forward_hook(recorder(edited))
    try:
        with handle.record_positions() as masks:
            generate(model, tokenizer, prompts, max_new_tokens=5, batch_size=len(prompts))
    finally:
        for h in (first, second):
            h.remove()
        handle.detach()
    assert 2 <= len(raw) == len(edited) <= 5
    if mode == "all":  # no mask is computed: every column of every step is edited
        assert not masks
        pairs = zip(raw, edited, strict=True)
        assert all(bool((before != after).any(-1).all()) for before, after in pairs)
        return
    assert len(masks) == len(raw)
    width = max(len(p) for p in prompts)
    for step, (before, after, (columns, mask)) in enumerate(zip(raw, edited, masks, strict=True)):
        changed = (before != after).any(-1)
        assert torch.equal(changed.cpu(), mask.cpu()), (mode, step)
        expected = list(range(width)) if step == 0 else [width + step - 1]
        assert columns.tolist() == expected


@pytest.mark.parametrize("mode", ["all", "prompt"])
def test_compiled_static_cache_decoding_equals_eager(llama, mode):
    """Adapters under torch.compile with a static KV cache (CUDA graphs on a GPU: mode
    reduce-overhead; the rehearsal on a CPU traces with aot_eager) generate what eager decoding
    does, and disabled, what the base model does."""
    from steer_cli.evaluate.generation import STATIC_CACHE, compiled_decoding

    model, tokenizer = llama
    prompts = [tokenizer(t)["input_ids"] for t in PROMPTS]
    options = {"mode": "reduce-overhead"} if DEVICE == "cuda" else {"backend": "aot_eager"}

    def run(**overrides):
        return generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=len(prompts),
                        overrides=overrides)  # fmt: skip

    handle = _steered(model, mode)
    torch.compiler.reset()
    try:
        eager = run()
        with handle.disabled():
            base = run()
        with compiled_decoding(model, **options):
            compiled = run(**STATIC_CACHE)
            with handle.disabled():
                compiled_base = run(**STATIC_CACHE)
    finally:
        handle.detach()
        torch.compiler.reset()
    assert "forward" not in vars(model)  # the class's forward again
    assert compiled == eager and compiled_base == base
    assert eager != base


CHECKPOINTED = [
    ("block_output", AdapterShape("lowrank", rank=4)),
    ("mlp_output", AdapterShape("loreft", rank=2)),
    ("mlp_input", AdapterShape("lowrank", rank=4, activation="silu")),
    ("attn_heads", AdapterShape("jola")),
]


def _grads(site, shape, checkpointing: bool):
    model, tokenizer = load_model("tiny-llama", dtype="float32", device=DEVICE, seed=0)
    model.requires_grad_(False)
    handle = attach(model, InterventionSpec(site=site, shape=shape, positions="prompt"), seed=0)
    randomize(handle, std=0.05, seed=1)
    model.train()
    handle.train()
    ids = tokenizer(["[MAX 1 2 [MIN 3 4 ] ]", "[SM 5 6 ]"], return_tensors="pt", padding=True)
    ids = {k: v.to(DEVICE) for k, v in ids.items()}
    with (
        recomputing(model, checkpointing),
        seeded(0, torch.device(DEVICE)),
        handle.prompt_span(torch.zeros(2, dtype=torch.long), torch.tensor([6, 4])),
    ):
        out = model(**ids, labels=ids["input_ids"], use_cache=False)
        out.loss.backward()
    grads = {n: p.grad.clone() for n, p in handle.named_parameters() if p.grad is not None}
    handle.detach()
    return float(out.loss.detach()), grads


@pytest.mark.parametrize("site, shape", CHECKPOINTED, ids=[s for s, _ in CHECKPOINTED])
def test_checkpointed_gradients_equal_plain_ones(site, shape):
    loss, plain = _grads(site, shape, checkpointing=False)
    loss_ckpt, ckpt = _grads(site, shape, checkpointing=True)
    assert loss_ckpt == pytest.approx(loss, abs=1e-6)
    assert plain.keys() == ckpt.keys() and plain
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)


def _fp32_residual_saves(shape: AdapterShape, *, fp32_copy: bool = False) -> int:
    """How many fp32 tensors the size of the residual stream a bf16 tiny-llama saves for
    backward with an adapter of ``shape`` on every layer's output. ``fp32_copy``: the edit
    casts h to fp32 first (steer 0.1.0's way), the copy this path must not keep."""
    model, tokenizer = load_model("tiny-llama", dtype="bfloat16", device=DEVICE, seed=0)
    model.requires_grad_(False)
    handle = attach(model, InterventionSpec(site="block_output", shape=shape), seed=0)
    if fp32_copy:
        handle._edit = lambda adapter, h: h + adapter(h.float()).to(h.dtype)
    ids = tokenizer(["[MAX 1 2 3 [MIN 4 5 ] ]" * 4] * 3, return_tensors="pt")["input_ids"]
    ids = ids.to(DEVICE)
    residual = ids.numel() * model.config.hidden_size
    count = 0

    def pack(t):
        nonlocal count
        count += t.dtype == torch.float32 and t.numel() == residual
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert all(p.grad is not None for p in handle.parameters())
    handle.detach()
    return count


def test_bf16_adapter_keeps_no_fp32_residual_copy():
    """The model itself saves some fp32 residual-sized tensors (its norms compute in fp32); a
    vector adapter adds none of its own, and a low-rank one must add none either."""
    vector = _fp32_residual_saves(AdapterShape("vector"))
    lowrank = _fp32_residual_saves(AdapterShape("lowrank", rank=4))
    copied = _fp32_residual_saves(AdapterShape("lowrank", rank=4), fp32_copy=True)
    assert lowrank == vector
    assert copied > lowrank  # the count sees a copy where one is kept


def _recipe(tmp_path: Path, **train) -> Path:
    raw = {
        "model": {"name": "tiny-llama", "device": DEVICE},
        "data": {"train_size": 24, "validation_size": 2, "test_size": 8},
        "train": {"max_steps": 6, "batch_size": 4, "report_to": "none", **train},
        "eval": {"batch_size": 8, "max_new_tokens": 6},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_steer_train_end_to_end(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "steer_cli", "train", str(_recipe(tmp_path)), "-o", str(out),
               "--json"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    assert results["device"].startswith(DEVICE) and results["steps"] == 6
    assert {"before", "after"} <= results["eval"].keys()
    assert results["eval"]["after"]["total"] == 8
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == list(range(1, 7))
    assert all(torch.isfinite(torch.tensor(s["loss"])) for s in steps)
    generated = subprocess.run(
        [sys.executable, "-m", "steer_cli", "generate", str(out), "[MAX 2 9 ]", "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr[-3000:]
    assert "output" in json.loads(generated.stdout.splitlines()[0])


def test_checkpoint_and_resume(tmp_path, monkeypatch):
    """The run dies inside step 4's checkpoint write; the same command resumes from step 3's,
    runs only steps 4-6 (steps 1-3's log lines are the first run's), and ends where an
    uninterrupted run ends."""
    from safetensors.torch import load_file

    from steer_cli import checkpoints, train
    from steer_cli.recipe import load_recipe

    recipe = load_recipe(_recipe(tmp_path, save_every=1))
    whole = train.run(recipe, tmp_path / "whole")
    real_fsync = checkpoints._fsync

    def dies_in_step_4(path):
        if "step-00000004" in str(path) and path.name == checkpoints.TENSORS:
            raise KeyboardInterrupt
        real_fsync(path)

    monkeypatch.setattr(checkpoints, "_fsync", dies_in_step_4)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train.run(recipe, out)
    metrics = out.with_name(".run.partial") / "metrics.jsonl"
    first_three = metrics.read_text().splitlines()[:3]
    monkeypatch.setattr(checkpoints, "_fsync", real_fsync)
    resumed = train.run(recipe, out)
    assert resumed.results["steps"] == whole.results["steps"] == 6
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, 7))
    assert lines[:3] == first_three  # not retrained: the same lines, timings included
    expected = load_file(str(tmp_path / "whole" / "adapter.safetensors"))
    got = load_file(str(out / "adapter.safetensors"))
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)
