"""``train.objective: dpo``: preference pairs in TRL's format, DPO's loss equal to TRL's own on
the same log-probabilities, the reference from the model with its parts disabled, and the run
around it (CLI, metrics, held-out pairs, resume, NaN guard, dry run, compare)."""

import inspect
import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from typer.testing import CliRunner

from steer_cli import train
from steer_cli.card import CARD
from steer_cli.cli import app
from steer_cli.data.preferences import encode_preferences, format_preference, load_preferences
from steer_cli.errors import SteerError
from steer_cli.losses import sequence_logps
from steer_cli.models import load_model
from steer_cli.objectives import (
    DirectPreference,
    chosen_nll,
    dpo_loss,
    pair_metrics,
    pair_stats,
)
from steer_cli.recipe import build_recipe

runner = CliRunner()
TORCHRUN = ["-m", "torch.distributed.run", "--nproc_per_node", "2"]
ROOT = Path(__file__).resolve().parents[1]


# -- data ------------------------------------------------------------------------------------


def _pairs(n: int, offset: int = 0) -> list[dict]:
    """Plain-text pairs a tiny model can learn: the chosen answer is always "yes"."""
    return [
        {"prompt": f"Is {i + offset} a number? ", "chosen": "yes", "rejected": "no"}
        for i in range(n)
    ]


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def pairs_dir(tmp_path) -> Path:
    root = tmp_path / "prefs"
    _write(root / "train.jsonl", _pairs(16))
    _write(root / "test.jsonl", _pairs(4, offset=100))
    return root


RAW = {
    "model": "tiny-llama",
    "data": {"train_size": 8, "validation_size": 2, "test_size": 4},
    "train": {"objective": "dpo", "max_steps": 4, "batch_size": 4, "report_to": ["none"]},
    "eval": {"before": False, "batch_size": 4, "max_new_tokens": 4},
}


def _raw(pairs_dir: Path, method: str = "postblock", **train_section) -> dict:
    raw = json.loads(json.dumps(RAW))
    raw["method"] = method
    raw["data"]["preferences"] = {"path": str(pairs_dir)}
    raw["train"].update(train_section)
    return raw


