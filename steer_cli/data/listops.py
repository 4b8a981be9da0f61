"""ListOps (Nangia & Bowman 2018, as used in Long Range Arena): parser, evaluator, seeded generator.

An expression is a tree of operators over digits, written the way LRA writes it::

    [MAX 2 9 [MIN 4 7 ] 0 ]

Operators: ``MAX``, ``MIN``, ``MED`` (median, ``int(np.median(args))`` as in LRA: for an even
number of arguments the mean of the two middle values, truncated) and ``SM`` (sum modulo 10).
Values are the digits 0-9. An operator opens with ``[OP`` and closes with ``]``; tokens are
separated by single spaces. The value of every expression is therefore a digit 0-9.

The generator follows LRA's recursive shape (``generate_tree`` in LRA's ``listops.py``): an
operator draws its number of arguments uniformly from ``2..arity``; each argument is, with
probability ``branch_p`` and only while the depth budget allows, a nested operator, otherwise a
digit. Unlike LRA, the root is always an operator, expressions are unique, and an RNG of our own
(``random.Random(seed)``) is used, never the global one. Pure Python, no numpy.
"""

from __future__ import annotations

import hashlib
import random
import re
import statistics
from collections.abc import Container
from dataclasses import dataclass

OPERATORS: tuple[str, ...] = ("MAX", "MIN", "MED", "SM")
"""The operator names, in the order the generator draws from."""

DEFAULT_DEPTH = 2
DEFAULT_ARITY = 4
DEFAULT_BRANCH_P = 0.25  # LRA's VALUE_P: the chance an argument is a nested operator

# Long Range Arena's ListOps settings (MAX_DEPTH, MAX_ARGS, VALUE_P, and the 500..2000 token
# length window of its released data), for `data.listops.preset: lra`.
LRA = {"depth": 10, "arity": 10, "branch_p": 0.25, "min_length": 500, "max_length": 2000}

# How many draws in a row may fail to give a new expression before the generator gives up
# (the requested count is more than the (depth, arity, max_length) space can offer).
_MAX_MISSES = 100_000


@dataclass(frozen=True)
class Node:
    """One operator application: ``op`` over ``args`` (digits or nested nodes)."""

    op: str
    args: tuple[Node | int, ...]


def _apply(op: str, args: list[int]) -> int:
    if op == "MAX":
        return max(args)
    if op == "MIN":
        return min(args)
    if op == "MED":
        # int(np.median(args)): float median, truncated; all values are non-negative.
        return int(statistics.median(args))
    if op == "SM":
        return sum(args) % 10
    raise AssertionError(f"unknown operator {op}")  # guarded by the parser


_TOKEN = re.compile(r"\[[A-Za-z]*|\]|[^\s\[\]]+")


def parse(expression: str) -> Node | int:
    """Parse an expression into a tree (a bare digit parses to an ``int``).

    Raises ``ValueError`` naming the character position of the first problem.
    """
    if not isinstance(expression, str):
        raise ValueError(f"expected a string, got {type(expression).__name__}")
    stack: list[tuple[str, int, list[Node | int]]] = []  # (op, position, args so far)
    root: Node | int | None = None
    for match in _TOKEN.finditer(expression):
        token, pos = match.group(), match.start()
        if root is not None:
            raise ValueError(f"unexpected {token!r} at position {pos}: expression already ended")
        if token.startswith("["):
            op = token[1:]
            if op not in OPERATORS:
                raise ValueError(
                    f"unknown operator {token!r} at position {pos}; "
                    f"expected one of {', '.join('[' + o for o in OPERATORS)}"
                )
            stack.append((op, pos, []))
            continue
        if token == "]":
            if not stack:
                raise ValueError(f"unmatched ']' at position {pos}")
            op, op_pos, args = stack.pop()
            if not args:
                raise ValueError(f"operator [{op} at position {op_pos} has no arguments")
            item: Node | int = Node(op, tuple(args))
        elif len(token) == 1 and token in "0123456789":
            item = int(token)
        else:
            raise ValueError(f"invalid token {token!r} at position {pos}: values are digits 0-9")
        if stack:
            stack[-1][2].append(item)
        else:
            root = item
    if stack:
        op, op_pos, _ = stack[-1]
        raise ValueError(
            f"operator [{op} at position {op_pos} is never closed "
            f"(input ends at position {len(expression)})"
        )
    if root is None:
        raise ValueError("empty expression at position 0")
    return root


