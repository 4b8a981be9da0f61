"""LoReFT, LoFiT and JoLA: SPEC 2's formulas, parameter counts, pyreft equivalence, LoFiT's two
stages, JoLA's gates and penalty, save/load, and `steer train` end to end."""

import json
import math

import pytest
import torch
from conftest import randomize

from steer_cli import train
from steer_cli.data.encode import encode_for_training
from steer_cli.data.tasks import Example
from steer_cli.engine.adapters import AdapterShape, JoLAAdapter, LoReFTAdapter
from steer_cli.engine.attach import Interventions, InterventionSpec, attach
from steer_cli.engine.sites import find_decoder_layers, head_geometry, hidden_size
from steer_cli.models import load_model
from steer_cli.recipe import build_recipe

TEXT = "[MAX 2 9 [MIN 4 7 ] 0 ]"


def _ids(tokenizer, text=TEXT):
    return tokenizer(text, return_tensors="pt")["input_ids"]


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


# -- parameter counts ---------------------------------------------------------------------------


@pytest.mark.parametrize("site", ["block_output", "mlp_output", "mlp_input", "attn_heads"])
def test_loreft_parameter_count(tiny, site):
    model, _ = tiny
    shape = AdapterShape("loreft", rank=4)
    handle = attach(model, InterventionSpec(site=site, shape=shape), seed=0)
    handle.detach()
    n_heads, head_dim = head_geometry(model)
    d = n_heads * head_dim if site == "attn_heads" else hidden_size(model)
    n_layers = len(find_decoder_layers(model))
    assert handle.num_parameters() == n_layers * (2 * d * 4 + 4)
    assert handle.num_parameters() == n_layers * shape.parameter_count(d)


def test_jola_and_lofit_parameter_counts(tiny):
    model, _ = tiny
    n_heads, head_dim = head_geometry(model)
    n_layers = len(find_decoder_layers(model))
    jola = attach(model, InterventionSpec(site="attn_heads", shape=AdapterShape("jola")))
    jola.detach()
    assert jola.num_parameters() == n_layers * n_heads * (2 * head_dim + 2)
    assert sum(p.numel() for p in jola.parameters()) == jola.num_parameters()

    every = n_layers * n_heads
    for heads, k in [(0.1, max(1, round(0.1 * every))), (0.5, 6), (3, 3), ("all", every)]:
        shape = AdapterShape("lofit", lofit_heads=heads)
        lofit = attach(model, InterventionSpec(site="attn_heads", shape=shape), seed=0)
        lofit.detach()
        assert lofit.lofit_heads_to_keep() == k
        # LoFiT's code counts the final model's biases v: d_head per kept head (planned k
        # during stage 1), as the paper's Table 2 shares do.
        assert lofit.num_parameters() == head_dim * k
        assert lofit.num_parameters() == n_layers * shape.parameter_count(
            0, head_dim=head_dim, selected_heads=k / n_layers
        )
        lofit.select_heads()
        assert sum(len(h) for h in lofit.selected_heads().values()) == k
        assert lofit.num_parameters() == head_dim * k


def test_head_wise_parameterizations_need_attn_heads():
    for name in ("lofit", "jola"):
        says = f"{name} edits attention heads: use site attn_heads, not block_output"
        with pytest.raises(ValueError, match=says):
            InterventionSpec(site="block_output", shape=AdapterShape(name))
    from steer_cli.errors import SteerError

    says = "'adapter.parameterization' jola edits attention heads: set adapter.site=attn_heads"
    with pytest.raises(SteerError, match=says):
        build_recipe({"adapter": {"parameterization": "jola"}})
    says = "'adapter.lofit_heads' should be a fraction below 1 or a whole number of heads, got 2.5"
    with pytest.raises(SteerError, match=says):
        build_recipe({"adapter": {"site": "attn_heads", "lofit_heads": 2.5}})
    assert (
        build_recipe({"method": "lofit", "adapter": {"lofit_heads": "all"}}).adapter.lofit_heads
        == "all"
    )
    # one key and both forms it takes, not pydantic's union tags ('lofit_heads.constrained-float')
    says = "recipe key 'adapter.lofit_heads' should be a valid number or 'all', got 'most'$"
    with pytest.raises(SteerError, match=says):
        build_recipe({"method": "lofit", "adapter": {"lofit_heads": "most"}})


