"""The reference pages generated from the code (``scripts/docs.py`` writes them): the recipe's
keys from its pydantic schema, the methods from their presets (with parameter counts on the
embedded model), the tasks from the registry and the bundled lm-eval tasks."""

from __future__ import annotations

import functools
import inspect
import re
import types
import typing
from pathlib import Path

from docs_markdown import code, generated, rst, table, text

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "steer_cli"
EMBEDDED = "smollm2-135m"


# -- the recipe --------------------------------------------------------------------------------


def _bounds(metadata: list) -> list[str]:
    """pydantic's constraints (``Gt(0)``, ``MinLen(1)``, a nested ``Field``) in words."""
    words = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}
    found = []
    for item in metadata:
        found += _bounds(getattr(item, "metadata", []))  # Annotated[float, Field(gt=0)]
        for attribute, word in words.items():
            if getattr(item, attribute, None) is not None:
                found.append(f"{word} {getattr(item, attribute):g}")
        if getattr(item, "min_length", None):
            found.append(f"at least {item.min_length}")
    return found


def type_name(annotation, nested: bool = False) -> str:
    """An annotation in words: ``int``, ``list of str``, `` `a`, `b` ``, ``str or null``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return ", ".join(code(a) for a in args)
    if origin is typing.Annotated:
        bounds = _bounds(args[1:])
        return type_name(args[0], nested) + (f" ({', '.join(bounds)})" if bounds else "")
    if origin in (typing.Union, types.UnionType):
        shown = " or ".join("null" if a is type(None) else type_name(a, nested=True) for a in args)
        return f"({shown})" if nested else shown
    if origin is list:
        return f"list of {type_name(args[0], nested=True)}"
    if origin is dict:
        return f"map of {type_name(args[0], True)} to {type_name(args[1], True)}"
    return getattr(annotation, "__name__", str(annotation))


def describe(field) -> str:
    """A field's type with its constraints, ``or null`` last: ``int (≥ 1) or null``."""
    annotation = field.annotation
    args = typing.get_args(annotation)
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and (
        type(None) in args
    )
    if optional:
        rest = tuple(a for a in args if a is not type(None))
        annotation = rest[0] if len(rest) == 1 else typing.Union[rest]  # noqa: UP007
    bounds = _bounds(field.metadata)
    shown = type_name(annotation) + (f" ({', '.join(bounds)})" if bounds else "")
    return shown + (" or null" if optional else "")


def recipe_keys() -> list[tuple[str, type, object]]:
    """Every leaf key of the recipe, dotted, with the section model that holds it and its field."""
    from pydantic import BaseModel

    from steer_cli.recipe import Recipe

    keys = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")
            else:
                keys.append((f"{prefix}{name}", model, field))

    walk(Recipe, "")
    return keys


def recipe_page() -> str:
    sections: dict[str, list[list[str]]] = {}
    models: dict[str, type] = {}
    for key, model, field in recipe_keys():
        section = key.rsplit(".", 1)[0] if "." in key else "top level"
        models[section] = model
        kind = describe(field)
        default = field.default_factory() if field.default_factory else field.default
        sections.setdefault(section, []).append(
            [f"`{key}`", text(kind), code(default), text(field.description or "")]
        )
    out = [
        "# Recipe reference",
        "",
        generated("the recipe's pydantic schema (steer_cli/recipe/)"),
        "",
        "Every key a recipe can set. A key's value comes from, last one winning: the default "
        "below, the task's `train.epochs` (`steer tasks`), the method's preset "
        "([methods](methods.md): it sets the learning rate, scheduler, site, ...), the recipe "
        "file, then `key=value` overrides on the command line. A run's `config.yaml` holds "
        "every key as it was resolved. See [Recipes](../recipes.md) for how to write one.",
    ]
    for section, rows in sections.items():
        out += ["", f"## {section}", ""]
        doc = inspect.cleandoc(models[section].__doc__ or "")  # its own, not BaseModel's
        if doc:
            out += [text(rst(" ".join(doc.split("\n\n")[0].split()))), ""]
        out.append(table(["key", "type", "default", "what it does"], rows))
    return "\n".join(out) + "\n"


# -- methods -----------------------------------------------------------------------------------


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@functools.cache
def method_counts() -> tuple[int, dict[str, int], str]:
    """The embedded model's size, each method's trainable parameters on it (by formula), and its
    shape in words."""
    from steer_cli.engine.sites import find_decoder_layers, hidden_size
    from steer_cli.methods import METHODS
    from steer_cli.models.skeleton import load_skeleton
    from steer_cli.parts import count_base, count_parameters
    from steer_cli.recipe import build_recipe

    model, _ = load_skeleton(EMBEDDED)
    counts = {name: count_parameters(model, build_recipe({"method": name})) for name in METHODS}
    shape = f"{len(find_decoder_layers(model))} layers, hidden size {hidden_size(model)}"
    return count_base(model), counts, shape


