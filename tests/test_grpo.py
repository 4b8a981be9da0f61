"""``train.objective: grpo``: advantages and loss equal to TRL's own code on the same rewards and
log-probabilities, and the run around them (CLI for every kind, learning, passes, resume, bad
recipes, dry run)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from steer_cli import train
from steer_cli.cli import app
from steer_cli.errors import SteerError
from steer_cli.losses import token_logps
from steer_cli.models import load_model
from steer_cli.recipe import build_recipe
from steer_cli.rollouts import clipped_surrogate, group_advantages, group_metrics

runner = CliRunner()
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# A verifiable task a random tiny model can learn: its byte-level tokens decode to U+FFFD (an
# invalid UTF-8 byte) about half the time, and the parser rewards exactly that first token.
REPLACEMENT = "\ufffd"


@pytest.fixture
def rows_file(tmp_path) -> Path:
    path = tmp_path / "rows.jsonl"
    rows = [{"q": f"Question {i}: say something", "a": REPLACEMENT} for i in range(32)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _raw(rows_file: Path, method: str = "postblock", **train_section) -> dict:
    files = {split: str(rows_file) for split in ("train", "validation", "test")}
    raw = {
        "model": "tiny-llama",
        "method": method,
        "data": {
            "task": "local",
            "files": files,
            "local": {"prompt": "{q}", "target": "{a}", "parser": "regex:(\\ufffd)"},
            "train_size": 16,
            "test_size": 16,
        },
        "train": {
            "objective": "grpo",
            "max_steps": 4,
            "batch_size": 4,
            "lr": 5e-2,
            "report_to": ["none"],
            **train_section,
        },
        "grpo": {"group_size": 4, "max_new_tokens": 1},
        "eval": {"before": False, "batch_size": 16, "max_new_tokens": 1},
    }
    return raw


def _lines(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


# -- TRL's own advantages and loss -------------------------------------------------------------


def _trl_trainer(tmp_path, rewards: list[float], group: int, **config):
    """A real GRPOTrainer on tiny-llama whose reward function returns ``rewards``; a loud
    failure (not a skip) if TRL is missing or the methods the tests call moved."""
    try:
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as err:  # pragma: no cover - the test extra installs it
        pytest.fail(f"TRL is needed for the parity tests (pip install -e '.[dev,test]'): {err}")
    for name in ("_generate_and_score_completions", "_compute_loss"):
        if not callable(getattr(GRPOTrainer, name, None)):
            pytest.fail(f"TRL's GRPOTrainer.{name} is gone: read its GRPO code again")
    model, tokenizer = load_model("tiny-llama", dtype="float32", device="cpu")

    def fixed(prompts, completions, **kwargs):
        return rewards[: len(completions)]

    args = GRPOConfig(
        output_dir=str(tmp_path / "trl"),
        report_to=[],
        num_generations=group,
        per_device_train_batch_size=len(rewards),
        max_completion_length=3,
        use_cpu=True,
        bf16=False,
        **config,
    )
    prompts = Dataset.from_list([{"prompt": f"q{i}"} for i in range(len(rewards) // group)])
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=fixed,
        args=args,
        train_dataset=prompts,
        processing_class=tokenizer,
    )
    return trainer, args


def test_advantages_and_reward_figures_are_trls(tmp_path):
    """TRL's GRPOTrainer samples and scores a batch with fixed rewards: its advantages (group
    mean and unbiased std, + 1e-4) and logged reward figures are steer's."""
    group = 4
    rewards = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.5, 0.0, 0.0, 0.0]
    trainer, args = _trl_trainer(tmp_path, rewards, group)
    defaults = build_recipe({}).grpo  # TRL's defaults are steer's
    assert args.scale_rewards == defaults.scale_rewards == "group"
    assert args.beta == defaults.beta == 0.0 and args.num_iterations == defaults.passes == 1
    inputs = [{"prompt": f"q{i}"} for i in range(len(rewards) // group) for _ in range(group)]
    trainer.model.train()  # TRL logs a training batch's figures under "train"
    theirs = trainer._generate_and_score_completions(inputs)["advantages"]
    ours = group_advantages(torch.tensor(rewards), group)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    assert ours[4:8].abs().max() == 0 and ours.abs().max() > 1  # a flat group, and scaled ones
    logged = {k: v[0] for k, v in trainer._metrics["train"].items()}
    n = len(rewards)
    stats = [sum(rewards), sum(r * r for r in rewards), 0, n, 4, 0, 0]  # one flat group of 4
    ours_logged = group_metrics(stats, tokens=1, beta=0.0)
    assert ours_logged["reward"] == pytest.approx(logged["reward"], rel=1e-6)
    assert ours_logged["reward_std"] == pytest.approx(logged["reward_std"], rel=1e-6)
    assert ours_logged["frac_reward_zero_std"] == pytest.approx(logged["frac_reward_zero_std"])
    unscaled = group_advantages(torch.tensor(rewards), group, scale="none")
    assert unscaled[0] == pytest.approx(0.5)  # Dr. GRPO's: the group mean subtracted only


@pytest.mark.parametrize(
    ("beta", "epsilon_high"), [(0.0, None), (0.04, None), (0.04, 0.28)], ids=["plain", "kl", "high"]
)
def test_the_loss_is_trls_default_on_the_same_log_probabilities(tmp_path, beta, epsilon_high):
    """TRL's _compute_loss (loss_type dapo, its default) on fixed per-token log-probabilities of
    the policy, the policy as sampled and the reference, and a completion mask: steer's summed
    surrogate over the mask's tokens, divided by their number, and its KL and clip share."""
    extra = {} if epsilon_high is None else {"epsilon_high": epsilon_high}
    trainer, args = _trl_trainer(tmp_path, [0.0] * 6, 3, **extra)
    trainer.beta = beta  # set after building: a positive beta would load a reference model
    assert args.loss_type == "dapo" and args.epsilon == build_recipe({}).grpo.epsilon == 0.2
    rows, width = 6, 5
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(rows, width, dtype=torch.long)
    mask[1, 3:] = 0
    mask[4, 1:] = 0  # completions of different lengths
    logps = -torch.rand(rows, width, generator=g) * 2
    old = logps + (torch.rand(rows, width, generator=g) - 0.5) * 0.8  # some ratios clip
    ref = logps + (torch.rand(rows, width, generator=g) - 0.5)
    advantages = torch.tensor([1.2, -0.7, 0.3, -1.5, 0.9, -0.2])

    class Stub(torch.nn.Module):  # the fused head's per-token log-probs, fixed
        def forward(self, **kwargs):
            from types import SimpleNamespace

            zeros = torch.zeros_like(logps)
            return SimpleNamespace(log_probs=logps, entropy=zeros)

    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    inputs = {
        "prompt_ids": torch.zeros(rows, 2, dtype=torch.long),
        "prompt_mask": torch.ones(rows, 2, dtype=torch.long),
        "completion_ids": torch.zeros(rows, width, dtype=torch.long),
        "completion_mask": mask,
        "advantages": advantages,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    theirs = trainer._compute_loss(Stub(), inputs)
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    kept = mask.bool()
    counts = mask.sum(1)
    losses, kl, region = clipped_surrogate(
        logps[kept],
        old[kept],
        advantages.repeat_interleave(counts),
        epsilon=0.2,
        epsilon_high=epsilon_high,
        beta=beta,
        ref_logps=ref[kept],
    )
    tokens = int(mask.sum())
    assert (losses.sum() / tokens).item() == pytest.approx(theirs.item(), rel=1e-6)
    assert 0 < region.float().mean() < 1  # clipped and unclipped tokens both
    assert region.float().mean().item() == pytest.approx(logged["clip_ratio/region_mean"])
    if beta:
        assert kl.mean().item() == pytest.approx(logged["kl"], rel=1e-6)
    else:
        assert kl is None and "kl" not in logged


def test_token_log_probabilities_are_trls_at_the_sampling_temperature(tmp_path):
    """The completion tokens' log-probabilities steer weighs (logits from the shortest prompt
    on, divided by the temperature) are TRL's GRPOTrainer's on the same model and tokens."""
    trainer, _ = _trl_trainer(tmp_path, [0.0] * 4, 2, temperature=0.7)
    model = trainer.model
    g = torch.Generator().manual_seed(1)
    prompt, completion = 4, 3
    ids = torch.randint(3, 200, (2, prompt + completion), generator=g)
    labels = ids.clone()
    labels[:, :prompt] = -100
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        ours = token_logps(model, model, inputs, labels, torch.tensor([prompt, prompt]), 0.7)
        theirs, _, _ = trainer._get_per_token_logps_and_entropies(
            model, ids, inputs["attention_mask"], completion
        )
    torch.testing.assert_close(ours, theirs.flatten(), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        plain = token_logps(model, model, inputs, labels, torch.tensor([prompt, prompt]))
    assert not torch.allclose(plain, ours)  # the temperature matters


def test_the_reward_is_the_parsers_verdict_plus_the_format_term():
    from steer_cli.data.tasks import LISTOPS
    from steer_cli.rollouts import GroupRelative

    settings = build_recipe({"train": {"objective": "grpo"}}).grpo
    plain = GroupRelative(settings, LISTOPS, None, max_new_tokens=8)
    shaped = GroupRelative(settings.model_copy(update={"format_reward": 0.25}), LISTOPS, None,
                           max_new_tokens=8)  # fmt: skip
    assert plain.reward("<answer>7</answer>", "7") == (1.0, True)
    assert plain.reward("<answer> 3 </answer>", "7") == (0.0, False)
    assert plain.reward("7", "7") == (0.0, False)  # not in the format: the parser reads nothing
    assert shaped.reward("<answer>3</answer>", "7") == (0.25, False)
    assert shaped.reward("<answer>7</answer>", "7") == (1.25, True)
    assert shaped.reward("seven", "7") == (0.0, False)


def test_sampling_is_seeded_by_the_run_the_step_and_the_process():
    """Each step and process samples from its own stream, a function of the three alone (a
    resumed run draws what the whole run drew), and the caller's RNG is left as it was."""
    from steer_cli.loop_rng import rollout_seeded

    def draw(seed: int, step: int, rank: int) -> torch.Tensor:
        with rollout_seeded(seed, step, rank, torch.device("cpu")):
            return torch.rand(4)

    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    keys = [(42, 1, 0), (42, 2, 0), (42, 1, 1), (43, 1, 0)]
    draws = [draw(*key) for key in keys]
    assert torch.equal(torch.rand(4), expected)  # the global stream, untouched
    assert all(torch.equal(draw(*key), d) for key, d in zip(keys, draws, strict=True))
    assert len({tuple(d.tolist()) for d in draws}) == len(keys)


# -- the run -----------------------------------------------------------------------------------


def test_grpo_raises_the_reward_and_held_out_accuracy(tmp_path, rows_file):
    """The adapter starts as the identity; the rewards it is trained on rise, and so does the
    share of held-out prompts answered right (greedy)."""
    raw = _raw(rows_file, max_steps=8)
    raw["eval"]["before"] = True
    trained = train.run(build_recipe(raw), tmp_path / "run")
    lines = _lines(tmp_path / "run")
    assert len(lines) == 8 and trained.results["objective"] == "grpo"
    first, last = lines[:2], lines[-2:]
    assert sum(x["reward"] for x in last) > sum(x["reward"] for x in first)
    for key in ("reward", "reward_std", "accuracy", "frac_reward_zero_std", "clip_ratio"):
        assert key in lines[0]
    assert lines[0]["completion_length"] == 1.0
    assert any(x["frac_reward_zero_std"] < 1 for x in lines)  # groups that teach something
    assert any(x["frac_reward_zero_std"] > 0 for x in lines)  # and groups that do not
    evaluation = trained.results["eval"]
    assert evaluation["after"]["accuracy"] > evaluation["before"]["accuracy"]
    card = (tmp_path / "run" / "README.md").read_text()
    assert "**Objective:** GRPO with the task parser's rewards, 4 samples per prompt" in card


def test_passes_reuse_a_batchs_samples_and_clip_on_the_later_ones(tmp_path, rows_file):
    """grpo.passes=2: two optimizer steps per batch of samples (the same rewards), the ratio
    to the policy as sampled 1 on the first and moved on the second (tokens clipped at
    epsilon 0.01 once the identity adapter has moved); epochs count batches, taken twice."""
    raw = _raw(rows_file, max_steps=None, epochs=1, batch_size=8)
    raw["grpo"].update(passes=2, epsilon=0.01)
    trained = train.run(build_recipe(raw), tmp_path / "run")
    lines = _lines(tmp_path / "run")
    assert trained.results["steps"] == len(lines) == 4  # 16 prompts, batches of 8, twice each
    for a, b in (lines[0:2], lines[2:4]):
        assert a["reward"] == b["reward"] and a["reward_std"] == b["reward_std"]
    assert lines[0]["clip_ratio"] == lines[2]["clip_ratio"] == 0  # as sampled: ratio 1
    assert lines[3]["clip_ratio"] > 0  # one step on, ratios beyond 1 +- 0.01


def test_a_kl_term_uses_the_model_with_its_adapters_off(tmp_path, rows_file):
    """grpo.beta > 0: the KL to the reference is 0 at step 1 (the identity adapter is the
    reference) and grows as the adapter trains."""
    raw = _raw(rows_file, max_steps=4)
    raw["grpo"]["beta"] = 0.1
    train.run(build_recipe(raw), tmp_path / "run")
    lines = _lines(tmp_path / "run")
    assert lines[0]["kl"] == pytest.approx(0, abs=1e-7)
    assert lines[-1]["kl"] > 1e-6


def test_resume_samples_and_trains_what_the_whole_run_did(tmp_path, rows_file, monkeypatch):
    """A crash after the checkpoint of step 4 (passes=2: checkpoints fall after a batch's
    last pass): the resumed run samples steps 5-6 as the whole run did, to the same bytes."""
    from steer_cli import loop

    raw = _raw(rows_file, max_steps=6, save_every=1)
    raw["grpo"]["passes"] = 2
    recipe = build_recipe(raw)
    train.run(recipe, tmp_path / "whole")
    real_step = loop._Loop.step

    def crash_at_5(self, step, batch):
        if step == 6:
            raise KeyboardInterrupt
        return real_step(self, step, batch)

    monkeypatch.setattr(loop._Loop, "step", crash_at_5)
    with pytest.raises(KeyboardInterrupt):
        train.run(recipe, tmp_path / "run")
    ran: list[int] = []

    def counted(self, step, batch):
        ran.append(step)
        return real_step(self, step, batch)

    monkeypatch.setattr(loop._Loop, "step", counted)
    resumed = train.run(recipe, tmp_path / "run")
    assert ran == [5, 6] and resumed.results["resumed_from"] == 4
    assert (tmp_path / "run" / "adapter.safetensors").read_bytes() == (
        tmp_path / "whole" / "adapter.safetensors"
    ).read_bytes()
    strip = [{k: v for k, v in x.items() if k != "seconds"} for x in _lines(tmp_path / "whole")]
    assert [{k: v for k, v in x.items() if k != "seconds"} for x in _lines(tmp_path / "run")] == (
        strip
    )


@pytest.mark.parametrize("method", ["postblock", "lora", "joint-orth"])
def test_steer_train_objective_grpo_runs_every_kind(tmp_path, rows_file, method):
    raw = _raw(rows_file, method)
    del raw["train"]["objective"]  # set on the command line, as users do
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "steer_cli", "train", str(recipe), "train.objective=grpo"]
    done = subprocess.run([*command, "-o", str(out)], capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["objective"] == "grpo" and results["steps"] == 4
    assert results["eval"]["after"]["total"] == 16
    lines = _lines(out)
    assert len(lines) == 4 and all(0 <= x["reward"] <= 1 for x in lines)
    assert all(math.isfinite(x["loss"]) for x in lines)
    assert any(x["grad_norm"] > 0 for x in lines)  # the samples moved the trained parts


def test_full_fine_tuning_with_a_kl_term_keeps_a_frozen_reference(tmp_path, rows_file, capsys):
    raw = _raw(rows_file, "sft", lr=1e-3)
    raw["grpo"]["beta"] = 0.1
    train.run(build_recipe(raw), tmp_path / "run")
    assert "GRPO with full fine-tuning: a frozen copy of the model is the reference" in (
        capsys.readouterr().err
    )
    lines = _lines(tmp_path / "run")
    assert lines[0]["kl"] == pytest.approx(0, abs=1e-7) and lines[-1]["kl"] > 0


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["grpo.group_size=1"], ["grpo.group_size", "at least 2"]),
        (
            ["data.task=alpaca"],
            ["train.objective=grpo rewards answers the task's parser checks", "alpaca"],
        ),
        (["grpo.epsilon=0"], ["grpo.epsilon", "greater than 0"]),
    ],
)
def test_bad_grpo_recipes_are_short_errors(tmp_path, rows_file, overrides, fragments):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(_raw(rows_file)))
    result = runner.invoke(app, ["train", str(recipe), *overrides, "-o", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2, result.output
    for fragment in fragments:
        assert fragment in result.output


def test_a_kl_term_without_a_reference_is_an_error(rows_file):
    from steer_cli.objectives import objective_for

    raw = _raw(rows_file)
    raw["grpo"]["beta"] = 0.1
    recipe = build_recipe(raw)
    parts = type("Parts", (), {})()  # no disabled(), and no frozen copy given
    with pytest.raises(SteerError, match="grpo.beta > 0 needs a reference model") as err:
        objective_for(recipe, parts, None, task=None, tokenizer=None)
    assert "grpo.beta=0" in err.value.hint
    raw["grpo"]["beta"] = 0.0
    assert objective_for(build_recipe(raw), parts, None, task=None, tokenizer=None).name == "grpo"


def test_dry_run_counts_the_samples_and_their_kv_cache(tmp_path, rows_file):
    """A micro-batch of k prompts is sampled as k x G sequences of prompt + max_new_tokens:
    the KV cache of the widest is counted (a key and a value per layer and token), in
    proportion to G and growing by k x G x the extra tokens with max_new_tokens."""
    recipe = tmp_path / "r.yaml"
    raw = _raw(rows_file)
    raw["grpo"]["max_new_tokens"] = 32
    recipe.write_text(yaml.safe_dump(raw))
    args = ["train", str(recipe), "--dry-run", "--json"]
    four = json.loads(runner.invoke(app, args).stdout)
    eight = json.loads(runner.invoke(app, [*args, "grpo.group_size=8"]).stdout)
    longer = json.loads(runner.invoke(app, [*args, "grpo.max_new_tokens=64"]).stdout)
    assert four["objective"] == "grpo" and four["steps"] == 4
    config = load_model("tiny-llama")[0].config
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * 4
    assert four["memory"]["generation"] > 0
    assert eight["memory"]["generation"] == 2 * four["memory"]["generation"]
    extra = longer["memory"]["generation"] - four["memory"]["generation"]
    assert extra == 4 * 4 * 32 * per_token  # 4 prompts x G=4, 32 more tokens each
    assert eight["memory"]["activations"] > four["memory"]["activations"]


# -- train.init_from ---------------------------------------------------------------------------


def _sft_run(tmp_path, rows_file, method: str = "postblock", **adapter) -> Path:
    raw = _raw(rows_file, method, objective="sft", max_steps=2)
    del raw["grpo"]
    if adapter:
        raw["adapter"] = adapter
    out = tmp_path / f"sft-{method}"
    train.run(build_recipe(raw), out)
    return out


def test_grpo_starts_from_a_trained_run(tmp_path, rows_file):
    """train.init_from: the GRPO run starts from the SFT run's adapter: its evaluation before
    training is that run's after, and its first samples are scored by that policy."""
    from safetensors.torch import load_file

    start = _sft_run(tmp_path, rows_file)
    raw = _raw(rows_file, max_steps=1, lr=1e-9)
    raw["train"]["init_from"] = str(start)
    raw["eval"]["before"] = True
    trained = train.run(build_recipe(raw), tmp_path / "run")
    sft = json.loads((start / "results.json").read_text())["eval"]["after"]
    assert trained.results["eval"]["before"] == sft
    theirs, ours = (load_file(d / "adapter.safetensors") for d in (start, tmp_path / "run"))
    assert any(t.abs().max() > 0 for t in theirs.values())  # trained, not the identity
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-7)


def test_full_fine_tuning_starts_from_a_trained_model(tmp_path, rows_file):
    """Full SFT: every weight of the run started from is copied in (not the base's)."""
    from safetensors.torch import load_file

    start = _sft_run(tmp_path, rows_file, "sft")
    raw = _raw(rows_file, "sft", max_steps=1, lr=1e-12)
    raw["train"]["init_from"] = str(start)
    train.run(build_recipe(raw), tmp_path / "run")
    theirs, ours = (load_file(d / "model" / "model.safetensors") for d in (start, tmp_path / "run"))
    base = load_model("tiny-llama")[0].state_dict()
    moved = [k for k in theirs if not torch.equal(theirs[k], base[k])]
    assert moved  # the start differs from the base
    for key in moved:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reference", ["start", "base"])
def test_dpo_starts_from_a_trained_adapter(tmp_path, rows_file, reference):
    """DPO from an SFT adapter: the policy is that adapter; the reference is that adapter too
    (train.reference start, the DPO paper's SFT model), so the first step's loss is log 2 and
    its margin 0, or the base (train.reference base, TRL's for a PEFT model), so it is not."""
    start = _sft_run(tmp_path, rows_file)
    pairs = tmp_path / "prefs"
    pairs.mkdir()
    for split, n in (("train", 8), ("test", 2)):
        rows = [{"prompt": f"Q{i}: ", "chosen": "yes", "rejected": "no"} for i in range(n)]
        (pairs / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = _raw(rows_file, objective="dpo", max_steps=1, reference=reference)
    del raw["grpo"]
    raw["data"]["preferences"] = {"path": str(pairs)}
    cold = train.run(build_recipe(raw), tmp_path / "cold")
    raw["train"]["init_from"] = str(start)
    warm = train.run(build_recipe(raw), tmp_path / "warm")
    assert cold.results["final_loss"] == pytest.approx(math.log(2), abs=1e-6)
    first = _lines(tmp_path / "warm")[0]
    if reference == "start":
        assert warm.results["final_loss"] == pytest.approx(math.log(2), abs=1e-6)
        assert first["reward_margin"] == pytest.approx(0.0, abs=1e-6)
    else:
        assert abs(warm.results["final_loss"] - math.log(2)) > 1e-4
        assert abs(first["reward_margin"]) > 1e-4


@pytest.mark.parametrize("method", ["postblock", "joint-orth"])
def test_the_start_reference_holds_the_start_only_inside_its_context(tmp_path, rows_file, method):
    """StartReference: inside, the trained tensors (adapter and LoRA) are the ones training
    started from; outside, whatever training has made of them since."""
    from steer_cli.parts import build_parts
    from steer_cli.warmstart import StartReference, trained_state

    model = load_model("tiny-llama")[0]
    parts = build_parts(model, build_recipe(_raw(rows_file, method)))
    tensors = trained_state(parts)
    with torch.no_grad():
        for tensor in tensors.values():
            tensor.normal_()
    start = {k: t.clone() for k, t in tensors.items()}
    reference = StartReference(parts)
    with torch.no_grad():
        for tensor in tensors.values():
            tensor.add_(1.0)
    trained = {k: t.clone() for k, t in tensors.items()}
    with reference():
        for k, tensor in tensors.items():
            assert torch.equal(tensor, start[k]), k
    for k, tensor in tensors.items():
        assert torch.equal(tensor, trained[k]), k
    assert any("lora" in k for k in tensors) == (method == "joint-orth")


def test_a_base_reference_for_full_fine_tuning_from_a_run_is_a_short_error(tmp_path, rows_file):
    raw = _raw(rows_file, "sft", objective="grpo", reference="base", init_from=str(tmp_path))
    raw["grpo"]["beta"] = 0.1
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["train", str(recipe), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "train.reference=base" in result.output


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"method": "lora"}, "is a postblock run; this recipe trains lora"),
        ({"adapter": {"rank": 2}}, "has adapter.rank=8, this recipe adapter.rank=2"),
        ({"model": "tiny-qwen2"}, "was trained on tiny-llama, this recipe trains tiny-qwen2"),
    ],
)
def test_starting_from_a_mismatched_run_is_a_short_error(tmp_path, rows_file, change, fragment):
    start = _sft_run(tmp_path, rows_file)
    raw = {**_raw(rows_file), **change}
    raw["train"]["init_from"] = str(start)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["train", str(recipe), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) <= 2, result.output
    assert "train.init_from" in result.output and fragment in result.output


def test_two_processes_each_sample_their_prompts_and_share_the_batch(tmp_path, rows_file):
    """torchrun, two CPU processes: each samples G completions of its half of the prompts; the
    loss and the figures are the whole batch's (16 completions: rewards in sixteenths, where
    one process's 8 would give eighths), and the run trains as one process's does."""
    raw = _raw(rows_file, max_steps=6)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    out = tmp_path / "p2"
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command = [sys.executable, *launcher, "-m", "steer_cli", "train", str(recipe), "-o", str(out)]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["processes"] == 2 and results["steps"] == 6
    lines = _lines(out)
    sixteenths = [round(x["reward"] * 16) for x in lines]
    assert all(abs(x["reward"] * 16 - k) < 1e-6 for x, k in zip(lines, sixteenths, strict=True))
    assert any(k % 2 for k in sixteenths)  # an odd count: both processes' completions
    assert all(x["completion_length"] == 1.0 for x in lines)  # every process's tokens counted
    assert sum(x["reward"] for x in lines[-2:]) > sum(x["reward"] for x in lines[:2])
