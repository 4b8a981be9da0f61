"""The documentation: the README is a short front door whose links resolve, the pages generated
from the code (``scripts/docs.py``) are current, every recipe key is documented, the
architecture page names real paths and every package, and ``mkdocs build --strict`` passes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import docs  # noqa: E402

README = ROOT / "README.md"
DOCS = ROOT / "docs"
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")  # [text](target), not images


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _anchors(page: Path) -> set[str]:
    """The ids a page's headings get (Python-Markdown's toc slugs, as MkDocs and GitHub make
    them for these headings), and its explicit ``<a id>``s."""
    from markdown.extensions.toc import slugify

    text = page.read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # comments in code blocks are no headings
    headings = re.findall(r"^#+\s+(.+?)\s*$", text, re.M)
    return {slugify(h.replace("`", ""), "-") for h in headings} | set(
        re.findall(r'<a id="([^"]+)"', text)
    )


def test_readme_is_a_short_front_door():
    text = README.read_text()
    assert len(text.encode()) <= 11_000, "the README is the front door: move detail into docs/"
    assert "make quickstart" in text and "make test" in text
    for page in ("docs/index.md", "docs/getting-started.md", "docs/reference/cli.md"):
        assert f"]({page})" in text


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no {resolved.relative_to(ROOT)}")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_recipe_key_has_a_description_and_a_row():
    page = (DOCS / "reference" / "recipe.md").read_text()
    keys = docs.recipe_keys()
    assert len(keys) > 60
    undocumented = [key for key, _, field in keys if not (field.description or "").strip()]
    assert not undocumented, f"give these recipe keys a description: {undocumented}"
    missing = [key for key, _, _ in keys if f"| `{key}` |" not in page]
    assert not missing, f"not in docs/reference/recipe.md (run make docs): {missing}"


def test_pages_from_the_schema_the_registry_and_the_cli_are_current():
    """Every generated page but the methods table (which loads the embedded model's config)."""
    fresh = {
        "reference/recipe.md": docs.recipe_page(),
        "reference/tasks.md": docs.tasks_page(),
        "reference/cli.md": docs.cli_page(),
        docs.ARCHITECTURE: docs.with_layout((DOCS / docs.ARCHITECTURE).read_text()),
    }
    stale = [name for name, text in fresh.items() if (DOCS / name).read_text() != text]
    assert not stale, f"stale: {stale}; run python scripts/docs.py --write"


def test_cli_reference_names_every_command_and_option():
    from typer.main import get_command

    from steer_cli.cli import app

    page = (DOCS / "reference" / "cli.md").read_text()
    group = get_command(app)
    assert len(group.commands) >= 7
    for name, command in group.commands.items():
        assert f"## `steer {name}`" in page
        section = page.split(f"## `steer {name}`", 1)[1].split("\n## ", 1)[0]
        for param in command.params:
            for option in param.opts if param.param_type_name == "option" else []:
                assert f"`{option}" in section or f" {option}" in section, (name, option)


def test_architecture_names_real_paths_and_every_package():
    page = (DOCS / docs.ARCHITECTURE).read_text()
    named = set(re.findall(r"`((?:steer_cli|recipes|tests|bench|scripts|docs)/[^`\s]*)`", page))
    missing = [path for path in named if not any(ROOT.glob(path.rstrip("/")))]
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"
    packages = [p.parent for p in (ROOT / "steer_cli").rglob("__init__.py")]
    modules = [p for p in (ROOT / "steer_cli").rglob("*.py") if p.name != "__init__.py"]
    for path in packages:
        assert f"`{path.relative_to(ROOT)}/`" in page
    for path in modules:
        assert f"`{path.relative_to(ROOT)}`" in page
    for section in ("## Data flows one way", "## Where to add"):
        assert section in page


@pytest.mark.slow
def test_check_names_a_stale_page_and_write_renews_it(tmp_path, monkeypatch):
    """``scripts/docs.py --check`` and ``--write`` on a copy of docs/ with two stale pages."""
    copy = tmp_path / "docs"
    shutil.copytree(DOCS, copy)
    recipe = copy / "reference" / "recipe.md"
    recipe.write_text(recipe.read_text().replace("| `train.lr` |", "| `train.rate` |"))
    architecture = copy / docs.ARCHITECTURE
    layout_row = "| `steer_cli/engine/` |"  # in the generated table only
    architecture.write_text(architecture.read_text().replace(layout_row, "| `engine/` |"))

    def run(*arguments: str) -> str | None:
        """What ``scripts/docs.py ARGUMENTS`` exits with: None, or its error message."""
        monkeypatch.setattr(sys, "argv", ["docs.py", *arguments, "--docs", str(copy)])
        try:
            docs.main()
        except SystemExit as stop:
            return str(stop.code)
        return None

    assert "stale: reference/recipe.md, architecture.md;" in run("--check")
    assert run("--write") is None
    assert run("--check") is None
    for name in [*docs.PAGES, docs.ARCHITECTURE]:
        assert (copy / name).read_text() == (DOCS / name).read_text(), f"{name} is stale"


@pytest.mark.slow
def test_methods_table_counts_are_what_steer_methods_prints():
    """The generated counts (by formula, on the meta-device skeleton) against ``steer methods
    --model smollm2-135m``, which builds each method's parts on the loaded model."""
    steer = Path(sys.executable).with_name("steer")
    done = subprocess.run(
        [str(steer), "methods", "--model", "smollm2-135m", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    page = docs.methods_page()  # what the generator writes (the stale check compares the file)
    rows = json.loads(done.stdout)
    assert {row["name"] for row in rows} == set(docs.method_counts()[1])
    for row in rows:
        line = next(x for x in page.splitlines() if x.startswith(f"| `{row['name']}` | "))
        assert f"| {row['params']:,} |" in line, (row["name"], row["params"], line)


def test_mkdocs_builds_strict_in_seconds(tmp_path):
    site = tmp_path / "site"
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # Material's banner about its successor
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    for page in ("index.html", "reference/recipe/index.html", "claims/index.html"):
        assert (site / page).is_file(), page
    assert seconds < 120, f"mkdocs build took {seconds:.0f} s"
