"""Every assumption steer makes about transformers' and peft's internals is checked where it is
used: break it (a fake layer, a patched attribute) and the error says what was expected, what was
found and the library's version; keep it and the normal path works (issue 11, item 4)."""

import json
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from steer_cli.engine.adapters import AdapterShape
from steer_cli.engine.attach import InterventionSpec, attach
from steer_cli.engine.joint import check_writers, lora_b, targeted_writers, writer_matrix
from steer_cli.engine.sites import find_decoder_layers, head_geometry, site_module
from steer_cli.errors import SteerError
from steer_cli.models import embedded, load_model
from steer_cli.parts import build_parts, quiet_peft
from steer_cli.recipe import build_recipe

LAYERS, HEADS, KV_HEADS, HEAD_DIM, D = 3, 4, 2, 16, 64  # the tiny families' geometry


def _fresh(family="tiny-llama"):
    model, tokenizer = load_model(family, dtype="float32", device="cpu")
    model.requires_grad_(False)
    return model, tokenizer


class FakeLayer(nn.Module):
    """A decoder-layer look-alike: ``self_attn`` and ``mlp``, plus whatever norms are asked for."""

    def __init__(self, model_type=None, norms=()):
        super().__init__()
        self.self_attn = nn.Module()
        self.self_attn.o_proj = nn.Linear(D, D)
        if model_type is not None:
            self.self_attn.config = SimpleNamespace(model_type=model_type)
        self.mlp = nn.Linear(D, D)
        for norm in norms:
            setattr(self, norm, nn.LayerNorm(D))


SANDWICH = ("post_attention_layernorm", "post_feedforward_layernorm")


# -- Gemma-style sandwich norms --------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["gemma2", "gemma3", "gemma3_text"])
@pytest.mark.parametrize(
    "norms", [(), ("post_attention_layernorm",), ("post_feedforward_layernorm",)]
)
def test_a_sandwich_family_without_its_norms_raises(model_type, norms):
    layer = FakeLayer(model_type, norms)
    for site in ("mlp_output", "attn_output"):
        with pytest.raises(ValueError, match=r"sandwich norms.*transformers \d"):
            site_module(layer, site)
    assert site_module(layer, "block_output") == (layer, "output")  # needs no norm


def test_a_gemma3_layer_missing_a_norm_fails_at_attach():
    model, _ = _fresh("tiny-gemma3")
    del find_decoder_layers(model)[1].post_feedforward_layernorm
    spec = InterventionSpec(site="mlp_output", shape=AdapterShape("vector"))
    with pytest.raises(ValueError, match="Gemma3DecoderLayer .*post_feedforward_layernorm"):
        attach(model, spec)


def test_a_sandwich_layer_is_recognised_by_class_name_without_a_config():
    Gemma3DecoderLayer = type("Gemma3DecoderLayer", (FakeLayer,), {})  # noqa: N806
    with pytest.raises(ValueError, match="Gemma3DecoderLayer should normalise"):
        site_module(Gemma3DecoderLayer(norms=("post_attention_layernorm",)), "mlp_output")


def test_a_post_feedforward_norm_alone_is_ambiguous():
    layer = FakeLayer("somefamily", ("post_feedforward_layernorm",))
    with pytest.raises(ValueError, match="no post_attention_layernorm.*transformers"):
        site_module(layer, "attn_output")


def test_a_pre_norm_family_with_a_post_feedforward_norm_raises():
    layer = FakeLayer("llama", SANDWICH)
    with pytest.raises(ValueError, match="llama.*pre-norm family.*transformers"):
        site_module(layer, "mlp_output")


def test_sandwich_and_pre_norm_sites_on_the_normal_path(tiny_models):
    gemma = find_decoder_layers(tiny_models["tiny-gemma3"][0])[0]
    assert site_module(gemma, "mlp_output") == (gemma.post_feedforward_layernorm, "output")
    assert site_module(gemma, "attn_output") == (gemma.post_attention_layernorm, "output")
    llama = find_decoder_layers(tiny_models["tiny-llama"][0])[0]
    assert site_module(llama, "mlp_output") == (llama.mlp, "output")
    assert site_module(llama, "attn_output") == (llama.self_attn, "output")
    other = FakeLayer("olmo2", SANDWICH)  # a post-norm family: the norms are what is added
    assert site_module(other, "mlp_output") == (other.post_feedforward_layernorm, "output")
    unknown = FakeLayer("newfamily", ("post_attention_layernorm",))  # Llama's shape
    assert site_module(unknown, "mlp_output") == (unknown.mlp, "output")
    for layer in (gemma, llama, other, unknown):  # the MLP's input, whatever norm precedes it
        assert site_module(layer, "mlp_input") == (layer.mlp, "input")


