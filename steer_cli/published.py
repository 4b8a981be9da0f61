"""The paper's published numbers (SPEC section 10), as data for ``steer compare --paper``.

Accuracy in %, mean of 5 runs. Methods use steer's labels: ``postblock`` is "Ours",
``postblock r=1`` is "Ours r=1", ``postblock-vector`` is "Ours 1-vec", ``lora r=16`` is LoRA at
rank 16. ``params`` is the trainable share of the base model in % where the paper gives it.
"""

from __future__ import annotations

TASKS_T1 = ("boolq", "winogrande", "arc_challenge", "gsm8k", "aqua", "listops")
TASKS_T4 = ("gsm8k", "boolq", "winogrande")


def _rows(tasks: tuple[str, ...], rows: dict[str, tuple]) -> dict[str, dict]:
    out = {}
    for label, values in rows.items():
        params = None
        if isinstance(values[-1], str):  # a trailing "0.45%" is the parameter budget
            params = float(values[-1].rstrip("%"))
            values = values[:-1]
        out[label] = {"scores": dict(zip(tasks, values, strict=True)), "params": params}
    return out


PUBLISHED: dict[str, dict] = {
    "table1": {
        "title": "Table 1: accuracy against SFT, LoRA and ReFT",
        "tasks": TASKS_T1,
        "models": {
            "Llama-3.2-1B": _rows(
                TASKS_T1,
                {
                    "sft": (88.2, 58.2, 60.3, 32.2, 36.2, 66.2),
                    "lora": (84.7, 57.0, 61.6, 31.8, 33.6, 60.0, "0.45%"),
                    "reft": (84.1, 49.3, 57.0, 31.6, 30.2, 49.3, "0.04%"),
                    "postblock": (86.2, 60.1, 60.3, 31.5, 36.5, 65.4, "0.04%"),
                },
            ),
            "gemma-3-1b": _rows(
                TASKS_T1,
                {
                    "sft": (83.3, 51.4, 48.2, 23.4, 32.7, 65.8),
                    "lora": (84.7, 51.6, 50.6, 22.6, 31.6, 53.6),
                    "reft": (76.2, 49.2, 27.8, 11.6, 24.6, 50.3),
                    "postblock": (82.0, 50.8, 48.9, 21.6, 32.1, 65.2),
                },
            ),
            "Qwen3-4B": _rows(
                TASKS_T1,
                {
                    "sft": (91.4, 83.0, 88.4, 37.0, 64.8, 77.1),
                    "lora": (91.0, 84.6, 88.8, 37.6, 66.7, 78.0, "0.41%"),
                    "reft": (90.5, 64.9, 84.7, 37.7, 66.8, 68.7),
                    "postblock": (90.7, 80.6, 88.6, 37.4, 65.0, 74.0),
                },
            ),
            "Llama-3.1-8B": _rows(
                TASKS_T1,
                {
                    "sft": (91.6, 86.4, 80.6, 44.0, 47.7, 67.2),
                    "lora": (92.3, 88.8, 80.4, 43.8, 45.4, 67.6, "0.26%"),
                    "reft": (91.3, 82.1, 77.9, 40.1, 45.4, 64.4, "0.02%"),
                    "postblock": (92.3, 87.2, 80.4, 43.4, 47.6, 69.1, "0.02%"),
                },
            ),
        },
    },
    "table2": {
        "title": "Table 2: tiny budgets against LoFiT and JoLA",
        "tasks": TASKS_T1,
        "models": {
            "Llama-3.2-1B": _rows(
                TASKS_T1,
                {
                    "lofit": (83.0, 49.2, 46.3, 28.2, 32.5, 64.1),
                    "jola": (83.6, 48.7, 52.5, 28.0, 31.1, 62.2),
                    "postblock-vector": (86.1, 57.6, 58.0, 28.6, 30.9, 64.6),
                    "postblock r=1": (86.2, 52.0, 58.8, 29.2, 33.6, 64.4),
                },
            ),
        },
    },
    "table3": {
        "title": "Table 3: AlpacaEval 2.0 LC win rate vs GPT-4 Turbo (Alpaca-cleaned)",
        "tasks": ("alpaca",),
        "models": {
            "Llama-3.1-8B": _rows(
                ("alpaca",),
                {
                    "sft": (11.49,),
                    "postblock act=silu": (11.34,),
                    "postblock": (11.00,),
                    "lora r=16": (10.52,),
                    "reft": (10.96,),
                    "reft layers=4": (9.50,),
                },
            ),
        },
    },
    "table4": {
        "title": "Table 4: joint weight + activation training",
        "tasks": TASKS_T4,
        "models": {
            "Llama-3.2-1B": _rows(
                TASKS_T4,
                {
                    "sft": (32.2, 88.2, 58.2),
                    "lora r=16": (31.2, 88.4, 64.3),
                    "lora": (31.8, 84.7, 57.0),
                    "postblock": (31.3, 86.2, 52.4),
                    "joint": (31.1, 88.4, 56.9),
                    "joint-orth": (31.1, 88.5, 59.3),
                },
            ),
            "gemma-3-1b": _rows(TASKS_T4, {"joint-orth": (24.4, 84.8, 50.9)}),
            "Qwen3-4B": _rows(TASKS_T4, {"joint-orth": (38.8, 91.4, 83.5)}),
        },
    },
}
