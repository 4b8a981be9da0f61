"""The recipe's ``data`` section: the task, where its rows come from, the split sizes, and the
settings of ListOps' generator and of the ``local`` task over your own fields."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from steer_cli.data.listops import LRA as LISTOPS_LRA
from steer_cli.data.tasks import (
    LISTOPS_LRA_MAX_LENGTH,
    get_task,
    parse_split_spec,
    template_fields,
)
from steer_cli.errors import SteerError
from steer_cli.recipe.objectives import PreferenceDataSection
from steer_cli.recipe.strict import Strict


class ListOpsSection(Strict):
    preset: Literal["lra"] | None = Field(
        None, description="lra: LRA's depth 10, arity 10, 500..2000-token expressions"
    )
    depth: int = Field(2, ge=1, description="maximum operator nesting depth")
    arity: int = Field(4, ge=2, description="maximum arguments per operator")
    branch_p: float = Field(0.25, ge=0, le=1, description="chance an argument is an operator")
    min_length: int | None = Field(None, ge=1, description="fewest expression tokens (LRA's)")
    max_length: int | None = Field(None, ge=4, description="most expression tokens (LRA's)")

    @model_validator(mode="after")
    def _preset(self) -> ListOpsSection:
        if self.preset == "lra":
            for key, value in LISTOPS_LRA.items():
                if key not in self.model_fields_set:
                    setattr(self, key, value)
        if self.min_length and self.max_length and self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} is above max_length {self.max_length}")
        return self


class LocalTaskSection(Strict):
    """The ``local`` task: templates over the fields of your own rows."""

    prompt: str | None = Field(None, description="str.format template, e.g. '{question}\\n'")
    target: str | None = Field(None, description="str.format template, e.g. 'Answer: {label}'")
    answer: str | None = Field(None, description="gold answer template (default: the target)")
    parser: str = Field("exact", description="exact | number | letter | regex:<pattern>")
    max_new_tokens: int = Field(64, ge=1, description="generation budget at evaluation")

    @field_validator("prompt", "target", "answer")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            template_fields(value)  # ValueError on a malformed template
        return value

    @field_validator("parser")
    @classmethod
    def _parser(cls, value: str) -> str:
        if value not in ("exact", "number", "letter") and not value.startswith("regex:"):
            raise ValueError("should be exact, number, letter or regex:<pattern>")
        if value.startswith("regex:"):
            try:
                re.compile(value[len("regex:") :])
            except re.error as err:
                raise ValueError(f"has a regex that does not compile ({err})") from None
        return value


class DataSection(Strict):
    task: str = Field("listops", description="see `steer tasks`")
    source: Literal["auto", "hub", "local", "generator"] = Field(
        "auto", description="auto: local if path/files are set, generator for ListOps, else hub"
    )
    path: str | None = Field(None, description="a data file, or a directory of split files")
    files: dict[str, str | list[str]] | None = Field(
        None, description="source split -> file(s): {train: a.jsonl, validation: b.csv}"
    )
    splits: dict[str, str | None] | None = Field(
        None, description="override the task's plan: {validation: 'train[:10%]', ...}"
    )
    train_size: int | None = Field(
        1000, ge=1, description="examples, generated or at most (null: all)"
    )
    validation_size: int | None = Field(100, ge=0, description="examples at most (null: all)")
    test_size: int | None = Field(200, ge=1, description="examples at most (null: all)")
    seed: int = Field(42, description="the seeded subsets and ListOps' generator")
    chat_template: bool | Literal["auto"] = Field(
        "auto", description="wrap prompts in the chat template; auto: when the tokenizer has one"
    )
    max_length: int | None = Field(
        None, ge=8, description="tokens; prompts are cut, answers never [default: the task's]"
    )
    listops: ListOpsSection = ListOpsSection()
    local: LocalTaskSection = LocalTaskSection()
    preferences: PreferenceDataSection = PreferenceDataSection()

    @model_validator(mode="after")
    def _task_defaults(self) -> DataSection:
        task = get_task(self.task)  # SteerError naming the closest task
        self.task = task.name
        if self.source == "generator" and task.name != "listops":
            raise SteerError(
                f"data.source=generator is for ListOps, not {task.name!r}",
                "use data.source=hub or local (or auto)",
            )
        if self.source == "local" and not (self.path or self.files):
            raise SteerError(
                "data.source=local needs data.path (a file or directory) or data.files",
                "e.g. data.path=data/boolq (train.jsonl, validation.jsonl, ...)",
            )
        if task.name == "local" and not (self.local.prompt and self.local.target):
            raise SteerError(
                "data.task=local needs data.local.prompt and data.local.target",
                "str.format templates over your rows' fields, e.g. "
                "data.local.prompt='{question}\\n' data.local.target='Answer: {label}'",
            )
        if self.max_length is None:
            lra = task.name == "listops" and self.listops.preset == "lra"
            self.max_length = LISTOPS_LRA_MAX_LENGTH if lra else task.max_length
        if self.splits:
            for key, value in self.splits.items():
                if key not in ("train", "validation", "test"):
                    raise ValueError(f"splits has key {key!r}; use train, validation, test")
                if value not in (None, "", "none"):
                    parse_split_spec(value)
        return self
