"""Write recipes/paper/<table>/<model>/<task>/<method>.yaml: one recipe per cell of the paper's
Tables 1 to 4 that steer can train. Running it rewrites the tree deterministically; a test
checks the committed files equal its output, so edit this script (and papergen/), not the YAML.

    python recipes/paper/generate.py                 # rewrite the tree

Every recipe of Tables 1, 2 and 4 follows the paper's protocol (SPEC 6; appendix F): all the
task's data, the task's epochs (3 for GSM8K, else 1), effective batch 8, the method's LR grid on
validation and then 5 seeds on test, which is what ``steer train RECIPE --sweep`` does
(papergen/swept.py). Table 3 (instruction tuning, section 6.2) is judged AlpacaEval-style
instead: one training run per recipe at a fixed LR, then ``steer eval RUN``
(papergen/table3.py). Ranks are sized to the paper's Params column (papergen/budgets.py).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # papergen/ sits beside this script (also when loaded by path)
    sys.path.insert(0, str(HERE))

from papergen import budgets, swept, table3  # noqa: E402

MODELS = budgets.MODELS
T1_RANK, T3_RANK, T3_REFT4_RANK = budgets.T1_RANK, budgets.T3_RANK, budgets.T3_REFT4_RANK
TASKS, T4_TASKS = swept.TASKS, swept.T4_TASKS

# -- the cells: table -> (models, tasks, variants); a variant is (file stem, method, what) -----
TABLES = {
    "table1": (
        tuple(MODELS),
        TASKS,
        (
            ("sft", "sft", "full fine-tuning"),
            ("lora", "lora", "LoRA r=8 on q,k,v,o,gate,up,down"),
            ("reft", "reft", "LoReFT on every MLP output, all layers"),
            ("postblock", "postblock", "Ours: linear post-block adapter, ReFT's budget"),
        ),
    ),
    "table2": (
        tuple(MODELS),
        TASKS,
        (
            ("lofit", "lofit", "LoFiT on every attention head"),
            ("jola", "jola", "JoLA: gated per-head scale and bias"),
            ("postblock-vector", "postblock-vector", "Ours (1-vec): one vector per block"),
            ("postblock-r1", "postblock", "Ours r=1: rank-1 linear post-block adapter"),
        ),
    ),
    "table3": (
        ("llama-3.1-8b",),
        ("alpaca",),
        (
            ("sft", "sft", "full fine-tuning"),
            ("postblock-silu", "postblock", "Ours nonlinear: SiLU post-block adapter"),
            ("postblock", "postblock", "Ours linear: post-block adapter"),
            ("lora-r16", "lora", "LoRA r=16 (0.52%)"),
            ("lora", "lora", "LoRA r=8 (0.26%)"),
            ("reft", "reft", "ReFT at all layers, parameter-matched to Ours"),
            ("reft-4layers", "reft", "ReFT's published configuration: layers 3, 9, 18, 24"),
        ),
    ),
    "table4": (
        ("llama-3.2-1b", "gemma-3-1b", "qwen3-4b"),
        T4_TASKS,
        (
            ("sft", "sft", "full fine-tuning"),
            ("lora-r16", "lora", "LoRA r=16"),
            ("lora", "lora", "LoRA r=8"),
            ("postblock", "postblock", "Adapter: post-block, rank matched to LoRA r=8"),
            ("joint", "joint", "Joint: LoRA r=8 + post-block adapter, trained together"),
            ("joint-orth", "joint-orth", "Joint-Orth: Joint + the adapter kept orthogonal to LoRA"),
        ),
    ),
}


def recipe(table: str, key: str, task: str, stem: str, method: str, what: str) -> str:
    if table == "table3":
        return table3.recipe(key, stem, method, what)
    return swept.recipe(table, key, task, stem, method, what)


def render() -> dict[str, str]:
    """Relative path (under recipes/paper) -> file text, for every cell."""
    budgets.check()
    out: dict[str, str] = {}
    for table, (models, tasks, variants) in TABLES.items():
        for key in models:
            for task in tasks:
                for stem, method, what in variants:
                    text = recipe(table, key, task, stem, method, what)
                    out[f"{table}/{key}/{task}/{stem}.yaml"] = text
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    files = render()
    for table in TABLES:
        shutil.rmtree(HERE / table, ignore_errors=True)
    for rel, text in files.items():
        path = HERE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"wrote {len(files)} recipes under {HERE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