def methods_page() -> str:
    from steer_cli.methods import METHODS
    from steer_cli.recipe import build_recipe

    base, counts, shape = method_counts()
    rows, presets = [], []
    for name, method in METHODS.items():
        recipe = build_recipe({"method": name})
        if method.kind in ("adapter", "joint"):
            a = recipe.adapter
            where = f"`{a.site}`, `{a.parameterization}`"
            if a.parameterization in ("lowrank", "loreft"):
                where += f", r={a.rank}"
            where += f", positions `{a.positions}`"
        else:
            where = "every weight" if method.kind == "sft" else "q, k, v, o, gate, up, down"
        if method.kind in ("lora", "joint"):
            where += f" + LoRA r={recipe.lora.rank}" if method.kind == "joint" else ""
        rows.append(
            [
                f"`{name}`",
                method.kind,
                text(method.description),
                where,
                f"{recipe.train.lr:g} ({recipe.train.scheduler})",
                f"{counts[name]:,}",
                f"{100 * counts[name] / base:.3g}%",
            ]
        )
        sets = ", ".join(f"`{k}={_plain(v)}`" for k, v in _flatten(method.defaults).items())
        grid = ", ".join(f"{lr:g}" for lr in method.lr_grid)
        extra = "".join(
            f"; `{k}` over {', '.join(f'`{v}`' for v in values)}"
            for k, values in method.extra_grid.items()
        )
        presets.append([f"`{name}`", sets or "nothing", grid + extra])
    out = [
        "# Methods",
        "",
        generated("the presets in steer_cli/methods.py"),
        "",
        "A method is a named preset over the recipe's keys (`method: NAME`); any key it sets can "
        "be overridden, so the whole grid of sites, parameterizations, positions and layers is "
        "reachable from any of them. `steer methods` prints this table; `steer methods --model "
        "NAME` counts the parameters on another model. See [Methods](../methods.md) for what "
        "each site and parameterization computes.",
        "",
        f"Parameters are counted on the embedded `{EMBEDDED}` ({base:,} parameters, {shape}), "
        "from the same formulas `steer train --dry-run` uses.",
        "",
        table(
            ["method", "kind", "what it trains", "where", "default LR", "parameters", "of base"],
            rows,
        ),
        "",
        "## What each preset sets",
        "",
        "Keys the preset sets before your recipe's values, and the learning rates `steer train "
        "--sweep` tries (the paper's protocol: pick on validation, then seeds on test).",
        "",
        table(["method", "sets", "`--sweep` grid"], presets),
    ]
    return "\n".join(out) + "\n"


def _plain(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


# -- tasks -------------------------------------------------------------------------------------


def bundled_tasks() -> list[tuple[str, str, str]]:
    """The bundled lm-eval tasks: name, the task they are built on, and their token budget."""
    found = []
    for path in sorted((PACKAGE / "evaluate" / "tasks").glob("steer_*.yaml")):
        source = path.read_text()
        name = re.search(r"^task:\s*(\S+)", source, re.M)[1]
        task = re.search(r"^\s+task:\s*(\S+)", source, re.M)[1]
        budget = re.search(r"max_gen_toks:\s*(\d+)", source)[1]
        found.append((name, task, budget))
    return found


def tasks_page() -> str:
    from steer_cli.data.tasks import TASKS

    rows = []
    for task in TASKS.values():
        if task.name == "listops":
            source = "seeded generator (or LRA's TSV files)"
        elif task.source:
            source = f"`{task.source}`" + (f" (`{task.config}`)" if task.config else "")
        else:
            source = "your files (`data.local` templates)"
        splits = "<br>".join(f"{k}: `{v}`" for k, v in task.splits.items())
        fields = ", ".join(f"`{f}`" for f in task.fields) or "yours"
        rows.append(
            [
                f"`{task.name}`",
                text(task.description),
                source,
                splits,
                fields,
                f"{task.epochs:g}",
                str(task.max_new_tokens),
                str(task.max_length),
            ]
        )
    bundled = [[f"`{name}`", f"`{task}`", budget] for name, task, budget in bundled_tasks()]
    out = [
        "# Tasks",
        "",
        generated("the task registry (steer_cli/data/tasks.py) and steer_cli/evaluate/tasks/"),
        "",
        "`data.task` names one of these (`steer tasks` prints the same). Splits are cut from the "
        "source's own with `data.seed` (42) and capped by `data.train_size`, "
        "`data.validation_size` and `data.test_size`. Local files (`data.path`, `data.files`) "
        "use the fields below, as on the hub; `data.task: local` takes your own. See "
        "[Tasks and your own data](../data.md).",
        "",
        table(
            [
                "task",
                "what",
                "source",
                "splits",
                "fields",
                "epochs",
                "new tokens",
                "max length",
            ],
            rows,
        ),
        "",
        "## Bundled lm-eval tasks",
        "",
        "`steer eval --tasks NAME` (all of them: `--tasks steer_paper`): the paper's prompt, "
        "zero-shot greedy generation up to the token budget, the task's answer parser as the "
        "`paper` filter and its answer check as `acc`. See [Evaluation](../evaluation.md).",
        "",
        table(["lm-eval task", "built on", "new tokens"], bundled),
    ]
    return "\n".join(out) + "\n"