# -- LoReFT -------------------------------------------------------------------------------------


class _PyreftLowRankRotateLayer(torch.nn.Module):
    """Transcribed from pyreft 0.1.0, ``pyreft/interventions.py`` (``LowRankRotateLayer``)."""

    def __init__(self, n, m, init_orth=True):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(n, m), requires_grad=True)
        if init_orth:
            torch.nn.init.orthogonal_(self.weight)

    def forward(self, x):
        return torch.matmul(x.to(self.weight.dtype), self.weight)


class _PyreftLoreft(torch.nn.Module):
    """Transcribed from pyreft 0.1.0, ``pyreft/interventions.py`` (``LoreftIntervention``),
    with its defaults: linear activation, no dropout (pyreft's own dtype default is bf16; the
    formula is the same in fp32)."""

    def __init__(self, embed_dim, low_rank_dimension):
        super().__init__()
        rotate_layer = _PyreftLowRankRotateLayer(embed_dim, low_rank_dimension, init_orth=True)
        self.rotate_layer = torch.nn.utils.parametrizations.orthogonal(rotate_layer)
        self.learned_source = torch.nn.Linear(embed_dim, low_rank_dimension)

    def forward(self, base, source=None, subspaces=None):
        rotated_base = self.rotate_layer(base)
        output = base + torch.matmul(
            (self.learned_source(base) - rotated_base), self.rotate_layer.weight.T
        )
        return output.to(base.dtype)


def _same_weights(ours: LoReFTAdapter, reference: torch.nn.Module) -> None:
    reference.learned_source.load_state_dict(ours.learned_source.state_dict())
    reference.rotate_layer.load_state_dict(ours.rotate_layer.state_dict())


def test_loreft_equals_pyreft_formula():
    torch.manual_seed(0)
    d, r = 32, 4
    ours = LoReFTAdapter(d, r)
    randomize(ours, std=0.3, seed=5)  # a trained-looking R (still orthonormal) and W, b
    reference = _PyreftLoreft(d, r)
    _same_weights(ours, reference)
    h = torch.randn(2, 7, d)
    with torch.no_grad():
        torch.testing.assert_close(h + ours(h), reference(h), rtol=1e-6, atol=1e-6)
        # Independently: R^T (W h + b - R h) with R = weight^T.
        R = ours.rotate_layer.weight.T
        W, b = ours.learned_source.weight, ours.learned_source.bias
        expected = (h @ W.T + b - h @ R.T) @ R
        torch.testing.assert_close(ours(h), expected, rtol=1e-5, atol=1e-6)


def test_loreft_rotation_stays_orthonormal_in_fp32_under_a_bf16_model():
    model, tokenizer = load_model("tiny-llama", dtype="bfloat16", device="cpu", seed=0)
    handle = attach(model, InterventionSpec(shape=AdapterShape("loreft", rank=4)), seed=0)
    ids = _ids(tokenizer)
    # The loop's groups, with weight decay on: it must not reach the orthogonal parametrization.
    optimizer = torch.optim.AdamW(handle.param_groups(0.05), lr=0.05, weight_decay=0.1)
    for _ in range(2):
        loss = model(input_ids=ids).logits.float().logsumexp(-1).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    handle.detach()
    for adapter in handle.adapters.values():
        weight = adapter.rotate_layer.weight  # [d, r]: R^T
        assert weight.dtype == torch.float32
        torch.testing.assert_close(weight.T @ weight, torch.eye(4), atol=1e-5, rtol=0)
    assert any(p.grad is None for p in handle.parameters())  # zero_grad set them to None


