"""AlpacaEval-style instruction following: generate, judge pairwise, report win rates.

:func:`evaluate_instructions` is the whole pipeline behind ``steer eval RUN --instructions``:

1. the instruction set: AlpacaEval's 805 (``tatsu-lab/alpaca_eval`` on the hub; offline it fails
   fast and names the alternatives), ``everyday`` (40 instructions shipped with steer), or a local
   file (a list of ``{"instruction": ...}``, e.g. AlpacaEval outputs; json, jsonl, csv, parquet);
2. the target's outputs, greedy and batched (:func:`steer_cli.evaluate.generation.generate`), in
   the prompt format the run was trained with: the Alpaca template for an ``alpaca`` run, the bare
   instruction otherwise, each in the chat template when the run's ``data.chat_template`` says so
   (a model name: the bare instruction, in its chat template if it has one); a joint run in its
   recipe's ``eval.joint_mode``, as training, the harness and ``steer compare`` evaluate it;
3. the reference's outputs: another run's or model's (generated the same way), an AlpacaEval
   outputs JSON, or by default the run's base model prompted exactly as the run;
4. a pairwise judge (:mod:`steer_cli.evaluate.judge`) on both presentation orders, averaged;
5. win rate, standard error and length-controlled win rate (:mod:`steer_cli.evaluate.winrate`).

Files (AlpacaEval's formats, written atomically into ``out_dir``): ``model_outputs.json`` and
``reference_outputs.json`` (lists of ``{instruction, output, generator, dataset}``),
``annotations.json`` (per instruction: ``output_1``/``generator_1`` the reference,
``output_2``/``generator_2`` the model, ``preference`` = P(model better) in [0, 1], i.e.
AlpacaEval's preference minus 1, both orders' preferences and the lengths in characters) and
``summary.json``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from steer_cli.data.sources import FORMATS
from steer_cli.errors import SteerError
from steer_cli.evaluate.command import Target, load_target

HUB_REPO = "tatsu-lab/alpaca_eval"
HUB_FILE = "alpaca_eval.json"  # the `alpaca_eval` config's `eval` split: 805 instructions
HUB_NAME = "alpaca_eval"
EVERYDAY = "everyday"
EVERYDAY_FILE = Path(__file__).parent / "data" / "everyday_instructions.json"

MODEL_OUTPUTS = "model_outputs.json"
REFERENCE_OUTPUTS = "reference_outputs.json"
ANNOTATIONS = "annotations.json"
SUMMARY = "summary.json"
OUT_SUBDIR = Path("eval") / "alpaca"  # under a run directory

_INSTRUCTIONS_HINT = (
    f'pass --instructions FILE.json (a list of {{"instruction": ...}}, e.g. AlpacaEval\'s '
    f"{HUB_FILE} downloaded where there is a network) or --instructions {EVERYDAY} (shipped)"
)


# ------------------------------------------------------------------------- instruction sets


def load_instructions(source: str | None) -> tuple[str, list[dict]]:
    """``(set name, rows)``: each row has ``instruction`` and ``dataset`` (and ``input`` when the
    source has a non-empty one). ``None`` or ``"alpaca_eval"``: AlpacaEval's 805 from the hub."""
    if source in (None, HUB_NAME):
        rows, name = _load_hub(), HUB_NAME
    elif source == EVERYDAY:
        rows, name = _read(EVERYDAY_FILE), EVERYDAY
    else:
        path = Path(source)
        if not path.is_file():
            raise SteerError(f"instruction file not found: {source}", _INSTRUCTIONS_HINT)
        rows, name = _read(path), path.stem
    out = []
    for i, row in enumerate(rows):
        instruction = row.get("instruction")
        if not isinstance(instruction, str) or not instruction.strip():
            raise SteerError(
                f"{source or HUB_NAME} row {i + 1}: no instruction (a non-empty "
                f'"instruction" field)',
                _INSTRUCTIONS_HINT,
            )
        item = {"instruction": instruction, "dataset": str(row.get("dataset") or name)}
        if str(row.get("input") or "").strip():
            item["input"] = str(row["input"])
        out.append(item)
    if not out:
        raise SteerError(f"{source}: no instructions in it", _INSTRUCTIONS_HINT)
    return name, out


def _read(path: Path) -> list[dict]:
    from steer_cli.data.sources import read_rows

    return read_rows(path)[0]


