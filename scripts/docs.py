"""The documentation pages whose source is the code, generated from it.

    make docs                        # = python scripts/docs.py --write, then mkdocs build --strict
    python scripts/docs.py --check   # exit 1, naming each stale page, if the code moved on

Writes ``docs/reference/recipe.md`` (every recipe key from the pydantic schema: type, default,
allowed values, its description), ``docs/reference/methods.md`` (the presets, with their
trainable parameters on the embedded model, counted on its meta-device skeleton: no weights are
read), ``docs/reference/tasks.md`` (the task registry and the bundled lm-eval tasks),
``docs/reference/cli.md`` (every command and option: Typer's ``utils docs`` on the app) and the
layout table of ``docs/architecture.md`` (every package and module of ``steer_cli`` with the
first sentence of its docstring). A test runs ``--check``, so a new key, method, task, command
or module cannot go undocumented.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # steer_cli, from a checkout
sys.path.insert(0, str(ROOT / "scripts"))  # scripts/ is not a package

from docs_markdown import generated, rst, table, text  # noqa: E402
from docs_reference import (  # noqa: E402, F401  (the tests reach them here)
    PACKAGE,
    method_counts,
    methods_page,
    recipe_keys,
    recipe_page,
    tasks_page,
)

DOCS = ROOT / "docs"
LAYOUT_BEGIN, LAYOUT_END = "<!-- docs:layout -->", "<!-- /docs:layout -->"
ARCHITECTURE = "architecture.md"


# -- the command line --------------------------------------------------------------------------


def cli_page() -> str:
    """Typer's own reference (``typer steer_cli.cli utils docs``), run in a fresh process."""
    import subprocess

    command = [sys.executable, "-m", "typer", "steer_cli.cli", "utils", "docs", "--name", "steer"]
    done = subprocess.run(
        [*command, "--title", "Command line"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if done.returncode:
        sys.exit(f"docs: {' '.join(command)} failed:\n{done.stderr[-2000:]}")
    title, rest = done.stdout.split("\n", 1)
    intro = (
        "Every command and option, as `--help` prints them. Errors you can fix print one or two "
        "lines and exit 1; `STEER_DEBUG=1` shows the traceback. With `--json`, a command prints "
        "only JSON on stdout (see [Getting started](../getting-started.md#scripting-json))."
    )
    return f"{title}\n\n{generated('the Typer app (steer_cli/cli/)')}\n\n{intro}\n{rest}"


# -- the layout --------------------------------------------------------------------------------


def first_sentence(path: Path) -> str:
    """The first sentence of a module's docstring, or exit naming the module that has none."""
    import ast

    doc = ast.get_docstring(ast.parse(path.read_text()))
    if not doc:
        sys.exit(f"docs: {path.relative_to(ROOT)} has no docstring; say what it is for")
    paragraph = " ".join(doc.split("\n\n")[0].split())
    return re.split(r"(?<=[.!?])\s+(?=[A-Z`(])", rst(paragraph))[0]


def layout_block() -> str:
    rows = []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        folder = init.parent
        if "__pycache__" in folder.parts:
            continue
        rows.append([f"`{folder.relative_to(ROOT)}/`", text(first_sentence(init))])
        for module in sorted(folder.glob("*.py")):
            if module.name != "__init__.py":
                rows.append([f"`{module.relative_to(ROOT)}`", text(first_sentence(module))])
    return "\n".join(
        [
            LAYOUT_BEGIN,
            generated("the docstrings of steer_cli's modules"),
            "",
            table(["path", "what it is"], rows),
            LAYOUT_END,
        ]
    )


def with_layout(page: str) -> str:
    if page.count(LAYOUT_BEGIN) != 1 or page.count(LAYOUT_END) != 1:
        sys.exit(f"docs: {ARCHITECTURE} needs one {LAYOUT_BEGIN} ... {LAYOUT_END} block")
    start, end = page.index(LAYOUT_BEGIN), page.index(LAYOUT_END) + len(LAYOUT_END)
    return page[:start] + layout_block() + page[end:]


# -- main --------------------------------------------------------------------------------------

PAGES = {
    "reference/recipe.md": recipe_page,
    "reference/methods.md": methods_page,
    "reference/tasks.md": tasks_page,
    "reference/cli.md": cli_page,
}


def pages(docs: Path) -> dict[Path, str]:
    """Every generated page, as it should read, keyed by its path under ``docs``."""
    wanted = {docs / name: render() for name, render in PAGES.items()}
    wanted[docs / ARCHITECTURE] = with_layout((docs / ARCHITECTURE).read_text())
    return wanted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="rewrite the generated pages")
    group.add_argument("--check", action="store_true", help="exit 1 if a page is stale")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the docs folder [docs/]")
    args = parser.parse_args()
    wanted = pages(args.docs)
    stale = [p for p, t in wanted.items() if not p.is_file() or p.read_text() != t]
    if args.check:
        if stale:
            names = ", ".join(str(p.relative_to(args.docs)) for p in stale)
            sys.exit(f"docs: stale: {names}; run python scripts/docs.py --write (make docs)")
        print(f"docs: {len(wanted)} generated pages current")
        return
    from steer_cli.atomic import write_text

    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, wanted[path])
        print(f"docs: wrote {path.relative_to(args.docs)}")
    print(f"docs: {len(wanted) - len(stale)} of {len(wanted)} generated pages unchanged")


if __name__ == "__main__":
    main()
