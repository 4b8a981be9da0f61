"""Local files in the hub's schema: jsonl / json / csv / tsv / parquet, one or more per source
split (``data.files``), or a directory (``data.path``) whose file names say the split
(``train.jsonl``, ``validation.csv``, ``dev.json``, ``train-00000-of-00001.parquet``, ...).

A malformed file is a :class:`SteerError` naming the file and line.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from steer_cli.data.base import SourceSplit, Task
from steer_cli.errors import SteerError

FORMATS: tuple[str, ...] = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "validation": ("validation", "val", "valid", "dev"),
    "test": ("test",),
}


def load_local(task: Task, data, needed: list[str]) -> dict[str, SourceSplit]:
    """The ``needed`` source splits from ``data.files`` or the files in ``data.path``."""
    files = local_files(data)
    missing = [split for split in needed if split not in files]
    if missing:
        found = ", ".join(f"{k}: {', '.join(map(str, v))}" for k, v in files.items()) or "none"
        raise SteerError(
            f"task {task.name!r} needs the source split(s) {', '.join(missing)} but no local "
            f"file provides them (found {found})",
            f"name the files, e.g. data.files.{missing[0]}=PATH, or change the plan, e.g. "
            f'data.splits.validation="train[:10%]" data.splits.train="train[10%:]"',
        )
    out = {}
    for split in needed:
        rows: list[dict] = []
        places: list[str] = []
        for path in files[split]:
            file_rows, file_lines = read_rows(path)
            rows.extend(file_rows)
            if file_lines is None:
                places.extend(f"{path} row {i + 1}" for i in range(len(file_rows)))
            else:
                places.extend(f"{path} line {n}" for n in file_lines)
        out[split] = SourceSplit(split, ", ".join(map(str, files[split])), rows, places)
    return out


def local_files(data) -> dict[str, list[Path]]:
    """Source split -> files: ``data.files`` as given, else found in ``data.path`` by name."""
    given = getattr(data, "files", None) or {}
    if given:
        return {
            split: [Path(p) for p in ([paths] if isinstance(paths, str) else paths)]
            for split, paths in given.items()
        }
    path = getattr(data, "path", None)
    if path is None:
        raise SteerError(
            "data.source=local needs data.path (a file or a directory) or data.files",
            "e.g. data.path=data/boolq (train.jsonl, validation.jsonl) or "
            "data.files.train=train.csv",
        )
    root = Path(path)
    if root.is_file():
        return {"train": [root]}
    if not root.is_dir():
        raise SteerError(f"data.path {str(root)!r} does not exist", "give a file or a directory")
    candidates = sorted(
        p
        for pattern in ("*", "data/*")
        for p in root.glob(pattern)
        if p.is_file() and p.suffix.lower() in FORMATS
    )
    found: dict[str, list[Path]] = {}
    for file in candidates:
        words = set(re.split(r"[-_.\s]+", file.name.lower()))
        splits = [s for s, aliases in SPLIT_ALIASES.items() if words & set(aliases)]
        if len(splits) > 1:
            raise SteerError(
                f"{file}: its name matches the splits {splits}; rename it or use data.files"
            )
        if splits:
            found.setdefault(splits[0], []).append(file)
    if not found:
        raise SteerError(
            f"no data files in {root} (looked for {', '.join(FORMATS)} named by split)",
            "name them train.jsonl, validation.jsonl, test.jsonl (or csv/json/parquet), or set "
            "data.files",
        )
    return found


def read_rows(path: Path) -> tuple[list[dict], list[int] | None]:
    """Rows of a jsonl/json/csv/tsv/parquet file, and the file line of each (if it has lines)."""
    path = Path(path)
    if not path.is_file():
        raise SteerError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".csv", ".tsv") and not path.read_text().strip():
        raise SteerError(f"data file {path} is empty", "it needs at least one row")
    if suffix == ".jsonl":
        rows, lines = _read_jsonl(path)
    elif suffix == ".json":
        rows, lines = _read_json(path), None
    elif suffix in (".csv", ".tsv"):
        rows, lines = _read_csv(path, "\t" if suffix == ".tsv" else ",")
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            rows, lines = pq.read_table(path).to_pylist(), None
        except Exception as exc:
            raise SteerError(f"{path}: cannot read it as parquet ({exc})") from None
    else:
        raise SteerError(
            f"{path}: unsupported file type {suffix!r}", f"use one of {', '.join(FORMATS)}"
        )
    if not rows:
        raise SteerError(f"data file {path} holds no rows", "it needs at least one row")
    return rows, lines


def json_lines(lines, where: str) -> list[tuple[int, object]]:
    """``(line number, value)`` of each non-blank line of JSON Lines text from ``where``; a line
    that is not JSON is an error naming it."""
    values = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            values.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise SteerError(
                f"{where} line {number} is not JSON ({exc.msg} at column {exc.colno})",
                "JSON Lines files hold one JSON object per line",
            ) from None
    return values


def _read_jsonl(path: Path) -> tuple[list[dict], list[int]]:
    rows, lines = [], []
    with path.open(encoding="utf-8") as f:
        for number, row in json_lines(f, str(path)):
            if not isinstance(row, dict):
                raise SteerError(
                    f"{path} line {number}: expected a JSON object, got {type(row).__name__}"
                )
            rows.append(row)
            lines.append(number)
    return rows, lines


def _read_json(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SteerError(
            f"{path} line {exc.lineno}: not valid JSON ({exc.msg})",
            "a .json file holds a list of objects (use .jsonl for one object per line)",
        ) from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1:
            data = lists[0]
    if not isinstance(data, list):
        raise SteerError(f"{path}: expected a list of objects, got {type(data).__name__}")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise SteerError(f"{path} row {i + 1}: expected an object, got {type(row).__name__}")
    return data


def _read_csv(path: Path, delimiter: str) -> tuple[list[dict], list[int]]:
    rows, lines = [], []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        if not reader.fieldnames:
            raise SteerError(f"{path}: empty file (a header line names the fields)")
        for row in reader:
            if None in row:
                raise SteerError(
                    f"{path} line {reader.line_num}: more values than the header has fields "
                    f"({', '.join(reader.fieldnames)})",
                    "quote values that contain the delimiter",
                )
            rows.append(row)
            lines.append(reader.line_num)
    return rows, lines