def test_an_mlp_called_without_its_input_as_a_token_tensor_is_an_error():
    """mlp_input edits the MLP's first positional input, [batch, tokens, d]: a release that
    passes it by keyword or with the tokens flattened fails naming the versions, not silently."""
    model, _ = _fresh()
    handle = attach(model, InterventionSpec(site="mlp_input", shape=AdapterShape("vector")))
    mlp = find_decoder_layers(model)[0].mlp
    h = torch.randn(2, 5, D)
    try:
        mlp(h)  # the normal call
        with pytest.raises(RuntimeError, match=r"mlp_input: LlamaMLP .*positional.*transformers"):
            mlp(x=h)
        with pytest.raises(RuntimeError, match=r"\[10, 64\]\).*\[batch, tokens, 64\]"):
            mlp(h.reshape(10, D))
    finally:
        handle.detach()


# -- decoder layers --------------------------------------------------------------------------


def test_decoder_layers_must_match_num_hidden_layers(monkeypatch):
    model, _ = _fresh()
    monkeypatch.setattr(model.config, "num_hidden_layers", LAYERS + 1)
    with pytest.raises(ValueError, match=r"num_hidden_layers is 4.*3 x LlamaDecoderLayer"):
        find_decoder_layers(model)
    with pytest.raises(ValueError, match=r"transformers \d"):
        attach(model, InterventionSpec(shape=AdapterShape("vector")))


class Shell(nn.Module):
    """A multimodal shell: a vision tower with more `self_attn`+`mlp` layers than the decoder."""

    def __init__(self, language_model, vision_layers):
        super().__init__()
        self.vision_tower = nn.ModuleList(FakeLayer() for _ in range(vision_layers))
        self.language_model = language_model
        self.config = SimpleNamespace(text_config=language_model.config)


def test_decoder_layers_of_a_multimodal_shell_are_the_text_configs():
    model, _ = _fresh()
    shell = Shell(model, vision_layers=LAYERS + 2)  # the largest list is the vision tower's
    assert find_decoder_layers(shell) is model.model.layers
    with pytest.raises(ValueError, match="several lists"):
        find_decoder_layers(Shell(model, vision_layers=LAYERS))


def test_decoder_layers_through_peft_and_without_a_config():
    from peft import LoraConfig, get_peft_model

    model, _ = _fresh()
    layers = model.model.layers
    with quiet_peft():
        wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["o_proj"]))
    assert find_decoder_layers(wrapped) is layers
    bare = nn.Module()
    bare.short, bare.long = (nn.ModuleList(FakeLayer() for _ in range(n)) for n in (2, 5))
    assert find_decoder_layers(bare) is bare.long  # no config: the largest list


# -- attn_heads: o_proj's input is [B, T, H * d_head], head-major ----------------------------


def test_head_geometry_checks_o_proj_width_against_the_config():
    model, _ = _fresh()
    assert head_geometry(model) == (HEADS, HEAD_DIM)
    find_decoder_layers(model)[2].self_attn.o_proj = nn.Linear(48, D, bias=False)
    with pytest.raises(ValueError, match=r"layer 2: o_proj reads 48 .* 4 x 16 = 64.*transformers"):
        head_geometry(model)
    spec = InterventionSpec(site="attn_heads", shape=AdapterShape("lofit"))
    with pytest.raises(ValueError, match="o_proj reads 48"):
        attach(model, spec)


def test_head_geometry_checks_the_config_heads(monkeypatch):
    model, _ = _fresh()
    monkeypatch.setattr(model.config, "num_attention_heads", 8)
    with pytest.raises(ValueError, match=r"o_proj reads 64 features, expected .* 8 x 16 = 128"):
        head_geometry(model)


def test_head_geometry_must_be_the_same_in_every_layer(monkeypatch):
    model, _ = _fresh()
    # A config without num_attention_heads: nothing to check o_proj against but the other layers.
    config = SimpleNamespace(hidden_size=D, num_hidden_layers=LAYERS)
    monkeypatch.setattr(model, "config", config)
    assert head_geometry(model) == (HEADS, HEAD_DIM)
    find_decoder_layers(model)[1].self_attn.o_proj = nn.Linear(2 * HEAD_DIM, D, bias=False)
    with pytest.raises(ValueError, match="layer 1 has 2 heads of 16, layer 0 4 of 16"):
        head_geometry(model)


