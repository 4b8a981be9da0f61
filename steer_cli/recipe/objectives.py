"""The recipe's settings for training objectives other than supervised fine-tuning: DPO's
``beta`` and loss (``dpo``) and its preference pairs (``data.preferences``). Torch-free."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from steer_cli.recipe.strict import Strict

OBJECTIVES = ("sft", "dpo")
DPO_LOSSES = ("sigmoid",)


class PreferenceDataSection(Strict):
    """Preference pairs in TRL's format (``prompt``, ``chosen``, ``rejected``; plain text, or
    conversational lists of ``{role, content}`` messages), from local files or the hub."""

    path: str | None = Field(
        None, description="a file, or a directory of split files (train.jsonl, test.jsonl)"
    )
    files: dict[str, str | list[str]] | None = Field(
        None, description="source split -> file(s): {train: a.jsonl, test: b.parquet}"
    )
    hub: str | None = Field(None, description="a hub dataset id (datasets.load_dataset)")
    config: str | None = Field(None, description="the hub dataset's configuration")
    splits: dict[str, str | None] | None = Field(
        None, description="the source splits: {train: 'train[10%:]', test: 'train[:10%]'}"
    )
    train_size: int | None = Field(None, ge=1, description="pairs trained on at most (null: all)")
    test_size: int | None = Field(200, ge=1, description="held-out pairs evaluated at most")
    seed: int = Field(42, description="seeds the split slices and caps")

    @property
    def given(self) -> bool:
        return bool(self.path or self.files or self.hub)

    @model_validator(mode="after")
    def _one_source(self) -> PreferenceDataSection:
        if self.hub and (self.path or self.files):
            raise ValueError("set data.preferences.hub or path/files, not both")
        for key in self.splits or {}:
            if key not in ("train", "test"):
                raise ValueError(f"splits has key {key!r}; use train and test")
        return self


class DpoSection(Strict):
    """Direct preference optimisation (``train.objective: dpo``), as TRL's DPOTrainer defines it."""

    beta: float = Field(
        0.1, gt=0, description="how far from the reference the policy may move (TRL's 0.1)"
    )
    loss: Literal[DPO_LOSSES] = Field("sigmoid", description="sigmoid: DPO's -log sigmoid loss")
