"""Write recipes/data/listops-preferences/{train,test}.jsonl: ListOps preference pairs in TRL's
format (prompt, chosen, rejected) for recipes/dpo-listops.yaml. Offline and seeded: running it
again writes the same bytes (a test checks the committed files against it).

    python recipes/data/listops_preferences.py

Each pair is a generated ListOps expression's prompt (steer's ListOps template), the right
answer as chosen and a wrong one (the right value plus 1..9, mod 10, seeded) as rejected.
The pairs come from the generator's train and validation splits with the recipe's seed and
sizes, so they never hold an expression of the test split the recipe scores accuracy on.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "listops-preferences"
SEED = 42
TRAIN, HELD_OUT, TEST = 800, 100, 200  # dpo-listops.yaml: data.train/validation/test_size


def pairs(rows: list[dict], seed: int) -> list[dict]:
    """One pair per ListOps row: its right answer chosen, a seeded wrong one rejected."""
    from steer_cli.data.templates import LISTOPS_TARGET, format_listops

    rng = random.Random(seed)
    out = []
    for row in rows:
        example = format_listops(row)
        wrong = (int(row["value"]) + rng.randint(1, 9)) % 10
        out.append(
            {
                "prompt": example.prompt,
                "chosen": example.target,
                "rejected": LISTOPS_TARGET.format(value=wrong),
            }
        )
    return out


def build() -> dict[str, str]:
    """File name -> JSON Lines text."""
    from steer_cli.data.listops import make_splits

    splits = make_splits(TRAIN, HELD_OUT, TEST, seed=SEED)  # the recipe's ListOps splits
    files = {
        "train.jsonl": pairs(splits["train"], SEED),
        "test.jsonl": pairs(splits["validation"], SEED + 1),
    }
    return {name: "".join(json.dumps(p) + "\n" for p in rows) for name, rows in files.items()}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, text in build().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name} ({text.count(chr(10))} pairs)")


if __name__ == "__main__":
    main()
