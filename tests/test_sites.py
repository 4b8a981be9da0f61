"""Every site on every tiny family edits the tensor SPEC 1 names: oracle checks against the base
model, identity at init, clean detach, and peft-wrapped models."""

from contextlib import contextmanager

import pytest
import torch
from conftest import randomize

from steer_cli.engine.adapters import AdapterShape
from steer_cli.engine.attach import InterventionSpec, attach
from steer_cli.engine.names import SITES
from steer_cli.engine.sites import find_decoder_layers, head_geometry, hidden_size, site_module

TEXT = "[MAX 2 9 [MIN 4 7 ] 0 ]"
ATOL = 1e-4  # (x + v) - x is v up to float32 rounding of x


def _ids(tokenizer, text=TEXT):
    return tokenizer(text, return_tensors="pt")["input_ids"]


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@contextmanager
def _capture(module, *, inputs=False):
    """Record a module's first input (pre-hook) or its output, for every call inside."""
    seen = []
    if inputs:
        handle = module.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    else:
        handle = module.register_forward_hook(
            lambda m, a, o: seen.append((o[0] if isinstance(o, tuple) else o).detach().clone())
        )
    try:
        yield seen
    finally:
        handle.remove()


def _mlp_input_norm(layer):
    """The norm that reads the residual stream after the attention branch (I')."""
    if hasattr(layer, "pre_feedforward_layernorm"):  # Gemma2/3
        return layer.pre_feedforward_layernorm
    return layer.post_attention_layernorm  # Llama, Mistral, Qwen2/3: the pre-MLP norm


def _vector_on_last_layer(model, site, seed=0):
    handle = attach(model, InterventionSpec(site=site, shape=AdapterShape("vector"), layers="-1"))
    randomize(handle, std=0.5, seed=seed)
    (adapter,) = handle.adapters.values()
    return handle, adapter.vector.detach().clone()


def test_mlp_output_shifts_the_block_output_by_exactly_v(tiny):
    """The MLP branch feeds straight into the residual: O_steered - O_base = v at every token."""
    model, tokenizer = tiny
    ids = _ids(tokenizer)
    last = find_decoder_layers(model)[-1]
    handle, v = _vector_on_last_layer(model, "mlp_output")
    try:
        with _capture(last) as steered:
            _logits(model, ids)
        with handle.disabled(), _capture(last) as base:
            _logits(model, ids)
    finally:
        handle.detach()
    torch.testing.assert_close(steered[0] - base[0], v.expand_as(base[0]), atol=ATOL, rtol=0)


def test_attn_output_shifts_the_residual_after_attention_by_exactly_v(tiny):
    """I' = I + Attn(...) + v: the residual the MLP's norm reads moves by v, its input I not."""
    model, tokenizer = tiny
    ids = _ids(tokenizer)
    last = find_decoder_layers(model)[-1]
    norm = _mlp_input_norm(last)
    handle, v = _vector_on_last_layer(model, "attn_output")
    try:
        with _capture(norm, inputs=True) as steered, _capture(last, inputs=True) as steered_in:
            _logits(model, ids)
        with (
            handle.disabled(),
            _capture(norm, inputs=True) as base,
            _capture(last, inputs=True) as base_in,
        ):
            _logits(model, ids)
    finally:
        handle.detach()
    assert torch.equal(steered_in[0], base_in[0])
    torch.testing.assert_close(steered[0] - base[0], v.expand_as(base[0]), atol=ATOL, rtol=0)


def _mlp_write(layer, x):
    """What the MLP adds to the residual stream from input ``x`` (Gemma: after its post-norm)."""
    y = layer.mlp(x)
    if hasattr(layer, "post_feedforward_layernorm"):
        y = layer.post_feedforward_layernorm(y)
    return y


