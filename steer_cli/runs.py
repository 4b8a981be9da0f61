"""Read a run directory back: the base model plus the run's trained parts, ready to evaluate.

``config.yaml`` names the method (hence its kind) and the base model; the kind says where the
trained parts are:

- ``adapter``: ``adapter.safetensors`` + ``adapter.json`` (steer's format, engine.attach);
- ``lora``: ``lora/adapter_model.safetensors`` + ``lora/adapter_config.json`` (peft's format);
- ``sft``: ``model/`` (a ``save_pretrained`` directory: safetensors, config, tokenizer);
- ``joint``: both ``lora/`` and ``adapter.*``: peft's model, with the adapters hooked onto it.

Reloading gives exactly the model that finished training (tests check identical logits).
"""

from __future__ import annotations

from pathlib import Path

from steer_cli import rundir
from steer_cli.errors import SteerError


def read_config(run_dir: str | Path):
    """The run's resolved recipe."""
    import yaml

    from steer_cli.recipe import build_recipe

    path = Path(run_dir) / rundir.CONFIG
    if not path.is_file():
        raise SteerError(f"{run_dir} is not a run directory (no {rundir.CONFIG})")
    return build_recipe(yaml.safe_load(path.read_text()) or {})


def trained_files(recipe) -> list[tuple[str, ...]]:
    """What a finished run of ``recipe``'s kind holds: per part, the paths (relative to the run
    directory) of which one must exist."""
    from steer_cli.engine.attach import ADAPTER_CONFIG, ADAPTER_WEIGHTS
    from steer_cli.parts import LORA_DIR, MODEL_DIR, kind_of

    adapter = [(ADAPTER_WEIGHTS,), (ADAPTER_CONFIG,)]
    lora = [
        (f"{LORA_DIR}/adapter_config.json",),
        (f"{LORA_DIR}/adapter_model.safetensors",),  # never a pickled .bin
    ]
    return {
        "adapter": adapter,
        "lora": lora,
        "joint": lora + adapter,
        "sft": [
            (f"{MODEL_DIR}/config.json",),
            (f"{MODEL_DIR}/model.safetensors", f"{MODEL_DIR}/model.safetensors.index.json"),
        ],
    }[kind_of(recipe)]


def check_finished(run_dir: str | Path):
    """The run's recipe, once its trained parts are known to be there: a folder holding a
    ``config.yaml`` alone (copied, or a recipe saved there) is an error naming what is missing,
    before any model loads."""
    run_dir = Path(run_dir)
    recipe = read_config(run_dir)
    missing = [
        " or ".join(paths)
        for paths in trained_files(recipe)
        if not any((run_dir / path).is_file() for path in paths)
    ]
    if missing:
        raise SteerError(
            f"{run_dir} is not a finished run: it has {rundir.CONFIG} but no {', '.join(missing)}",
            f"pass a directory `steer train` wrote (a {recipe.method} run holds its trained parts)",
        )
    return recipe


def load_run(
    run_dir: str | Path,
    *,
    device: str | None = None,
    dtype: str | None = None,
    force: bool = False,
):
    """``(model, tokenizer, parts)`` for a finished run, in eval mode and frozen.

    ``model`` is ``parts.model``: what to call for logits or generation (for LoRA the peft
    model). ``device``/``dtype`` default to the run's ``model`` section. The base model must
    be the one the run was trained on (``steer_cli.fingerprint``; ``force``: same shapes
    suffice).
    """
    from steer_cli import fingerprint, models
    from steer_cli.engine.attach import Interventions
    from steer_cli.parts import (
        LORA_DIR,
        MODEL_DIR,
        AdapterParts,
        JointParts,
        LoraParts,
        SftParts,
        kind_of,
        quiet_peft,
    )

    run_dir = Path(run_dir)
    recipe = check_finished(run_dir)
    kind = kind_of(recipe)
    device = device or recipe.model.device
    dtype = dtype or recipe.model.dtype
    remote = recipe.model.trust_remote_code
    if kind == "sft":
        model, tokenizer = models.load_model(
            str(run_dir / MODEL_DIR),
            dtype=dtype,
            device=device,
            trust_remote_code=remote,
            safetensors_only=True,
        )
        model.requires_grad_(False)
        return model, tokenizer, SftParts(model)

    model, tokenizer = models.load_model(
        recipe.model.name, dtype=dtype, device=device, trust_remote_code=remote
    )
    model.requires_grad_(False)
    fingerprint.check(run_dir, model, force=force, what=f"{recipe.model.name} as loaded now")
    if kind == "adapter":
        interventions = Interventions.load(run_dir).attach(model)
        interventions.requires_grad_(False)
        return model, tokenizer, AdapterParts(model, interventions)
    if kind in ("lora", "joint"):
        from peft import PeftModel

        with quiet_peft():
            # Only lora/adapter_model.safetensors is ever read (check_finished requires it):
            # peft prefers it to a pickled adapter_model.bin lying beside it.
            peft_model = PeftModel.from_pretrained(model, str(run_dir / LORA_DIR))
        peft_model.eval()
        if kind == "lora":
            return peft_model, tokenizer, LoraParts(peft_model)
        interventions = Interventions.load(run_dir).attach(peft_model)
        interventions.requires_grad_(False)
        return peft_model, tokenizer, JointParts(peft_model, interventions)
    raise AssertionError(f"unknown method kind {kind!r}")  # pragma: no cover
