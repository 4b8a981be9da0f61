"""Joint training (LoRA + adapter), Joint-Orth's projection, inference modes, diagnostics."""

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import randomize

from steer_cli import train
from steer_cli.engine.joint import column_basis, lora_b, orthogonalize, writer_matrix
from steer_cli.engine.sites import find_decoder_layers
from steer_cli.errors import SteerError
from steer_cli.models import load_model
from steer_cli.parts import JointParts, build_parts, count_parameters, measure, quiet_peft
from steer_cli.recipe import build_recipe, load_recipe
from steer_cli.runs import load_run

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
PROMPT = "[MAX 1 [MIN 2 3 ] ]"
D, LAYERS = 64, 3
LORA_R8 = 8 * LAYERS * 1024


@pytest.fixture
def fresh_llama():
    model, tokenizer = load_model("tiny-llama", dtype="float32", device="cpu")
    model.requires_grad_(False)
    return model, tokenizer


def _tiny(method, **sections):
    raw = {
        "method": method,
        "model": {"name": "tiny-llama"},
        "data": {"train_size": 16, "validation_size": 2, "test_size": 4},
        "train": {"max_steps": 3, "batch_size": 4, "lr": 1e-2, "warmup_ratio": 0.0},
        "lora": {"lr": 1e-2},
        "eval": {"batch_size": 4, "before": False},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return build_recipe(raw)


def _logits(model, tokenizer):
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


def _randomize_lora(parts: JointParts, seed: int = 1) -> None:
    """Non-zero B (and A) so LoRA does something and its writers have a column space."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in parts.lora.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)


def _lora_state(parts) -> dict:
    return {n: p.detach().clone() for n, p in parts.model.named_parameters() if "lora_" in n}


def _adapter_state(parts) -> dict:
    return {n: p.detach().clone() for n, p in parts.interventions.named_parameters()}


# -- building, counting ----------------------------------------------------------------------


def test_joint_counts_are_lora_plus_adapter(fresh_llama):
    model, tokenizer = fresh_llama
    before = _logits(model, tokenizer)
    for method in ("joint", "joint-orth"):
        recipe = build_recipe({"method": method})
        assert count_parameters(model, recipe) == LORA_R8 + 8 * LAYERS * 2 * D
        assert measure(model, recipe) == count_parameters(model, recipe)
    assert torch.equal(_logits(model, tokenizer), before), "measure must undo both parts"
    parts = build_parts(model, build_recipe({"method": "joint"}))
    assert isinstance(parts, JointParts) and parts.kind == "joint"
    assert torch.equal(_logits(parts.model, tokenizer), before), "joint is the identity at init"
    assert parts.orth is None
    parts.remove()


def test_joint_recipe_fields():
    recipe = build_recipe({"method": "joint-orth"})
    assert recipe.orth.enabled and recipe.orth.side == "output"
    assert recipe.orth.writers == ["o_proj", "down_proj"]
    assert recipe.lora.lr == 3e-4 and recipe.train.lr == 2e-3
    assert recipe.train.scheduler == "cosine" and recipe.eval.joint_mode == "both"
    assert not build_recipe({"method": "joint"}).orth.enabled
    with pytest.raises(
        SteerError,
        match=re.escape("'orth.writers' should be 'o_proj' or 'down_proj', got 'q_proj'"),
    ):
        build_recipe({"method": "joint-orth", "orth": {"writers": ["q_proj"]}})
    with pytest.raises(
        SteerError,
        match=re.escape("'eval.joint_mode' should be 'both', 'lora' or 'adapter', got 'neither'"),
    ):
        build_recipe({"method": "joint", "eval": {"joint_mode": "neither"}})


def test_orth_writers_need_lora_on_them(fresh_llama):
    model, _ = fresh_llama
    recipe = build_recipe({"method": "joint-orth", "lora": {"target_modules": ["q_proj"]}})
    with pytest.raises(
        SteerError,
        match=re.escape(
            "orth.writers ['o_proj', 'down_proj'] have no LoRA\nadd them to lora.target_modules"
        ),
    ):
        build_parts(model, recipe)


def test_a_failed_joint_build_leaves_the_model_bare(fresh_llama):
    model, tokenizer = fresh_llama
    before = _logits(model, tokenizer)
    recipe = build_recipe({"method": "joint-orth", "adapter": {"parameterization": "loreft"}})
    with pytest.raises(SteerError, match="lowrank or vector"):
        build_parts(model, recipe)
    assert count_parameters(model, build_recipe({"method": "lora"})) == LORA_R8  # not wrapped
    for site in ("attn_heads", "mlp_input"):  # they reach the residual through o_proj, the MLP
        inside = {"method": "joint-orth", "adapter": {"site": site}}
        with pytest.raises(SteerError, match=f"residual stream, not {site}"):
            build_parts(model, build_recipe(inside))
    assert torch.equal(_logits(model, tokenizer), before)


def test_param_groups_use_separate_lrs(fresh_llama):
    model, _ = fresh_llama
    parts = build_parts(model, build_recipe({"method": "joint", "lora": {"lr": 7e-4}}))
    groups = parts.param_groups(2e-3)
    lora_ids = {id(p) for p in parts.lora.parameters()}
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in groups}
    assert by_lr[7e-4] == lora_ids
    assert by_lr[2e-3] == {id(p) for p in parts.interventions.parameters()}
    parts.remove()


# -- per-group learning rates change the result -------------------------------------------------


def _train(recipe, model, tokenizer):
    from steer_cli.data.encode import encode_for_training, uses_chat_template
    from steer_cli.data.tasks import load_splits, task_for

    splits = load_splits(task_for(recipe.data), recipe.data)
    chat = uses_chat_template(tokenizer, recipe.data.chat_template)
    rows, _ = encode_for_training(tokenizer, splits["train"], chat=chat, max_length=128)
    parts = build_parts(model, recipe)
    train.train_loop(parts.model, parts, rows, recipe.train, pad_id=tokenizer.pad_token_id)
    return parts, rows


def test_lora_lr_zero_leaves_lora_untouched_while_the_adapter_moves(fresh_llama):
    model, tokenizer = fresh_llama
    parts = build_parts(model, _tiny("joint"))
    lora0, adapter0 = _lora_state(parts), _adapter_state(parts)
    parts.remove()
    parts, _ = _train(_tiny("joint", lora={"lr": 0.0}), model, tokenizer)
    assert all(torch.equal(p, lora0[n]) for n, p in _lora_state(parts).items())
    assert any(not torch.equal(p, adapter0[n]) for n, p in _adapter_state(parts).items())
    parts.remove()


def test_different_lora_lrs_give_different_lora_weights(fresh_llama):
    model, tokenizer = fresh_llama
    results = []
    for lr in (1e-3, 1e-2):
        parts, _ = _train(_tiny("joint", lora={"lr": lr}), model, tokenizer)
        results.append(_lora_state(parts))
        parts.remove()
    b_names = [n for n in results[0] if "lora_B" in n]
    assert b_names and all(not torch.equal(results[0][n], results[1][n]) for n in b_names)


# -- Joint-Orth ---------------------------------------------------------------------------------


def _orth_parts(model, **orth):
    parts = build_parts(model, build_recipe({"method": "joint-orth", "orth": orth}))
    randomize(parts.interventions, std=0.2, seed=0)
    return parts


def test_output_projection_removes_lora_column_space(fresh_llama):
    model, _ = fresh_llama
    parts = _orth_parts(model)
    _randomize_lora(parts)
    done = parts.orthogonalize()
    assert done == {"projected": LAYERS, "skipped": 0}
    layers = find_decoder_layers(parts.model)
    x = torch.randn(5, D, generator=torch.Generator().manual_seed(3))
    for i in parts.interventions.layer_ids:
        b = writer_matrix(layers[i], ("o_proj", "down_proj"))
        assert b.shape == (D, 16)
        q = column_basis(b)
        adapter = parts.interventions.adapters[str(i)]
        assert float((q.T @ adapter.up.weight.detach()).norm()) < 1e-5
        with torch.no_grad():
            delta = adapter(x)
        assert float((delta @ q).norm()) < 1e-5 * float(delta.norm())  # no component in col(B)
        assert float(adapter.up.weight.detach().norm()) > 0.1, "the adapter is not zeroed"
    parts.remove()


def test_input_projection_is_the_released_variant(fresh_llama):
    model, _ = fresh_llama
    parts = _orth_parts(model, side="input", writers=["down_proj"])
    _randomize_lora(parts)
    up = {i: a.up.weight.detach().clone() for i, a in parts.interventions.adapters.items()}
    parts.orthogonalize()
    layers = find_decoder_layers(parts.model)
    for i in parts.interventions.layer_ids:
        q = column_basis(lora_b(layers[i], "down_proj").detach())
        assert q.shape == (D, 8)
        adapter = parts.interventions.adapters[str(i)]
        assert float((adapter.down.weight.detach() @ q).norm()) < 1e-5  # W_down Q = 0
        assert torch.equal(adapter.up.weight, up[str(i)])  # the output side is left alone
    parts.remove()


def test_projection_skips_while_lora_b_is_zero(fresh_llama):
    model, _ = fresh_llama
    parts = _orth_parts(model)
    before = _adapter_state(parts)
    assert parts.orthogonalize() == {"projected": 0, "skipped": LAYERS}
    assert all(torch.equal(p, before[n]) for n, p in _adapter_state(parts).items())
    assert parts.projections["skipped"] == LAYERS
    parts.remove()


def test_rank_deficient_writers_give_a_basis_of_their_rank():
    b = torch.zeros(D, 16)
    b[:, :3] = torch.randn(D, 3, generator=torch.Generator().manual_seed(0))
    b[:, 3] = b[:, 0] + b[:, 1]
    q = column_basis(b)
    assert q.shape == (D, 3)
    assert torch.allclose(q.T @ q, torch.eye(3), atol=1e-5)


def test_orth_schedule(fresh_llama):
    model, _ = fresh_llama
    parts = _orth_parts(model, every=2)
    _randomize_lora(parts)
    parts.after_step(1)
    assert parts.projections["calls"] == 0
    parts.after_step(2)
    assert parts.projections["calls"] == 1
    parts.remove()
    for when, hook in (("init", "begin_training"), ("epoch", "begin_epoch")):
        parts = _orth_parts(model, when=when)
        _randomize_lora(parts)
        parts.after_step(1)
        getattr(parts, hook)(1)
        assert parts.projections["calls"] == 1, when
        parts.remove()


def test_orth_module_function_matches_parts(fresh_llama):
    model, _ = fresh_llama
    parts = _orth_parts(model)
    _randomize_lora(parts)
    assert orthogonalize(parts.model, parts.interventions, parts.orth)["projected"] == LAYERS
    parts.remove()


# -- modes, the run directory, diagnostics ---------------------------------------------------


def test_joint_orth_run_reloads_with_modes_and_diagnostics(tmp_path):
    from peft import PeftModel

    from steer_cli.engine.attach import Interventions

    out = tmp_path / "jo"
    recipe = _tiny("joint-orth", train={"max_steps": 4, "scheduler": "constant"}, lora={"lr": 1e-3})
    trained = train.run(recipe, out)
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {
        "lora/adapter_model.safetensors",
        "lora/adapter_config.json",
        "adapter.safetensors",
        "adapter.json",
        "diagnostics.json",
    } <= written
    results = json.loads((out / "results.json").read_text())
    assert results["kind"] == "joint" and results["eval"]["after"]["joint_mode"] == "both"
    joint = results["joint"]
    assert joint["lora_params"] + joint["adapter_params"] == results["trainable_params"]
    assert joint["orth"]["projected"] > 0 and joint["orth"]["calls"] == 4
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["group_lrs"] == [1e-2, 1e-3]  # adapter (train.lr), LoRA (lora.lr)

    diagnostics = json.loads((out / "diagnostics.json").read_text())
    assert len(diagnostics["layers"]) == LAYERS and diagnostics["sample"]["examples"] == 16
    for row in diagnostics["layers"]:
        assert row["shift_cosine"]["tokens"] > 0
        # Not 0: LoRA on gate/up_proj moves the MLP output inside col(W_down), not col(B).
        assert 0 <= row["shift_cosine"]["mean_abs"] <= 1
        assert row["subspace_overlap"]["down_proj"] < 1e-6
        assert row["writer_cosine"]["mean_abs"] < 1e-4  # what the projection guarantees
        assert row["W_up_in_lora_span"] < 1e-4
        assert row["norms"]["W_up_fro"] > 0 and row["norms"]["W_down_fro"] > 0
        assert set(row["subspace_overlap"]) >= {"down_proj", "o_proj", "k", "chance"}

    live = {m: None for m in ("both", "lora", "adapter")}
    for mode in live:
        with trained.parts.mode(mode):
            live[mode] = _logits(trained.model, trained.tokenizer)
    assert not torch.equal(live["both"], live["lora"])
    assert not torch.equal(live["both"], live["adapter"])

    model, tokenizer, parts = load_run(out)
    assert parts.kind == "joint" and parts.num_parameters() == results["trainable_params"]
    assert not any(p.requires_grad for p in model.parameters())
    for mode, expected in live.items():
        with parts.mode(mode):
            assert torch.equal(_logits(model, tokenizer), expected), mode

    # LoRA only = plain peft; adapter only = base model + adapter.
    base, tokenizer = load_model("tiny-llama", dtype="float32", device="cpu")
    with quiet_peft():
        peft_model = PeftModel.from_pretrained(base, str(out / "lora"))
    assert torch.equal(_logits(peft_model, tokenizer), live["lora"])
    base, _ = load_model("tiny-llama", dtype="float32", device="cpu")
    Interventions.load(out).attach(base)
    assert torch.equal(_logits(base, tokenizer), live["adapter"])
    with parts.disabled():
        plain, _ = load_model("tiny-llama", dtype="float32", device="cpu")
        assert torch.equal(_logits(model, tokenizer), _logits(plain, tokenizer))


def test_naive_joint_diagnostics_and_eval_mode(tmp_path):
    out = tmp_path / "j"
    train.run(_tiny("joint", eval={"joint_mode": "lora"}), out)
    results = json.loads((out / "results.json").read_text())
    assert results["eval"]["after"]["joint_mode"] == "lora"
    from steer_cli.compare import method_label

    assert method_label(yaml.safe_load((out / "config.yaml").read_text())) == "joint lora only"
    assert "orth" not in results["joint"]
    diagnostics = json.loads((out / "diagnostics.json").read_text())
    assert diagnostics["orth"] is None
    means = diagnostics["mean"]
    assert means["shift_cosine_mean_abs"] is not None and means["W_up_fro"] > 0


def test_joint_at_the_mlp_input_trains_and_skips_the_shift_diagnostics(tmp_path):
    """The adapter's shift at mlp_input is not in the residual stream: nothing to compare."""
    out = tmp_path / "j"
    train.run(_tiny("joint", adapter={"site": "mlp_input"}), out)
    diagnostics = json.loads((out / "diagnostics.json").read_text())
    assert diagnostics["skipped"] == "no residual-stream shift to compare at site mlp_input"
    assert diagnostics["layers"] == []
    _, _, parts = load_run(out)
    assert parts.interventions.spec.site == "mlp_input"


def _rows(tokenizer, n=6):
    texts = ["[MAX 1 2 ]", "[MIN 3 [MAX 4 5 ] ]", "[SM 1 1 1 ]", "[MED 2 7 9 ]"]
    rows = []
    for k in range(n):
        ids = tokenizer(texts[k % len(texts)] * (1 + k % 2))["input_ids"]
        rows.append({"input_ids": ids, "labels": ids})
    return rows


def test_diagnostics_cosine_is_zero_when_lora_only_writes_through_b(fresh_llama):
    """LoRA on down_proj alone shifts the MLP output by B A x, inside col(B): after the output
    projection the adapter's shift is exactly orthogonal to it, and naive joint is not."""
    from steer_cli.diagnostics import joint_diagnostics

    model, tokenizer = fresh_llama
    rows = _rows(tokenizer)
    for orth in (True, False):
        raw = {
            "method": "joint-orth" if orth else "joint",
            "lora": {"target_modules": ["o_proj", "down_proj"]},
        }
        parts = build_parts(model, build_recipe(raw))
        randomize(parts.interventions, std=0.2, seed=0)
        _randomize_lora(parts)
        if orth:
            parts.orthogonalize()
        diagnostics = joint_diagnostics(parts, rows, pad_id=tokenizer.pad_token_id, n=4)
        assert diagnostics["sample"]["examples"] == 4
        for row in diagnostics["layers"]:
            cos = row["shift_cosine"]
            writer = row["writer_cosine"]["mean_abs"]
            if orth:
                assert cos["mean_abs"] < 1e-5 and row["W_up_in_lora_span"] < 1e-5
                assert writer < 1e-5
            else:
                assert cos["mean_abs"] > 1e-3 and row["W_up_in_lora_span"] > 0.01
                assert writer > 1e-3
        parts.remove()


@pytest.mark.parametrize("method", ["joint", "joint-orth"])
def test_method_recipes_train(tmp_path, method):
    small = ["model=tiny-llama", "train.max_steps=2", "data.train_size=16", "data.test_size=4"]
    recipe = load_recipe(RECIPES / "methods" / f"{method}.yaml", small)
    trained = train.run(recipe, tmp_path / method)
    assert trained.results["steps"] == 2 and trained.results["kind"] == "joint"
    assert recipe.orth.enabled == (method == "joint-orth")


def test_joint_only_settings_are_refused_elsewhere():
    with pytest.raises(
        SteerError, match="orth.enabled needs both LoRA and an adapter; method 'postblock' has not"
    ):
        build_recipe({"method": "postblock", "orth": {"enabled": True}})
    with pytest.raises(SteerError, match="eval.joint_mode=lora is for joint runs, not 'lora'"):
        build_recipe({"method": "lora", "eval": {"joint_mode": "lora"}})
    assert build_recipe({"method": "joint", "orth": {"enabled": True}}).orth.enabled


def test_epoch_projection_runs_at_each_epoch_start(fresh_llama):
    model, tokenizer = fresh_llama
    recipe = _tiny("joint-orth", orth={"when": "epoch"}, train={"max_steps": 6})
    parts, rows = _train(recipe, model, tokenizer)
    assert len(rows) == 16  # 4 steps of 4 per epoch: epochs begin at steps 1 and 5
    assert parts.projections["calls"] == 2
    parts.remove()


def test_adapter_rank_can_match_lora_in_joint(fresh_llama):
    from steer_cli.parts import resolve_rank

    model, _ = fresh_llama
    recipe, choice = resolve_rank(
        model, build_recipe({"method": "joint", "adapter": {"match": "lora"}})
    )
    assert recipe.adapter.rank == choice.rank == 64
    assert count_parameters(model, recipe) == 2 * LORA_R8


def test_steer_methods_lists_joint_kinds_and_counts(monkeypatch):
    from rich.console import Console
    from typer.testing import CliRunner

    from steer_cli import report
    from steer_cli.cli import app

    monkeypatch.setattr(report, "console", Console(width=300))
    result = CliRunner().invoke(app, ["methods", "--model", "tiny-llama"])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    for method in ("joint", "joint-orth"):
        cells = [c.strip() for c in rows[method].split("│")]
        assert cells[2] == "joint"
        assert f"{LORA_R8 + 8 * LAYERS * 2 * D:,}" in cells
        assert "0.002 / 0.0003" in cells


def test_joint_orth_on_every_family(tiny):
    """Writers are found and the projection holds on every tiny family (Gemma's sandwich norms
    included); diagnostics run there too."""
    from steer_cli.diagnostics import joint_diagnostics

    model, tokenizer = tiny
    parts = build_parts(model, build_recipe({"method": "joint-orth", "lora": {"rank": 2}}))
    try:
        randomize(parts.interventions, std=0.2, seed=0)
        _randomize_lora(parts)
        assert parts.orthogonalize()["skipped"] == 0
        diagnostics = joint_diagnostics(parts, _rows(tokenizer), pad_id=0, n=3)
        for row in diagnostics["layers"]:
            assert row["W_up_in_lora_span"] < 1e-5
            assert row["shift_cosine"]["tokens"] > 0
    finally:
        parts.remove()


def _orth_writer_cosines(model, tokenizer, project) -> list[float]:
    """Joint-Orth on o_proj/down_proj LoRA, the adapter projected by ``project(parts)``; the
    diagnostics' per-layer writer cosine (what LoRA adds to the residual stream)."""
    from steer_cli.diagnostics import joint_diagnostics

    raw = {"method": "joint-orth", "lora": {"target_modules": ["o_proj", "down_proj"]}}
    parts = build_parts(model, build_recipe(raw))
    try:
        randomize(parts.interventions, std=0.2, seed=0)
        _randomize_lora(parts)
        project(parts)
        diagnostics = joint_diagnostics(parts, _rows(tokenizer), pad_id=tokenizer.pad_token_id)
        return [row["writer_cosine"]["mean_abs"] for row in diagnostics["layers"]]
    finally:
        parts.remove()


def test_gemma3_orth_projects_what_reaches_the_residual_stream():
    """Gemma3 normalises o_proj's and down_proj's outputs before the residual add: col(B) is not
    what LoRA writes there. Joint-Orth projects against diag(g) B, g the norms' gains, and the
    diagnostic measures the post-norm write, so projecting against plain col(B) shows up."""
    from steer_cli.engine.joint import norm_gain, project_adapter, residual_writes

    model, tokenizer = load_model("tiny-gemma3", dtype="float32", device="cpu")
    model.requires_grad_(False)
    generator = torch.Generator().manual_seed(3)
    layers = find_decoder_layers(model)
    with torch.no_grad():  # gains far from 1, so diag(g) B and B span different subspaces
        for layer in layers:
            for norm in (layer.post_attention_layernorm, layer.post_feedforward_layernorm):
                for p in norm.parameters():
                    p.copy_(torch.randn(p.shape, generator=generator) * 2)
    gain = norm_gain(layers[0].post_feedforward_layernorm, D)
    x = torch.randn(5, D, generator=generator)
    rms = x.pow(2).mean(-1, keepdim=True).sqrt()
    torch.testing.assert_close(
        layers[0].post_feedforward_layernorm(x) * rms, x * gain, rtol=1e-3, atol=1e-4
    )

    def plain_b(parts):  # steer 0.1.0: the writers' B as they are
        for i in parts.interventions.layer_ids:
            b = torch.cat([lora_b(layers[i], w).detach() for w in ("o_proj", "down_proj")], 1)
            project_adapter(parts.interventions.adapters[str(i)], column_basis(b), "output")

    def check_and_orthogonalize(parts):
        parts.orthogonalize()
        for i in parts.interventions.layer_ids:
            w_up = parts.interventions.adapters[str(i)].up.weight.detach()
            for writer in ("o_proj", "down_proj"):
                written = residual_writes(layers[i], writer)
                assert not torch.allclose(written, lora_b(layers[i], writer))
                ratio = (written.T @ w_up).norm() / (written.norm() * w_up.norm())
                assert ratio < 1e-5, "W_up is orthogonal to diag(g) B"

    old = _orth_writer_cosines(model, tokenizer, plain_b)
    new = _orth_writer_cosines(model, tokenizer, check_and_orthogonalize)
    assert min(old) > 0.02, f"plain col(B) leaves the post-norm write unprojected: {old}"
    # What is left is the per-token term along the norm's input (about 1/d = 0.016 here).
    assert max(new) < 0.05 and sum(new) < 0.3 * sum(old), f"projected {new} vs plain {old}"


def test_norm_gain_refuses_a_norm_that_mixes_channels():
    from steer_cli.engine.joint import norm_gain

    with pytest.raises(ValueError, match="channel by channel"):
        norm_gain(torch.nn.LayerNorm(D), D)  # subtracts the mean: mixes every channel
    torch.testing.assert_close(norm_gain(torch.nn.RMSNorm(D, eps=1e-6), D), torch.ones(D))


def test_gemma3_joint_orth_run_reports_the_post_norm_write(tmp_path):
    """Through steer train: on Gemma3 the diagnostic's writer cosine is the post-norm write's,
    small after the projection but not the exact 0 that B A x alone would show."""
    writers = {"target_modules": ["o_proj", "down_proj"]}
    recipe = _tiny("joint-orth", model={"name": "tiny-gemma3"}, lora=writers)
    train.run(recipe, tmp_path / "gemma")
    diagnostics = json.loads((tmp_path / "gemma" / "diagnostics.json").read_text())
    cosines = [row["writer_cosine"]["mean_abs"] for row in diagnostics["layers"]]
    assert cosines and all(1e-6 < c < 0.05 for c in cosines), cosines