def test_mlp_input_edits_the_mlp_input_by_exactly_v_and_the_residual_only_through_the_mlp(tiny):
    """The paper's pre-MLP: x = Norm(I') moves by v (x is the output of the family's norm before
    the MLP: post_attention_layernorm, Gemma's pre_feedforward_layernorm), the residual I' the
    norm reads does not move, and the layer's output moves by MLP(x + v) - MLP(x), not by v."""
    model, tokenizer = tiny
    ids = _ids(tokenizer)
    last = find_decoder_layers(model)[-1]
    norm = _mlp_input_norm(last)
    handle, v = _vector_on_last_layer(model, "mlp_input")
    try:
        with (
            _capture(last.mlp, inputs=True) as x_steered,
            _capture(norm, inputs=True) as residual_steered,
            _capture(last) as out_steered,
        ):
            _logits(model, ids)
        with (
            handle.disabled(),
            _capture(last.mlp, inputs=True) as x_base,
            _capture(norm, inputs=True) as residual_base,
            _capture(norm) as norm_base,
            _capture(last) as out_base,
        ):
            _logits(model, ids)
        with handle.disabled(), torch.no_grad():
            expected = _mlp_write(last, x_base[0] + v) - _mlp_write(last, x_base[0])
    finally:
        handle.detach()
    assert torch.equal(x_base[0], norm_base[0])  # the tensor the site edits, per family
    torch.testing.assert_close(x_steered[0] - x_base[0], v.expand_as(x_base[0]), atol=ATOL, rtol=0)
    assert torch.equal(residual_steered[0], residual_base[0])
    shift = out_steered[0] - out_base[0]
    torch.testing.assert_close(shift, expected, atol=ATOL, rtol=0)
    assert not torch.allclose(shift, v.expand_as(shift), atol=1e-2)


def test_block_output_shifts_the_layer_output_by_exactly_v(tiny):
    model, tokenizer = tiny
    ids = _ids(tokenizer)
    last = find_decoder_layers(model)[-1]
    handle, v = _vector_on_last_layer(model, "block_output")
    try:
        # Registered after the adapter's hook, so it sees the edited output.
        with _capture(last) as steered:
            _logits(model, ids)
        with handle.disabled(), _capture(last) as unsteered:
            _logits(model, ids)
    finally:
        handle.detach()
    torch.testing.assert_close(
        steered[0] - unsteered[0], v.expand_as(unsteered[0]), atol=ATOL, rtol=0
    )


def _head_slices(x, n_heads, head_dim):
    return x.view(*x.shape[:-1], n_heads, head_dim)


