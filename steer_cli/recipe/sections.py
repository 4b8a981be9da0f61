"""The recipe's schema: one pydantic model per section, validated strictly (an unknown key is an
error). Torch-free, so a recipe error comes before anything heavy loads. The ``adapter`` and
``data`` sections live in modules of their own beside this one."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from steer_cli.recipe.adapter import AdapterSection
from steer_cli.recipe.data import DataSection
from steer_cli.recipe.objectives import OBJECTIVES, DpoSection, GrpoSection
from steer_cli.recipe.strict import Strict


class ModelSection(Strict):
    name: str = Field("smollm2-135m", description="hub id, local dir, smollm2-135m or tiny-*")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on a GPU, float32 on a CPU"
    )
    device: str = Field("auto", description="auto (cuda if available, else cpu), cpu, cuda, cuda:N")
    trust_remote_code: bool = Field(
        False, description="let a hub model run its own modelling code (off: never)"
    )


# peft's names for the projections of Llama-shaped models (Mistral, Qwen, Gemma share them).
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraSection(Strict):
    """peft LoRA (``kind: lora``). Defaults follow the authors' released code: peft's own."""

    rank: int = Field(8, ge=1, description="LoRA r")
    alpha: float = Field(8.0, gt=0, description="scale alpha / r (peft's default alpha is 8)")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout")
    target_modules: list[str] = Field(
        default_factory=lambda: list(LORA_TARGETS), min_length=1, description="module names"
    )
    lr: float = Field(
        3e-4, ge=0, description="joint kinds: LoRA's learning rate (train.lr is the adapter's)"
    )


# LoRA matrices whose output is added into the residual stream (attention and MLP writers).
ORTH_WRITERS = ("o_proj", "down_proj")


class OrthSection(Strict):
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


class TrainSection(Strict):
    objective: Literal[OBJECTIVES] = Field(
        "sft",
        description="sft: the answers' cross-entropy; dpo: preference pairs (see dpo); grpo: "
        "sampled answers rewarded by the task's parser (see grpo)",
    )
    init_from: str | None = Field(
        None,
        description="a finished run of this method and model whose trained parts training "
        "starts from (e.g. an SFT adapter for GRPO or DPO); null: their initialisation",
    )
    reference: Literal["start", "base"] = Field(
        "start",
        description="what DPO and GRPO's KL term compare the policy with: start, the model as "
        "training starts (init_from's trained parts: the DPO paper's SFT reference; without "
        "init_from the base, as the parts start as the identity); base, the trained parts "
        "disabled (TRL's default for a PEFT model without ref_adapter_name)",
    )
    lr: float = Field(2e-3, gt=0, description="learning rate [default: the method's]")
    epochs: float = Field(1.0, gt=0, description="passes over train [default: the task's]")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    batch_size: int = Field(8, ge=1, description="effective batch (examples per optimizer step)")
    micro_batch_size: int | None = Field(None, ge=1, description="per forward; accumulates")
    seed: int = Field(42, description="initialisation, batch order, dropout (data.seed: the data)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW's [default: the method's]")
    scheduler: Literal["constant", "cosine", "linear"] = Field(
        "constant", description="learning-rate schedule [default: the method's]"
    )
    warmup_ratio: float = Field(
        0.0, ge=0, le=1, description="share of the steps warming up [default: the method's]"
    )
    max_grad_norm: float | None = Field(None, gt=0, description="clip gradients (null: never)")
    log_every: int = Field(10, ge=1, description="progress line every N optimizer steps")

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


class EvalSection(Strict):
    batch_size: int = Field(32, ge=1, description="prompts generated together")
    max_new_tokens: int | None = Field(None, ge=1, description="default: the task's")
    before: bool = Field(True, description="also evaluate the base model before training")
    joint_mode: Literal["both", "lora", "adapter"] = Field(
        "both", description="joint kinds: evaluate both parts, LoRA only or the adapter only"
    )


class Recipe(Strict):
    name: str | None = Field(None, description="the run's name [default: the file's stem]")
    method: str = Field("postblock", description="a preset (see `steer methods`)")
    model: ModelSection = ModelSection()
    adapter: AdapterSection = AdapterSection()
    lora: LoraSection = LoraSection()
    orth: OrthSection = OrthSection()
    data: DataSection = DataSection()
    train: TrainSection = TrainSection()
    dpo: DpoSection = DpoSection()
    grpo: GrpoSection = GrpoSection()
    eval: EvalSection = EvalSection()

    def resolved(self) -> dict:
        """The fully populated recipe, as written to a run's ``config.yaml``."""
        return self.model_dump(mode="json")
