"""Reading recipes: strict YAML, dotted ``key=value`` overrides, the method's preset under the
user's values, and validation errors that name the key and the closest valid one."""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from steer_cli.data.parsers import parse_exact
from steer_cli.data.tasks import get_task
from steer_cli.errors import SteerError
from steer_cli.methods import METHODS
from steer_cli.recipe.sections import Recipe


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> Recipe:
    """Read a YAML recipe (or start empty), apply ``a.b=value`` overrides and the method preset."""
    raw: dict = {}
    if path is not None:
        raw = _read_yaml(Path(path))
        raw.setdefault("name", Path(path).stem)
    raw = _normalise(raw)
    for item in overrides:
        _apply_override(raw, item)
    return build_recipe(raw)


def build_recipe(raw: dict) -> Recipe:
    """Validate a recipe dict: the method's preset first, the user's values on top."""
    raw = _normalise(copy.deepcopy(raw))
    method = raw.get("method", Recipe.model_fields["method"].default)
    if not isinstance(method, str) or method not in METHODS:
        raise SteerError(
            f"unknown method {method!r}",
            _suggest(str(method), list(METHODS), what="methods"),
        )
    adapter = raw.get("adapter")
    # A budget or a method to match asks for the rank search; the preset's rank would otherwise
    # win and contradict it.
    if (
        isinstance(adapter, dict)
        and "rank" not in adapter
        and (adapter.get("budget") is not None or adapter.get("match") is not None)
    ):
        adapter["rank"] = "auto"
    merged = _deep_merge(_deep_merge(_task_defaults(raw), METHODS[method].defaults), raw)
    try:
        recipe = Recipe.model_validate(merged)
    except ValidationError as err:
        raise _explain(err) from None
    if METHODS[method].kind != "joint":  # settings that only a joint run reads
        if recipe.orth.enabled:
            raise SteerError(
                f"orth.enabled needs both LoRA and an adapter; method {method!r} has not",
                "use method: joint-orth (or joint with orth.enabled=true)",
            )
        if recipe.eval.joint_mode != "both":
            raise SteerError(
                f"eval.joint_mode={recipe.eval.joint_mode} is for joint runs, not {method!r}"
            )
    _check_objective(recipe)
    return recipe


def _check_objective(recipe: Recipe) -> None:
    """Preference data and ``train.objective: dpo`` come together; GRPO needs a task whose
    answers a parser checks (its reward)."""
    task = get_task(recipe.data.task)
    # A free-text task (Alpaca) is judged, not parsed: "exact" would reward only its reference
    # answer verbatim. A local task checks what its data.local.parser reads.
    if recipe.train.objective == "grpo" and task.parser is parse_exact and task.name != "local":
        raise SteerError(
            f"train.objective=grpo rewards answers the task's parser checks; {recipe.data.task} "
            "is judged free text, with no parser to check an answer",
            "use a task with a parser (listops, gsm8k, aqua, ...), or data.task=local with "
            "data.local.parser",
        )
    given = recipe.data.preferences.given
    if recipe.train.objective == "dpo" and not given:
        raise SteerError(
            "train.objective=dpo needs preference data (rows with prompt, chosen, rejected)",
            "set data.preferences.path=FILE_OR_DIR, data.preferences.files.train=FILE or "
            "data.preferences.hub=DATASET",
        )
    if recipe.train.objective != "dpo" and given:
        raise SteerError(
            f"data.preferences is read by train.objective=dpo, not {recipe.train.objective}",
            "set train.objective=dpo, or drop data.preferences",
        )
    full = METHODS[recipe.method].kind == "sft"
    if recipe.train.reference == "base" and recipe.train.init_from and full:
        raise SteerError(
            "train.reference=base: full fine-tuning started from a run keeps no base to compare "
            "with (its reference is a frozen copy of the weights it starts from)",
            "drop train.reference (start), or train.init_from",
        )


# -- helpers -----------------------------------------------------------------------------------


def _task_defaults(raw: dict) -> dict:
    """The task's default epochs (SPEC 6), below the method preset and the user's values."""
    data = raw.get("data")
    name = data.get("task", "listops") if isinstance(data, dict) else "listops"
    try:
        task = get_task(str(name))
    except SteerError:
        return {}  # reported, with suggestions, when the data section is validated
    return {"train": {"epochs": task.epochs}}


