"""The paper's tasks as data: exact templates and targets, answer parsers, the local task."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from steer_cli.cli import app
from steer_cli.data.tasks import (
    ALPACA,
    AQUA,
    ARC_CHALLENGE,
    BOOLQ,
    GSM8K,
    LISTOPS,
    TASKS,
    WINOGRANDE,
    Example,
    RowError,
    get_task,
    local_task,
    parse_answer_number,
    parse_letter,
    parse_number,
    parse_option12,
    parse_split_spec,
    parse_true_false,
    template_fields,
)
from steer_cli.errors import SteerError

# ------------------------------------------------------------------------ registry


def test_registry_has_the_papers_tasks_with_spec_defaults() -> None:
    assert set(TASKS) == {
        "boolq",
        "winogrande",
        "arc-challenge",
        "gsm8k",
        "aqua",
        "listops",
        "alpaca",
        "local",
    }
    epochs = {name: task.epochs for name, task in TASKS.items()}
    assert epochs == {
        "boolq": 1,
        "winogrande": 1,
        "arc-challenge": 1,
        "gsm8k": 3,
        "aqua": 1,
        "listops": 1,
        "alpaca": 3,
        "local": 1,
    }
    assert (BOOLQ.source, BOOLQ.config) == ("google/boolq", None)
    assert (WINOGRANDE.source, WINOGRANDE.config) == ("allenai/winogrande", "winogrande_debiased")
    assert (ARC_CHALLENGE.source, ARC_CHALLENGE.config) == ("allenai/ai2_arc", "ARC-Challenge")
    assert (GSM8K.source, GSM8K.config) == ("openai/gsm8k", "main")
    assert (AQUA.source, AQUA.config) == ("deepmind/aqua_rat", "raw")
    assert ALPACA.source == "yahma/alpaca-cleaned"
    # Appendix F.1: two hub splits -> train 80:20 (seed 42), its :20 part is validation.
    assert dict(BOOLQ.splits) == {
        "train": "train[20%:]",
        "validation": "train[:20%]",
        "test": "validation",
    }
    assert dict(GSM8K.splits) == {
        "train": "train[20%:]",
        "validation": "train[:20%]",
        "test": "test",
    }
    assert dict(WINOGRANDE.splits) == {  # the hub's test split is unlabeled
        "train": "train",
        "validation": "validation[:50%]",
        "test": "validation[50%:]",
    }
    for task in TASKS.values():
        assert task.max_new_tokens >= 1 and task.max_length >= 64
        for spec in task.splits.values():
            parse_split_spec(spec)
    assert get_task("ARC") is ARC_CHALLENGE and get_task("GSM8K") is GSM8K


@pytest.mark.parametrize(
    ("text", "source", "lo", "hi"),
    [
        ("train", "train", None, None),
        ("validation[:20%]", "validation", None, 0.2),
        ("test[20%:]", "test", 0.2, None),
        ("train[10%:30%]", "train", 0.1, 0.3),
        (" train [ 10 : 30 ] ", "train", 0.1, 0.3),
    ],
)
def test_parse_split_spec(text, source, lo, hi) -> None:
    spec = parse_split_spec(text)
    assert (spec.source, spec.lo, spec.hi) == (source, lo, hi)


@pytest.mark.parametrize("text", ["train[", "train[50%:20%]", "train[:120%]", "a b", ""])
def test_parse_split_spec_rejects(text) -> None:
    with pytest.raises(SteerError):
        parse_split_spec(text)


# ----------------------------------------------------------------------- templates


def test_boolq_template_and_target() -> None:
    ex = BOOLQ.format({"question": "is it", "passage": "It is.", "answer": True})
    assert ex == Example(
        prompt=(
            "Answer the question with a true/false based on the given passage.\n"
            "Passage: It is.\nQuestion: is it\n"
        ),
        target="Answer: True.",
        answer="true",
    )
    assert BOOLQ.format({"question": "q", "passage": "p", "answer": "false"}).target == (
        "Answer: False."
    )


def test_winogrande_template_and_target() -> None:
    row = {"sentence": "A _ b.", "option1": "x", "option2": "y", "answer": "2"}
    assert WINOGRANDE.format(row) == Example(
        prompt=(
            "Please choose the correct answer to fill in the blank to complete the given "
            "sentence: A _ b.\nOption1: x\nOption2: y\n"
        ),
        target="Answer: Option2.",
        answer="option2",
    )
    assert WINOGRANDE.format({**row, "answer": 1}).answer == "option1"


def test_arc_template_target_and_numeric_labels() -> None:
    row = {
        "question": "Which?",
        "choices": {"text": ["coal", "wind"], "label": ["A", "B"]},
        "answerKey": "B",
    }
    assert ARC_CHALLENGE.format(row) == Example(
        prompt=(
            "Answer the following multiple-choice question.\nQuestion: Which?\n(A) coal\n(B) wind\n"
        ),
        target="Answer: (B) wind.",
        answer="B",
    )
    numeric = {**row, "choices": {"text": ["sun", "sand."], "label": ["1", "2"]}, "answerKey": "2"}
    ex = ARC_CHALLENGE.format(numeric)
    assert "(A) sun\n(B) sand.\n" in ex.prompt
    assert (ex.target, ex.answer) == ("Answer: (B) sand.", "B")
    # CSV files may hold the choices JSON-encoded.
    encoded = {**row, "choices": '{"text": ["coal", "wind"], "label": ["A", "B"]}'}
    assert ARC_CHALLENGE.format(encoded) == ARC_CHALLENGE.format(row)


def test_gsm8k_template_target_and_rationale() -> None:
    row = {"question": "How many?", "answer": "3 * 4 = <<3*4=12>>12.\nSo 12 - 2 = 10.\n#### 1,010"}
    assert GSM8K.format(row) == Example(
        prompt="How many?\n",
        target="3 * 4 = <<3*4=12>>12.\nSo 12 - 2 = 10.\nAnswer: 1010",
        answer="1010",
    )


def test_aqua_template_and_target() -> None:
    row = {
        "question": "2 + 2?",
        "options": ["A)3", "B)4", "C)5", "D)6", "E)7"],
        "rationale": "2 + 2 = 4.",
        "correct": "B",
    }
    assert AQUA.format(row) == Example(
        prompt=(
            "Answer the following multiple-choice math question.\nQuestion: 2 + 2?\n"
            "A)3\nB)4\nC)5\nD)6\nE)7\n"
        ),
        target="2 + 2 = 4.\nAnswer: B.",
        answer="B",
    )


def test_alpaca_templates_with_and_without_input() -> None:
    with_input = ALPACA.format({"instruction": "Translate.", "input": "Hi", "output": "Salut"})
    assert with_input.prompt == (
        "Below is an instruction that describes a task, paired with an input that provides "
        "further context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nTranslate.\n\n### Input:\nHi\n\n### Response:\n"
    )
    assert with_input.target == "Salut"
    without = ALPACA.format({"instruction": "Say hi.", "input": "", "output": "Hi!"})
    assert without.prompt == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nSay hi.\n\n### Response:\n"
    )
    assert ALPACA.is_correct(" Hi! ", without) and not ALPACA.is_correct("Hello", without)


@pytest.mark.parametrize(
    ("task", "row", "field"),
    [
        (BOOLQ, {"question": "q", "passage": "p", "answer": "maybe"}, "answer"),
        (BOOLQ, {"question": "q", "answer": True}, "passage"),
        (WINOGRANDE, {"sentence": "s", "option1": "a", "option2": "b", "answer": ""}, "answer"),
        (ARC_CHALLENGE, {"question": "q", "answerKey": "A"}, "choices"),
        (
            ARC_CHALLENGE,
            {
                "question": "q",
                "choices": {"text": ["a", "b"], "label": ["A", "B"]},
                "answerKey": "E",
            },
            "answerKey",
        ),
        (GSM8K, {"question": "q", "answer": "no final line"}, "answer"),
        (GSM8K, {"question": "q", "answer": "r\n#### many"}, "answer"),
        (
            AQUA,
            {"question": "q", "options": ["3", "4"], "rationale": "r", "correct": "A"},
            "options",
        ),
        (
            AQUA,
            {"question": "q", "options": "not json", "rationale": "r", "correct": "A"},
            "options",
        ),
        (ALPACA, {"instruction": "i", "input": ""}, "output"),
        (ALPACA, {"instruction": "", "output": "o"}, "instruction"),
    ],
)
def test_malformed_rows_name_the_field(task, row, field) -> None:
    with pytest.raises(RowError) as info:
        task.format(row)
    assert info.value.field == field
    assert repr(field) in str(info.value)


def test_every_gold_target_parses_back_to_its_answer() -> None:
    rows = [
        (BOOLQ, {"question": "q", "passage": "p", "answer": False}),
        (WINOGRANDE, {"sentence": "s", "option1": "a", "option2": "b", "answer": "1"}),
        (
            ARC_CHALLENGE,
            {
                "question": "q",
                "choices": {"text": ["a", "b", "c"], "label": ["A", "B", "C"]},
                "answerKey": "C",
            },
        ),
        (GSM8K, {"question": "q", "answer": "r 3.5 and 7\n#### -2.5"}),
        (AQUA, {"question": "q", "options": ["A)1", "B)2"], "rationale": "r 1", "correct": "A"}),
        (LISTOPS, {"expression": "[MAX 1 2 ]"}),
        (ALPACA, {"instruction": "i", "output": "Answer: x"}),
    ]
    for task, row in rows:
        ex = task.format(row)
        assert task.parse(ex.target) == ex.answer, task.name
        assert task.is_correct(ex.target, ex), task.name


# -------------------------------------------------------------------------- parsers


@pytest.mark.parametrize(
    ("generated", "parsed"),
    [
        ("Answer: True.", "true"),
        ("answer: false", "false"),
        ("ANSWER:TRUE", "true"),
        ("True.", "true"),  # no 'answer:': accepted at the start
        ("I think so. Answer: False. Answer: True.", "true"),  # the last answer counts
        ("Answer: Truely", None),
        ("Answer: yes", None),
        ("It is true.", None),
        ("", None),
    ],
)
def test_parse_true_false(generated, parsed) -> None:
    assert parse_true_false(generated) == parsed
    assert BOOLQ.parse(generated) == parsed


@pytest.mark.parametrize(
    ("generated", "parsed"),
    [
        ("Answer: Option1.", "option1"),
        ("answer: option 2", "option2"),
        ("Option2", "option2"),
        ("Answer: Option3.", None),
        ("Answer: the first one", None),
        ("", None),
    ],
)
def test_parse_option12(generated, parsed) -> None:
    assert parse_option12(generated) == parsed


@pytest.mark.parametrize(
    ("generated", "parsed"),
    [
        ("Answer: (C) wind.", "C"),
        ("Answer: c.", "C"),
        ("Answer: B", "B"),
        ("Reasoning...\nAnswer: D.", "D"),
        ("(B) wind", "B"),  # no 'answer:': a marked letter at the start
        ("B)", "B"),
        ("A", "A"),
        ("Answer: All of them", None),
        ("A cat sat.", None),
        ("The answer is unclear", None),
        ("", None),
    ],
)
def test_parse_letter(generated, parsed) -> None:
    assert parse_letter(generated) == parsed
    assert ARC_CHALLENGE.parse(generated) == AQUA.parse(generated) == parsed


@pytest.mark.parametrize(
    ("generated", "parsed"),
    [
        ("So 3 + 4 = 7.\nAnswer: 7", "7"),
        ("Answer: $1,200.", "1200"),
        ("Answer: -3.50", "-3.5"),
        ("Answer: 5 + 3 = 8", "8"),  # the last number on the answer line
        ("Answer: 12\nMore text 99", "12"),
        ("answer:\n42", "42"),
        ("Answer: 1 Answer: 2", "2"),
        ("Answer: .5", "0.5"),
        ("The result is 7", None),  # no 'answer:'
        ("Answer: seven", None),
        ("", None),
    ],
)
def test_parse_answer_number(generated, parsed) -> None:
    assert parse_answer_number(generated) == parsed
    assert GSM8K.parse(generated) == parsed


def test_gsm8k_tolerance() -> None:
    ex = GSM8K.format({"question": "q", "answer": "r\n#### 2.5"})
    assert GSM8K.is_correct("Answer: 2.50004", ex)
    assert not GSM8K.is_correct("Answer: 2.5002", ex)
    assert not GSM8K.is_correct("2.5", ex)


def test_parse_number_without_answer_takes_the_last() -> None:
    assert parse_number("first 3 then 4") == "4"
    assert parse_number("Answer: 3 then 4\nlater 9") == "4"
    assert parse_number("none") is None


# ------------------------------------------------------------------------ local task


def test_template_fields() -> None:
    assert template_fields("{a} and {b[0]} and {a} {c.d}") == ("a", "b", "c")
    with pytest.raises(ValueError):
        template_fields("{0}")
    with pytest.raises(ValueError):
        template_fields("{unclosed")


def test_local_task_templates_and_parsers() -> None:
    task = local_task(
        "Review: {text}\nSentiment?\n", "Answer: {label}", parser="regex:Answer: (\\w+)"
    )
    ex = task.format({"text": "Great.", "label": "positive", "other": 1})
    assert ex == Example("Review: Great.\nSentiment?\n", "Answer: positive", "positive")
    assert task.is_correct("Answer: positive!", ex)
    assert not task.is_correct("positive", ex)
    assert task.fields == ("text", "label")

    number = local_task("{q}", "{n}", parser="number")
    ex = number.format({"q": "1/4?", "n": 0.25})
    assert number.is_correct("Answer: 0.25001", ex) and not number.is_correct("0.3", ex)

    letter = local_task("{q}", "Answer: ({k})", parser="letter")
    assert letter.format({"q": "?", "k": "b"}).answer == "B"

    exact = local_task("{q}", "{a}", answer="{a}")
    assert exact.is_correct("  two words ", exact.format({"q": "?", "a": "two  words"}))


def test_local_task_row_errors() -> None:
    task = local_task("{text}", "Answer: {label}", parser="letter")
    with pytest.raises(RowError) as info:
        task.format({"label": "A"})
    assert info.value.field == "text"
    with pytest.raises(RowError, match="in which the 'letter' parser finds no answer"):
        task.format({"text": "t", "label": "not a letter"})
    with pytest.raises(SteerError, match=re.escape("data.local.parser regex '(' does not compile")):
        local_task("{a}", "{b}", parser="regex:(")
    with pytest.raises(SteerError, match="unknown answer parser 'fuzzy'"):
        local_task("{a}", "{b}", parser="fuzzy")


def test_tasks_command_lists_every_task():
    result = CliRunner().invoke(app, ["tasks"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for fragment in (
        "boolq",
        "google/boolq",
        "train[20%:]",
        "winogrande_debiased",
        "arc-challenge",
        "openai/gsm8k",
        "aqua",
        "listops",
        "alpaca",
        "local",
    ):
        assert fragment in result.output, fragment
