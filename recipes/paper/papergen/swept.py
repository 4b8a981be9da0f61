"""Tables 1, 2 and 4: one recipe per cell, for ``steer train RECIPE --sweep`` (the paper's
protocol: the method's LR grid on validation, then 5 seeds on test; SPEC 6, appendix F)."""

from __future__ import annotations

from .budgets import (
    MODELS,
    T1_RANK,
    lora_params,
    loreft_params,
    lowrank_params,
    match_rank,
    params_cell,
    share,
)
from .layout import HEADER, TITLES, Spec, finish, grid_text, lr_text, note_lines, section_lines

TASKS = ("boolq", "winogrande", "arc-challenge", "gsm8k", "aqua", "listops")
T4_TASKS = ("gsm8k", "boolq", "winogrande")
EPOCHS = {"gsm8k": 3, "alpaca": 3}  # SPEC 6: 3 for GSM8K and Alpaca, 1 for the others

# The learning-rate grids: each method preset's lr_grid (steer_cli/methods.py).
R8_GRID = (5e-4, 1e-3, 2e-3, 3e-3, 5e-3)
SMALL_GRID = (2e-3, 5e-3, 1e-2, 2e-2, 5e-2)  # r=1, vector, LoFiT, JoLA: "shifted up"
LORA_GRID = (5e-5, 1e-4, 3e-4, 7e-4, 1.5e-3)
SFT_GRID = (5e-6, 1e-5, 2e-5, 5e-5, 1e-4)

LORA_SECTION = [
    "alpha: 8",
    "dropout: 0.0",
    "target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]",
]


def _sft(m: dict, table: str, stem: str) -> Spec:
    notes = ["Every weight trains; cosine schedule, warmup 10% (the preset's)."]
    return Spec(notes, lr=2e-5, grid=SFT_GRID)


def _lora(m: dict, table: str, stem: str) -> Spec:
    rank = 16 if stem == "lora-r16" else 8
    notes = [
        f"LoRA r={rank}: {share(m, lora_params(m, rank))}.",
        "alpha 8 is peft's default, as in the authors' code (scale alpha/r).",
    ]
    return Spec(notes, {"lora": [f"rank: {rank}", *LORA_SECTION]}, lr=3e-4, grid=LORA_GRID)


def _reft(m: dict, table: str, stem: str) -> Spec:
    rank = T1_RANK
    notes = [
        f"LoReFT rank {rank}, appendix F.2's 'r=8 (ReFT and ours)': "
        f"{share(m, loreft_params(m, rank))} (the paper's Params: "
        f"{params_cell(table, m, 'ReFT')}).",
        "The paper also sweeps the positions (appendix F.2): run the sweep again with "
        "adapter.positions=f7+l7 and keep the better on validation.",
    ]
    adapter = [
        f"rank: {rank}                   # the same budget as Ours",
        "layers: all                # 'ReFT is also applied at all layers'",
        "positions: last_prompt     # or f7+l7: the paper sweeps both",
    ]
    return Spec(notes, {"adapter": adapter}, lr=2e-3, grid=R8_GRID)


def _postblock(m: dict, table: str, stem: str) -> Spec:
    if table == "table1":  # Ours, at ReFT's budget
        notes = [
            f"Rank {T1_RANK}, appendix F.2's 'r=8 (ReFT and ours)' at both model sizes: "
            f"{share(m, lowrank_params(m, T1_RANK))} (the paper's Params: "
            f"{params_cell(table, m, 'Ours')}; it prints shares rounded or cut)."
        ]
        rank = [
            f"rank: {T1_RANK}                   # ReFT's budget (papergen/budgets.py)",
            "activation: none           # linear, as in Tables 1 and 2",
        ]
    elif stem == "postblock-r1":  # Table 2's Ours r=1
        notes = [f"Rank 1: {share(m, lowrank_params(m, 1))}."]
        adapter = [
            "rank: 1",
            "activation: none           # linear",
            "layers: all",
            "positions: all",
        ]
        return Spec(notes, {"adapter": adapter}, lr=1e-2, grid=SMALL_GRID, preset_grid=False)
    else:  # Table 4's Adapter
        target = lora_params(m, 8)
        chosen = match_rank(m, target)
        notes = [
            "Section 6.4 sets the adapter's rank so its count is comparable to LoRA's: "
            f"match: lora picks r={chosen} here ({share(m, lowrank_params(m, chosen))}; "
            f"LoRA r=8: {target:,})."
        ]
        rank = [
            "rank: auto",
            "match: lora                # the rank whose count is closest to LoRA r=8's",
            "activation: none           # linear",
        ]
    adapter = [*rank, "layers: all", "positions: all"]
    return Spec(notes, {"adapter": adapter}, lr=2e-3, grid=R8_GRID)