def test_loreft_is_not_identity_at_init_faithfully_to_pyreft(tiny):
    model, tokenizer = tiny
    ids = _ids(tokenizer)
    base = _logits(model, ids)
    handle = attach(model, InterventionSpec(shape=AdapterShape("loreft", rank=2)), seed=0)
    try:
        assert not torch.allclose(_logits(model, ids), base)
    finally:
        handle.detach()


def test_loreft_save_load_roundtrip(tmp_path):
    model, tokenizer = load_model("tiny-qwen3", dtype="float32", device="cpu", seed=0)
    ids = _ids(tokenizer)
    spec = InterventionSpec(site="mlp_output", shape=AdapterShape("loreft", rank=3))
    handle = attach(model, spec, seed=1)
    randomize(handle, std=0.3)
    expected = _logits(model, ids)
    handle.save(tmp_path)
    handle.detach()
    saved = json.loads((tmp_path / "adapter.json").read_text())
    assert saved["parameterization"] == "loreft" and saved["rank"] == 3
    loaded = Interventions.load(tmp_path).attach(model)
    try:
        torch.testing.assert_close(_logits(model, ids), expected, rtol=0, atol=1e-6)
        assert loaded.num_parameters() == handle.num_parameters()
    finally:
        loaded.detach()


# -- LoFiT --------------------------------------------------------------------------------------


def test_lofit_two_stages_select_top_heads_by_norm():
    model, _ = load_model("tiny-llama", dtype="float32", device="cpu", seed=0)
    shape = AdapterShape("lofit", lofit_heads=3, lofit_l1=1e-3, lofit_stage_split=0.5)
    handle = attach(model, InterventionSpec(site="attn_heads", shape=shape), seed=0)
    handle.detach()
    assert handle.training_stages() is None  # the split variant: one training
    n_heads, head_dim = head_geometry(model)
    # Make the norms known: head h of layer i gets norm proportional to a chosen score.
    scores = {(0, 2): 9.0, (2, 1): 8.0, (1, 3): 7.0}
    with torch.no_grad():
        for i in handle.layer_ids:
            adapter = handle.adapters[str(i)]
            for h in range(n_heads):
                adapter.A[h] = torch.full((head_dim,), scores.get((i, h), 0.1) / head_dim)
    l1 = sum(a.A.abs().sum() for a in handle.adapters.values())
    torch.testing.assert_close(handle.penalty(1), 1e-3 * l1)

    handle.begin_training(10)
    for step in range(1, 5):
        handle.after_step(step)
        assert handle.lofit_stage == 1
    handle.after_step(5)  # half of 10 steps: the switch
    assert handle.lofit_stage == 2
    assert handle.selected_heads() == {0: [2], 1: [3], 2: [1]}
    assert handle.penalty(6) is None
    for i, adapter in ((int(k), a) for k, a in handle.adapters.items()):
        assert torch.equal(adapter.A, torch.zeros_like(adapter.A))
        kept = handle.selected_heads().get(i, [])
        others = [h for h in range(n_heads) if h not in kept]
        assert torch.equal(adapter.v[others], torch.zeros(len(others), head_dim))
        assert all(adapter.v[h].abs().sum() > 0 for h in kept)
    summary = handle.summary()
    assert summary["lofit_stage"] == 2 and summary["heads_kept"] == 3
    assert summary["selected_heads"] == {"0": [2], "1": [3], "2": [1]}


def _rows(tokenizer, n=8):
    examples = [
        Example(
            prompt=f"[SM {i} {i + 1} ]", target=f"<answer>{(2 * i + 1) % 10}</answer>", answer=""
        )
        for i in range(n)
    ]
    rows, _ = encode_for_training(tokenizer, examples, chat=True, max_length=128)
    return rows