def _load_hub() -> list[dict]:
    """AlpacaEval's eval set: the JSON file itself (the hub repo's loading script is one that
    recent ``datasets`` no longer runs), from the cache when offline."""
    import json

    from steer_cli.data.sources import hub_offline_by_env, hub_reachable

    offline = hub_offline_by_env() or not hub_reachable()
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(HUB_REPO, HUB_FILE, repo_type="dataset", local_files_only=offline)
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except Exception as exc:  # offline, not cached, HTTP errors: all the user's to fix the same way
        why = "no network and not in the Hugging Face cache" if offline else str(exc).split("\n")[0]
        raise SteerError(
            f"cannot load AlpacaEval's instructions ({HUB_REPO}, {HUB_FILE}): {why}",
            _INSTRUCTIONS_HINT,
        ) from None


def read_outputs(path: str | Path) -> list[dict]:
    """An AlpacaEval outputs file: a list of ``{instruction, output, generator?, ...}``."""
    path = Path(path)
    if not path.is_file():
        raise SteerError(f"reference outputs not found: {path}")
    rows = _read(path)
    for i, row in enumerate(rows):
        if not isinstance(row.get("instruction"), str) or not isinstance(row.get("output"), str):
            raise SteerError(
                f"{path} row {i + 1}: an AlpacaEval outputs file has an instruction and an "
                "output (strings) in every row",
                "e.g. another evaluation's model_outputs.json",
            )
    return rows


def align_reference(rows: list[dict], reference: list[dict], origin: str) -> list[dict]:
    """The reference row for each instruction, in the instructions' order (AlpacaEval pairs
    outputs by instruction text); every instruction must have one."""
    by_key: dict[tuple[str, str], dict] = {}
    for ref in reference:
        by_key.setdefault(_key(ref), ref)
    missing = [row for row in rows if _key(row) not in by_key]
    if missing:
        first = missing[0]["instruction"].strip().splitlines()[0][:80]
        raise SteerError(
            f"{origin} has no output for {len(missing)} of the {len(rows)} instructions "
            f"(first: {first!r})",
            "generate the reference on the same instructions (--instructions), or leave "
            "--reference out to compare with the base model",
        )
    return [by_key[_key(row)] for row in rows]


def _key(row: dict) -> tuple[str, str]:
    return row["instruction"].strip(), str(row.get("input") or "").strip()


# ------------------------------------------------------------------------------- generators


@dataclass
class Generator:
    """Something that answers instructions: a run or a model, and how it was trained to be
    prompted."""

    name: str
    load: Callable[[], Target]  # the model as it is evaluated: Target.evaluating()
    style: str  # "alpaca" (the Alpaca template) or "plain" (the instruction itself)
    chat_template: bool | str  # a recipe's data.chat_template: true, false or "auto"
    base: str | None = None  # a run's base model


def resolve_generator(
    target: str, *, device: str | None = None, dtype: str | None = None, force: bool = False
) -> Generator:
    """A run directory (has ``config.yaml``) or any :func:`steer_cli.models.load_model` name."""
    from steer_cli.evaluate.command import run_dir_of

    path = run_dir_of(target)
    if path is not None:
        from steer_cli.runs import read_config

        recipe = read_config(path)
        return Generator(
            name=path.resolve().name,
            load=lambda: load_target(str(path), device=device, dtype=dtype, force=force),
            style="alpaca" if recipe.data.task == "alpaca" else "plain",
            chat_template=recipe.data.chat_template,
            base=recipe.model.name,
        )
    return Generator(
        name=target,
        load=lambda: load_target(target, device=device, dtype=dtype),
        style="plain",
        chat_template="auto",
    )


def prompt_text(row: dict, style: str) -> str:
    """The prompt a generator sees for one instruction, before any chat template."""
    from steer_cli.data.tasks import ALPACA_PROMPT, ALPACA_PROMPT_INPUT

    extra = row.get("input")
    if style == "alpaca":
        if extra:
            return ALPACA_PROMPT_INPUT.format(instruction=row["instruction"], input=extra)
        return ALPACA_PROMPT.format(instruction=row["instruction"])
    return f"{row['instruction']}\n\n{extra}" if extra else row["instruction"]