def test_o_proj_input_is_head_major_with_gqa_groups(tiny):
    """Only kv-head g's values non-zero: o_proj's input is non-zero exactly in the slices of
    the query heads that read kv-head g (transformers' repeat_kv: heads g*H/KV .. (g+1)*H/KV-1),
    so a ``view(B, T, H, d_head)`` of it is per head."""
    model, tokenizer = tiny
    ids = tokenizer("[MAX 2 9 [MIN 4 7 ] 0 ]", return_tensors="pt")["input_ids"]
    layers = find_decoder_layers(model)
    group = HEADS // KV_HEADS
    saved = [
        {k: v.clone() for k, v in layer.self_attn.v_proj.state_dict().items()} for layer in layers
    ]
    try:
        for g in range(KV_HEADS):
            seen = []
            handles = [
                layer.self_attn.o_proj.register_forward_pre_hook(
                    lambda m, a, seen=seen: seen.append(a[0].detach().clone())
                )
                for layer in layers
            ]
            with torch.no_grad():
                for layer, state in zip(layers, saved, strict=True):
                    v = layer.self_attn.v_proj
                    v.load_state_dict(state)
                    keep = torch.zeros(v.out_features, dtype=torch.bool)
                    keep[g * HEAD_DIM : (g + 1) * HEAD_DIM] = True
                    v.weight[~keep] = 0
                    if v.bias is not None:
                        v.bias[~keep] = 0
                model(input_ids=ids)
            for handle in handles:
                handle.remove()
            assert len(seen) == LAYERS
            for x in seen:
                assert x.shape == (1, ids.shape[1], HEADS * HEAD_DIM)
                per_head = x.view(1, ids.shape[1], HEADS, HEAD_DIM).abs().amax(dim=(0, 1, 3))
                reads_g = torch.arange(HEADS) // group == g
                assert bool((per_head[reads_g] > 1e-6).all()), per_head
                assert bool((per_head[~reads_g] == 0).all()), per_head
    finally:
        with torch.no_grad():
            for layer, state in zip(layers, saved, strict=True):
                layer.self_attn.v_proj.load_state_dict(state)


# -- peft: lora_B[name].weight, lora_A, active_adapters --------------------------------------


def _peft(targets=("o_proj", "down_proj"), r=4):
    from peft import LoraConfig, get_peft_model

    model, _ = _fresh()
    with quiet_peft():
        return get_peft_model(model, LoraConfig(r=r, target_modules=list(targets)))


def _lora_layer(peft_model, i=0, writer="o_proj"):
    layer = find_decoder_layers(peft_model)[i]
    return layer.self_attn.o_proj if writer == "o_proj" else layer.mlp.down_proj


def test_writers_are_found_with_b_of_hidden_by_r():
    model = _peft()
    check_writers(model, range(LAYERS), ("o_proj", "down_proj"))
    assert targeted_writers(model) == ("o_proj", "down_proj")
    check_writers(model, range(LAYERS))
    layer = find_decoder_layers(model)[0]
    assert lora_b(layer, "o_proj").shape == (D, 4)
    assert writer_matrix(layer, ("o_proj", "down_proj")).shape == (D, 8)


def test_a_writer_without_lora_is_an_error_at_build_not_a_no_op():
    model = _peft(targets=("o_proj",))
    assert targeted_writers(model) == ("o_proj",)
    with pytest.raises(ValueError, match=r"layer 0: no LoRA layer on down_proj.*peft \d"):
        check_writers(model, range(LAYERS), ("o_proj", "down_proj"))


def test_missing_active_adapters_is_an_error(monkeypatch):
    model = _peft()
    monkeypatch.setattr(type(_lora_layer(model)), "active_adapters", property(lambda self: None))
    with pytest.raises(ValueError, match=r"no active_adapters list.*peft \d"):
        check_writers(model, [0], ("o_proj",))


def test_several_active_adapters_are_an_error(monkeypatch):
    from peft import LoraConfig

    model = _peft()
    with quiet_peft():
        model.add_adapter("other", LoraConfig(r=4, target_modules=["o_proj", "down_proj"]))
    monkeypatch.setattr(
        type(_lora_layer(model)), "active_adapters", property(lambda self: ["default", "other"])
    )
    with pytest.raises(ValueError, match="2 active LoRA adapters"):
        check_writers(model, [0], ("o_proj",))


