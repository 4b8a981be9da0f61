"""What the oracle compares: the two models, and the sample of sequences they are run on.

The sample: N test prompts of the task, each followed by the fine-tuned model's greedy
continuation, teacher-forced for every model so that all KL curves score the same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from steer_cli.errors import SteerError
from steer_cli.rundir import is_run_dir

DEFAULT_TASK = "listops"


@dataclass
class Model:
    """A model to compare, with where it came from."""

    model: torch.nn.Module
    tokenizer: object
    label: str
    run_dir: Path | None = None
    recipe: object = None


@dataclass
class Sample:
    """The teacher-forced sequences, right-padded: prompt then the FT greedy continuation."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_lengths: list[int]
    generated_lengths: list[int]
    prompts: list[str] = field(default_factory=list)
    continuations: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, start: int, stop: int) -> Sample:
        width = int(self.attention_mask[start:stop].sum(1).max())
        return Sample(
            self.input_ids[start:stop, :width],
            self.attention_mask[start:stop, :width],
            self.prompt_lengths[start:stop],
            self.generated_lengths[start:stop],
        )


def load_fine_tuned(spec: str) -> Model:
    """An ``sft`` run directory, or any model name/path ``load_model`` accepts."""
    from steer_cli import models
    from steer_cli.runs import load_run, read_config

    if is_run_dir(spec):
        recipe = read_config(spec)
        from steer_cli.parts import kind_of

        if kind_of(recipe) != "sft":
            raise SteerError(
                f"{spec} is a {recipe.method} run; the oracle needs a full fine-tune",
                "pass an sft run (or a model directory) as FT_RUN, and this run with --runs",
            )
        model, tokenizer, _ = load_run(spec, device="cpu", dtype="float32")
        return Model(model, tokenizer, str(spec), Path(spec), recipe)
    if Path(spec).expanduser().exists() and not Path(spec).expanduser().is_dir():
        raise SteerError(f"{spec} is a file", "FT_RUN is an sft run directory or a model")
    model, tokenizer = models.load_model(spec, dtype="float32", device="cpu")
    model.requires_grad_(False)
    return Model(model, tokenizer, spec)


def check_runs(paths: Sequence[str | Path]) -> None:
    """Fail before any model loads when a ``--runs`` entry is not a run directory."""
    for path in paths:
        if not is_run_dir(path):
            raise SteerError(
                f"{path} is not a run directory (no config.yaml)",
                "--runs takes directories written by `steer train`",
            )


def task_and_data(task_name: str | None, ft: Model, samples: int):
    """The task (``--task``, else the FT run's, else ListOps) and the data section to load it
    with: the FT run's own when it is the same task (its test split), else the defaults."""
    from steer_cli.data.tasks import get_task
    from steer_cli.recipe import DataSection

    run_data = ft.recipe.data if ft.recipe is not None else None
    name = task_name or (run_data.task if run_data is not None else DEFAULT_TASK)
    task = get_task(name)
    if run_data is not None and run_data.task == task.name:
        return task, run_data
    return task, DataSection(task=task.name, train_size=samples, test_size=samples)


def build_sample(ft: Model, task, data, *, samples: int, max_new_tokens: int | None) -> Sample:
    from steer_cli.data.encode import prompt_token_ids, uses_chat_template
    from steer_cli.data.tasks import load_splits
    from steer_cli.evaluate.generation import generate_ids

    examples = load_splits(task, data)["test"][:samples]
    if not examples:
        raise SteerError(f"task {task.name} has no test examples", "raise data.test_size")
    tokenizer = ft.tokenizer
    chat = uses_chat_template(tokenizer, data.chat_template)
    prompts = [prompt_token_ids(tokenizer, ex.prompt, chat) for ex in examples]
    continuations = generate_ids(
        ft.model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens or task.max_new_tokens,
        batch_size=16,
    )
    rows = [p + c for p, c in zip(prompts, continuations, strict=True)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return Sample(
        ids,
        mask,
        [len(p) for p in prompts],
        [len(c) for c in continuations],
        [ex.prompt for ex in examples],
        tokenizer.batch_decode(continuations, skip_special_tokens=True),
    )


def non_block_changes(base: torch.nn.Module, ft: torch.nn.Module) -> dict:
    """Which parameters outside the decoder blocks differ, by relative Frobenius change; and
    whether the blocks changed at all."""
    from steer_cli.engine.sites import find_decoder_layers

    in_blocks = {id(p) for p in find_decoder_layers(base).parameters()}
    ft_params = dict(ft.named_parameters())
    if type(base) is not type(ft) or set(ft_params) != {n for n, _ in base.named_parameters()}:
        raise SteerError(
            f"the base model is a {type(base).__name__}, the fine-tuned one a "
            f"{type(ft).__name__} with other parameters",
            "BASE and FT_RUN must be the same architecture (FT_RUN fine-tuned from BASE)",
        )
    changed, blocks_changed = [], False
    for name, p in base.named_parameters():
        q = ft_params.get(name)
        if q is None or q.shape != p.shape:
            raise SteerError(
                f"the fine-tuned model has no parameter {name} shaped {tuple(p.shape)}",
                "BASE and FT_RUN must be the same architecture",
            )
        diff = float((q.double() - p.double()).norm())
        if id(p) in in_blocks:
            blocks_changed |= diff > 0
        elif diff > 0:
            changed.append({"name": name, "relative_change": diff / float(p.double().norm())})
    tied = base.get_output_embeddings().weight is base.get_input_embeddings().weight
    return {"changed": changed, "blocks_changed": blocks_changed, "lm_head_tied": bool(tied)}