def test_lofit_trains_a_then_only_v_on_kept_heads():
    """Two trainings, as LoFiT's code runs them: stage 1 moves A (v unused) for its own steps,
    stage 2 moves v on the kept heads only for as many more and leaves A at zero."""
    model, tokenizer = load_model("tiny-llama", dtype="float32", device="cpu", seed=0)
    model.requires_grad_(False)
    shape = AdapterShape("lofit", lofit_heads=2)
    handle = attach(model, InterventionSpec(site="attn_heads", shape=shape), seed=0)
    initial = {k: (a.A.detach().clone(), a.v.detach().clone()) for k, a in handle.adapters.items()}
    at_switch: dict = {}
    select = handle.select_heads

    def spy():
        at_switch["before"] = {
            k: (a.A.detach().clone(), a.v.detach().clone()) for k, a in handle.adapters.items()
        }
        out = select()
        at_switch["v"] = {k: a.v.detach().clone() for k, a in handle.adapters.items()}
        return out

    handle.select_heads = spy
    steps = []
    cfg = build_recipe({"train": {"max_steps": 4, "batch_size": 4, "lr": 1e-2}}).train
    train.train_loop(
        model,
        handle,
        _rows(tokenizer),
        cfg,
        pad_id=tokenizer.pad_token_id,
        on_step=lambda s: steps.append((s.step, handle.lofit_stage)),
    )
    handle.detach()
    assert steps == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 2), (6, 2), (7, 2), (8, 2)]
    for k, (a0, v0) in initial.items():
        a1, v1 = at_switch["before"][k]
        assert not torch.equal(a1, a0), "stage 1 trains A"
        assert torch.equal(v1, v0), "stage 1 leaves v alone"
    kept = handle.selected_heads()
    assert sum(len(h) for h in kept.values()) == 2
    for k, a in handle.adapters.items():
        assert torch.equal(a.A, torch.zeros_like(a.A))
        heads = kept.get(int(k), [])
        others = [h for h in range(a.v.shape[0]) if h not in heads]
        assert torch.equal(a.v[others], torch.zeros_like(a.v[others]))
        if heads:
            assert not torch.equal(a.v[heads], at_switch["v"][k][heads]), "stage 2 trains v"


def test_lofit_save_load_keeps_selected_heads(tmp_path):
    model, tokenizer = load_model("tiny-mistral", dtype="float32", device="cpu", seed=0)
    shape = AdapterShape("lofit", lofit_heads=0.25)
    handle = attach(model, InterventionSpec(site="attn_heads", shape=shape), seed=0)
    heads = handle.select_heads()
    with torch.no_grad():
        for a in handle.adapters.values():
            a.v.mul_(300)
    ids = _ids(tokenizer)
    expected = _logits(model, ids)
    handle.save(tmp_path)
    handle.detach()
    config = json.loads((tmp_path / "adapter.json").read_text())
    assert config["lofit_stage"] == 2
    assert config["summary"]["selected_heads"] == {str(k): v for k, v in heads.items()}
    loaded = Interventions.load(tmp_path)
    assert loaded.lofit_stage == 2 and loaded.selected_heads() == heads
    loaded.attach(model)
    try:
        assert torch.equal(_logits(model, ids), expected)
    finally:
        loaded.detach()


# -- JoLA ---------------------------------------------------------------------------------------


def test_jola_gates_follow_the_hard_concrete_formulas():
    adapter = JoLAAdapter(4, 8)
    with torch.no_grad():
        adapter.log_alpha_A.copy_(torch.tensor([-5.0, -1.0, 0.0, 3.0]))
        adapter.log_alpha_v.copy_(torch.tensor([2.0, -3.0, 0.5, -2.0]))
    adapter.eval()
    g_a, g_v = adapter.gates()
    for gate, la in ((g_a, adapter.log_alpha_A), (g_v, adapter.log_alpha_v)):
        expected = torch.clamp(torch.sigmoid(la) * 1.2 - 0.1, 0, 1)
        torch.testing.assert_close(gate, expected.detach())
    # Open at eval: sigmoid(log_alpha) * 1.2 - 0.1 > 0, i.e. log_alpha > log(1/11).
    assert adapter.open_gates() == {"scale": 3, "shift": 3}  # -2.0 > log(1/11) = -2.40

    adapter.train()  # the noise comes from torch's RNG (the loop seeds it)
    torch.manual_seed(3)
    g_a, g_v = adapter.gates()
    torch.manual_seed(3)
    for gate, la in ((g_a, adapter.log_alpha_A), (g_v, adapter.log_alpha_v)):
        u = torch.rand(4).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + la) / 0.33)
        torch.testing.assert_close(gate, torch.clamp(s * 1.2 - 0.1, 0, 1).detach())

    z = torch.randn(2, 3, 4, 8)
    adapter.eval()
    g_a, g_v = adapter.gates()
    expected = (1 + g_a[:, None] * adapter.A) * z + g_v[:, None] * adapter.v
    torch.testing.assert_close(z + adapter(z), expected.detach(), rtol=1e-5, atol=1e-6)


