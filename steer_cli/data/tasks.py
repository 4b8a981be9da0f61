"""The task registry: the paper's tasks (SPEC 7, appendix F.1) as :class:`Task` data.

A task is data, not a subclass: its name, where its data lives (hub id, config, and how our
train/validation/test come from the source's splits), its generation budget, default epochs and
maximum length, and three plain functions (``formatter``, ``parser``, ``equal``). :data:`TASKS`
registers the paper's tasks; :func:`local_task` builds a task over users' own fields from a
recipe's ``data.local`` section.

The parts live beside it: :mod:`~steer_cli.data.base` (the types), :mod:`~.templates` (prompts
and formatters), :mod:`~.parsers` (answer parsers), :mod:`~.splits` (split plans, caps) and
:mod:`~.sources` (loading). Their public names are re-exported here, so ``from
steer_cli.data.tasks import ...`` keeps working. Torch-, numpy- and datasets-free at import time.
"""

from __future__ import annotations

import difflib

from steer_cli.data.base import OWN_SPLITS, Example, RowError, Task, split_plan_of
from steer_cli.data.parsers import (
    PARSERS,
    canonical_number,
    exact_equal,
    named_parser,
    numbers_equal,
    parse_answer_number,
    parse_answer_tag,
    parse_exact,
    parse_letter,
    parse_number,
    parse_option12,
    parse_true_false,
    regex_parser,
)
from steer_cli.data.sources import load_listops, load_splits
from steer_cli.data.splits import SplitSpec, parse_split_spec
from steer_cli.data.templates import (
    ALPACA_PROMPT,
    ALPACA_PROMPT_INPUT,
    AQUA_PROMPT,
    ARC_PROMPT,
    BOOLQ_PROMPT,
    LISTOPS_PROMPT,
    LISTOPS_TARGET,
    WINOGRANDE_PROMPT,
    format_alpaca,
    format_aqua,
    format_arc,
    format_boolq,
    format_gsm8k,
    format_listops,
    format_winogrande,
    render,
    template_fields,
)
from steer_cli.errors import SteerError

__all__ = [
    "ALIASES",
    "ALPACA",
    "ALPACA_PROMPT",
    "ALPACA_PROMPT_INPUT",
    "AQUA",
    "AQUA_PROMPT",
    "ARC_CHALLENGE",
    "ARC_PROMPT",
    "BOOLQ",
    "BOOLQ_PROMPT",
    "GSM8K",
    "LISTOPS",
    "LISTOPS_LRA_MAX_LENGTH",
    "LISTOPS_PROMPT",
    "LISTOPS_TARGET",
    "LOCAL",
    "OWN_SPLITS",
    "PARSERS",
    "TASKS",
    "TWO_SPLIT_PLAN",
    "WINOGRANDE",
    "WINOGRANDE_PROMPT",
    "Example",
    "RowError",
    "SplitSpec",
    "Task",
    "canonical_number",
    "exact_equal",
    "get_task",
    "load_listops",
    "load_splits",
    "local_task",
    "named_parser",
    "numbers_equal",
    "parse_answer_number",
    "parse_answer_tag",
    "parse_exact",
    "parse_letter",
    "parse_number",
    "parse_option12",
    "parse_split_spec",
    "parse_true_false",
    "regex_parser",
    "task_for",
    "template_fields",
]

LISTOPS = Task(
    name="listops",
    max_new_tokens=16,
    formatter=format_listops,
    parser=parse_answer_tag,
    description="LRA ListOps (MAX/MIN/MED/SM over digits), seeded generator",
    fields=("expression", "value"),
)


# -------------------------------------------------------------------------- local task


def local_task(
    prompt: str,
    target: str,
    *,
    answer: str | None = None,
    parser: str = "exact",
    max_new_tokens: int = 64,
    epochs: float = 1.0,
    max_length: int = 1024,
) -> Task:
    """A task over users' own rows: ``prompt`` and ``target`` are ``str.format`` templates over
    the row's fields; ``parser`` is ``exact``, ``number``, ``letter`` or ``regex:<pattern>``.

    The gold answer is the parser applied to the rendered ``answer`` template (default: the
    target), so a target always scores as correct; a target the parser cannot read is a row error.
    """
    parse, equal = named_parser(parser)
    fields = tuple(dict.fromkeys(template_fields(prompt) + template_fields(target)))

    def formatter(row: dict) -> Example:
        rendered_target = render(target, row, "target")
        if answer is not None:
            rendered = render(answer, row, "answer")
            gold = parse(rendered) or rendered.strip()
        else:
            gold = parse(rendered_target)
            if gold is None:
                raise RowError(
                    template_fields(target)[0] if template_fields(target) else "target",
                    f"gives the target {rendered_target[:60]!r}, in which the {parser!r} parser "
                    "finds no answer (set data.local.answer)",
                )
        return Example(prompt=render(prompt, row, "prompt"), target=rendered_target, answer=gold)

    return Task(
        name="local",
        max_new_tokens=max_new_tokens,
        formatter=formatter,
        parser=parse,
        equal=equal,
        description="your own rows: data.local.prompt / target templates and a parser",
        source=None,
        splits=OWN_SPLITS,
        epochs=epochs,
        max_length=max_length,
        fields=fields,
    )


def _local_placeholder(row: dict) -> Example:
    raise SteerError(
        "the local task is built from a recipe's data.local section",
        "set data.local.prompt and data.local.target (str.format templates over your fields)",
    )


