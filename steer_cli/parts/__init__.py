"""The trained parts of a method, built from a recipe: adapters, LoRA or the full weights.

This is where a method's kind (see ``methods.KINDS``) turns into something the training loop can
train (``loop.Parts``) and a run directory can save and reload (``runs.load_run``). Every part
object has:

- ``kind`` and ``model``: the model to train and evaluate (for LoRA, the peft-wrapped model);
- ``parameters()`` and ``num_parameters()``: what is trained, and how much of it;
- ``save(run_dir, metadata=..., tokenizer=...)``: the run directory's files for this kind;
- ``remove()``: undo the parts, leaving the bare base model (used to measure methods);
- ``disabled()`` (adapters, LoRA, joint): a context in which the base model runs alone. Full
  fine-tuning has no base left to fall back to: evaluate the base before training.

Joint parts (LoRA + adapter, ``JointParts``) also have ``mode("both" | "lora" | "adapter")``.

Parameter counts come from formulas here (``count_parameters``) so that a rank can be searched
for a budget without building anything; tests check the formulas against the built parts.
"""

from steer_cli.parts.build import adapter_spec, build_parts, lora_config
from steer_cli.parts.counts import (
    RankChoice,
    adapter_parameter_count,
    budget_target,
    count_base,
    count_parameters,
    lora_parameter_count,
    measure,
    measure_methods,
    resolve_rank,
)
from steer_cli.parts.kinds import (
    JOINT_MODES,
    LORA_DIR,
    MODEL_DIR,
    AdapterParts,
    JointParts,
    LoraParts,
    SftParts,
    TrainedParts,
    kind_of,
    quiet_peft,
)

__all__ = [
    "AdapterParts",
    "JOINT_MODES",
    "JointParts",
    "LORA_DIR",
    "LoraParts",
    "MODEL_DIR",
    "RankChoice",
    "SftParts",
    "TrainedParts",
    "adapter_parameter_count",
    "adapter_spec",
    "budget_target",
    "build_parts",
    "count_base",
    "count_parameters",
    "kind_of",
    "lora_config",
    "lora_parameter_count",
    "measure",
    "measure_methods",
    "quiet_peft",
    "resolve_rank",
]