def _jola_reference_penalty(handle, model, lam: float) -> torch.Tensor:
    """JoLA's trainer (jola/trainers.py, ``get_penalty`` and ``compute_loss``), transcribed:
    per layer the mean over heads of the clamped open probabilities, summed over layers, then
    ``lam * g1 / (L * H) + (1 - lam) * g2 / (L * H)``; g1 gates the shift v, g2 the scale A."""
    config = model.config

    def get_penalty(log_alpha, stretch_limits=(-0.1, 1.1), temperature=0.33, eps=1e-6):
        low, high = torch.tensor(stretch_limits)
        p_open = torch.sigmoid(log_alpha - temperature * torch.log(-low / high))
        p_open = torch.clamp(p_open, eps, 1.0 - eps)
        return torch.sum(p_open) / p_open.size(0)

    g1 = sum(get_penalty(a.log_alpha_v[:, None]) for a in handle.adapters.values())
    g2 = sum(get_penalty(a.log_alpha_A[:, None]) for a in handle.adapters.values())
    lh = config.num_hidden_layers * config.num_attention_heads
    return lam * g1 / lh + (1 - lam) * g2 / lh


def test_jola_penalty_is_jolas_and_the_sum_variant_is_kept(tiny):
    """Default: JoLA's code's scale, its lambda_0 on the first step and decaying per step;
    ``jola_penalty: sum`` is steer 0.1.0's, L * H^2 times stronger per gate."""
    model, _ = tiny
    handle = attach(model, InterventionSpec(site="attn_heads", shape=AdapterShape("jola")))
    handle.detach()
    with torch.no_grad():  # gates of every kind, some clamped by JoLA's eps
        for k, a in enumerate(handle.adapters.values()):
            a.log_alpha_A.copy_(torch.linspace(-20, 3, a.log_alpha_A.numel()) + k)
            a.log_alpha_v.copy_(torch.linspace(-2, 20, a.log_alpha_v.numel()) - k)
    assert len(handle.layer_ids) == model.config.num_hidden_layers  # JoLA adapts every layer
    # JoLA's "expon" gate scheduler: gated_lambda starts at 0.1, then each step takes
    # ExponentialDecaySchedule(0.1, 0.01).get_lambda(), which counts the step first.
    lam = 0.1
    for step in range(1, 51):
        if step in (1, 2, 50):
            reference = _jola_reference_penalty(handle, model, lam)
            torch.testing.assert_close(handle.penalty(step), reference)
        lam = 0.1 * math.exp(-0.01 * step)  # get_lambda() after ``step`` calls

    summed = attach(
        model, InterventionSpec(site="attn_heads", shape=AdapterShape("jola", jola_penalty="sum"))
    )
    summed.detach()
    summed.load_state_dict(handle.state_dict())
    shift = 0.33 * math.log(0.1 / 1.1)
    expected_l0 = sum(
        torch.sigmoid(a.log_alpha_A - shift).sum() + torch.sigmoid(a.log_alpha_v - shift).sum()
        for a in summed.adapters.values()
    )
    for step in (1, 50):
        torch.testing.assert_close(summed.penalty(step), 0.1 * math.exp(-0.01 * step) * expected_l0)

    # Per gate: the gradient on one shift gate's log-alpha, both scales.
    n_heads, _ = head_geometry(model)
    grads = []
    for h in (handle, summed):
        gate = h.adapters["0"].log_alpha_v
        gate.grad = None
        h.penalty(1).backward()
        grads.append(float(gate.grad[0]))
    lh2 = len(handle.layer_ids) * n_heads * n_heads
    # (sum decays from its first step: exp(-0.01) there, JoLA not yet)
    assert grads[1] / grads[0] == pytest.approx(lh2 * math.exp(-0.01), rel=1e-4)
    with pytest.raises(ValueError, match="unknown jola_penalty 'mean'; choose from "):
        AdapterShape("jola", jola_penalty="mean")