def generate_outputs(
    generator: Generator, rows: list[dict], *, max_new_tokens: int, batch_size: int
) -> tuple[list[dict], dict]:
    """AlpacaEval records of the generator's greedy outputs, and how it was prompted."""
    from steer_cli.data.encode import prompt_token_ids, uses_chat_template
    from steer_cli.evaluate.generation import generate
    from steer_cli.report import StepProgress

    loaded = generator.load()
    tokenizer = loaded.tokenizer
    chat = uses_chat_template(tokenizer, generator.chat_template)
    prompts = [prompt_token_ids(tokenizer, prompt_text(r, generator.style), chat) for r in rows]
    every = max(1, len(rows) // 4)
    with (
        StepProgress(f"generate {generator.name}", len(rows), every=every) as bar,
        loaded.evaluating(),
    ):
        texts = generate(
            loaded.model,
            tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            on_batch=lambda n: bar.advance(n),
        )
    del loaded
    gc.collect()
    records = [
        _record(row, text.strip(), generator.name) for row, text in zip(rows, texts, strict=True)
    ]
    return records, {"prompt": generator.style, "chat_template": chat}


def _record(row: dict, output: str, generator: str) -> dict:
    record = {"instruction": row["instruction"]}
    if row.get("input"):
        record["input"] = row["input"]
    return {**record, "output": output, "generator": generator, "dataset": row["dataset"]}


# ------------------------------------------------------------------------------ the pipeline


def default_out_dir(target: str) -> Path | None:
    """``RUN_DIR/eval/alpaca`` for a run; ``None`` for a model (the caller must choose)."""
    from steer_cli.rundir import is_run_dir

    return Path(target).expanduser() / OUT_SUBDIR if is_run_dir(target) else None


def evaluate_instructions(
    target: str,
    *,
    instructions: str | None = None,
    reference: str | None = None,
    judge=None,
    out_dir: str | Path | None = None,
    max_new_tokens: int = 512,
    batch_size: int = 8,
    limit: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    force: bool = False,
) -> dict:
    """Evaluate ``target`` (a run directory or a model name) AlpacaEval-style; see the module
    doc. Returns the summary also written to ``out_dir/summary.json``.

    ``instructions``: ``None`` (AlpacaEval's 805 from the hub), ``"everyday"`` or a file.
    ``reference``: ``None`` (the run's base model), an outputs JSON, a run directory or a model.
    ``judge``: a model name for :class:`~steer_cli.evaluate.judge.LogprobJudge` (default
    ``smollm2-135m``), or any :class:`~steer_cli.evaluate.judge.Judge`.
    ``out_dir``: default ``RUN_DIR/eval/alpaca`` (required for a model target).
    ``limit``: only the first N instructions. ``device``/``dtype``: for every model loaded
    (default: a run's own settings, else auto).
    """
    from steer_cli.atomic import write_json
    from steer_cli.evaluate.judge import DEFAULT_JUDGE, LogprobJudge, judge_both_orders
    from steer_cli.evaluate.winrate import win_rate_stats
    from steer_cli.report import err_console

    start = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else default_out_dir(target)
    if out is None:
        raise SteerError(
            f"{target} is a model, not a run directory: say where to write the evaluation",
            "pass an output directory (out_dir / --output)",
        )
    if limit is not None and limit < 1:
        raise SteerError(f"limit must be at least 1, got {limit}")
    generator = resolve_generator(target, device=device, dtype=dtype, force=force)
    # Cheap checks first: the instructions and a reference file, before any model loads.
    set_name, rows = load_instructions(instructions)
    rows = rows[:limit] if limit else rows
    reference_file = Path(reference) if reference and Path(reference).is_file() else None
    if reference and reference_file is None and Path(reference).suffix.lower() in FORMATS:
        raise SteerError(f"reference outputs not found: {reference}")
    given_reference = None
    if reference_file is not None:
        given_reference = align_reference(rows, read_outputs(reference_file), str(reference))
    elif reference is None and generator.base is None:
        raise SteerError(
            f"{target} is a model, so there is no base model to compare it with",
            "pass a reference: an outputs JSON, a run directory or another model",
        )
    if not isinstance(judge, str | None) and not hasattr(judge, "prefer"):
        raise TypeError("judge must be a model name or a Judge")

    seconds: dict[str, float] = {}
    err_console.print(f"{len(rows)} instructions ({set_name}) · generating with {generator.name}")
    tick = time.perf_counter()
    outputs, prompting = generate_outputs(
        generator, rows, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    seconds["generate"] = time.perf_counter() - tick

    tick = time.perf_counter()
    if given_reference is not None:
        references = [
            _record(row, ref["output"], ref.get("generator") or reference_file.stem)
            for row, ref in zip(rows, given_reference, strict=True)
        ]
    else:
        if reference is None:
            ref_gen = resolve_generator(generator.base, device=device, dtype=dtype)
            ref_gen.style, ref_gen.chat_template = generator.style, generator.chat_template
            ref_gen.name = f"{generator.base} (base)"
        else:
            ref_gen = resolve_generator(reference, device=device, dtype=dtype)
            if ref_gen.base is None:  # a model: prompted as the target is
                ref_gen.style, ref_gen.chat_template = generator.style, generator.chat_template
        references, _ = generate_outputs(
            ref_gen, rows, max_new_tokens=max_new_tokens, batch_size=batch_size
        )
        seconds["reference"] = time.perf_counter() - tick

    tick = time.perf_counter()
    if judge is None or isinstance(judge, str):
        judge = LogprobJudge.load(
            judge or DEFAULT_JUDGE,
            device=device or "auto",
            dtype=dtype or "auto",
            batch_size=batch_size,
        )
    err_console.print(f"judging {len(rows)} pairs, both orders, with {judge.name}")
    verdicts = judge_both_orders(
        judge,
        [prompt_text(row, "plain") for row in rows],
        [o["output"] for o in outputs],
        [r["output"] for r in references],
    )
    seconds["judge"] = time.perf_counter() - tick

    annotations = [
        {
            "instruction": row["instruction"],
            **({"input": row["input"]} if row.get("input") else {}),
            "dataset": row["dataset"],
            "output_1": ref["output"],
            "generator_1": ref["generator"],
            "output_2": mine["output"],
            "generator_2": mine["generator"],
            "annotator": judge.name,
            "preference": v["preference"],
            "preference_model_first": v["model_first"],
            "preference_model_second": v["model_second"],
            "length_1": len(ref["output"]),
            "length_2": len(mine["output"]),
        }
        for row, mine, ref, v in zip(rows, outputs, references, verdicts, strict=True)
    ]
    stats = win_rate_stats(
        [a["preference"] for a in annotations],
        [a["length_2"] for a in annotations],
        [a["length_1"] for a in annotations],
    )
    seconds["total"] = time.perf_counter() - start
    summary = {
        "generator": generator.name,
        "reference_generator": references[0]["generator"],
        "judge": judge.name,
        "instructions": set_name,
        **stats,
        "max_new_tokens": max_new_tokens,
        **prompting,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "files": [MODEL_OUTPUTS, REFERENCE_OUTPUTS, ANNOTATIONS, SUMMARY],
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / MODEL_OUTPUTS, outputs)
    write_json(out / REFERENCE_OUTPUTS, references)
    write_json(out / ANNOTATIONS, annotations)
    write_json(out / SUMMARY, summary)
    return summary


def summary_table(summary: dict):
    """The summary as a rich table (one row per figure)."""
    from rich.table import Table

    def pct(key: str) -> str:
        value = summary.get(key)
        return "-" if value is None else f"{value:.2f}%"

    table = Table(
        title=f"{summary['generator']} vs {summary['reference_generator']} "
        f"(judge: {summary['judge']})",
        show_header=False,
    )
    table.add_column("", style="bold")
    table.add_column("", justify="right")

    def with_se(key: str, se_key: str) -> str:
        se = summary.get(se_key)
        return pct(key) if se is None else f"{summary[key]:.2f}% ± {se:.2f}"

    table.add_row("win rate", with_se("win_rate", "standard_error"))
    table.add_row("LC win rate", with_se("length_controlled_winrate", "lc_standard_error"))
    table.add_row(
        "wins / losses / draws",
        f"{summary['n_wins']} / {summary['n_wins_base']} / {summary['n_draws']}",
    )
    table.add_row(
        "avg length (chars)",
        f"{summary['avg_length']:.0f} vs {summary['reference_avg_length']:.0f}",
    )
    table.add_row("instructions", f"{summary['n_total']} ({summary['instructions']})")
    return table
