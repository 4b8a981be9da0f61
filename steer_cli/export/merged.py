"""``--format merged``: a plain transformers model directory (``save_pretrained`` weights in
safetensors, config, tokenizer) that any engine loads with no steer and no peft.

- LoRA runs: the LoRA merged into the base weights (peft's ``merge_and_unload``), in the dtype
  the run loads in (its ``model.dtype``);
- SFT runs: the run's ``model/`` directory as it is (it already is such a directory);
- joint runs: the merged LoRA, plus the adapter's files (``adapter.safetensors``,
  ``adapter.json``) and a ``README.md`` saying that the adapter part needs steer: the weights
  alone are the run with its adapter off.

Adapter-only runs have no weights to merge: an activation adapter edits hidden states while the
model runs, which no weight file expresses.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from steer_cli.errors import SteerError

JOINT_NOTE = "README.md"


def check(run) -> None:
    if run.kind == "adapter":
        raise SteerError(
            f"cannot export {run.path} as merged: a {run.recipe.method} run has no weights to "
            "merge (its adapter edits hidden states while the model runs)",
            "serve it with steer (steer serve, steer generate); a postblock-vector run with "
            "positions all also exports to llama.cpp (--format llama-cpp)",
        )


def write(run, directory: Path) -> list[str]:
    if run.kind == "sft":
        return _copy_sft(run, directory)
    return _merge_lora(run, directory)


def _copy_sft(run, directory: Path) -> list[str]:
    from steer_cli.parts import MODEL_DIR

    source = run.path / MODEL_DIR
    for path in sorted(source.iterdir()):
        if path.is_file():
            shutil.copy2(path, directory / path.name)
    return [f"the run's fine-tuned weights ({MODEL_DIR}/), a transformers model directory"]


def _merge_lora(run, directory: Path) -> list[str]:
    from steer_cli.engine.attach import ADAPTER_CONFIG, ADAPTER_WEIGHTS
    from steer_cli.parts import quiet_peft
    from steer_cli.runs import load_run

    model, tokenizer, parts = load_run(run.path)
    if run.kind == "joint":
        parts.interventions.detach()  # the adapter's hooks must not ride along on the model
    with quiet_peft():
        merged = model.merge_and_unload()
    merged.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    lines = [f"the run's LoRA merged into {run.recipe.model.name}'s weights"]
    if run.kind == "joint":
        for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
            shutil.copy2(run.path / name, directory / name)
        (directory / JOINT_NOTE).write_text(_joint_note(run))
        lines.append(
            f"note: the adapter part ({ADAPTER_WEIGHTS}, {ADAPTER_CONFIG}) needs steer: other "
            "engines run the merged LoRA alone, i.e. the run with its adapter off "
            f"(see {JOINT_NOTE})"
        )
    return lines


def _joint_note(run) -> str:
    from steer_cli.engine.attach import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    adapter = run.recipe.adapter
    return f"""# Exported from a joint steer run ({run.recipe.method})

This directory holds the two trained parts of the steer run `{run.path.name}`:

- **the LoRA, merged into the base weights** (`config.json`, `*.safetensors`, tokenizer): a
  plain transformers model that any engine loads (`AutoModelForCausalLM.from_pretrained`, vLLM,
  TGI, llama.cpp's converter);
- **the activation adapter** (`{ADAPTER_WEIGHTS}`, `{ADAPTER_CONFIG}`; site
  `{adapter.site}`, {adapter.parameterization}, positions `{adapter.positions}`), in steer's own
  format. **This part needs steer**: no other engine applies it.

Loaded without steer, the model here is the run with its adapter switched off (the joint
run's `lora` mode), not the whole run. To run both parts, use steer on the original run
(`steer generate RUN`, `steer eval RUN`).
"""
