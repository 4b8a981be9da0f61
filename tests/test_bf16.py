"""bf16 models: adapters read the residual stream in its own dtype (no fp32 copy kept for
backward) and train as the fp32-cast computation does, within bf16 tolerance."""

import sys
from pathlib import Path

import pytest
import torch
from conftest import CONTRACT_SITES

from steer_cli.engine.adapters import AdapterShape
from steer_cli.engine.attach import InterventionSpec, attach
from steer_cli.models import load_model

# The bench's own counter of saved-for-backward bytes, so that the memory it reports is the one
# tested here (bench/ is the repository's, not an installed package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.measure import parameter_storages, saved_bytes  # noqa: E402


def _step(shape, site, *, fp32_copy: bool):
    """One forward/backward on tiny-llama in bf16: the loss, the adapter's gradients, and the
    bytes autograd saved (parameters excluded). ``fp32_copy``: steer 0.1.0's way, the site
    tensor cast to fp32 before the adapter."""
    model, tokenizer = load_model("tiny-llama", dtype="bfloat16", device="cpu")
    model.requires_grad_(False)
    handle = attach(model, InterventionSpec(site=site, shape=shape), seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in handle.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    if fp32_copy:

        def edit(adapter, h):
            return h + adapter(h.float()).to(h.dtype)

        handle._edit = edit
    ids = tokenizer(["[MAX 1 2 3 [MIN 4 5 ] ]" * 6] * 4, return_tensors="pt")["input_ids"]
    params = parameter_storages(model) | {
        p.untyped_storage().data_ptr() for p in handle.parameters()
    }
    losses = []
    saved = saved_bytes(lambda: losses.append(model(input_ids=ids, labels=ids).loss), params)
    loss = losses[0]
    loss.backward()
    grads = [p.grad.float() for p in handle.parameters() if p.grad is not None]
    assert all(p.dtype == torch.float32 for p in handle.parameters())  # parameters stay fp32
    handle.detach()
    return float(loss), grads, saved


@pytest.mark.parametrize("site", CONTRACT_SITES)
@pytest.mark.parametrize(
    "shape",
    [AdapterShape("lowrank", rank=4), AdapterShape("loreft", rank=2)],
    ids=["lowrank", "loreft"],
)
def test_bf16_reads_in_place_and_trains_the_same(shape, site):
    loss_old, grads_old, saved_old = _step(shape, site, fp32_copy=True)
    loss_new, grads_new, saved_new = _step(shape, site, fp32_copy=False)
    assert loss_new == pytest.approx(loss_old, rel=1e-3)
    for old, new in zip(grads_old, grads_new, strict=True):
        assert float((old - new).norm() / old.norm()) < 0.03  # bf16 tolerance
    # The fp32 copy of each steered layer's [batch, tokens, d] site tensor is no longer kept.
    tokens = 4 * 6 * 12  # rows x repeats x ~tokens per "[MAX 1 2 3 [MIN 4 5 ] ]"
    assert saved_old - saved_new >= 3 * tokens * 64 * 2  # at least a bf16-sized copy per layer


@pytest.mark.parametrize(
    "shape",
    [AdapterShape("lowrank", rank=4), AdapterShape("loreft", rank=2)],
    ids=["lowrank", "loreft"],
)
def test_bf16_inference_reads_in_fp32_and_training_in_bf16(shape):
    """Without grad nothing is saved for backward, so the edit reads h exactly (fp32, the same
    as an fp32 model's edit of the same values); with grad it reads h in bf16 (the low-memory
    path), which differs from the exact read by bf16 rounding of the weights."""
    from steer_cli.engine.adapters import build_adapter

    torch.manual_seed(0)
    adapter = build_adapter(shape, 64)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn(p.shape) * 0.05)
    h = torch.randn(3, 5, 64).bfloat16()
    exact = adapter(h.float()).detach()
    with torch.no_grad():
        assert torch.equal(adapter(h), exact)
    trained = adapter(h).detach()
    assert not torch.equal(trained, exact)
    assert float((trained - exact).norm() / exact.norm()) < 0.03
