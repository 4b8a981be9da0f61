"""Greedy generation is greedy whatever a checkpoint's generation_config asks for, and stops at
any of its EOS ids."""

import torch

from steer_cli.evaluate.generation import generate_ids
from steer_cli.models import load_model

PROMPTS = ["a short one", "a considerably longer prompt than the first", "mid size x"]
N = 12


def _fresh(family: str = "tiny-qwen2"):
    """Its own copy: these tests edit the checkpoint's generation_config."""
    model, tokenizer = load_model(family, dtype="float32", device="cpu", seed=0)
    model.requires_grad_(False)
    return model, tokenizer, [tokenizer(p)["input_ids"] for p in PROMPTS]


@torch.no_grad()
def _argmax(model, prompt: list[int], n: int) -> list[int]:
    """The reference: n steps of the argmax of the next-token logits, no cache, no processors."""
    seq = torch.tensor([prompt])
    for _ in range(n):
        seq = torch.cat([seq, model(input_ids=seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
    return seq[0, len(prompt) :].tolist()


def test_greedy_ignores_a_checkpoints_repetition_settings():
    model, tokenizer, prompts = _fresh()
    plain = generate_ids(model, tokenizer, prompts, max_new_tokens=N, batch_size=3)
    for prompt, out in zip(prompts, plain, strict=True):
        reference = _argmax(model, prompt, N)
        assert out == reference[: len(out)] and len(out) > 0
    model.generation_config.repetition_penalty = 1.3
    model.generation_config.no_repeat_ngram_size = 2
    # transformers' generate() applies them: they would change "greedy" outputs.
    raw = []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=N)
        raw.append(out[0, len(prompt) :].tolist())
    assert raw != plain
    assert generate_ids(model, tokenizer, prompts, max_new_tokens=N, batch_size=3) == plain


def test_any_of_the_checkpoints_eos_ids_ends_an_answer():
    model, tokenizer, prompts = _fresh()
    plain = generate_ids(model, tokenizer, prompts, max_new_tokens=N, batch_size=3)
    stop = plain[1][4]  # a token the model writes: the checkpoint's end-of-turn id, say
    assert tokenizer.eos_token_id not in plain[1][:5]
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, stop]
    stopped = generate_ids(model, tokenizer, prompts, max_new_tokens=N, batch_size=3)
    cut = plain[1].index(stop) + 1
    assert stopped[1] == plain[1][:cut] and len(stopped[1]) < len(plain[1])
    for before, after in zip(plain, stopped, strict=True):  # every row: its prefix up to `stop`
        assert after == before[: before.index(stop) + 1 if stop in before else len(before)]