def _read_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise SteerError(f"recipe not found: {path}", "pass the path of a YAML recipe file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise SteerError(f"{path}: {problem}{where}") from None
    if data is None:
        raise SteerError(
            f"recipe {path} is empty: it would train every default (a long run)",
            "write the keys you want, e.g. `method: postblock` and `model: smollm2-135m` "
            "(recipes/quickstart.yaml is an example)",
        )
    if not isinstance(data, dict):
        raise SteerError(f"{path}: a recipe must be a mapping of keys, got {type(data).__name__}")
    return data


def _normalise(raw: dict) -> dict:
    """Accept the shorthand ``model: NAME`` for ``model: {name: NAME}``."""
    if isinstance(raw.get("model"), str):
        raw["model"] = {"name": raw["model"]}
    return raw


def _apply_override(raw: dict, item: str) -> None:
    import yaml

    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise SteerError(
            f"override {item!r} is not of the form key=value", "example: train.lr=1e-3"
        )
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    if not isinstance(value, str | type(None)) and _is_text_field(parts):
        # A template such as {prompt} or "Answer: {label}" reads as a YAML mapping; for a key
        # that takes text, the text as typed is what was meant.
        value = text
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise SteerError(f"override {item!r}: {where!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _is_text_field(parts: list[str]) -> bool:
    """Whether the recipe key ``parts`` (``["data", "local", "prompt"]``) takes a string only."""
    import types
    import typing

    model: Any = Recipe
    for depth, part in enumerate(parts):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return False
        annotation = fields[part].annotation
        if depth < len(parts) - 1:
            model = annotation
            continue
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            kinds = {a for a in typing.get_args(annotation) if a is not type(None)}
            return kinds == {str}
        return annotation is str
    return False


def _deep_merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _valid_keys(loc: tuple) -> list[str]:
    node: Any = Recipe().model_dump()
    for part in loc:
        node = node.get(part) if isinstance(node, dict) else None
    return list(node) if isinstance(node, dict) else []


# Spellings users bring from transformers/peft/torchtune configs, mapped to ours.
_SYNONYMS = {
    "learning_rate": "lr",
    "lr_scheduler": "scheduler",
    "lr_scheduler_type": "scheduler",
    "num_train_epochs": "epochs",
    "num_epochs": "epochs",
    "steps": "max_steps",
    "per_device_train_batch_size": "micro_batch_size",
    "gradient_accumulation_steps": "micro_batch_size",
    "max_seq_length": "max_length",
    "model_max_length": "max_length",
    "torch_dtype": "dtype",
    "model_name_or_path": "name",
    "r": "rank",
    "lora_r": "rank",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "low_rank_dimension": "rank",
    "layer": "layers",
    "position": "positions",
}


def _closest(word: str, options: list[str]) -> str | None:
    if _SYNONYMS.get(word) in options:
        return _SYNONYMS[word]
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.0)
    return close[0] if close else None


def _suggest(word: str, options: list[str], what: str = "keys", prefix: str = "") -> str:
    close = _closest(word, options)
    listed = ", ".join(options)
    if close:
        return f"did you mean {prefix + close!r}? (valid {what}: {listed})"
    return f"valid {what}: {listed}"


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list"}


def _key_of(error: dict) -> tuple[str, ...]:
    """The recipe key an error is about: its location without list indices and without the
    member tags pydantic adds for a union (``constrained-float``, ``literal['all']``, ``str``)."""
    loc = [str(p) for p in error["loc"] if not isinstance(p, int)]
    while len(loc) > 1 and (not loc[-1].isidentifier() or loc[-1] in _TYPE_TAGS):
        loc.pop()
    return tuple(loc)


def _expected(msg: str) -> str:
    return msg.replace("Input should be", "should be").replace("Value error, ", "")


def _explain(err: ValidationError) -> SteerError:
    """Turn pydantic's report into one line naming the key, plus a hint."""
    errors = err.errors()
    first = errors[0]
    loc = _key_of(first)
    key = ".".join(loc)
    # A union value fails once per member: one key, each member's expectation joined by "or".
    members = [e for e in errors if _key_of(e) == loc and e["type"] != "extra_forbidden"]
    left = len(errors) - max(len(members), 1)
    more = f" (and {left} more problems)" if left else ""
    if first["type"] == "extra_forbidden":
        prefix = "".join(f"{p}." for p in loc[:-1])
        hint = _suggest(loc[-1], _valid_keys(loc[:-1]), prefix=prefix)
        return SteerError(f"unknown recipe key {key!r}{more}", hint)
    expected = _expected(first["msg"])
    if len(members) > 1:  # each member's short form: "should be a valid number or 'all'"
        shorts = [
            re.sub(r", unable to .*", "", _expected(e["msg"])).removeprefix("should be ")
            for e in members
        ]
        expected = "should be " + " or ".join(shorts)
    if isinstance(first.get("input"), dict):  # a whole-section check: the input is the section
        return SteerError(f"recipe section {key!r}: {expected}{more}")
    return SteerError(f"recipe key {key!r} {expected}, got {first.get('input')!r}{more}")
