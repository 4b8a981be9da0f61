"""``--format peft``: the LoRA part of a LoRA or joint run as a peft adapter directory
(``adapter_config.json`` + ``adapter_model.safetensors``), for ``PeftModel.from_pretrained(base,
DIR)`` on the base model the run was trained on. It is the run's ``lora/`` as steer saved it
(never a pickled ``.bin``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from steer_cli.errors import SteerError

# What peft writes and reads; anything else in lora/ stays behind.
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md")


def check(run) -> None:
    if run.kind not in ("lora", "joint"):
        what = "activation adapter" if run.kind == "adapter" else "fine-tuned weights"
        raise SteerError(
            f"cannot export {run.path} as peft: a {run.recipe.method} run has no LoRA (it "
            f"trained {what})",
            "use --format merged for an SFT run, --format llama-cpp for a block-output vector",
        )


def write(run, directory: Path) -> list[str]:
    from steer_cli.parts import LORA_DIR

    source = run.path / LORA_DIR
    for name in PEFT_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, directory / name)
    lines = [f"the run's LoRA as a peft adapter for {run.recipe.model.name}"]
    if run.kind == "joint":
        lines.append(
            "note: only the LoRA part; the joint run's activation adapter is not in it "
            "(--format merged carries both, the adapter for steer)"
        )
    return lines