def test_plain_and_conversational_rows_read_as_trl_writes_them(tmp_path):
    plain = format_preference({"prompt": "2+2=", "chosen": "4", "rejected": "5"})
    assert (plain.prompt, plain.chosen, plain.rejected) == ("2+2=", "4", "5")
    chat = format_preference(
        {
            "prompt": [{"role": "user", "content": "2+2?"}],
            "chosen": [{"role": "assistant", "content": "4"}],
            "rejected": [{"role": "assistant", "content": "5"}],
        }
    )
    assert chat.prompt == ({"role": "user", "content": "2+2?"},) and chat.chosen == "4"
    _, tokenizer = load_model("tiny-llama")
    rows, stats = encode_preferences(tokenizer, [chat, plain], chat=False, max_length=64)
    templated = tokenizer.apply_chat_template(
        [{"role": "user", "content": "2+2?"}], tokenize=False, add_generation_prompt=True
    )
    prompt = tokenizer(templated, add_special_tokens=False)["input_ids"]
    four = tokenizer("4", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert rows[0]["chosen"]["input_ids"] == prompt + four
    assert rows[0]["chosen"]["labels"] == [-100] * len(prompt) + four  # the completion only
    assert rows[0]["rejected"]["input_ids"][: len(prompt)] == prompt
    assert stats.kept == 2


def test_files_in_every_format_and_a_missing_field_names_file_line_and_field(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    section = build_recipe(
        {"train": {"objective": "dpo"}, "data": {"preferences": {"path": str(tmp_path)}}}
    ).data.preferences
    conversational = [
        {
            "prompt": [{"role": "user", "content": f"q{i}"}],
            "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}],
        }
        for i in range(3)
    ]
    pq.write_table(pa.Table.from_pylist(conversational), tmp_path / "train.parquet")
    (tmp_path / "test.csv").write_text("prompt,chosen,rejected\nq,a,b\n")
    splits = load_preferences(section)
    assert len(splits["train"]) == 3 and splits["train"][0].prompt[0]["content"] == "q0"
    assert splits["test"][0].rejected == "b"

    (tmp_path / "test.csv").unlink()
    with pytest.raises(SteerError, match="no held-out pairs: no test file beside"):
        load_preferences(section)
    held_out = section.model_copy(
        update={"splits": {"train": "train[30%:]", "test": "train[:30%]"}}
    )
    assert [len(load_preferences(held_out)[s]) for s in ("train", "test")] == [2, 1]

    (tmp_path / "test.csv").write_text("prompt,chosen\nq,a\n")
    with pytest.raises(SteerError) as err:
        load_preferences(section)
    assert "test.csv line 2: field 'rejected' is missing" in str(err.value)
    assert "prompt, chosen, rejected" in str(err.value)


def test_a_hub_dataset_offline_is_an_error_naming_it_and_the_local_keys(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    section = build_recipe(
        {"train": {"objective": "dpo"}, "data": {"preferences": {"hub": "someone/pairs"}}}
    ).data.preferences
    with pytest.raises(SteerError) as err:
        load_preferences(section)
    assert "cannot load the dataset someone/pairs from the Hugging Face hub" in err.value.message
    assert (
        "data.preferences.path=DIR" in err.value.hint
        and "prompt, chosen, rejected" in err.value.hint
    )


# -- the loss: TRL's own -----------------------------------------------------------------------


def _trl_dpo():
    """TRL's DPOTrainer and config; a loud failure (not a skip) if TRL is missing or its loss
    code moved: this test pins steer's loss to it."""
    try:
        from trl import DPOConfig, DPOTrainer
    except ImportError as err:  # pragma: no cover - the dev extra installs it
        pytest.fail(f"TRL is needed for the parity test (pip install -e '.[dev,test]'): {err}")
    compute = getattr(DPOTrainer, "_compute_loss", None)
    params = list(inspect.signature(compute).parameters) if compute else []
    if params != ["self", "model", "inputs", "return_outputs"]:
        pytest.fail(
            "TRL's DPOTrainer._compute_loss(self, model, inputs, return_outputs) is gone or "
            f"changed ({params}): read its DPO loss again and update this test"
        )
    return DPOConfig, DPOTrainer


@pytest.mark.parametrize("sft_weight", [0.0, 0.5])
def test_the_dpo_loss_and_rewards_are_trls_on_the_same_log_probabilities(tmp_path, sft_weight):
    """sigmoid, TRL's default; with dpo.sft_weight w, TRL's loss_type [sigmoid, sft] with
    loss_weights [1, w] (equally long chosen answers: TRL's sft term is a token mean)."""
    DPOConfig, DPOTrainer = _trl_dpo()
    if sft_weight:
        kinds = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, sft_weight]}
        config = DPOConfig(output_dir=str(tmp_path), report_to=[], bf16=False, **kinds)
    else:
        config = DPOConfig(output_dir=str(tmp_path), report_to=[], bf16=False)
        assert config.beta == build_recipe({}).dpo.beta == 0.1  # TRL's default is steer's
        assert list(config.loss_type) == ["sigmoid"]
    pairs, width = 5, 6
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(2 * pairs, width + 1, dtype=torch.long)
    mask[:, :2] = 0  # the prompt
    mask[pairs + 3 if sft_weight else 3, -2:] = 0  # a shorter completion
    token_logps = -torch.rand(2 * pairs, width, generator=g) * 3 * mask[:, 1:]
    ref_logps = -torch.rand(2 * pairs, generator=g) * 10
    ref_logps[2] = token_logps[2].sum() + 0.7  # a pair the policy ranks below the reference

    def stub_model(**kwargs):  # the fused head's per-token log-probs, fixed
        zeros = torch.zeros_like(token_logps)
        return SimpleNamespace(
            log_probs=token_logps, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool()
        )

    accelerator = SimpleNamespace(
        device=torch.device("cpu"), gather_for_metrics=lambda x: x, gather=lambda x: x
    )
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=accelerator,
        aux_loss_enabled=False,
        ld_alpha=config.ld_alpha,
        precompute_ref_logps=True,
        f_divergence_type=config.f_divergence_type,
        loss_types=list(config.loss_type),
        loss_weights=config.loss_weights or [1.0] * len(config.loss_type),
        beta=config.beta,
        label_smoothing=config.label_smoothing,
        use_weighting=config.use_weighting,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros(2 * pairs, width + 1, dtype=torch.long),
        "attention_mask": torch.ones(2 * pairs, width + 1, dtype=torch.long),
        "completion_mask": mask,
        "ref_chosen_logps": ref_logps[:pairs],
        "ref_rejected_logps": ref_logps[pairs:],
    }
    theirs = DPOTrainer._compute_loss(trainer, stub_model, inputs, False)
    logged = {k: v[0] for k, v in trainer._metrics["train"].items()}

    logps = token_logps.sum(1)
    losses, chosen, rejected = dpo_loss(
        logps[:pairs], logps[pairs:], ref_logps[:pairs], ref_logps[pairs:], config.beta
    )
    ours = pair_metrics(pair_stats(chosen, rejected).tolist(), pairs)
    losses = losses + sft_weight * chosen_nll(logps[:pairs], mask[:pairs, 1:].sum(1))
    assert losses.mean().item() == pytest.approx(theirs.item(), rel=1e-6)
    assert 0 < ours["reward_accuracy"] < 1  # both kinds of pair are in the batch
    assert ours["reward_accuracy"] == pytest.approx(logged["rewards/accuracies"], rel=1e-6)
    assert ours["reward_margin"] == pytest.approx(logged["rewards/margins"], rel=1e-6)
    assert ours["reward_chosen"] == pytest.approx(logged["rewards/chosen"], rel=1e-6)
    assert ours["reward_rejected"] == pytest.approx(logged["rewards/rejected"], rel=1e-6)


