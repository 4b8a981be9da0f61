"""Engine properties on every tiny family: identity at init, cache/batching consistency,
clean detach, parameter counts, peft-wrapped models, save/load."""

import re

import pytest
import torch
from conftest import CONTRACT_SITES, greedy_cached, greedy_uncached, randomize

from steer_cli.engine.adapters import AdapterShape
from steer_cli.engine.attach import Interventions, InterventionSpec, attach
from steer_cli.engine.sites import find_decoder_layers, hidden_size, resolve_layers
from steer_cli.evaluate.generation import generate

SHAPES = {
    "vector": AdapterShape("vector"),
    "linear": AdapterShape("lowrank", rank=4),
    "nonlinear": AdapterShape("lowrank", rank=4, activation="silu"),
    "bias": AdapterShape("lowrank", rank=2, bias=True),
}
PROMPTS = ["[MAX 2 9 [MIN 4 7 ] 0 ]", "Hi", "Evaluate the value of [SM 1 2 3 ]"]


def _ids(tokenizer, text):
    return tokenizer(text, return_tensors="pt")["input_ids"]


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("site", CONTRACT_SITES)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_identity_at_init(tiny, shape, site):
    model, tokenizer = tiny
    ids = _ids(tokenizer, PROMPTS[0])
    base = _logits(model, ids)
    handle = attach(model, InterventionSpec(site=site, shape=shape), seed=0)
    try:
        assert torch.equal(_logits(model, ids), base)
    finally:
        handle.detach()


@pytest.mark.parametrize("site", CONTRACT_SITES)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_edit_changes_output_and_detach_restores_exactly(tiny, shape, site):
    model, tokenizer = tiny
    ids = _ids(tokenizer, PROMPTS[0])
    base = _logits(model, ids)
    handle = attach(model, InterventionSpec(site=site, shape=shape), seed=0)
    randomize(handle)
    steered = _logits(model, ids)
    with handle.disabled():
        assert torch.equal(_logits(model, ids), base)
    handle.detach()
    assert not torch.allclose(steered, base), "a non-zero adapter must change the logits"
    assert torch.equal(_logits(model, ids), base)


@pytest.mark.parametrize("site", CONTRACT_SITES)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_cached_generation_equals_recomputation(tiny, shape, site):
    """Edits reach prompt and generated tokens alike: KV-cache decoding = full recomputation."""
    model, tokenizer = tiny
    handle = attach(model, InterventionSpec(site=site, shape=shape), seed=0)
    randomize(handle, seed=1)
    try:
        for text in PROMPTS:
            ids = _ids(tokenizer, text)
            cached = greedy_cached(model, tokenizer, ids, 8)
            assert torch.equal(cached, greedy_uncached(model, ids, 8, tokenizer.eos_token_id)), text
    finally:
        handle.detach()


@pytest.mark.parametrize("site", CONTRACT_SITES)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_batched_left_padded_equals_one_by_one(tiny, shape, site):
    model, tokenizer = tiny
    handle = attach(model, InterventionSpec(site=site, shape=shape), seed=0)
    randomize(handle, seed=2)
    prompts = [tokenizer(t)["input_ids"] for t in PROMPTS]
    assert len({len(p) for p in prompts}) > 1, "prompts must differ in length to test padding"
    try:
        batched = generate(model, tokenizer, prompts, max_new_tokens=8, batch_size=len(prompts))
        single = [
            generate(model, tokenizer, [p], max_new_tokens=8, batch_size=1)[0] for p in prompts
        ]
    finally:
        handle.detach()
    assert batched == single


@pytest.mark.parametrize("site", CONTRACT_SITES)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_parameter_count_matches_formula(tiny, shape, site):
    model, _ = tiny
    d = hidden_size(model)
    n_layers = len(find_decoder_layers(model))
    handle = attach(model, InterventionSpec(site=site, shape=shape), seed=0)
    handle.detach()
    per_layer = d if shape.parameterization == "vector" else 2 * d * shape.rank
    if shape.bias:
        per_layer += d
    assert handle.num_parameters() == n_layers * per_layer == n_layers * shape.parameter_count(d)


def _layer_outputs(model, ids):
    captured = {}
    layers = find_decoder_layers(model)
    hooks = [
        layer.register_forward_hook(
            lambda m, a, o, i=i: captured.__setitem__(i, o[0] if isinstance(o, tuple) else o)
        )
        for i, layer in enumerate(layers)
    ]
    try:
        _logits(model, ids)
    finally:
        for h in hooks:
            h.remove()
    return [captured[i] for i in range(len(layers))]


