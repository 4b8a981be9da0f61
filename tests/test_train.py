"""End to end on tiny models: train, write the run, reload it, reproduce it."""

import json

import pytest
import torch
import yaml

from steer_cli import losses, train
from steer_cli.data.encode import IGNORE_INDEX, encode_for_training, prompt_token_ids
from steer_cli.data.tasks import Example
from steer_cli.engine.attach import Interventions
from steer_cli.errors import SteerError
from steer_cli.models import load_model
from steer_cli.recipe import build_recipe

TINY = {
    "model": "tiny-llama",
    "data": {"train_size": 24, "validation_size": 4, "test_size": 8},
    "train": {"max_steps": 3, "batch_size": 4, "micro_batch_size": 2, "lr": 1e-2},
    "eval": {"batch_size": 8},
}


def _recipe(**changes):
    raw = json.loads(json.dumps(TINY))
    for section, values in changes.items():
        raw.setdefault(section, {}).update(values)
    return build_recipe(raw)


def test_run_directory_and_reload_gives_identical_logits(tmp_path):
    out = tmp_path / "run"
    trained = train.run(_recipe(), out)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",  # the model card
        "adapter.json",
        "adapter.safetensors",
        "base.json",  # the base model it was trained on
        "config.yaml",
        "logs",  # TensorBoard events (train.report_to)
        "metrics.jsonl",
        "predictions.jsonl",
        "results.json",
    ]
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 3
    assert results["trainable_params"] == trained.interventions.num_parameters() > 0
    assert 0 < results["trainable_percent"] < 100
    assert {"before", "after"} <= set(results["eval"])
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["train"]["max_steps"] == 3 and config["adapter"]["site"] == "block_output"

    ids = trained.tokenizer("[MAX 1 [MIN 2 3 ] ]", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        live = trained.model(input_ids=ids).logits
        with trained.interventions.disabled():
            base = trained.model(input_ids=ids).logits
    assert not torch.equal(live, base), "training must have moved the adapter"

    fresh, _ = load_model("tiny-llama", dtype="float32", device="cpu")
    adapter = json.loads((out / "adapter.json").read_text())
    assert adapter["base_model"] == "tiny-llama"
    Interventions.load(out).attach(fresh)
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=ids).logits, live)


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    train.run(_recipe(eval={"before": False}), a)
    train.run(_recipe(eval={"before": False}), b)
    train.run(_recipe(eval={"before": False}, train={"seed": 7}), c)
    blob = (a / "adapter.safetensors").read_bytes()
    assert blob == (b / "adapter.safetensors").read_bytes()
    assert blob != (c / "adapter.safetensors").read_bytes()


def test_existing_run_needs_overwrite(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(SteerError, match="already exists"):
        train.run(_recipe(), out)
    assert (out / "keep.txt").read_text() == "precious"
    train.run(_recipe(eval={"before": False}), out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "adapter.safetensors").exists()


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch, error):
    def boom(*args, **kwargs):
        raise error("stop")

    monkeypatch.setattr(train, "train_loop", boom)
    with pytest.raises(error):
        train.run(_recipe(), tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_overwrite_keeps_the_old_run(tmp_path, monkeypatch):
    out = tmp_path / "run"
    train.run(_recipe(eval={"before": False}), out)
    before = (out / "adapter.safetensors").read_bytes()
    monkeypatch.setattr(
        train, "train_loop", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt)
    )
    with pytest.raises(KeyboardInterrupt):
        train.run(_recipe(eval={"before": False}), out, overwrite=True)
    assert (out / "adapter.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_loss_masks_the_prompt_and_supervises_eos():
    _, tokenizer = load_model("tiny-llama")
    example = Example(prompt="[MAX 1 2 ]", target="<answer>2</answer>", answer="2")
    (row,), stats = encode_for_training(tokenizer, [example], chat=True, max_length=512)
    target = tokenizer("<answer>2</answer>", add_special_tokens=False)["input_ids"]
    supervised = [t for t in row["labels"] if t != IGNORE_INDEX]
    assert supervised == target + [tokenizer.eos_token_id]
    assert row["input_ids"][-len(supervised) :] == supervised
    assert stats.kept == 1


def test_long_prompts_are_cut_from_the_left_and_answers_never():
    _, tokenizer = load_model("tiny-llama")
    long = Example(
        prompt=" ".join(f"w{i}" for i in range(300)), target="<answer>2</answer>", answer="2"
    )
    huge_answer = Example(prompt="p", target="y" * 400, answer="y")
    rows, stats = encode_for_training(tokenizer, [long, huge_answer], chat=False, max_length=64)
    assert stats.truncated == 1 and stats.dropped == 1 and stats.kept == 1
    (row,) = rows
    assert len(row["input_ids"]) == 64
    kept = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label < 0]
    whole = prompt_token_ids(tokenizer, long.prompt, False)
    assert kept == whole[-len(kept) :]  # the prompt's end, next to the answer, is what stays
    target = tokenizer("<answer>2</answer>", add_special_tokens=False)["input_ids"]
    assert [t for t in row["labels"] if t != IGNORE_INDEX] == target + [tokenizer.eos_token_id]


