"""``steer generate`` behind the CLI: a run's (or a model's) continuations of your prompts.

A prompt is encoded as the run's training encoded its prompts: through the chat template exactly
when the run was trained with one (a plain model: none, as ``steer eval`` does; ``chat``
overrides), and with ``task_format`` inside the run's task template first. Generation is the
engine's batched, left-padded generation (:mod:`steer_cli.evaluate.generation`), so an adapter's
positions mean what they meant in training and greedy outputs equal ``steer eval --protocol
paper``'s. A joint run generates in its recipe's ``eval.joint_mode``; ``compare_base`` also
generates with the run's trained parts off (an SFT run: its base model), same prompts and
settings.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from steer_cli.errors import SteerError

DEFAULT_MAX_NEW_TOKENS = 128  # a plain model's (a run's default: its evaluation budget)


@dataclass
class Sampling:
    """Greedy at ``temperature == 0`` (the default, as evaluation decodes), else nucleus
    sampling at ``temperature``/``top_p`` with ``seed``."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise SteerError(
                f"--temperature must be >= 0, got {self.temperature}", "0 decodes greedily"
            )
        if not 0 < self.top_p <= 1:
            raise SteerError(f"--top-p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def overrides(self) -> dict:
        """What changes in ``generate()``'s greedy settings (``top_k=0``: no top-k cut, whatever
        the checkpoint's generation_config says)."""
        if self.greedy:
            return {}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": 0}


@dataclass
class GenerateRequest:
    target: str
    prompts: list[str] = field(default_factory=list)
    input: str | None = None  # a JSONL file of rows, or "-" for stdin
    max_new_tokens: int | None = None
    sampling: Sampling = field(default_factory=Sampling)
    compare_base: bool = False
    chat: bool | None = None
    task_format: bool = False
    batch_size: int = 8
    device: str | None = None
    dtype: str | None = None
    force: bool = False  # load a run onto a base whose weights differ from its own


def read_rows(source: str, stdin: Iterable[str] | None = None) -> list[dict]:
    """The rows of a JSONL file (``-``: standard input): ``{"prompt": ...}``, or with
    ``--task-format`` the task's own fields; a bare JSON string counts as a prompt."""
    if source == "-":
        lines, where = list(stdin if stdin is not None else sys.stdin), "stdin"
    else:
        path = Path(source)
        if not path.is_file():
            raise SteerError(f"no input file at {source}", "pass a JSONL file, or - for stdin")
        lines, where = path.read_text().splitlines(), str(path)
    from steer_cli.data.files import json_lines

    rows = []
    for number, row in json_lines(lines, where):
        if isinstance(row, str):
            row = {"prompt": row}
        if not isinstance(row, dict):
            raise SteerError(
                f"{where} line {number} is a JSON {type(row).__name__}, not an object",
                'each line is a JSON object such as {"prompt": "[MAX 2 9 ]"}',
            )
        rows.append(row)
    if not rows:
        raise SteerError(f"{where} holds no rows", 'write one {"prompt": ...} object per line')
    return rows


def prompt_texts(rows: list[dict], *, task=None) -> list[str]:
    """Each row's prompt text: its ``prompt`` field, or (``task``) the task template applied to
    the row (a row with only ``prompt`` fills the task's first field)."""
    from steer_cli.data.base import RowError

    texts = []
    for number, row in enumerate(rows, 1):
        if task is None:
            if not isinstance(row.get("prompt"), str):
                fields = ", ".join(sorted(row)) or "none"
                raise SteerError(
                    f"row {number} has no text 'prompt' field (fields: {fields})",
                    "give each row a prompt, or pass --task-format to read the task's fields",
                )
            texts.append(row["prompt"])
            continue
        filled = dict(row)
        if "prompt" in filled and task.fields and task.fields[0] not in filled:
            filled[task.fields[0]] = filled.pop("prompt")
        try:
            texts.append(task.format(filled).prompt)
        except (RowError, KeyError) as err:
            raise SteerError(
                f"row {number} does not fit the {task.name} template: {err}",
                f"{task.name} rows have the fields {', '.join(task.fields)}; pass them in "
                "--input rows, or drop --task-format",
            ) from None
    return texts


@dataclass
class Generations:
    """Per row: the prompt text, the steered output and (``compare_base``) the base's."""

    prompts: list[str]
    outputs: list[str]
    base_outputs: list[str] | None
    chat: bool
    settings: dict

    def records(self, rows: list[dict] | None = None) -> Iterator[dict]:
        for i, (prompt, output) in enumerate(zip(self.prompts, self.outputs, strict=True)):
            record = {**(rows[i] if rows else {}), "prompt": prompt, "output": output}
            if self.base_outputs is not None:
                record["base_output"] = self.base_outputs[i]
            yield record


def check(request: GenerateRequest) -> None:
    """What is wrong with the request itself, before anything is read or loaded."""
    if not request.prompts and request.input is None:
        raise SteerError(
            "nothing to generate from: give a PROMPT, or --input FILE.jsonl (- for stdin)"
        )
    if request.prompts and request.input is not None:
        raise SteerError("give PROMPTs or --input, not both")


def plan(request: GenerateRequest):
    """Load what to generate with, and resolve the settings: ``(target, task, chat,
    max_new_tokens)``. Errors about the request come before the model loads."""
    from steer_cli.evaluate.command import load_target, run_dir_of
    from steer_cli.runs import read_config

    check(request)
    run_dir = run_dir_of(request.target)
    recipe = read_config(run_dir) if run_dir is not None else None
    task = None
    if request.task_format:
        if recipe is None:
            raise SteerError(
                "--task-format uses a run's task template; a model has none",
                f"pass a run directory instead of {request.target}, or drop --task-format",
            )
        from steer_cli.data.tasks import task_for

        task = task_for(recipe.data)
    if request.compare_base and recipe is None:
        raise SteerError(
            "--compare-base compares a run with its base model; a model is its own base",
            f"pass a run directory instead of {request.target}",
        )
    target = load_target(
        request.target, device=request.device, dtype=request.dtype, force=request.force
    )
    chat = request.chat
    if chat is None:
        from steer_cli.evaluate.command import _run_chat

        chat = _run_chat(target)
    budget = request.max_new_tokens
    if budget is None:
        budget = default_max_new_tokens(recipe)
    return target, task, chat, budget


def default_max_new_tokens(recipe) -> int:
    """A run's evaluation budget (``eval.max_new_tokens``, else its task's); a model's
    ``DEFAULT_MAX_NEW_TOKENS`` (``recipe`` None)."""
    if recipe is None:
        return DEFAULT_MAX_NEW_TOKENS
    from steer_cli.data.tasks import task_for

    return recipe.eval.max_new_tokens or task_for(recipe.data).max_new_tokens


def encode(tokenizer, texts: list[str], chat: bool) -> list[list[int]]:
    from steer_cli.data.encode import prompt_token_ids

    return [prompt_token_ids(tokenizer, text, chat) for text in texts]


def run(
    request: GenerateRequest, rows: list[dict] | None = None, *, streamer_for=None
) -> Generations:
    """Generate for ``request.prompts`` (or ``rows``, read from ``--input``).

    ``streamer_for(tokenizer, label)``: a transformers streamer for a single prompt
    (``label``: ``"steered"`` or ``"base"``); what it streams is the text of the result.
    """
    from steer_cli.loop import seeded

    target, task, chat, budget = plan(request)
    rows = rows if rows is not None else [{"prompt": p} for p in request.prompts]
    texts = prompt_texts(rows, task=task)
    ids = encode(target.tokenizer, texts, chat)
    device = next(target.model.parameters()).device

    def generate_with(model_target, label: str) -> list[str]:
        from steer_cli.evaluate.generation import generate

        streamer = None
        if streamer_for is not None and len(ids) == 1:
            streamer = streamer_for(model_target.tokenizer, label)
        with seeded(request.sampling.seed, device):
            return generate(
                model_target.model,
                model_target.tokenizer,
                ids,
                max_new_tokens=budget,
                batch_size=request.batch_size,
                overrides=request.sampling.overrides(),
                streamer=streamer,
            )

    with target.evaluating():
        outputs = generate_with(target, "steered")
    base_outputs = None
    if request.compare_base:
        with target.base() as base:
            base_outputs = generate_with(base, "base")
    settings = {
        "max_new_tokens": budget,
        "temperature": request.sampling.temperature,
        "top_p": request.sampling.top_p,
        "seed": request.sampling.seed,
        "chat_template": chat,
        "task_format": request.task_format,
    }
    return Generations(texts, outputs, base_outputs, chat, settings)