def test_b_of_the_wrong_shape_is_an_error():
    model = _peft()
    lora = _lora_layer(model, i=1)
    lora.lora_B["default"] = nn.Linear(D, 4, bias=False)  # transposed: [r, out]
    with pytest.raises(ValueError, match=r"B \(4, 64\) and A \(4, 64\); expected B.*peft \d"):
        check_writers(model, range(LAYERS), ("o_proj",))
    lora.lora_B["default"] = nn.Identity()  # no .weight
    with pytest.raises(ValueError, match=r"no lora_A/lora_B\['default'\]\.weight"):
        check_writers(model, range(LAYERS), ("o_proj",))


def test_missing_scaling_is_an_error():
    model = _peft()
    del _lora_layer(model, writer="down_proj").scaling["default"]
    with pytest.raises(ValueError, match=r"down_proj's LoRA has no scaling\['default'\]"):
        check_writers(model, [0], ("down_proj",))


def test_targeted_writers_needs_a_peft_model():
    model, _ = _fresh()
    with pytest.raises(ValueError, match=r"no peft_config.*peft \d"):
        targeted_writers(model)


def test_joint_orth_build_checks_its_writers(monkeypatch):
    model, _ = _fresh()
    recipe = build_recipe({"method": "joint-orth"})
    joint = build_parts(model, recipe)  # the normal path
    joint.remove()
    monkeypatch.setattr("steer_cli.engine.joint._lora_module", lambda layer, writer: None)
    with pytest.raises(SteerError, match="no LoRA layer on o_proj"):
        build_parts(model, recipe)
    assert not any("lora_" in n for n, _ in model.named_parameters()), "LoRA left on the model"


# -- the embedded model's GGUF conversion ----------------------------------------------------


class FakeQuantizer:
    def __init__(self, removes=True):
        if removes:
            self.remove_quantization_config = self._remove

    @staticmethod
    def _remove(model):
        del model.hf_quantizer
        del model.config.quantization_config


def test_gguf_is_loaded_dequantized_through_the_public_option():
    import transformers

    options = embedded._gguf_dequantized()
    if hasattr(transformers, "GgufConfig"):
        assert options["quantization_config"].dequantize is True
    else:  # transformers 4.x dequantizes GGUF on load
        assert options == {}


def test_a_quantizer_is_dropped_through_its_own_method():
    model, _ = _fresh()
    model.hf_quantizer = FakeQuantizer()
    model.config.quantization_config = {"quant_method": "gguf"}
    embedded._drop_quantizer(model)
    assert getattr(model, "hf_quantizer", None) is None
    assert getattr(model.config, "quantization_config", None) is None
    embedded._drop_quantizer(model)  # a plain model passes as it is


def test_a_quantizer_that_cannot_be_dropped_is_an_error():
    model, _ = _fresh()
    model.hf_quantizer = FakeQuantizer(removes=False)
    with pytest.raises(SteerError, match=r"no remove_quantization_config \(transformers \d"):
        embedded._drop_quantizer(model)


def test_a_model_still_quantized_after_dropping_is_an_error():
    model, _ = _fresh()
    model.config.quantization_config = {"quant_method": "gguf"}
    with pytest.raises(SteerError, match=r"still has config.quantization_config.*transformers"):
        embedded._drop_quantizer(model)
    del model.config.quantization_config
    model.model.norm.to(torch.float16)
    with pytest.raises(
        SteerError,
        match=re.escape("parameters of ['torch.float16', 'torch.float32'], expected a plain"),
    ):
        embedded._drop_quantizer(model)


def test_the_saved_checkpoint_is_checked_plain_fp32(tmp_path):
    model, _ = _fresh()
    model.save_pretrained(tmp_path / "ok")
    embedded._check_plain_checkpoint(tmp_path / "ok", model)
    config = json.loads((tmp_path / "ok" / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gguf"}
    (tmp_path / "ok" / "config.json").write_text(json.dumps(config))
    with pytest.raises(SteerError, match=r"config.json has a quantization_config.*transformers"):
        embedded._check_plain_checkpoint(tmp_path / "ok", model)
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    with pytest.raises(SteerError, match="model.safetensors:lm_head.weight is BF16"):
        embedded._check_plain_checkpoint(tmp_path / "bf16", model.to(torch.float32))