def test_jola_penalty_and_gate_report(tiny):
    model, _ = tiny
    handle = attach(model, InterventionSpec(site="attn_heads", shape=AdapterShape("jola")))
    handle.detach()
    with torch.no_grad():
        for a in handle.adapters.values():
            a.log_alpha_A.fill_(-10.0)
            a.log_alpha_v.fill_(10.0)
    report = handle.summary()["open_gates"]
    n_heads, _ = head_geometry(model)
    n_layers = len(handle.layer_ids)
    assert report["scale"] == 0 and report["shift"] == n_heads * n_layers
    assert report["total"] == 2 * n_heads * n_layers
    assert report["per_layer"]["0"] == {"scale": 0, "shift": n_heads}


def test_jola_is_deterministic_in_eval_and_reloads(tmp_path):
    model, tokenizer = load_model("tiny-gemma3", dtype="float32", device="cpu", seed=0)
    handle = attach(model, InterventionSpec(site="attn_heads", shape=AdapterShape("jola")))
    randomize(handle, std=0.5)
    ids = _ids(tokenizer)
    expected = _logits(model, ids)
    assert torch.equal(_logits(model, ids), expected)  # eval mode: no gate noise
    handle.train()
    assert not torch.equal(_logits(model, ids), expected)  # training: sampled gates
    handle.eval()
    handle.save(tmp_path)
    handle.detach()
    assert "open_gates" in json.loads((tmp_path / "adapter.json").read_text())["summary"]
    loaded = Interventions.load(tmp_path).attach(model)
    try:
        assert torch.equal(_logits(model, ids), expected)
    finally:
        loaded.detach()


# -- steer train ---------------------------------------------------------------------------------

TRAIN = {
    "model": "tiny-llama",
    "data": {"train_size": 16, "validation_size": 2, "test_size": 4},
    "train": {"max_steps": 4, "batch_size": 4, "lr": 1e-2},
    "eval": {"before": False, "batch_size": 4, "max_new_tokens": 4},
}


@pytest.mark.parametrize(
    "adapter",
    [
        {"parameterization": "loreft", "site": "mlp_output", "rank": 2, "positions": "f2+l2"},
        {"parameterization": "lofit", "site": "attn_heads", "lofit_heads": 2},
        {"parameterization": "jola", "site": "attn_heads", "positions": "prompt"},
    ],
    ids=["loreft", "lofit", "jola"],
)
def test_steer_train_runs_and_reloads(tmp_path, adapter):
    recipe = build_recipe({**TRAIN, "adapter": adapter})
    out = tmp_path / "run"
    trained = train.run(recipe, out)
    results = json.loads((out / "results.json").read_text())
    summary = results["adapter"]
    assert summary["parameterization"] == adapter["parameterization"]
    assert results["trainable_params"] == trained.interventions.num_parameters()
    if adapter["parameterization"] == "lofit":
        assert summary["lofit_stage"] == 2
        assert sum(len(h) for h in summary["selected_heads"].values()) == 2
        n_heads, head_dim = head_geometry(trained.model)
        assert results["trainable_params"] == head_dim * 2  # the kept heads' v
    if adapter["parameterization"] == "jola":
        assert 0 <= summary["open_gates"]["shift"] <= summary["open_gates"]["total"]
    fresh, tokenizer = load_model("tiny-llama", dtype="float32", device="cpu")
    loaded = Interventions.load(out).attach(fresh)
    prompt = tokenizer("[MAX 1 [MIN 2 3 ] ]")["input_ids"]
    from steer_cli.evaluate.generation import generate

    live = generate(trained.model, tokenizer, [prompt], max_new_tokens=4, batch_size=1)
    assert generate(fresh, tokenizer, [prompt], max_new_tokens=4, batch_size=1) == live
    loaded.detach()
    trained.interventions.detach()