def test_selected_layers_only(tiny):
    """An adapter on the last layer only leaves every earlier layer's output untouched."""
    model, tokenizer = tiny
    ids = _ids(tokenizer, PROMPTS[1])
    base = _layer_outputs(model, ids)
    handle = attach(model, InterventionSpec(shape=SHAPES["vector"], layers=(-1,)), seed=0)
    randomize(handle)
    try:
        assert handle.layer_ids == [len(base) - 1]
        assert handle.num_parameters() == hidden_size(model)
        steered = _layer_outputs(model, ids)
    finally:
        handle.detach()
    for before, after in zip(base[:-1], steered[:-1], strict=True):
        assert torch.equal(before, after)
    assert not torch.allclose(base[-1], steered[-1])


def test_peft_wrapped_model(tiny_models):
    """Resolving the layers through a peft wrapper; detaching leaves the LoRA model untouched."""
    from peft import LoraConfig, get_peft_model

    from steer_cli.models import load_model

    model, tokenizer = load_model("tiny-llama", dtype="float32", device="cpu", seed=0)
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    ids = _ids(tokenizer, PROMPTS[0])
    base = _logits(wrapped, ids)
    handle = attach(wrapped, InterventionSpec(shape=SHAPES["linear"]), seed=0)
    assert len(handle.layer_ids) == len(find_decoder_layers(model))
    assert torch.equal(_logits(wrapped, ids), base)
    randomize(handle)
    assert not torch.allclose(_logits(wrapped, ids), base)
    handle.detach()
    assert torch.equal(_logits(wrapped, ids), base)


@pytest.mark.parametrize("site", CONTRACT_SITES)
def test_save_load_roundtrip(tiny, tmp_path, site):
    model, tokenizer = tiny
    ids = _ids(tokenizer, PROMPTS[2])
    spec = InterventionSpec(site=site, shape=SHAPES["nonlinear"], layers="0-1")
    handle = attach(model, spec, seed=0)
    randomize(handle)
    expected = _logits(model, ids)
    handle.save(tmp_path, metadata={"base_model": "tiny"})
    handle.detach()
    loaded = Interventions.load(tmp_path).attach(model)
    try:
        assert loaded.layer_ids == [0, 1] and loaded.spec.site == site
        assert torch.equal(_logits(model, ids), expected)
    finally:
        loaded.detach()


def test_seeded_init_is_reproducible_and_leaves_global_rng(tiny):
    model, _ = tiny
    spec = InterventionSpec(shape=SHAPES["linear"])
    state = torch.random.get_rng_state()
    a = attach(model, spec, seed=3)
    a.detach()
    assert torch.equal(torch.random.get_rng_state(), state)
    b = attach(model, spec, seed=3)
    b.detach()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("all", [0, 1, 2, 3]), ("0-1", [0, 1]), ("2:", [2, 3]), ("-1", [3]), ([0, -1], [0, 3])],
)
def test_resolve_layers(spec, expected):
    assert resolve_layers(spec, 4) == expected


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("7", "layers '7' select [7]; this model has layers 0..3"),
        ([4], "layers [4] select [4]; this model has layers 0..3"),
        ("a-b", "layers 'a-b' is not 'all', a list, or a range like '0-11' or '4:'"),
        ("3-1", "layers '3-1' select nothing; this model has layers 0..3"),
    ],
)
def test_resolve_layers_rejects(spec, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        resolve_layers(spec, 4)


def test_loads_an_adapter_saved_before_the_grid_fields(tiny_models, tmp_path):
    """adapter.json files written before lofit/jola fields and summaries existed still load."""
    import json

    model, tokenizer = tiny_models["tiny-llama"]
    ids = _ids(tokenizer, PROMPTS[0])
    handle = attach(model, InterventionSpec(shape=SHAPES["linear"]), seed=0)
    randomize(handle)
    expected = _logits(model, ids)
    handle.save(tmp_path)
    handle.detach()
    config = json.loads((tmp_path / "adapter.json").read_text())
    old = {k: v for k, v in config.items() if not k.startswith(("lofit_", "jola_", "summary"))}
    (tmp_path / "adapter.json").write_text(json.dumps(old))
    loaded = Interventions.load(tmp_path).attach(model)
    try:
        assert torch.equal(_logits(model, ids), expected)
    finally:
        loaded.detach()