def test_gradient_accumulation_matches_one_big_batch():
    """Micro-batches of 1 and one batch of 4 give the same update (loss is normalised per step)."""
    model, tokenizer = load_model("tiny-llama")
    model.requires_grad_(False)
    examples = [
        Example(
            prompt=f"[SM {i} {i + 1} ]", target=f"<answer>{(2 * i + 1) % 10}</answer>", answer=""
        )
        for i in range(4)
    ]
    rows, _ = encode_for_training(tokenizer, examples, chat=True, max_length=128)
    from steer_cli.engine.adapters import AdapterShape
    from steer_cli.engine.attach import InterventionSpec, attach

    states = []
    for micro in (1, 4):
        handle = attach(model, InterventionSpec(shape=AdapterShape("vector")), seed=0)
        cfg = _recipe(train={"max_steps": 1, "batch_size": 4, "micro_batch_size": micro}).train
        train.train_loop(model, handle, rows, cfg, pad_id=tokenizer.pad_token_id)
        handle.detach()
        states.append(handle.state_dict())
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_embedded_model_trains_a_few_steps(tmp_path):
    """The real pretrained SmolLM2: a few steps move the adapter, and the run reloads exactly."""
    recipe = build_recipe(
        {
            "model": "smollm2-135m",
            "data": {"train_size": 16, "validation_size": 2, "test_size": 4},
            "train": {"max_steps": 2, "batch_size": 8, "micro_batch_size": 4},
            "eval": {"before": False, "batch_size": 4},
        }
    )
    out = tmp_path / "run"
    trained = train.run(recipe, out)
    results = trained.results
    assert results["trainable_params"] == 30 * 2 * 576 * 8
    assert torch.isfinite(torch.tensor(results["final_loss"]))
    ids = trained.tokenizer("[MAX 2 9 [MIN 4 7 ] 0 ]", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        live = trained.model(input_ids=ids).logits
        with trained.interventions.disabled():
            assert not torch.equal(trained.model(input_ids=ids).logits, live)
    trained.interventions.detach()
    Interventions.load(out).attach(trained.model)
    with torch.no_grad():
        assert torch.equal(trained.model(input_ids=ids).logits, live)


def test_trimmed_logits_give_the_same_loss_as_full_logits(monkeypatch):
    """Skipping the vocabulary head on prompt positions must not change the loss or gradients."""
    model, tokenizer = load_model("tiny-qwen3")
    model.requires_grad_(False)
    examples = [
        Example(prompt="[SM 1 2 ]" + " pad" * i, target="<answer>3</answer>", answer="3")
        for i in range(3)
    ]
    rows, _ = encode_for_training(tokenizer, examples, chat=True, max_length=128)
    from steer_cli.engine.adapters import AdapterShape
    from steer_cli.engine.attach import InterventionSpec, attach

    states = []
    for trim in (True, False):
        if not trim:
            monkeypatch.setattr(losses, "_keep_logits", lambda model, n: {})
        handle = attach(model, InterventionSpec(shape=AdapterShape("lowrank", rank=2)), seed=0)
        cfg = _recipe(train={"max_steps": 2, "batch_size": 3, "micro_batch_size": 3}).train
        summary = train.train_loop(model, handle, rows, cfg, pad_id=tokenizer.pad_token_id)
        handle.detach()
        states.append((summary.final_loss, handle.state_dict()))
    assert states[0][0] == pytest.approx(states[1][0], rel=1e-5)
    for key in states[0][1]:
        torch.testing.assert_close(states[0][1][key], states[1][1][key], rtol=1e-4, atol=1e-7)