@pytest.mark.parametrize("parameterization", ["vector", "lofit", "jola"])
def test_attn_heads_edits_only_the_chosen_head(tiny, parameterization):
    """Non-zero parameters on head i only: o_proj's input changes in head i's slice only."""
    model, tokenizer = tiny
    ids = _ids(tokenizer)
    n_heads, head_dim = head_geometry(model)
    head = 1
    o_proj = find_decoder_layers(model)[-1].self_attn.o_proj
    spec = InterventionSpec(site="attn_heads", shape=AdapterShape(parameterization), layers="-1")
    handle = attach(model, spec, seed=0)
    (adapter,) = handle.adapters.values()
    keep = torch.zeros(n_heads, dtype=torch.bool)
    keep[head] = True
    with torch.no_grad():
        if parameterization == "vector":
            v = torch.zeros(n_heads, head_dim)
            v[head] = torch.randn(head_dim)
            adapter.vector.copy_(v.flatten())
        else:
            adapter.A.mul_(keep[:, None] * 300)  # keep head i's draw, scaled up; zero the rest
            adapter.v.mul_(keep[:, None] * 300)
        if parameterization == "jola":
            adapter.log_alpha_A.fill_(5.0)  # open gates: the edit is visible
            adapter.log_alpha_v.fill_(5.0)
    try:
        with _capture(o_proj, inputs=True) as steered:
            _logits(model, ids)
        with handle.disabled(), _capture(o_proj, inputs=True) as base:
            _logits(model, ids)
    finally:
        handle.detach()
    after = _head_slices(steered[0], n_heads, head_dim)
    before = _head_slices(base[0], n_heads, head_dim)
    others = [h for h in range(n_heads) if h != head]
    assert torch.equal(after[..., others, :], before[..., others, :])
    assert not torch.allclose(after[..., head, :], before[..., head, :])
    if parameterization == "vector":
        torch.testing.assert_close(
            after[..., head, :] - before[..., head, :],
            v[head].expand_as(before[..., head, :]),
            atol=ATOL,
            rtol=0,
        )
    if parameterization == "lofit":  # stage 1: z <- (1 + A) z on every head
        expected = (1 + adapter.A[head]) * before[..., head, :]
        torch.testing.assert_close(after[..., head, :], expected.detach(), atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("parameterization", ["vector", "lowrank"])
def test_every_site_is_identity_at_init_and_detaches_exactly(tiny, site, parameterization):
    model, tokenizer = tiny
    ids = _ids(tokenizer)
    base = _logits(model, ids)
    shape = AdapterShape(parameterization, rank=2)
    handle = attach(model, InterventionSpec(site=site, shape=shape), seed=0)
    try:
        assert torch.equal(_logits(model, ids), base)
        randomize(handle)
        assert not torch.allclose(_logits(model, ids), base)
        with handle.disabled():
            assert torch.equal(_logits(model, ids), base)
    finally:
        handle.detach()
    assert torch.equal(_logits(model, ids), base)


def test_site_width_and_hooked_module_per_family(tiny_models):
    """The table in sites.py: Gemma's sandwich norms are hooked, elsewhere the branch itself."""
    for name, (model, _) in tiny_models.items():
        layer = find_decoder_layers(model)[0]
        gemma = name == "tiny-gemma3"
        expected = {
            "block_output": (layer, "output"),
            "mlp_output": (layer.post_feedforward_layernorm if gemma else layer.mlp, "output"),
            "mlp_input": (layer.mlp, "input"),
            "attn_output": (
                layer.post_attention_layernorm if gemma else layer.self_attn,
                "output",
            ),
            "attn_heads": (layer.self_attn.o_proj, "input"),
        }
        assert set(expected) == set(SITES)
        for site, (module, where) in expected.items():
            got, got_where = site_module(layer, site)
            assert got is module and got_where == where, (name, site)
        n_heads, head_dim = head_geometry(model)
        assert (n_heads, head_dim) == (model.config.num_attention_heads, model.config.head_dim)
        handle = attach(model, InterventionSpec(site="attn_heads", shape=AdapterShape("vector")))
        handle.detach()
        assert handle.num_parameters() == len(handle.layer_ids) * n_heads * head_dim
        assert hidden_size(model) == model.config.hidden_size


@pytest.mark.parametrize("site", SITES)
def test_sites_on_a_peft_wrapped_model(site):
    """Sites resolve through peft (LoRA on o_proj and the MLP too); detach leaves LoRA as it was."""
    from peft import LoraConfig, get_peft_model

    from steer_cli.models import load_model

    model, tokenizer = load_model("tiny-llama", dtype="float32", device="cpu", seed=0)
    config = LoraConfig(
        r=2,
        target_modules=["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"],
        init_lora_weights=False,  # non-zero B: the LoRA path is live
    )
    wrapped = get_peft_model(model, config)
    ids = _ids(tokenizer)
    base = _logits(wrapped, ids)
    handle = attach(wrapped, InterventionSpec(site=site, shape=AdapterShape("vector")), seed=0)
    assert torch.equal(_logits(wrapped, ids), base)
    randomize(handle)
    steered = _logits(wrapped, ids)
    handle.detach()
    assert not torch.allclose(steered, base)
    assert torch.equal(_logits(wrapped, ids), base)
    if site == "mlp_output":  # the oracle holds through the wrapper too
        last = find_decoder_layers(wrapped)[-1]
        handle, v = _vector_on_last_layer(wrapped, site)
        try:
            with _capture(last) as after:
                _logits(wrapped, ids)
            with handle.disabled(), _capture(last) as before:
                _logits(wrapped, ids)
        finally:
            handle.detach()
        torch.testing.assert_close(after[0] - before[0], v.expand_as(before[0]), atol=ATOL, rtol=0)
    if site == "mlp_input":  # peft's gate_proj wrapper reads x + v: base and LoRA paths alike
        gate = find_decoder_layers(wrapped)[-1].mlp.gate_proj
        assert hasattr(gate, "lora_A")
        handle, v = _vector_on_last_layer(wrapped, site)
        try:
            with _capture(gate, inputs=True) as after:
                _logits(wrapped, ids)
            with handle.disabled(), _capture(gate, inputs=True) as before:
                _logits(wrapped, ids)
        finally:
            handle.detach()
        torch.testing.assert_close(after[0] - before[0], v.expand_as(before[0]), atol=ATOL, rtol=0)
