"""Turn examples into token ids: chat template, answer-only labels, EOS, length limits.

The one rule that matters for training: the loss covers the answer tokens and the EOS token,
never the prompt; and an answer is never cut. A too-long example loses prompt tokens from the
left (counted as truncated), or is dropped when even the answer does not fit (counted as dropped).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from steer_cli.errors import SteerError

IGNORE_INDEX = -100


def uses_chat_template(tokenizer, chat_template: bool | str) -> bool:
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat_template is True and not has_template:
        raise SteerError(
            "data.chat_template is true but this tokenizer has no chat template",
            "set data.chat_template=auto (use it when present) or false",
        )
    return has_template if chat_template == "auto" else bool(chat_template)


def prompt_token_ids(tokenizer, prompt: str, chat: bool) -> list[int]:
    """Token ids of the prompt exactly as the model sees it, in training and at generation."""
    if chat:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt, add_special_tokens=True)["input_ids"]


def target_token_ids(tokenizer, target: str) -> list[int]:
    """The answer's ids followed by EOS, which is supervised so the model learns to stop."""
    if tokenizer.eos_token_id is None:
        raise SteerError("the tokenizer has no EOS token; cannot supervise the end of answers")
    return tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


@dataclass
class EncodeStats:
    kept: int = 0
    truncated: int = 0  # prompt cut from the left to fit max_length
    dropped: int = 0  # the answer alone did not fit
    tokens: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"kept": self.kept, "truncated": self.truncated, "dropped": self.dropped}


def encode_for_training(
    tokenizer, examples: list, *, chat: bool, max_length: int
) -> tuple[list[dict], EncodeStats]:
    """``[{input_ids, labels}]`` with the prompt masked out of the labels."""
    stats = EncodeStats()
    rows = []
    for example in examples:
        prompt = prompt_token_ids(tokenizer, example.prompt, chat)
        target = target_token_ids(tokenizer, example.target)
        prompt = fit_prompt(prompt, len(target), max_length, stats)
        if prompt is not None:
            rows.append(
                {"input_ids": prompt + target, "labels": [IGNORE_INDEX] * len(prompt) + target}
            )
    return rows, stats


def fit_prompt(
    prompt: list[int], answer_length: int, max_length: int, stats: EncodeStats
) -> list[int] | None:
    """The prompt cut from the left so that the answer fits whole (an answer is never
    truncated), or None when the answer alone does not fit; counted in ``stats``."""
    room = max_length - answer_length
    if room < 1:
        stats.dropped += 1
        return None
    if len(prompt) > room:
        prompt = prompt[-room:]
        stats.truncated += 1
    stats.kept += 1
    return prompt


def collate_right_padded(rows: list[dict], pad_id: int):
    """Right-pad a training micro-batch (padding never carries a label).

    ``prompt_lengths`` (tokens before the first label) lets position-aware adapters tell prompt
    from answer tokens under teacher forcing.
    """
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    prompt_lengths = torch.tensor(
        [
            next((j for j, t in enumerate(r["labels"]) if t != IGNORE_INDEX), len(r["labels"]))
            for r in rows
        ]
    )
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "prompt_lengths": prompt_lengths,
    }
