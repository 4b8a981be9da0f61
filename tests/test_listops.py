"""ListOps generator, evaluator and the task wrapper around it (pure Python, fast)."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from steer_cli.data.listops import (
    Node,
    depth_of,
    evaluate,
    generate,
    make_splits,
    max_arity_of,
    normalize,
    parse,
)
from steer_cli.data.tasks import (
    LISTOPS,
    TASKS,
    Example,
    get_task,
    load_listops,
    parse_answer_tag,
)
from steer_cli.errors import SteerError

# ------------------------------------------------------------------------------ evaluate


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
        ("[MAX 1 3 2 ]", 3),
        ("[MIN 5 3 8 ]", 3),
        ("[MIN 0 0 ]", 0),
        ("[MED 1 7 3 ]", 3),  # odd count: the middle value
        ("[MED 1 2 ]", 1),  # even count: (1 + 2) / 2 = 1.5 -> 1
        ("[MED 9 2 4 7 ]", 5),  # sorted 2 4 7 9: (4 + 7) / 2 = 5.5 -> 5
        ("[MED 3 5 ]", 4),  # (3 + 5) / 2 = 4.0
        ("[SM 5 7 ]", 2),  # 12 % 10
        ("[SM 9 9 9 9 ]", 6),  # 36 % 10
        ("[SM 0 0 ]", 0),
        ("[SM [MAX 9 1 ] [MIN 8 9 ] 5 ]", 2),  # 9 + 8 + 5 = 22
        ("[MED [SM 6 6 ] [MAX 0 3 ] 8 [MIN 9 7 ] ]", 5),  # 2 3 8 7 -> 2 3 7 8 -> 5
        ("[MIN [MAX [SM 4 4 ] 1 ] 9 ]", 8),  # depth 3
        ("7", 7),  # a bare digit is a valid (LRA) expression
    ],
)
def test_evaluate_hand_computed(expression: str, value: int) -> None:
    assert evaluate(expression) == value


def test_parse_tree_shape() -> None:
    tree = parse("[MAX 2 9 [MIN 4 7 ] 0 ]")
    assert tree == Node("MAX", (2, 9, Node("MIN", (4, 7)), 0))
    assert depth_of(tree) == 2
    assert max_arity_of(tree) == 4


@pytest.mark.parametrize(
    ("expression", "position"),
    [
        ("", "empty expression at position 0"),
        ("[MAX 1 2", "operator [MAX at position 0 is never closed"),  # names the open operator
        ("[MAX 1 2 ] ]", "unexpected ']' at position 11: expression already ended"),
        ("[MAX 1 2 ] 3", "unexpected '3' at position 11: expression already ended"),
        ("[FOO 1 2 ]", "unknown operator '[FOO' at position 0"),
        ("[MAX 1 12 ]", "invalid token '12' at position 7: values are digits 0-9"),
        ("[MAX 1 x ]", "invalid token 'x' at position 7"),
        ("[MAX ]", "operator [MAX at position 0 has no arguments"),
        ("]", "unmatched ']' at position 0"),
    ],
)
def test_evaluate_malformed_names_position(expression: str, position: str) -> None:
    with pytest.raises(ValueError, match=re.escape(position)):
        evaluate(expression)


def test_normalize_lra_release_form() -> None:
    raw = "( ( ( [MAX 2 ) 9 ) ( ( [MIN 4 ) 7 ) ] ) ]"
    assert normalize(raw) == "[MAX 2 9 [MIN 4 7 ] ]"
    assert evaluate(normalize(raw)) == 9
    assert normalize("[MAX 2 9 ]") == "[MAX 2 9 ]"


# ----------------------------------------------------------------------------- generator


def test_generate_is_deterministic_and_seeded() -> None:
    a = generate(200, seed=3)
    assert a == generate(200, seed=3)
    assert a != generate(200, seed=4)
    assert generate(50, seed=3) == a[:50]  # prefix-stable


def test_generate_does_not_touch_global_rng() -> None:
    import random

    random.seed(123)
    before = random.random()
    random.seed(123)
    generate(100, seed=0)
    assert random.random() == before


@pytest.mark.parametrize(("depth", "arity"), [(1, 2), (1, 5), (2, 4), (3, 3), (4, 6)])
def test_generate_respects_depth_and_arity(depth: int, arity: int) -> None:
    expressions = generate(300, seed=1, depth=depth, arity=arity, branch_p=0.6)
    assert len(set(expressions)) == len(expressions)
    depths, arities = Counter(), Counter()
    for expression in expressions:
        tree = parse(expression)
        assert isinstance(tree, Node)  # the root is always an operator
        assert 1 <= depth_of(tree) <= depth
        assert _min_arity(tree) >= 2 and max_arity_of(tree) <= arity
        assert " ".join(expression.split()) == expression  # single spaces
        depths[depth_of(tree)] += 1
        arities[max_arity_of(tree)] += 1
    assert max(depths) == depth  # the bounds are reached, not just respected
    assert max(arities) == arity


def _min_arity(tree: Node | int) -> int:
    if isinstance(tree, int):
        return 10**9
    return min(len(tree.args), *(_min_arity(arg) for arg in tree.args))


def test_generate_branch_p_and_max_length() -> None:
    flat = generate(100, seed=0, depth=3, branch_p=0.0)
    assert all(depth_of(parse(e)) == 1 for e in flat)
    short = generate(200, seed=0, depth=3, arity=5, branch_p=0.5, max_length=8)
    assert all(len(e.split()) <= 8 for e in short)


def test_generate_rejects_impossible_and_bad_arguments() -> None:
    # depth 1, arity 2: 4 operators x 100 digit pairs = 400 unique expressions.
    assert len(generate(400, seed=0, depth=1, arity=2)) == 400
    with pytest.raises(ValueError, match="found only 400 unique expressions of the 401 asked for"):
        generate(401, seed=0, depth=1, arity=2)
    for kwargs in ({"depth": 0}, {"arity": 1}, {"branch_p": 1.5}, {"max_length": 3}):
        with pytest.raises(ValueError):
            generate(1, seed=0, **kwargs)


def test_make_splits_disjoint_deterministic_and_correct() -> None:
    splits = make_splits(500, 100, 100, seed=42, depth=2, arity=4)
    assert list(splits) == ["train", "validation", "test"]
    assert [len(rows) for rows in splits.values()] == [500, 100, 100]
    sets = {name: {row["expression"] for row in rows} for name, rows in splits.items()}
    assert sum(map(len, sets.values())) == 700  # unique within and across splits
    assert not (sets["train"] & sets["validation"] or sets["train"] & sets["test"])
    assert not sets["validation"] & sets["test"]
    for rows in splits.values():
        for row in rows:
            assert set(row) == {"expression", "value"}
            assert row["value"] == evaluate(row["expression"])
    assert splits == make_splits(500, 100, 100, seed=42, depth=2, arity=4)
    assert splits != make_splits(500, 100, 100, seed=43, depth=2, arity=4)
    # Evaluation splits do not move when only the train size changes.
    smaller = make_splits(50, 100, 100, seed=42, depth=2, arity=4)
    assert smaller["validation"] == splits["validation"]
    assert smaller["test"] == splits["test"]
    assert smaller["train"] == splits["train"][:50]


def test_majority_class_baseline_is_low() -> None:
    rows = make_splits(5000, 0, 0, seed=42, depth=2, arity=4)["train"]
    counts = Counter(row["value"] for row in rows)
    assert set(counts) == set(range(10))
    majority_share = max(counts.values()) / len(rows)
    assert majority_share < 0.40


# ---------------------------------------------------------------------------------- task


def test_listops_prompt_and_target_exact() -> None:
    example = LISTOPS.format({"expression": "[MAX 2 9 [MIN 4 7 ] 0 ]", "value": 9})
    assert example == Example(
        prompt=(
            "Evaluate the value of the following nested list expression.\n"
            "Return only the final numeric result inside <answer>...</answer>.\n"
            "Expression: [MAX 2 9 [MIN 4 7 ] 0 ]\n"
        ),
        target="<answer>9</answer>",
        answer="9",
    )
    # A missing value is computed; LRA's release form is normalized.
    assert LISTOPS.format({"expression": "( ( [SM 5 ) 7 ) ]"}).target == "<answer>2</answer>"


def test_listops_format_bad_rows() -> None:
    with pytest.raises(
        SteerError, match=re.escape("a ListOps row has no 'expression' field (fields: text)")
    ):
        LISTOPS.format({"text": "[MAX 1 2 ]"})
    with pytest.raises(
        SteerError,
        match=re.escape("malformed ListOps expression '[MAX 1 2': operator [MAX at position 0"),
    ):
        LISTOPS.format({"expression": "[MAX 1 2"})


@pytest.mark.parametrize(
    ("generated", "parsed"),
    [
        ("<answer>7</answer>", "7"),
        ("<answer> 7 </answer>", "7"),
        ("<answer>\n7\n</answer>", "7"),
        ("< answer >7< / answer >", "7"),
        ("<ANSWER>7</ANSWER>", "7"),
        ("<answer>07</answer>", "7"),
        ("The result is <answer>3</answer>.", "3"),
        ("<answer>3</answer> <answer>4</answer>", "3"),  # the first pair counts
        ("<answer>7", "7"),  # cut off before the closing tag
        ("<answer> 7</", "7"),
        ("<answer>7 because", "7"),
        ("<answer>7.5", None),
        ("<answer>7x", None),
        ("<answer>seven</answer>", None),
        ("<answer>7.0</answer>", None),
        ("<answer></answer>", None),
        ("<answer>3 4</answer>", None),
        ("<answer>x</answer> <answer>4</answer>", None),
        ("7", None),  # no tags at all
        ("answer: 7", None),
        ("", None),
        ("</answer>7", None),
    ],
)
def test_parse_answer_tag(generated: str, parsed: str | None) -> None:
    assert parse_answer_tag(generated) == parsed
    assert LISTOPS.parse(generated) == parsed


def test_is_correct() -> None:
    example = LISTOPS.format({"expression": "[MIN 4 7 ]", "value": 4})
    assert LISTOPS.is_correct("<answer>4</answer>", example)
    assert LISTOPS.is_correct(" <answer> 4 </answer>", example)
    assert not LISTOPS.is_correct("<answer>7</answer>", example)
    assert not LISTOPS.is_correct("4", example)
    # The gold target always parses back to the gold answer.
    for row in make_splits(200, 0, 0, seed=0)["train"]:
        ex = LISTOPS.format(row)
        assert LISTOPS.is_correct(ex.target, ex)


def test_registry_and_get_task() -> None:
    assert TASKS["listops"] is LISTOPS
    assert get_task("listops") is LISTOPS
    assert get_task("ListOps") is LISTOPS
    assert LISTOPS.max_new_tokens == 16
    with pytest.raises(SteerError) as info:
        get_task("listop")
    assert "unknown task 'listop'" in info.value.message
    assert "'listops'" in (info.value.hint or "")


def test_load_listops() -> None:
    splits = load_listops(train=20, validation=5, test=5, seed=1)
    assert [len(v) for v in splits.values()] == [20, 5, 5]
    assert all(isinstance(ex, Example) for v in splits.values() for ex in v)
    rows = make_splits(20, 5, 5, seed=1)
    assert splits["test"] == [LISTOPS.format(row) for row in rows["test"]]
    with pytest.raises(SteerError, match="cannot generate ListOps data: found only 400 unique"):
        load_listops(train=401, validation=0, test=0, depth=1, arity=2)


def test_data_modules_import_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, steer_cli.data.tasks, steer_cli.data.listops; "
        "assert not {'torch', 'transformers', 'numpy'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
