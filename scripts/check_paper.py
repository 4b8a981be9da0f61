"""``make check-paper``: steer's copy of the paper's numbers against the paper's own text.

    make check-paper                          # the text at ../shared/reference/002_*.txt
    make check-paper PAPER=path/to/paper.txt  # or a folder holding one 002_*.txt

Checks that every table block of ``tests/data/paper_tables.md`` (which ``tests/test_published.py``
compares with ``steer compare --paper``, cell by cell) and every prose figure quoted in
``steer_cli.published.PROSE`` appears verbatim in the paper's text. The text is not part of the
repository, so ``make test`` does without it and CI (``.ci/run``) runs this after ``make test``.
Without the text it fails: a check that was asked for and could not run has not passed.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY = ROOT / "tests" / "data" / "paper_tables.md"
DEFAULT = ROOT.parent / "shared" / "reference"
PATTERN = "002_*.txt"


def blocks(copy: Path = COPY) -> dict[str, list[str]]:
    """The copy's table lines, per ``## name`` heading."""
    found: dict[str, list[str]] = {}
    name = None
    for line in copy.read_text().splitlines():
        if line.startswith("## "):
            name = line[3:].strip()
            found[name] = []
        elif name and line.startswith("|"):
            found[name].append(line)
    return found


def paper_text(where: Path) -> Path:
    """The paper's text: ``where`` itself, or the one ``002_*.txt`` in it; else a clear error."""
    if where.is_file():
        return where
    found = sorted(where.glob(PATTERN)) if where.is_dir() else []
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise FileNotFoundError(
            f"the paper's text is not at {where} ({what} {PATTERN} there): it is what "
            f"{COPY.relative_to(ROOT)} is checked against; give it with "
            "`make check-paper PAPER=FILE_OR_FOLDER`"
        )
    return found[0]


def problems(paper: str, copy: Path = COPY) -> list[str]:
    """What in the copy (and in ``published.PROSE``) is not the paper's text; empty if all is."""
    from steer_cli.published import PROSE

    out = []
    for name, lines in blocks(copy).items():
        if not lines:
            out.append(f"{name} in {copy.name} has no table lines")
        elif "\n".join(lines) not in paper:
            out.append(f"{name} in {copy.name} is not the paper's text: copy it again")
    for name, figure in PROSE.items():
        if figure.quote not in paper:
            out.append(f"steer_cli.published.PROSE[{name!r}]'s quote is not in the paper's text")
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    where = Path(args[0]) if args and args[0] else DEFAULT
    try:
        path = paper_text(where)
    except FileNotFoundError as err:
        print(f"check-paper: error: {err}", file=sys.stderr)
        return 1
    found = problems(path.read_text())
    for problem in found:
        print(f"check-paper: error: {problem}", file=sys.stderr)
    if not found:
        from steer_cli.published import PROSE

        print(
            f"check-paper: {len(blocks())} table blocks and {len(PROSE)} prose figures are "
            f"the paper's text ({path})"
        )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