def value_of(tree: Node | int) -> int:
    """The value of a parsed tree (iterative, so very deep trees are fine)."""
    if isinstance(tree, int):
        return tree
    # Post-order walk with an explicit stack: (node, evaluated children so far).
    stack: list[tuple[Node, list[int]]] = [(tree, [])]
    while True:
        node, done = stack[-1]
        if len(done) < len(node.args):
            child = node.args[len(done)]
            if isinstance(child, int):
                done.append(child)
            else:
                stack.append((child, []))
            continue
        result = _apply(node.op, done)
        stack.pop()
        if not stack:
            return result
        stack[-1][1].append(result)


def evaluate(expression: str) -> int:
    """Parse and evaluate an expression: ``evaluate("[MAX 2 9 [MIN 4 7 ] 0 ]") == 9``.

    Raises ``ValueError`` (with the character position) on malformed input.
    """
    return value_of(parse(expression))


def depth_of(tree: Node | int) -> int:
    """Operator nesting depth: 0 for a bare digit, 1 for a flat ``[OP ...]``."""
    if isinstance(tree, int):
        return 0
    return 1 + max(depth_of(arg) for arg in tree.args)


def max_arity_of(tree: Node | int) -> int:
    """The largest number of arguments of any operator in the tree (0 for a bare digit)."""
    if isinstance(tree, int):
        return 0
    return max(len(tree.args), *(max_arity_of(arg) for arg in tree.args))


def normalize(expression: str) -> str:
    """Canonical spacing; also accepts LRA's released TSV form, whose tokens carry the
    parentheses of the Python tuples that built them (``( ( [MAX 2 ) 9 ) ]``)."""
    tokens = expression.replace("(", " ").replace(")", " ").split()
    return " ".join(tokens)


def _check(
    depth: int, arity: int, branch_p: float, max_length: int | None, min_length: int | None = None
) -> None:
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    if not isinstance(arity, int) or arity < 2:
        raise ValueError(f"arity must be an integer >= 2, got {arity!r}")
    if not 0.0 <= branch_p <= 1.0:
        raise ValueError(f"branch_p must be in [0, 1], got {branch_p!r}")
    if max_length is not None and max_length < 4:
        raise ValueError(
            f"max_length must be >= 4 (the shortest expression, '[MAX 1 2 ]', has 4 tokens), "
            f"got {max_length!r}"
        )
    if min_length is not None and max_length is not None and min_length > max_length:
        raise ValueError(f"min_length {min_length} is above max_length {max_length}")


def _tree(rng: random.Random, level: int, depth: int, arity: int, branch_p: float) -> list[str]:
    """Tokens of one operator at nesting ``level`` (root = 1), LRA's draw order."""
    tokens: list[str] = []
    for _ in range(rng.randint(2, arity)):
        if level < depth and rng.random() < branch_p:
            tokens.extend(_tree(rng, level + 1, depth, arity, branch_p))
        else:
            tokens.append(str(rng.randrange(10)))
    op = rng.choice(OPERATORS)
    return ["[" + op, *tokens, "]"]


def _stream(
    count: int,
    rng: random.Random,
    depth: int,
    arity: int,
    branch_p: float,
    max_length: int | None,
    min_length: int | None = None,
    exclude: Container[str] = frozenset(),
) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    misses = 0
    while len(out) < count:
        tokens = _tree(rng, 1, depth, arity, branch_p)
        text = " ".join(tokens)
        too_long = max_length is not None and len(tokens) > max_length
        too_short = min_length is not None and len(tokens) < min_length
        if too_long or too_short or text in seen or text in exclude:
            misses += 1
            if misses >= _MAX_MISSES:
                raise ValueError(
                    f"found only {len(out)} unique expressions of the {count} asked for "
                    f"(depth={depth}, arity={arity}, branch_p={branch_p}, "
                    f"min_length={min_length}, max_length={max_length}); "
                    "ask for fewer or widen the space"
                )
            continue
        misses = 0
        seen.add(text)
        out.append(text)
    return out


def generate(
    count: int,
    *,
    seed: int,
    depth: int = DEFAULT_DEPTH,
    arity: int = DEFAULT_ARITY,
    branch_p: float = DEFAULT_BRANCH_P,
    max_length: int | None = None,
    min_length: int | None = None,
    exclude: Container[str] = frozenset(),
) -> list[str]:
    """``count`` unique random expressions, deterministic in all arguments.

    - ``depth``: the most operators nested inside one another (1 = flat ``[OP d d ]``).
      The root is always an operator.
    - ``arity``: each operator has between 2 and ``arity`` arguments (uniform).
    - ``branch_p``: chance that an argument is a nested operator (while depth allows);
      LRA's ``VALUE_P = 0.25``.
    - ``max_length``: if set, expressions longer than this many tokens (``[OP``, digits and
      ``]`` each count one, as in LRA) are redrawn.
    - ``min_length``: if set, shorter expressions are redrawn (LRA keeps 500..2000 tokens).
    - ``exclude``: expressions never to return (redrawn), e.g. every one some train split holds.

    The stream is prefix-stable: ``generate(n, ...)`` is the first ``n`` of ``generate(m, ...)``
    for ``m >= n``. Raises ``ValueError`` on bad arguments, or when the space has fewer unique
    expressions than asked for.
    """
    if not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be an integer >= 0, got {count!r}")
    _check(depth, arity, branch_p, max_length, min_length)
    rng = random.Random(seed)
    return _stream(count, rng, depth, arity, branch_p, max_length, min_length, exclude)


