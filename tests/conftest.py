import os

import pytest
import torch

from steer_cli.models import TINY_FAMILIES, load_model


def pytest_collection_modifyitems(config, items):
    """``cuda`` tests run where CUDA exists (or on the CPU in bench/device.sh's rehearsal,
    ``STEER_CUDA_TESTS_DEVICE=cpu``); elsewhere they are skipped, so never counted as passed."""
    if os.environ.get("STEER_CUDA_TESTS_DEVICE", "cuda") != "cuda" or torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (bash bench/device.sh runs these on one)")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _one_torch_thread(request):
    """Tiny models gain nothing from intra-op threads, and on a busy CPU the pool's spin-waiting
    makes generate() ~100x slower. Slow tests (the embedded model) keep every thread."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The sites the engine's contract tests (positions, cache, batching, scoring, save/load, counts,
# checkpointing, bf16) run at: the layer's own output (block_output) and a module input inside
# the layer (mlp_input, the paper's pre-MLP). Every site is covered by tests/test_sites.py.
CONTRACT_SITES = ("block_output", "mlp_input")


@pytest.fixture(scope="session")
def tiny_models():
    """One loaded model per tiny family, shared (tests must leave them as they found them)."""
    return {name: load_model(name, dtype="float32", device="cpu", seed=0) for name in TINY_FAMILIES}


@pytest.fixture(params=TINY_FAMILIES)
def tiny(request, tiny_models):
    model, tokenizer = tiny_models[request.param]
    return model, tokenizer


def randomize(module: torch.nn.Module, std: float = 0.2, seed: int = 0) -> None:
    """Give adapters non-trivial weights so tests see their effect (init is the identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)


@torch.no_grad()
def greedy_uncached(model, ids: torch.Tensor, n: int, suppress: int) -> torch.Tensor:
    """Greedy decoding by recomputing the whole sequence each step (no KV cache): the reference
    cached generation must equal. ``suppress`` is masked as ``min_new_tokens`` masks EOS."""
    seq = ids
    for _ in range(n):
        last = model(input_ids=seq).logits[:, -1]
        last[:, suppress] = -float("inf")
        seq = torch.cat([seq, last.argmax(-1, keepdim=True)], dim=1)
    return seq[:, ids.shape[1] :]


def greedy_cached(model, tokenizer, ids: torch.Tensor, n: int) -> torch.Tensor:
    """Exactly ``n`` greedy tokens from ``generate`` with the KV cache (EOS held off till then)."""
    return model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        use_cache=True,
        pad_token_id=tokenizer.pad_token_id,
    )[:, ids.shape[1] :]
