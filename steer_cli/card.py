"""A run directory's ``README.md``: a model card in the Hugging Face format, so the directory can
be published as it is (``huggingface-cli upload USER/NAME runs/quickstart``).

YAML front matter (``base_model``, ``library_name``, ``tags``, ``datasets``, ``pipeline_tag``),
then what was trained, on what, with which results, the command that trains it again, and how to
load it. Built from the resolved recipe and ``results.json`` alone.
"""

from __future__ import annotations

import yaml

# The hub repository behind a model name steer resolves itself (the embedded GGUF's source).
HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}
CARD = "README.md"


def base_model_id(name: str) -> str | None:
    """The hub id a card can name as ``base_model``: none for tiny random models and paths."""
    if name.lower() in HUB_IDS:
        return HUB_IDS[name.lower()]
    if name.lower().startswith("tiny-") or name.startswith((".", "/", "~")) or name.count("/") != 1:
        return None
    return name


def front_matter(recipe, results: dict, task) -> dict:
    base = base_model_id(recipe.model.name)
    tags = ["steer", "activation-steering", recipe.method, results.get("kind", "")]
    if results.get("kind") == "adapter":
        tags.append(recipe.adapter.parameterization)
    meta: dict = {"library_name": "steer"}
    if base is not None:
        meta["base_model"] = base
    meta["tags"] = list(dict.fromkeys(t for t in tags if t))
    if getattr(task, "source", None):
        meta["datasets"] = [task.source]
    meta["pipeline_tag"] = "text-generation"
    return meta


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _method_lines(recipe, results: dict) -> list[str]:
    kind = results.get("kind")
    lines = [f"- **Method:** `{recipe.method}` ({kind})"]
    if kind in ("adapter", "joint"):
        a = recipe.adapter
        lines += [
            f"- **Site:** `{a.site}` · **parameterization:** `{a.parameterization}` · "
            f"**rank:** {a.rank} · **activation:** `{a.activation}`",
            f"- **Layers:** `{a.layers}` · **positions:** `{a.positions}`",
        ]
    if kind in ("lora", "joint"):
        lora = recipe.lora
        lines.append(
            f"- **LoRA:** rank {lora.rank}, alpha {lora.alpha}, on {', '.join(lora.target_modules)}"
        )
    trainable, share = results.get("trainable_params"), results.get("trainable_percent")
    if trainable is not None:
        lines.append(f"- **Trainable parameters:** {trainable:,} ({share:.4f}% of the base model)")
    return lines


def _objective_lines(recipe, preferences: dict | None) -> list[str]:
    """DPO: what the pairs were and how the held-out ones rank; GRPO: how it sampled and from
    what it started (SFT: nothing to add)."""
    if recipe.train.objective == "grpo":
        g = recipe.grpo
        line = (
            f"- **Objective:** GRPO with the task parser's rewards, {g.group_size} samples per "
            f"prompt at temperature {g.temperature:g}, epsilon {g.epsilon:g}, beta {g.beta:g}"
        )
        if recipe.train.init_from:
            line += f"; started from the run {recipe.train.init_from}"
        return [line]
    if recipe.train.objective != "dpo":
        return []
    line = f"- **Objective:** DPO, {recipe.dpo.loss} loss, beta {recipe.dpo.beta:g}"
    if preferences and preferences.get("pairs"):
        line += (
            f"; {preferences['pairs']} held-out pairs: {_percent(preferences['accuracy'])} "
            f"ranked right, reward margin {preferences['reward_margin']:+.3f}"
        )
    return [line]


def model_card(recipe, results: dict, task, run_name: str) -> str:
    """The card's text (front matter first)."""
    meta = front_matter(recipe, results, task)
    evaluation = results.get("eval", {})
    before, after = evaluation.get("before") or {}, evaluation.get("after") or {}
    data = results.get("data") or {}
    examples = results.get("examples") or {}
    t = recipe.train
    base = meta.get("base_model")
    linked = f" ([{base}](https://huggingface.co/{base}))" if base else ""
    task_name = results.get("task", recipe.data.task)
    body = [
        f"# {run_name}",
        "",
        f"A `{recipe.method}` run of steer on `{recipe.model.name}`{linked}, trained on "
        f"`{task_name}`.",
        "",
        "## What was trained",
        "",
        *_method_lines(recipe, results),
        "",
        "## Data and training",
        "",
        f"- **Task:** `{task_name}`"
        + (f" (from `{task.source}`)" if getattr(task, "source", None) else ""),
        f"- **Examples:** {examples.get('train', '-')} train, {examples.get('test', '-')} test, "
        f"data seed {data.get('seed', recipe.data.seed)}",
        f"- **Optimizer:** AdamW, lr {t.lr:g}, {t.scheduler} schedule, batch {t.batch_size}, "
        f"{results.get('steps', '-')} steps, seed {t.seed}",
        *_objective_lines(recipe, evaluation.get("preferences")),
        "",
        "## Results",
        "",
        f"| | accuracy on {after.get('total', '-')} test examples |",
        "|---|---|",
        f"| base model | {_percent(before.get('accuracy'))} |",
        f"| after training | {_percent(after.get('accuracy'))} |",
        "",
        "Greedy generation, the task's answer parser (`steer eval RUN --protocol paper` "
        "reproduces it).",
        "",
        "## Train it again",
        "",
        "```bash",
        f"steer train {run_name}/config.yaml -o {run_name}-again",
        "```",
        "",
        "## Use it",
        "",
        "```bash",
        f'steer generate {run_name} "your prompt" --compare-base',
        "```",
        "",
        "```python",
        "from steer_cli.runs import load_run",
        "",
        f'model, tokenizer, parts = load_run("{run_name}")',
        "```",
        "",
    ]
    header = yaml.safe_dump(meta, sort_keys=False).rstrip()
    return f"---\n{header}\n---\n\n" + "\n".join(body)