def test_sequence_log_probabilities_are_trls_fused_heads():
    """The log-probabilities DPO compares: steer's (logits from the shortest prompt on) equal
    TRL's fused LM head's, summed over the completion, on a real model."""
    _trl_dpo()
    from trl.trainer.utils import add_fused_lm_head

    model, tokenizer = load_model("tiny-llama", dtype="float32", device="cpu", seed=0)
    pairs = [format_preference(p) for p in _pairs(3)]
    longer = {"prompt": "A much longer prompt: ", "chosen": "y", "rejected": "nope"}
    pairs.append(format_preference(longer))
    rows, _ = encode_preferences(tokenizer, pairs, chat=False, max_length=64)
    objective = DirectPreference(0.1)
    batch = objective.collate(rows, tokenizer.pad_token_id)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        ours = sequence_logps(model, model, inputs, batch["labels"], batch["prompt_lengths"])
        add_fused_lm_head(model)
        fused = model(**inputs, labels=batch["labels"], fused_lm_head=True, use_cache=False)
    theirs = fused.log_probs[:, -(batch["labels"].shape[1] - 1) :].sum(1)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)


# -- the loop ----------------------------------------------------------------------------------


def _adapter_run(tmp_path, pairs_dir, **train_section):
    return train.run(build_recipe(_raw(pairs_dir, lr=5e-2, **train_section)), tmp_path / "run")


def test_the_reference_is_the_model_with_its_adapters_off(tmp_path, pairs_dir):
    """Step 1: the adapters are the identity, so the policy is the reference: loss log 2,
    rewards 0. Then the policy moves away from the reference and ranks the pairs."""
    trained = _adapter_run(tmp_path, pairs_dir, max_steps=8)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert lines[0]["reward_margin"] == pytest.approx(0, abs=1e-6)
    assert lines[0]["reward_accuracy"] == 0.0  # TRL's: a tie is not ranked right
    assert lines[-1]["loss"] < math.log(2) - 0.05 and lines[-1]["reward_margin"] > 0
    assert lines[-1]["reward_accuracy"] == 1.0
    held_out = trained.results["eval"]["preferences"]
    assert held_out["pairs"] == 4 and held_out["accuracy"] == 1.0 and held_out["reward_margin"] > 0
    assert trained.results["objective"] == "dpo"
    card = (tmp_path / "run" / CARD).read_text()
    assert "**Objective:** DPO, sigmoid loss, beta 0.1; 4 held-out pairs: 100.0% ranked" in card