def seed_for(name: str) -> int:
    """A generator seed named rather than numbered (SHA-256 of ``name``, 64 bits): a stream of
    its own, which no recipe's ``data.seed`` picks by accident."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")


def longest(depth: int, arity: int) -> int:
    """The most tokens an expression of this depth and arity can have: every argument nested,
    ``[OP`` + ``arity`` arguments + ``]`` at each level."""
    tokens = arity + 2
    for _ in range(depth - 1):
        tokens = arity * tokens + 2
    return tokens


SETTINGS: tuple[str, ...] = ("depth", "arity", "branch_p", "min_length", "max_length")
"""The generator's settings besides the seed (what ``data.listops`` sets)."""


@dataclass(frozen=True)
class Stream:
    """The first ``count`` expressions of one seeded generator stream.

    :func:`make_splits` cuts all three splits from one such stream, so every split it makes
    with sizes summing to at most ``count`` (at this seed and these settings) lies inside.
    """

    seed: int
    count: int
    depth: int = DEFAULT_DEPTH
    arity: int = DEFAULT_ARITY
    branch_p: float = DEFAULT_BRANCH_P
    min_length: int | None = None
    max_length: int | None = None

    def expressions(self, exclude: Container[str] = frozenset()) -> list[str]:
        return generate(
            self.count,
            seed=self.seed,
            depth=self.depth,
            arity=self.arity,
            branch_p=self.branch_p,
            max_length=self.max_length,
            min_length=self.min_length,
            exclude=exclude,
        )

    def lengths(self) -> tuple[int, int]:
        """The fewest and most tokens its expressions can have."""
        most = longest(self.depth, self.arity)
        if self.max_length is not None:
            most = min(most, self.max_length)
        return max(4, self.min_length or 0), most

    def may_share(self, other: Stream) -> bool:
        """Whether the two streams can hold a common expression: only if their length windows
        meet (a digit-only depth-2 expression never has LRA's 500 tokens)."""
        (lo, hi), (other_lo, other_hi) = self.lengths(), other.lengths()
        return lo <= other_hi and other_lo <= hi

    def holds(self, sizes: int, *, seed: int, settings: dict) -> bool:
        """Whether ``make_splits`` with split sizes summing to ``sizes`` at ``seed`` and these
        generator ``settings`` (every key of :data:`SETTINGS`) cuts its splits from inside this
        stream."""
        same = all(settings.get(key) == getattr(self, key) for key in SETTINGS)
        return same and seed == self.seed and sizes <= self.count


SPLITS: tuple[str, ...] = ("train", "validation", "test")


def make_splits(
    train: int,
    validation: int,
    test: int,
    *,
    seed: int,
    depth: int = DEFAULT_DEPTH,
    arity: int = DEFAULT_ARITY,
    branch_p: float = DEFAULT_BRANCH_P,
    max_length: int | None = None,
    min_length: int | None = None,
) -> dict[str, list[dict]]:
    """Train/validation/test rows ``{"expression": str, "value": int}``.

    All three come from one seeded stream of unique expressions, so no expression is in two
    splits, and the same arguments give the same rows. The stream is cut test first, then
    validation, then train: changing the train size leaves the evaluation splits as they were,
    and a larger train split extends a smaller one.
    """
    sizes = {"train": train, "validation": validation, "test": test}
    for name, size in sizes.items():
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"{name} size must be an integer >= 0, got {size!r}")
    expressions = generate(
        train + validation + test,
        seed=seed,
        depth=depth,
        arity=arity,
        branch_p=branch_p,
        max_length=max_length,
        min_length=min_length,
    )
    cut: dict[str, list[str]] = {}
    start = 0
    for name in ("test", "validation", "train"):
        cut[name] = expressions[start : start + sizes[name]]
        start += sizes[name]
    return {name: [{"expression": e, "value": evaluate(e)} for e in cut[name]] for name in SPLITS}