def test_seeded_training_is_reproducible_with_gate_noise_and_weight_decay():
    """JoLA's gate noise comes from the interventions' seeded generator; LoReFT keeps an
    orthonormal, non-zero R under the loop's weight decay (its parametrization is not decayed)."""
    model, tokenizer = load_model("tiny-qwen2", dtype="float32", device="cpu", seed=0)
    model.requires_grad_(False)
    cfg = build_recipe(
        {"train": {"max_steps": 2, "batch_size": 4, "lr": 1e-2, "weight_decay": 0.1}}
    ).train
    for spec in (
        InterventionSpec(site="attn_heads", shape=AdapterShape("jola")),
        InterventionSpec(site="mlp_output", shape=AdapterShape("loreft", rank=2)),
    ):
        states = []
        for _ in range(2):
            handle = attach(model, spec, seed=4)
            train.train_loop(model, handle, _rows(tokenizer), cfg, pad_id=tokenizer.pad_token_id)
            handle.detach()
            states.append(handle.tensors())
        for key, value in states[0].items():
            assert torch.equal(value, states[1][key]), key
        if spec.shape.parameterization == "loreft":
            for adapter in handle.adapters.values():
                weight = adapter.rotate_layer.weight
                torch.testing.assert_close(weight.T @ weight, torch.eye(2), atol=1e-5, rtol=0)


def test_steer_train_lofit_runs_two_trainings_with_their_own_lr_and_epochs(tmp_path):
    """Through the CLI: stage 1 at lofit_lr_stage1 for train.epochs, stage 2 at train.lr for
    lofit_epochs_stage2 epochs, each its own schedule; LoFiT's count is the kept heads' v."""
    import yaml
    from typer.testing import CliRunner

    from steer_cli.cli import app

    raw = {
        "method": "lofit",
        "model": "tiny-llama",
        "data": {"train_size": 16, "validation_size": 2, "test_size": 4},
        "train": {"epochs": 1, "batch_size": 4, "lr": 1e-2},
        "adapter": {"lofit_heads": 2, "lofit_lr_stage1": 1e-3, "lofit_epochs_stage2": 2},
        "eval": {"before": False, "batch_size": 4, "max_new_tokens": 4},
    }
    path = tmp_path / "lofit.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["stage"] for m in metrics] == [1] * 4 + [2] * 8  # 16 examples / 4 a step
    assert [m["step"] for m in metrics] == list(range(1, 13))
    assert {m["lr"] for m in metrics[:4]} == {1e-3} and {m["lr"] for m in metrics[4:]} == {1e-2}
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 12 and results["adapter"]["lofit_stage"] == 2
    model, _ = load_model("tiny-llama", dtype="float32", device="cpu")
    _, head_dim = head_geometry(model)
    assert results["trainable_params"] == 2 * head_dim


def test_lofit_split_variant_is_one_training_and_refuses_stage_settings():
    from steer_cli.errors import SteerError

    recipe = build_recipe({"method": "lofit", "adapter": {"lofit_stage_split": 0.5}})
    assert recipe.adapter.lofit_stage_split == 0.5
    with pytest.raises(SteerError, match="lofit_stage_split runs one training"):
        build_recipe(
            {"method": "lofit", "adapter": {"lofit_stage_split": 0.5, "lofit_lr_stage1": 1e-3}}
        )