LOCAL = Task(
    name="local",
    max_new_tokens=64,
    formatter=_local_placeholder,
    parser=parse_exact,
    equal=exact_equal,
    description="your own rows: data.local.prompt / target templates and a parser",
    max_length=1024,
)


# -------------------------------------------------------------------------------- registry

TWO_SPLIT_PLAN = {"train": "train[20%:]", "validation": "train[:20%]"}
"""Appendix F.1 for a hub dataset with only train and test splits: "we split train set with
ratio 80:20 and random seed 42, and take the :20 split as validation set" (``train[:20%]`` is
what ``train_test_split(test_size=0.2, seed=42)`` returns as ``test``: :mod:`.splits`)."""

BOOLQ = Task(
    name="boolq",
    max_new_tokens=10,
    formatter=format_boolq,
    parser=parse_true_false,
    description="BoolQ: true/false questions about a passage",
    source="google/boolq",
    # Appendix F.1: two hub splits, so train is split 80:20 (seed 42) and its :20 part is
    # validation; the test split is the hub's whole validation split (3,270 questions).
    splits=split_plan_of(**TWO_SPLIT_PLAN, test="validation"),
    epochs=1,
    max_length=768,
    fields=("question", "passage", "answer"),
)
WINOGRANDE = Task(
    name="winogrande",
    max_new_tokens=10,
    formatter=format_winogrande,
    parser=parse_option12,
    description="Winogrande (debiased): fill the blank with option 1 or 2",
    source="allenai/winogrande",
    config="winogrande_debiased",
    # The hub's test split (1,767) is unlabeled, so it cannot be scored, unlike the paper's
    # Table 6 (test 1,770): the hub's validation split (1,267) is halved into our validation
    # (634) and test (633), seed 42. The train split is the hub's whole one (9,248).
    splits=split_plan_of(train="train", validation="validation[:50%]", test="validation[50%:]"),
    epochs=1,
    max_length=256,
    fields=("sentence", "option1", "option2", "answer"),
)
ARC_CHALLENGE = Task(
    name="arc-challenge",
    max_new_tokens=64,
    formatter=format_arc,
    parser=parse_letter,
    description="ARC-Challenge: grade-school science, multiple choice",
    source="allenai/ai2_arc",
    config="ARC-Challenge",
    splits=OWN_SPLITS,
    epochs=1,
    max_length=512,
    fields=("question", "choices", "answerKey"),
)
GSM8K = Task(
    name="gsm8k",
    max_new_tokens=384,
    formatter=format_gsm8k,
    parser=parse_answer_number,
    equal=numbers_equal,
    description="GSM8K: grade-school math word problems, rationale then 'Answer: <number>'",
    source="openai/gsm8k",
    config="main",
    # Appendix F.1, as BoolQ: validation is the :20 part of train (seed 42); test is the hub's
    # whole test split (1,319 problems).
    splits=split_plan_of(**TWO_SPLIT_PLAN, test="test"),
    epochs=3,
    max_length=768,
    fields=("question", "answer"),
)
AQUA = Task(
    name="aqua",
    max_new_tokens=384,
    formatter=format_aqua,
    parser=parse_letter,
    description="AQuA-RAT: algebra word problems, rationale then 'Answer: <letter>.'",
    source="deepmind/aqua_rat",
    config="raw",
    splits=OWN_SPLITS,
    epochs=1,
    max_length=768,
    fields=("question", "options", "rationale", "correct"),
)
ALPACA = Task(
    name="alpaca",
    max_new_tokens=512,
    formatter=format_alpaca,
    parser=parse_exact,
    equal=exact_equal,
    description="Alpaca-cleaned instruction tuning (judged AlpacaEval-style, not by exact match)",
    source="yahma/alpaca-cleaned",
    # One split on the hub: 1% each is held out for validation and test.
    splits=split_plan_of(train="train[2%:]", validation="train[:1%]", test="train[1%:2%]"),
    epochs=3,
    max_length=1024,
    fields=("instruction", "input", "output"),
)

# `data.listops.preset: lra` expressions are 500..2000 LRA tokens: about 1.2x that in BPE tokens.
LISTOPS_LRA_MAX_LENGTH = 4096

TASKS: dict[str, Task] = {
    task.name: task
    for task in (BOOLQ, WINOGRANDE, ARC_CHALLENGE, GSM8K, AQUA, LISTOPS, ALPACA, LOCAL)
}
ALIASES = {"arc": "arc-challenge", "arc_challenge": "arc-challenge", "aqua_rat": "aqua"}


def get_task(name: str) -> Task:
    """The registered task called ``name`` (case-insensitive); a :class:`SteerError` naming the
    closest valid task otherwise."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in TASKS:
        return TASKS[key]
    valid = ", ".join(sorted(TASKS))
    close = difflib.get_close_matches(key, list(TASKS), n=1, cutoff=0.0)
    hint = f"Did you mean {close[0]!r}? " if close else ""
    raise SteerError(f"unknown task {name!r}", hint=f"{hint}Valid tasks: {valid}.")


def task_for(data) -> Task:
    """The task a recipe's ``data`` section names; ``local`` is built from ``data.local``."""
    task = get_task(data.task)
    if task.name != "local":
        return task
    cfg = data.local
    if not cfg.prompt or not cfg.target:
        _local_placeholder({})
    return local_task(
        cfg.prompt,
        cfg.target,
        answer=cfg.answer,
        parser=cfg.parser,
        max_new_tokens=cfg.max_new_tokens,
        max_length=data.max_length or LOCAL.max_length,
    )
