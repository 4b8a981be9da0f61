"""Seeded tiny random models of each supported family, with an offline byte-level tokenizer and
a ChatML chat template: bitwise reproducible from ``seed``, for tests and smoke runs."""

from __future__ import annotations

import torch

from steer_cli.errors import SteerError
from steer_cli.models.names import TINY_FAMILIES

# Tiny-model shape. The initializer range is large on purpose: with the usual 0.02 a random
# model's logits are nearly flat, and greedy decoding sits on near-ties that flip between
# cached and uncached generation. 0.2 gives a median top-1/top-2 logit margin of ~0.1.
_TINY_HIDDEN = 64
_TINY_LAYERS = 3
_TINY_HEADS = 4
_TINY_KV_HEADS = 2
_TINY_HEAD_DIM = 16
_TINY_INTERMEDIATE = 128
_TINY_MAX_POSITIONS = 512
_TINY_INIT_RANGE = 0.2

_TINY_SPECIALS = ("<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>")
_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_tokenizer():
    """An offline byte-level tokenizer: 256 byte symbols plus ChatML-style special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    # Specials get ids 256.. in this fixed order: pad, bos, eos, im_start, im_end.
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in _TINY_SPECIALS]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|bos|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        clean_up_tokenization_spaces=False,
        model_max_length=_TINY_MAX_POSITIONS,
    )
    tokenizer.chat_template = _CHATML_TEMPLATE
    return tokenizer


def tiny_config(family: str, vocab_size: int, bos: int, eos: int, pad: int):
    common = dict(
        vocab_size=vocab_size,
        hidden_size=_TINY_HIDDEN,
        intermediate_size=_TINY_INTERMEDIATE,
        num_hidden_layers=_TINY_LAYERS,
        num_attention_heads=_TINY_HEADS,
        num_key_value_heads=_TINY_KV_HEADS,
        head_dim=_TINY_HEAD_DIM,
        max_position_embeddings=_TINY_MAX_POSITIONS,
        initializer_range=_TINY_INIT_RANGE,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        tie_word_embeddings=False,
    )
    if family == "tiny-llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        return LlamaConfig(**common), LlamaForCausalLM
    if family == "tiny-qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        return Qwen2Config(**common), Qwen2ForCausalLM
    if family == "tiny-qwen3":
        from transformers import Qwen3Config, Qwen3ForCausalLM

        return Qwen3Config(**common), Qwen3ForCausalLM
    if family == "tiny-mistral":
        from transformers import MistralConfig, MistralForCausalLM

        return MistralConfig(**common, sliding_window=None), MistralForCausalLM
    if family == "tiny-gemma3":
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        # One full-attention layer between sliding ones; a small window so the sliding-window
        # mask is actually exercised on prompts longer than 32 tokens. Untied like the others:
        # tied, the sqrt(hidden)-scaled embedding dominates and greedy decoding just repeats the
        # last input token. query_pre_attn_scalar defaults to 256 (the real head_dim); match ours.
        layer_types = [
            "full_attention" if i % 2 else "sliding_attention" for i in range(_TINY_LAYERS)
        ]
        config = Gemma3TextConfig(
            **common,
            sliding_window=32,
            layer_types=layer_types,
            query_pre_attn_scalar=_TINY_HEAD_DIM,
        )
        return config, Gemma3ForCausalLM
    raise SteerError(  # pragma: no cover - guarded by load_model
        f"Unknown tiny model {family!r}.", f"Valid tiny models: {', '.join(TINY_FAMILIES)}."
    )


def tiny_parts(family: str):
    """``(tokenizer, config, model class)`` of a tiny family: everything but the weights."""
    tokenizer = tiny_tokenizer()
    config, model_cls = tiny_config(
        family,
        vocab_size=len(tokenizer),
        bos=tokenizer.bos_token_id,
        eos=tokenizer.eos_token_id,
        pad=tokenizer.pad_token_id,
    )
    return tokenizer, config, model_cls


def build_tiny(family: str, *, seed: int):
    tokenizer, config, model_cls = tiny_parts(family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config).to(torch.float32)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
