"""Recipe schema, strict YAML loading, dotted ``key=value`` overrides and method presets.

A recipe is validated in full before anything heavy happens: an unknown key names the closest
valid one, a wrong type names the key and the expected type. Torch-free so errors come fast.
``sections`` holds the recipe and its smaller sections (``adapter``, ``data``, ``objectives``
hold the larger ones), ``loading`` the reading of files and overrides.
"""

from steer_cli.recipe.adapter import AdapterSection
from steer_cli.recipe.data import DataSection, ListOpsSection, LocalTaskSection
from steer_cli.recipe.loading import build_recipe, load_recipe
from steer_cli.recipe.sections import (
    LORA_TARGETS,
    ORTH_WRITERS,
    EvalSection,
    LoraSection,
    ModelSection,
    OrthSection,
    Recipe,
    TrainSection,
)

__all__ = [
    "LORA_TARGETS",
    "ORTH_WRITERS",
    "AdapterSection",
    "DataSection",
    "EvalSection",
    "ListOpsSection",
    "LocalTaskSection",
    "LoraSection",
    "ModelSection",
    "OrthSection",
    "Recipe",
    "TrainSection",
    "build_recipe",
    "load_recipe",
]
