"""The recipe's schema: one pydantic model per section, validated strictly (an unknown key is an
error). Torch-free, so a recipe error comes before anything heavy loads."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    field_validator,
    model_validator,
)

from steer_cli.data.listops import LRA as LISTOPS_LRA
from steer_cli.data.tasks import (
    LISTOPS_LRA_MAX_LENGTH,
    get_task,
    parse_split_spec,
    template_fields,
)
from steer_cli.engine.names import (
    ACTIVATIONS,
    JOLA_PENALTIES,
    PARAMETERIZATIONS,
    SITES,
    check_positions,
)
from steer_cli.errors import SteerError
from steer_cli.methods import METHODS
from steer_cli.recipe.objectives import OBJECTIVES, DpoSection, PreferenceDataSection


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    name: str = Field("smollm2-135m", description="hub id, local dir, smollm2-135m or tiny-*")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    trust_remote_code: bool = Field(
        False, description="let a hub model run its own modelling code (off: never)"
    )


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


class AdapterSection(_Section):
    site: Literal[SITES] = "block_output"
    parameterization: Literal[PARAMETERIZATIONS] = "lowrank"
    rank: Annotated[int | Literal["auto"], PlainValidator(_check_rank)] = Field(
        8, description="an integer, or auto: the rank closest to adapter.budget or .match"
    )
    budget: Annotated[int | str | None, PlainValidator(_check_budget)] = Field(
        None, description="with rank auto: '0.1%' of the base model, or a parameter count"
    )
    match: Annotated[str | None, PlainValidator(_check_method)] = Field(
        None, description="with rank auto: match this method's parameter count, e.g. lora"
    )
    activation: Literal[ACTIVATIONS] = "none"
    bias: bool = False
    layers: str | list[int] = "all"
    positions: Annotated[str, AfterValidator(check_positions)] = "all"
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


# peft's names for the projections of Llama-shaped models (Mistral, Qwen, Gemma share them).
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraSection(_Section):
    """peft LoRA (``kind: lora``). Defaults follow the authors' released code: peft's own."""

    rank: int = Field(8, ge=1, description="LoRA r")
    alpha: float = Field(8.0, gt=0, description="scale alpha / r (peft's default alpha is 8)")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: list(LORA_TARGETS), min_length=1, description="module names"
    )
    lr: float = Field(
        3e-4, ge=0, description="joint kinds: LoRA's learning rate (train.lr is the adapter's)"
    )


# LoRA matrices whose output is added into the residual stream (attention and MLP writers).
ORTH_WRITERS = ("o_proj", "down_proj")


class OrthSection(_Section):
    """Joint-Orth (SPEC 5): keep the adapter out of the column space of LoRA's writers."""

    enabled: bool = Field(False, description="project the adapter (joint-orth sets it)")
    when: Literal["step", "epoch", "init"] = Field(
        "step", description="after every `every` steps, at each epoch start, or once before step 1"
    )
    every: int = Field(1, ge=1, description="when=step: project after every N optimizer steps")
    side: Literal["output", "input"] = Field(
        "output",
        description="output: W_up <- (I - QQ^T) W_up; input: W_down <- W_down (I - QQ^T) "
        "(the released code's)",
    )
    writers: list[Literal[ORTH_WRITERS]] = Field(
        default_factory=lambda: list(ORTH_WRITERS),
        min_length=1,
        description="LoRA B matrices spanning Q: o_proj, down_proj (released code: down_proj)",
    )
    min_norm: float = Field(1e-6, ge=0, description="skip a layer while ||B||_F is below this")
    rtol: float = Field(
        1e-5, gt=0, lt=1, description="singular values below rtol * largest leave Q's basis"
    )


class ListOpsSection(_Section):
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


class LocalTaskSection(_Section):
    """The ``local`` task: templates over the fields of your own rows."""

    prompt: str | None = Field(None, description="str.format template, e.g. '{question}\\n'")
    target: str | None = Field(None, description="str.format template, e.g. 'Answer: {label}'")
    answer: str | None = Field(None, description="gold answer template (default: the target)")
    parser: str = Field("exact", description="exact | number | letter | regex:<pattern>")
    max_new_tokens: int = Field(64, ge=1)

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


class DataSection(_Section):
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
    train_size: int | None = Field(1000, ge=1, description="examples (generated or at most)")
    validation_size: int | None = Field(100, ge=0)
    test_size: int | None = Field(200, ge=1)
    seed: int = 42
    chat_template: bool | Literal["auto"] = "auto"
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


class TrainSection(_Section):
    objective: Literal[OBJECTIVES] = Field(
        "sft", description="sft: the answers' cross-entropy; dpo: preference pairs (see dpo)"
    )
    lr: float = Field(2e-3, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    batch_size: int = Field(8, ge=1, description="effective batch (examples per optimizer step)")
    micro_batch_size: int | None = Field(None, ge=1, description="per forward; accumulates")
    seed: int = 42
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["constant", "cosine", "linear"] = "constant"
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    max_grad_norm: float | None = Field(None, gt=0)
    log_every: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _micro_within_batch(self) -> TrainSection:
        micro = self.micro_batch_size
        if micro is not None and micro > self.batch_size:
            raise ValueError(
                f"micro_batch_size ({micro}) is larger than batch_size ({self.batch_size}): a "
                "micro-batch is a part of the effective batch; lower it or raise batch_size"
            )
        return self

    save_every: int | None = Field(
        None, ge=1, description="checkpoint every N optimizer steps (null: by time only)"
    )
    save_every_minutes: float | None = Field(
        15.0, gt=0, description="checkpoint after this many minutes of training (null: by steps)"
    )
    keep_checkpoints: bool = Field(
        False, description="keep the last checkpoint in RUN/checkpoints when the run finishes"
    )
    gradient_checkpointing: bool = Field(
        False,
        description="recompute each decoder layer in backward instead of keeping its "
        "activations (transformers' non-reentrant checkpointing): less memory, more time",
    )
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="a NaN/inf loss or gradient: stop the run, or skip that batch"
    )
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "none"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="experiment trackers (accelerate's): tensorboard (events in RUN/logs), "
        "wandb, mlflow; none or [] for no tracking",
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value

    @property
    def trackers(self) -> list[str]:
        return [name for name in dict.fromkeys(self.report_to) if name != "none"]


class EvalSection(_Section):
    batch_size: int = Field(32, ge=1)
    max_new_tokens: int | None = Field(None, ge=1, description="default: the task's")
    before: bool = Field(True, description="also evaluate the base model before training")
    joint_mode: Literal["both", "lora", "adapter"] = Field(
        "both", description="joint kinds: evaluate both parts, LoRA only or the adapter only"
    )


class Recipe(_Section):
    name: str | None = None
    method: str = "postblock"
    model: ModelSection = ModelSection()
    adapter: AdapterSection = AdapterSection()
    lora: LoraSection = LoraSection()
    orth: OrthSection = OrthSection()
    data: DataSection = DataSection()
    train: TrainSection = TrainSection()
    dpo: DpoSection = DpoSection()
    eval: EvalSection = EvalSection()

    def resolved(self) -> dict:
        """The fully populated recipe, as written to a run's ``config.yaml``."""
        return self.model_dump(mode="json")
