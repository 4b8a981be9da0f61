"""What the benchmarks run on: the quickstart's rows, or a model shape with random weights and
rows of a fixed length (for GPUs, where the embedded model is too small to measure)."""

from __future__ import annotations

import torch


def quickstart_rows(tokenizer, n: int, chat: bool):
    """``n`` encoded training rows of the quickstart's task, and its test examples."""
    from steer_cli.data.encode import encode_for_training
    from steer_cli.data.tasks import load_splits, task_for
    from steer_cli.recipe import build_recipe

    recipe = build_recipe({"data": {"train_size": n, "test_size": 32}})
    task = task_for(recipe.data)
    splits = load_splits(task, recipe.data)
    rows, _ = encode_for_training(
        tokenizer, splits["train"], chat=chat, max_length=recipe.data.max_length
    )
    return rows, splits["test"]


# Model shapes built from a config with random weights (no download), for --shape.
SHAPES = {
    "llama-3.2-1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "max_position_embeddings": 4096,
        "rope_theta": 500000.0,
        "tie_word_embeddings": True,
    },
    "llama-3.1-8b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 128256,
        "max_position_embeddings": 4096,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
    },
    "small": {  # for checking the --shape path on a CPU
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "vocab_size": 1024,
        "max_position_embeddings": 1024,
    },
}


def load(args):
    """``--model`` through steer's loader, or ``--shape`` as random weights on the device."""
    from steer_cli.models import load_model, resolve_device, resolve_dtype

    if args.shape is None:
        return load_model(args.model, dtype=args.dtype, device=args.device)
    from transformers import LlamaConfig, LlamaForCausalLM

    from steer_cli.models.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    device = resolve_device(args.device)
    dtype, previous = resolve_dtype(args.dtype, device), torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in its dtype: an 8B model is never held in fp32
    try:
        with torch.device(device):
            model = LlamaForCausalLM(LlamaConfig(**SHAPES[args.shape]))
    finally:
        torch.set_default_dtype(previous)
    return model.eval(), tokenizer


def fixed_rows(n: int, length: int, vocab: int, supervised: int = 16) -> list[dict]:
    """``n`` rows of exactly ``length`` tokens, the last ``supervised`` of them the answer."""
    from steer_cli.data.encode import IGNORE_INDEX

    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (length,), generator=generator).tolist()
        rows.append(
            {"input_ids": ids, "labels": [IGNORE_INDEX] * (length - supervised) + ids[-supervised:]}
        )
    return rows