def _vector(m: dict, table: str, stem: str) -> Spec:
    notes = [f"One vector per layer: {share(m, m['layers'] * m['d'])}."]
    return Spec(notes, {"adapter": ["layers: all", "positions: all"]}, lr=1e-2, grid=SMALL_GRID)


def _lofit(m: dict, table: str, stem: str) -> Spec:
    heads = m["layers"] * m["heads"]
    head_dim = m["q_dim"] // m["heads"]
    notes = [
        f"'For LoFIT, we intervene on all heads': all {heads} are kept, and stage 2 trains "
        f"their biases: {share(m, heads * head_dim)}."
    ]
    adapter = [f"lofit_heads: {heads}           # every head (a count)"]
    return Spec(notes, {"adapter": adapter}, lr=1e-2, grid=SMALL_GRID)


def _jola(m: dict, table: str, stem: str) -> Spec:
    head_dim = m["q_dim"] // m["heads"]
    count = m["layers"] * m["heads"] * (2 * head_dim + 2)
    notes = [f"Gates, scales and biases on every head: {share(m, count)}."]
    return Spec(notes, lr=1e-2, grid=SMALL_GRID)


def _joint(m: dict, table: str, stem: str) -> Spec:
    target = lora_params(m, 8)
    notes = [f"LoRA r=8 plus an adapter matched to it (r={match_rank(m, target)})."]
    sections = {
        "lora": ["rank: 8", "alpha: 8"],
        "adapter": ["rank: auto", "match: lora", "activation: none", "layers: all"],
    }
    return Spec(notes, sections)  # F.2's Joint grid: the preset's, once the method exists


SPECS = {
    "sft": _sft,
    "lora": _lora,
    "reft": _reft,
    "postblock": _postblock,
    "postblock-vector": _vector,
    "lofit": _lofit,
    "jola": _jola,
    "joint": _joint,
    "joint-orth": _joint,
}


def recipe(table: str, key: str, task: str, stem: str, method: str, what: str) -> str:
    m = MODELS[key]
    if method not in SPECS:
        raise ValueError(f"no recipe for {table} {method} {stem}")
    spec = SPECS[method](m, table, stem)
    if key in ("qwen3-4b", "llama-3.1-8b"):
        spec.notes.append(
            "Appendix F.2 gives the larger models grids of their own (their values did not "
            "survive in its text); this is SPEC 6's grid."
        )
    lines = [
        f"# {TITLES[table]} · {m['paper']} · {task} · {what}.",
        HEADER,
        *note_lines(spec.notes),
        *_sweep_lines(f"recipes/paper/{table}/{key}/{task}/{stem}.yaml", spec),
        f"name: {table}-{key}-{task}-{stem}",
        f"method: {method}",
        "model:",
        f"  name: {m['hub']}",
        *section_lines(spec.sections),
        *_data_lines(key, task),
        "train:",
        *([f"  lr: {lr_text(spec.lr)}  # --sweep tries the grid"] if spec.lr else []),
        f"  epochs: {EPOCHS.get(task, 1)}",
        "  batch_size: 8              # effective; train.micro_batch_size=N accumulates",
        "  seed: 42                   # --sweep: 42..46",
    ]
    return finish(lines)


def _sweep_lines(path: str, spec: Spec) -> list[str]:
    sweep = f"steer train {path} --sweep --seeds 5"
    if not spec.preset_grid:
        sweep += f" --lrs {grid_text(spec.grid)}"
    lines = [
        "# The paper's protocol: LR grid on validation, then 5 seeds on test; mean and std:",
        f"#   {sweep}",
    ]
    if spec.grid:
        said = "--lrs above" if not spec.preset_grid else "the method preset's lr_grid"
        lines.append(f"#   grid ({said}): {' '.join(f'{g:g}' for g in spec.grid)}")
    return lines


def _data_lines(key: str, task: str) -> list[str]:
    lines = ["data:", f"  task: {task}"]
    if key == "gemma-3-1b":
        lines.append("  chat_template: auto        # the authors' loader chats with Gemma only")
    else:
        lines.append("  chat_template: false       # plain prompts, as the authors' loader")
    lines += [
        "  train_size: null           # all of it (null: no cap)",
        "  validation_size: null",
        "  test_size: null",
    ]
    if task == "listops":
        lines += [
            "  listops:",
            "    preset: lra              # LRA's depth, arity and lengths; 96k/2k/2k generated",
            "  # or LRA's own files: data.path=DIR with basic_train.tsv, basic_val.tsv, ...",
        ]
    return lines