def test_the_sft_weight_adds_the_chosen_answers_nll_to_the_first_steps_loss(tmp_path, pairs_dir):
    """dpo.sft_weight w: step 1's loss is log 2 (policy = reference) plus w times the chosen
    answers' mean per-token NLL, the same amount for each unit of w."""
    first = {}
    for w in (0.0, 1.0, 2.0):
        raw = _raw(pairs_dir, lr=1e-9, max_steps=1)
        raw["dpo"] = {"sft_weight": w}
        train.run(build_recipe(raw), tmp_path / f"w{w}")
        first[w] = json.loads((tmp_path / f"w{w}" / "metrics.jsonl").read_text().splitlines()[0])
    nll = first[1.0]["loss"] - first[0.0]["loss"]
    assert first[0.0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert nll > 0.5  # a random tiny model's NLL per token, several nats
    assert first[2.0]["loss"] - first[1.0]["loss"] == pytest.approx(nll, rel=1e-5)
    assert first[2.0]["reward_margin"] == first[0.0]["reward_margin"]  # DPO's figures as they were


def test_resume_runs_only_the_steps_after_the_checkpoint_to_the_same_bytes(
    tmp_path, pairs_dir, monkeypatch, capsys
):
    from steer_cli import loop

    recipe = build_recipe(_raw(pairs_dir, max_steps=6, save_every=1))
    train.run(recipe, tmp_path / "whole")
    real_step = loop._Loop.step

    def crash_at_4(self, step, batch):
        if step == 4:
            raise KeyboardInterrupt
        return real_step(self, step, batch)

    monkeypatch.setattr(loop._Loop, "step", crash_at_4)
    with pytest.raises(KeyboardInterrupt):
        train.run(recipe, tmp_path / "run")
    ran: list[int] = []

    def counted(self, step, batch):
        ran.append(step)
        return real_step(self, step, batch)

    monkeypatch.setattr(loop._Loop, "step", counted)
    capsys.readouterr()
    resumed = train.run(recipe, tmp_path / "run")
    assert ran == [4, 5, 6] and resumed.results["resumed_from"] == 3
    assert "resumed from the checkpoint at step 3 of 6" in capsys.readouterr().err
    assert (tmp_path / "run" / "adapter.safetensors").read_bytes() == (
        tmp_path / "whole" / "adapter.safetensors"
    ).read_bytes()
    whole, run = (
        [_figures(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
        for d in ("whole", "run")
    )
    assert whole == run  # the timings differ, the figures (reward accuracy, margins) not
    assert (
        resumed.results["eval"]["preferences"]
        == json.loads((tmp_path / "whole" / "results.json").read_text())["eval"]["preferences"]
    )


def _figures(line: str) -> dict:
    return {k: v for k, v in json.loads(line).items() if k not in ("seconds",)}


def test_a_nan_stops_a_dpo_run_naming_the_step(tmp_path, pairs_dir, monkeypatch):
    from steer_cli.engine.adapters import LowRankAdapter

    real_forward = LowRankAdapter.forward
    calls = {"n": 0}

    def nan_later(self, h):
        calls["n"] += 1
        out = real_forward(self, h)
        return out * float("nan") if calls["n"] > 3 * 2 else out  # 3 layers, 2 steps

    monkeypatch.setattr(LowRankAdapter, "forward", nan_later)
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(yaml.safe_dump(_raw(pairs_dir)))
    result = runner.invoke(app, ["train", str(recipe_file), "-o", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert "training stopped at step 3: the loss is nan" in result.output


# -- the CLI, as users run it ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["postblock", "lora", "joint-orth"])
def test_steer_train_objective_dpo_runs_every_kind(tmp_path, pairs_dir, method):
    raw = _raw(pairs_dir, method)
    del raw["train"]["objective"]  # set on the command line, as users do
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "steer_cli", "train", str(recipe), "train.objective=dpo"]
    done = subprocess.run([*command, "-o", str(out)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["objective"] == "dpo" and results["steps"] == 4
    assert results["eval"]["preferences"]["pairs"] == 4
    assert results["data"]["preferences"]["splits"]["train"]["examples"] == 16
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and all("reward_accuracy" in x and "reward_margin" in x for x in lines)
    assert lines[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy = reference


def test_full_fine_tuning_dpo_keeps_a_frozen_reference(tmp_path, pairs_dir, capsys):
    trained = train.run(build_recipe(_raw(pairs_dir, "sft", lr=1e-3)), tmp_path / "run")
    assert "a frozen copy of the model is the reference" in capsys.readouterr().err
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert json.loads(lines[-1])["loss"] < math.log(2)  # the policy moved, the reference not
    assert trained.results["eval"]["preferences"]["reward_margin"] > 0


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["data.preferences.path=null"], ["train.objective=dpo needs preference data"]),
        (["dpo.beta=0"], ["dpo.beta", "greater than 0"]),
        (["train.objective=sft"], ["data.preferences is read by train.objective=dpo"]),
    ],
)
def test_bad_dpo_recipes_are_short_errors(tmp_path, pairs_dir, overrides, fragments):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(_raw(pairs_dir)))
    result = runner.invoke(app, ["train", str(recipe), *overrides, "-o", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2, result.output
    for fragment in fragments:
        assert fragment in result.output


def test_a_pair_missing_a_field_is_a_short_error_naming_it(tmp_path, pairs_dir):
    rows = _pairs(16)
    del rows[5]["chosen"]
    _write(pairs_dir / "train.jsonl", rows)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(_raw(pairs_dir)))
    result = runner.invoke(app, ["train", str(recipe), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "train.jsonl line 6: field 'chosen' is missing" in result.output


def test_dry_run_plans_pairs_as_two_sequences(tmp_path, pairs_dir):
    """A micro-batch of one pair is one forward of its two sequences, padded to the longer: a
    pair's "yes" and "no" differ by a token, so one pad token per pair."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(_raw(pairs_dir)))
    args = ["train", str(recipe), "--dry-run", "--json", "train.micro_batch_size=1"]
    dpo = json.loads(runner.invoke(app, args).stdout)
    sft = json.loads(
        runner.invoke(app, [*args, "train.objective=sft", "data.preferences.path=null"]).stdout
    )
    assert dpo["objective"] == "dpo" and dpo["examples"]["train"] == 16 and dpo["steps"] == 4
    _, tokenizer = load_model("tiny-llama")
    pairs = [format_preference(p) for p in _pairs(16)]
    rows, _ = encode_preferences(tokenizer, pairs, chat=True, max_length=512)  # its template
    longer = [max(len(r["chosen"]["input_ids"]), len(r["rejected"]["input_ids"])) for r in rows]
    assert dpo["padding_fraction"] == pytest.approx(len(rows) / (2 * sum(longer)))
    assert dpo["memory"]["activations"] > 0
    assert sft["objective"] == "sft"


def test_compare_shows_the_objective(tmp_path):
    from compare_dirs import write_run

    for objective, accuracy in (("sft", 0.6), ("dpo", 0.7)):
        run = write_run(
            tmp_path, objective, model="m", task="listops", method="postblock", seed=1,
            accuracy=accuracy,
        )  # fmt: skip
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["train"]["objective"] = objective
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["compare", str(tmp_path), "-f", "markdown"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("| model | method | objective | params |")
    assert any(line.startswith("| m | postblock | dpo |") and "70.0" in line for line in lines)
    assert any(line.startswith("| m | postblock | sft |") and "60.0" in line for line in lines)


def test_the_listops_preference_files_are_the_generators():
    sys.path.insert(0, str(ROOT / "recipes" / "data"))
    try:
        import listops_preferences
    finally:
        sys.path.pop(0)
    for name, text in listops_preferences.build().items():
        assert (ROOT / "recipes" / "data" / "listops-preferences" / name).read_text() == text
    recipe = ROOT / "recipes" / "dpo-listops.yaml"
    loaded = yaml.safe_load(recipe.read_text())
    assert loaded["train"]["objective"] == "dpo"


def test_two_processes_train_what_one_trains(tmp_path, pairs_dir):
    """torchrun, two CPU processes: each takes its share of the pairs; the loss, the reward
    figures and the adapter are the whole batch's, as one process has them."""
    from safetensors.torch import load_file

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(_raw(pairs_dir, lr=5e-2)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    runs = {}
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        launcher = TORCHRUN if processes > 1 else []
        steer = ["-m", "steer_cli", "train", str(recipe), "-o", str(out)]
        command = [sys.executable, *launcher, *steer]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        runs[processes] = (lines, load_file(out / "adapter.safetensors"))
    (one, a), (two, b) = runs[1], runs[2]
    assert one[-1]["reward_margin"] > 0  # the figures below are not all zeros
    for x, y in zip(one, two, strict=True):
        for key in ("loss", "reward_accuracy", "reward_margin", "reward_chosen", "tokens"):
            assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-7), key
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-6, msg=key)
