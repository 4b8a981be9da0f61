"""The recipe's ``adapter`` section: where, how and on which tokens an activation adapter steers,
and how ``rank: auto`` picks its rank."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    PlainValidator,
    ValidationInfo,
    field_validator,
    model_validator,
)

from steer_cli.engine.names import (
    ACTIVATIONS,
    JOLA_PENALTIES,
    PARAMETERIZATIONS,
    SITES,
    check_positions,
)
from steer_cli.methods import METHODS
from steer_cli.recipe.strict import Strict


def _check_rank(value: object) -> int | str:
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("should be a valid integer or 'auto'")
    if value < 1:
        raise ValueError("should be greater than or equal to 1 (or 'auto')")
    return value


_PERCENT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*$")


def _check_budget(value: object) -> int | str | None:
    """A share of the base model (``"0.1%"``) or an absolute parameter count (``100000``)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str) and (m := _PERCENT.match(value)) and 0 < float(m[1]) <= 100:
        return f"{float(m[1]):g}%"
    raise ValueError(
        "should be a percentage of the base model such as '0.1%', or a parameter count"
    )


def _check_method(value: object) -> str | None:
    if value is None or (isinstance(value, str) and value in METHODS):
        return value
    raise ValueError(f"should name a method ({', '.join(METHODS)})")


class AdapterSection(Strict):
    site: Literal[SITES] = Field("block_output", description="where the edit is applied")
    parameterization: Literal[PARAMETERIZATIONS] = Field(
        "lowrank", description="the form of delta(h)"
    )
    rank: Annotated[int | Literal["auto"], PlainValidator(_check_rank)] = Field(
        8, description="an integer, or auto: the rank closest to adapter.budget or .match"
    )
    budget: Annotated[int | str | None, PlainValidator(_check_budget)] = Field(
        None, description="with rank auto: '0.1%' of the base model, or a parameter count"
    )
    match: Annotated[str | None, PlainValidator(_check_method)] = Field(
        None, description="with rank auto: match this method's parameter count, e.g. lora"
    )
    activation: Literal[ACTIVATIONS] = Field(
        "none", description="lowrank's phi between W_down and W_up (none: linear)"
    )
    bias: bool = Field(False, description="lowrank: add a learned bias b")
    layers: str | list[int] = Field(
        "all", description="all, a list of indices, 0-11 (inclusive) or 4: (a slice)"
    )
    positions: Annotated[str, AfterValidator(check_positions)] = Field(
        "all",
        description="tokens steered: all, prompt, generated, last_prompt, f<k>+l<k> (first and "
        "last k prompt tokens)",
    )
    lofit_heads: Annotated[float, Field(gt=0)] | Literal["all"] = Field(
        0.1,
        description="heads LoFiT keeps, all layers together: a fraction if < 1, else a count; "
        "all: every head (Table 2's LoFiT)",
    )
    lofit_l1: float = Field(1e-3, ge=0, description="L1 weight on LoFiT's stage-1 head scales")
    lofit_lr_stage1: float | None = Field(
        1e-3, gt=0, description="LR of LoFiT's stage 1 (head scales A); null: train.lr"
    )
    lofit_lr_stage2: float | None = Field(
        None, gt=0, description="LR of LoFiT's stage 2 (biases v of the kept heads); null: train.lr"
    )
    lofit_epochs_stage1: float | None = Field(
        None, gt=0, description="epochs of LoFiT's stage 1; null: train.epochs"
    )
    lofit_epochs_stage2: float | None = Field(
        None, gt=0, description="epochs of LoFiT's stage 2; null: train.epochs"
    )
    lofit_stage_split: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="variant: one training at train.lr, this share of its steps selecting heads "
        "(steer 0.1.0); null: LoFiT's two trainings",
    )
    jola_l0: float = Field(
        0.1, ge=0, description="JoLA's expected-L0 gate penalty weight at step 0"
    )
    jola_l0_decay: float = Field(0.01, ge=0, description="its decay: weight * exp(-decay * step)")
    jola_penalty: Literal[JOLA_PENALTIES] = Field(
        "jola",
        description="jola: JoLA's code's scale (per-layer mean over heads / (L*H), shift gates "
        "at lambda_t, scale gates at 1 - lambda_t); sum: every gate at lambda_t (steer 0.1.0)",
    )

    @field_validator("parameterization")
    @classmethod
    def _heads_need_attn_heads(cls, value: str, info: ValidationInfo) -> str:
        site = info.data.get("site")
        if value in ("lofit", "jola") and site is not None and site != "attn_heads":
            raise ValueError(
                f"{value} edits attention heads: set adapter.site=attn_heads (not {site})"
            )
        return value

    @field_validator("lofit_heads")
    @classmethod
    def _whole_count(cls, value: float | str) -> float | str:
        if value != "all" and value >= 1 and value % 1:
            raise ValueError("should be a fraction below 1 or a whole number of heads")
        return value

    @model_validator(mode="after")
    def _one_lofit_schedule(self) -> AdapterSection:
        staged = sorted(
            k for k in self.model_fields_set if k.startswith(("lofit_lr_", "lofit_epochs_"))
        )
        if self.lofit_stage_split is not None and staged:
            raise ValueError(
                f"lofit_stage_split runs one training at train.lr and train.epochs: drop "
                f"{', '.join(staged)}, or drop lofit_stage_split for LoFiT's two trainings"
            )
        return self

    @model_validator(mode="after")
    def _rank_search(self) -> AdapterSection:
        if self.budget is not None and self.match is not None:
            raise ValueError("set adapter.budget or adapter.match, not both")
        targeted = self.budget is not None or self.match is not None
        if self.rank == "auto" and not targeted:
            raise ValueError("rank auto needs adapter.budget (e.g. '0.1%') or adapter.match")
        if self.rank != "auto" and targeted:
            raise ValueError(
                f"adapter.budget/match pick the rank: set adapter.rank to auto, not {self.rank}"
            )
        return self
