"""The performance page's figures (docs/performance.md), generated from the committed benchmark
results.

    python bench/report.py --write        # its <!-- figures:bench --> block from bench/*.json
    python bench/report.py --check        # exit 1 if the page's block is not what they give
    python bench/report.py --summary DIR  # a device run's folder: tests and ratios in short

The block is rendered from ``bench/results.json`` (``make bench``: the CPU),
``bench/results-gpu.json`` and ``bench/results-gpu-8b.json`` (``bash bench/device.sh``: a GPU),
each with the machine, stack and date it was measured on, every target judged (met or MISSED).
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import render  # noqa: E402

PAGE = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- figures:bench -->", "<!-- /figures:bench -->"
RESULTS = {  # file -> what produced it
    "results.json": "CPU: `make bench`",
    "results-gpu.json": "GPU: `bash bench/device.sh`",
    "results-gpu-8b.json": "GPU, 8B shape: `bash bench/device.sh`",
    "results-gpu-compiled.json": "GPU, decoding compiled: `bash bench/device.sh`",
}


def measured_on(m: dict) -> str:
    """One line: the machine, the stack and the date a results file was measured on."""
    mc = m["machine"]
    where = mc.get("gpu") or f"{mc['cpu']}, {mc['cores']} cores ({mc['cpu_capability']})"
    return (
        f"{where}; torch {mc['torch']}, transformers {mc['transformers']}, peft {mc['peft']}; "
        f"{mc['date']}"
    )


def section(title: str, m: dict) -> str:
    lines = [f"**{title}** · {measured_on(m)}", "", render(m, m["ratios"])]
    if "measured_matmul_tflops" in m:
        lines.append(
            f"\nMFU is read against the datasheet's {m['peak_tflops']:g} TFLOP/s; an 8192³ bf16 "
            f"matrix product ran at {m['measured_matmul_tflops']:.0f} TFLOP/s on this GPU."
        )
    return "\n".join(lines)


def block(folder: Path = ROOT / "bench") -> str:
    parts = [
        section(title, json.loads((folder / name).read_text()))
        for name, title in RESULTS.items()
        if (folder / name).is_file()
    ]
    return "\n\n".join([BEGIN, *parts, END])


def _page_with(text: str, new: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + new + text[end:]


def summary(folder: Path) -> str:
    """A device run's folder in short: the CUDA tests' counts, then each results file."""
    lines = []
    junit = folder / "cuda-tests.xml"
    if junit.is_file():
        suite = ET.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite[0]
        counts = {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped")}
        lines.append("CUDA tests: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    else:
        lines.append("CUDA tests: no cuda-tests.xml")
    for name in [n for n in RESULTS if n != "results.json"]:
        path = folder / name
        if path.is_file():
            lines += ["", section(name, json.loads(path.read_text()))]
        else:
            lines += ["", f"{name}: missing"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true")
    group.add_argument("--check", action="store_true")
    group.add_argument("--summary", type=Path, metavar="DIR")
    args = parser.parse_args()
    if args.summary:
        print(summary(args.summary))
        return
    text = PAGE.read_text()
    new = _page_with(text, block())
    if args.check:
        if new != text:
            sys.exit(
                f"{PAGE.relative_to(ROOT)}'s block is stale: run python bench/report.py --write"
            )
        return
    if new != text:
        from steer_cli.atomic import write_text

        write_text(PAGE, new)
    print(f"{PAGE.relative_to(ROOT)} block: {'rewritten' if new != text else 'unchanged'}")


if __name__ == "__main__":
    main()
