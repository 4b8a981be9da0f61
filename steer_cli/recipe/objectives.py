"""The recipe's settings for training objectives other than supervised fine-tuning: DPO's
``beta`` and loss (``dpo``) and its preference pairs (``data.preferences``), GRPO's sampling and
clipped surrogate (``grpo``). Torch-free."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from steer_cli.recipe.strict import Strict

OBJECTIVES = ("sft", "dpo", "grpo")
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
    sft_weight: float = Field(
        0.0,
        ge=0,
        description="weight of a negative log-likelihood term on the chosen answer (per token, "
        "a mean over pairs) added to the DPO loss: RPO, TRL's loss_type [sigmoid, sft] with "
        "loss_weights [1, w]; it keeps DPO from lowering the chosen answer with the rejected "
        "one. 0: DPO alone",
    )


GRPO_SCALINGS = ("group", "none")


class GrpoSection(Strict):
    """Group relative policy optimisation with verifiable rewards (``train.objective: grpo``), as
    TRL's GRPOTrainer defines it: G samples per prompt, rewarded 1 when the task's parser reads
    the gold answer, group-normalised advantages, the clipped surrogate (TRL's default ``dapo``
    aggregation: a mean over the completion tokens of the whole batch)."""

    group_size: int = Field(
        4, description="completions sampled per prompt, G (TRL's num_generations); at least 2"
    )
    temperature: float = Field(
        1.0, gt=0, description="sampling temperature; the log-probabilities use it too (TRL's 1.0)"
    )
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling's cut (1: none)")
    max_new_tokens: int | None = Field(
        None, ge=1, description="tokens sampled per completion at most [default: the task's]"
    )
    beta: float = Field(
        0.0,
        ge=0,
        description="KL coefficient to the reference (the parts disabled; TRL's default 0: none)",
    )
    epsilon: float = Field(0.2, gt=0, lt=1, description="the surrogate's clip range (TRL's 0.2)")
    epsilon_high: float | None = Field(
        None, gt=0, description="the upper clip range, DAPO's clip-higher (null: epsilon)"
    )
    passes: int = Field(
        1, ge=1, description="optimizer steps per batch of samples (TRL's num_iterations)"
    )
    scale_rewards: Literal[GRPO_SCALINGS] = Field(
        "group",
        description="group: (r - group mean) / (group std + 1e-4), TRL's; none: Dr. GRPO's",
    )
    format_reward: float = Field(
        0.0, ge=0, description="added to the reward when the parser finds any answer (0: none)"
    )

    @field_validator("group_size")
    @classmethod
    def _a_group(cls, value: int) -> int:
        if value < 2:
            raise ValueError("must be at least 2: advantages compare the samples of a prompt")
        return value
