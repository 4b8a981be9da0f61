"""What ``steer train`` needs before training: the task's splits, the model (or its skeleton,
for ``--dry-run``), the resolved rank, the tokenized rows; and the evaluation it runs before
and after training."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from steer_cli.recipe import Recipe


@dataclass
class Prepared:
    """Everything a run needs before training: the recipe (rank resolved), task, model, data."""

    recipe: Recipe
    task: object
    model: nn.Module
    tokenizer: object
    base_params: int
    rank_choice: object | None
    train_rows: list[dict]
    encode_stats: object
    test: list
    test_prompts: list[list[int]]
    data_sizes: dict
    preference_test: list[dict] | None = None  # DPO: the held-out pairs, tokenized

    def evaluate(self, label: str, model: nn.Module) -> tuple[dict, list[dict]]:
        """The paper's accuracy on the test split: batched greedy generation + the task's parser.

        Split across the run's processes (each generates its share of the batches, every
        process gets all records back): the same records as one process's."""
        from accelerate import PartialState

        from steer_cli.evaluate.generation import by_length, evaluate_accuracy, share
        from steer_cli.report import StepProgress

        processes = PartialState()  # the run's, set up by train.run
        batch_size = self.recipe.eval.batch_size
        rank, count = processes.process_index, processes.num_processes
        mine = len(share(by_length(self.test_prompts), batch_size, rank, count))
        with StepProgress(f"eval {label}", mine, every=max(1, mine // 4)) as bar:
            return evaluate_accuracy(
                model,
                self.tokenizer,
                self.task,
                self.test,
                self.test_prompts,
                processes=processes,
                max_new_tokens=self.recipe.eval.max_new_tokens or self.task.max_new_tokens,
                batch_size=batch_size,
                on_batch=lambda n: bar.advance(n),
            )


def prepare(recipe: Recipe, *, skeleton: bool = False) -> Prepared:
    """Load the task's splits and the model, resolve an automatic rank, tokenize the data.

    ``skeleton``: the model on the meta device, without its weights (``--dry-run``)."""
    from steer_cli import models
    from steer_cli.data.encode import encode_for_training, prompt_token_ids, uses_chat_template
    from steer_cli.data.splits import size_line, size_report
    from steer_cli.data.tasks import load_splits, task_for
    from steer_cli.errors import SteerError
    from steer_cli.parts import count_base, count_parameters, resolve_rank
    from steer_cli.report import err_console

    task = task_for(recipe.data)
    splits = load_splits(task, recipe.data)
    data_sizes = size_report(recipe.data, splits)
    err_console.print(size_line(data_sizes), markup=False, highlight=False)
    if skeleton:
        from steer_cli.models.skeleton import load_skeleton

        err_console.print(f"reading model [bold]{recipe.model.name}[/] (config, no weights)")
        model, tokenizer = load_skeleton(
            recipe.model.name, trust_remote_code=recipe.model.trust_remote_code
        )
    else:
        err_console.print(f"loading model [bold]{recipe.model.name}[/]")
        # No training seed here: a base model (tiny-* included) is defined by its name alone.
        model, tokenizer = models.load_model(
            recipe.model.name,
            dtype=recipe.model.dtype,
            device=recipe.model.device,
            trust_remote_code=recipe.model.trust_remote_code,
        )
    model.requires_grad_(False)
    base_params = count_base(model)
    recipe, rank_choice = resolve_rank(model, recipe)  # adapter.rank: auto -> a number
    if rank_choice is not None:
        err_console.print(rank_choice.describe(), highlight=False)
    count_parameters(model, recipe)  # what only the model can refuse (LoFiT's heads), up front
    chat = uses_chat_template(tokenizer, recipe.data.chat_template)
    preference_test = None
    if recipe.train.objective == "dpo":
        train_rows, encode_stats, preference_test = _preference_rows(
            recipe, tokenizer, chat, data_sizes
        )
    elif recipe.train.objective == "grpo":
        from steer_cli.rollouts import encode_prompts

        train_rows, encode_stats = encode_prompts(
            tokenizer,
            splits["train"],
            chat=chat,
            max_length=recipe.data.max_length,
            max_new_tokens=recipe.grpo.max_new_tokens or task.max_new_tokens,
        )
    else:
        train_rows, encode_stats = encode_for_training(
            tokenizer, splits["train"], chat=chat, max_length=recipe.data.max_length
        )
    if not train_rows:
        raise SteerError(
            f"no training example fits data.max_length={recipe.data.max_length}",
            "raise data.max_length",
        )
    test = splits["test"]
    return Prepared(
        recipe=recipe,
        task=task,
        model=model,
        tokenizer=tokenizer,
        base_params=base_params,
        rank_choice=rank_choice,
        train_rows=train_rows,
        encode_stats=encode_stats,
        test=test,
        test_prompts=[prompt_token_ids(tokenizer, ex.prompt, chat) for ex in test],
        data_sizes=data_sizes,
        preference_test=preference_test,
    )


def _preference_rows(recipe: Recipe, tokenizer, chat: bool, data_sizes: dict):
    """DPO's training pairs, their encoding figures and the held-out pairs, tokenized; what
    was loaded goes into ``data_sizes["preferences"]`` (and the run header)."""
    from steer_cli.data.preferences import as_data, encode_preferences, load_preferences
    from steer_cli.data.splits import size_line, size_report
    from steer_cli.report import err_console

    section = recipe.data.preferences
    pairs = load_preferences(section)
    data_sizes["preferences"] = size_report(as_data(section), pairs)
    line = size_line(data_sizes["preferences"]).replace("by data.", "by data.preferences.")
    err_console.print(line, markup=False, highlight=False)
    length = recipe.data.max_length
    train_rows, stats = encode_preferences(tokenizer, pairs["train"], chat=chat, max_length=length)
    test_rows, _ = encode_preferences(tokenizer, pairs["test"], chat=chat, max_length=length)
    return train_rows, stats, test_rows


def announce(parts, prepared: Prepared) -> int:
    """Print the trainable parameters (and warn about low-precision SFT); return their count."""
    from steer_cli.report import err_console, human_count

    weight_dtype = next(parts.model.parameters()).dtype
    if parts.kind == "sft" and weight_dtype in (torch.bfloat16, torch.float16):
        # Pure low-precision AdamW rounds most small updates away (no fp32 master weights).
        err_console.print(
            f"[yellow]warning:[/] full fine-tuning with {weight_dtype} weights loses small "
            "updates; set model.dtype=float32 for faithful SFT",
            highlight=False,
        )
    trainable = parts.num_parameters()
    base = prepared.base_params
    stats = prepared.encode_stats
    err_console.print(
        f"trainable parameters: [bold]{trainable:,}[/] ({human_count(trainable)}, "
        f"{100 * trainable / base:.4f}% of {human_count(base)})  ·  "
        f"{len(prepared.train_rows)} examples, {stats.truncated} truncated, "
        f"{stats.dropped} dropped"
    )
    return trainable
