"""steer oracle: the streaming co-run, the analyses' numbers, and the command (tiny models)."""

import copy
import gc
import json
import math
import weakref

import pytest
import torch
from typer.testing import CliRunner

from steer_cli import train
from steer_cli.cli import app
from steer_cli.engine.sites import find_decoder_layers
from steer_cli.errors import SteerError
from steer_cli.oracle import linalg, plots
from steer_cli.oracle.analysis import Model, Sample, analyse_layers, kl_per_token, run_oracle
from steer_cli.oracle.stream import co_run
from steer_cli.recipe import build_recipe

runner = CliRunner()


def _perturbed(model, *, blocks=True, head=False, std=0.05, seed=1):
    """A "fine-tuned" copy: Gaussian noise on the decoder blocks (and/or the final norm)."""
    ft = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    targets = list(find_decoder_layers(ft).parameters()) if blocks else []
    if head:
        targets += list(ft.get_decoder().norm.parameters())
    with torch.no_grad():
        for p in targets:
            p.add_(torch.randn(p.shape, generator=generator) * std)
    return ft


def _sample(vocab: int, rows: int = 4, width: int = 30, seed: int = 0) -> Sample:
    """Random right-padded sequences; the last 6 real tokens of each count as generated."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (rows, width), generator=generator)
    mask = torch.ones_like(ids)
    lengths = [width - 3 * r for r in range(rows)]
    for r, n in enumerate(lengths):
        mask[r, n:] = 0
    return Sample(ids, mask, [n - 6 for n in lengths], [6] * rows)


def _kl(ft, logits, sample: Sample) -> float:
    with torch.no_grad():
        ref = ft(input_ids=sample.input_ids, attention_mask=sample.attention_mask).logits
    kl = kl_per_token(torch.log_softmax(ref.float(), -1), logits)
    return float(kl[sample.attention_mask.bool()].max())


def test_block_oracle_reproduces_ft_and_branch_oracles_do_not(tiny):
    base, _ = tiny
    ft = _perturbed(base)
    sample = _sample(base.config.vocab_size)
    kls = {}
    for site in ("block_output", "mlp_output", "attn_output"):
        with co_run(base, ft, oracle=site) as forward:
            kls[site] = _kl(ft, forward(sample.input_ids, sample.attention_mask), sample)
    assert kls["block_output"] < 1e-6
    assert kls["mlp_output"] > 1e-3
    assert kls["attn_output"] > 1e-3
    with co_run(base) as forward:  # hooks without steering leave the base model alone
        plain = forward(sample.input_ids, sample.attention_mask)
    with torch.no_grad():
        reference = base(input_ids=sample.input_ids, attention_mask=sample.attention_mask).logits
    assert torch.allclose(plain, reference, atol=1e-6)


def test_a_changed_final_norm_needs_the_ft_head(tiny_models):
    base, _ = tiny_models["tiny-llama"]
    ft = _perturbed(base, head=True, std=0.3)
    sample = _sample(base.config.vocab_size)
    with co_run(base, ft, oracle="block_output") as forward:
        base_head = _kl(ft, forward(sample.input_ids, sample.attention_mask), sample)
    with co_run(base, ft, oracle="block_output", ft_head=True) as forward:
        ft_head = _kl(ft, forward(sample.input_ids, sample.attention_mask), sample)
    assert ft_head < 1e-6 < 1e-3 < base_head


def test_mlp_shares_match_a_hand_computation_on_one_layer(tiny_models):
    base, _ = tiny_models["tiny-llama"]
    layer = find_decoder_layers(base)[1]
    sample = _sample(base.config.vocab_size)
    keep = sample.attention_mask.bool()
    seen = {}

    def on_layer(t):
        if t.index == 1:
            mid = t.base_in + t.base_attn
            mlp = layer.mlp(layer.post_attention_layernorm(mid))
            m, a = mlp[keep].norm(dim=-1), t.base_attn[keep].norm(dim=-1)
            seen.update(
                update=m.double() / (t.base_attn + mlp)[keep].norm(dim=-1).double(),
                writes=m.double() / (a + m).double(),
                of_update=linalg.mlp_share_of_update(
                    t.base_mlp[keep], t.base_in[keep], t.base_out[keep]
                ),
                of_writes=linalg.mlp_share_of_writes(t.base_mlp[keep], t.base_attn[keep]),
                output=m.double() / (mid + mlp)[keep].norm(dim=-1).double(),
                of_output=linalg.mlp_share_of_output(t.base_mlp[keep], t.base_out[keep]),
                out_ok=torch.allclose(t.base_out, mid + mlp, atol=1e-5),
            )

    with co_run(base, on_layer=on_layer) as forward:
        forward(sample.input_ids, sample.attention_mask, logits=False)
    assert seen["out_ok"]
    assert torch.allclose(seen["of_update"], seen["update"], atol=1e-5)
    assert torch.allclose(seen["of_writes"], seen["writes"], atol=1e-5)
    assert torch.allclose(seen["of_output"], seen["output"], atol=1e-5)
    assert float(seen["of_writes"].max()) <= 1
    # On numbers: an MLP write of norm 5 against attention's (-3, 0): the update (0, 4) is
    # shorter than the MLP write (share of the update 1.25), its share of the writes 5/8.
    m, a = torch.tensor([[3.0, 4.0]]), torch.tensor([[-3.0, 0.0]])
    zero = torch.zeros(1, 2)
    assert float(linalg.mlp_share_of_update(m, zero, a + m)) == pytest.approx(1.25)
    assert float(linalg.mlp_share_of_writes(m, a)) == pytest.approx(0.625)
    # against the block output O = I + a + m with I = (6, 0): O = (6, 4), ||O|| = sqrt(52)
    residual = torch.tensor([[6.0, 0.0]])
    share = linalg.mlp_share_of_output(m, residual + a + m)
    assert float(share) == pytest.approx(5 / math.sqrt(52))


@pytest.mark.parametrize("k", [1, 3, 7])
def test_effective_rank_of_a_rank_k_set_is_k(k):
    d = 20
    basis = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(k)))[0][:, :k]
    equal = torch.cat([basis.T, -2 * basis.T])  # k directions, equal energy
    spec = linalg.spectrum(equal)
    assert spec.effective_rank == pytest.approx(k, rel=1e-9)
    assert spec.energy_rank[0.99] == k
    mixed = torch.randn(200, k, generator=torch.Generator().manual_seed(0)) @ basis.T
    spec = linalg.spectrum(mixed)
    assert spec.energy_rank[0.99] <= k and spec.effective_rank <= k + 1e-9
    assert float(spec.eigenvalues[k:].abs().max()) < 1e-10 * float(spec.eigenvalues[0])


def test_the_covariance_spectrum_leaves_the_mean_out():
    """k equally strong directions (energy 1/k each) around a mean as strong in another
    direction: the covariance has effective rank k, the uncentred second moment k + 1."""
    d, k = 12, 3
    basis = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(2)))[0]
    around = torch.cat([basis[:, :k].T, -basis[:, :k].T])  # mean 0, k directions
    shifted = around + math.sqrt(1 / k) * basis[:, k]
    assert linalg.spectrum(shifted, centred=True).effective_rank == pytest.approx(k, rel=1e-9)
    assert linalg.spectrum(shifted).effective_rank == pytest.approx(k + 1, rel=1e-9)
    assert linalg.spectrum(around, centred=True).effective_rank == pytest.approx(k, rel=1e-9)


def _linear_ft(base, matrix: torch.Tensor):
    """A "fine-tuned" model whose every block output is ``M @ (base block output)``: the oracle
    ``delta = (M - I) h`` is exactly linear in what the post-block site sees."""
    ft = copy.deepcopy(base)
    for layer in find_decoder_layers(ft):
        layer.register_forward_hook(lambda m, args, out: out @ matrix.T)
    return ft


@pytest.mark.parametrize("rank", [None, 2])
def test_linearized_oracle_recovers_an_exactly_linear_delta(tiny_models, rank):
    base, tokenizer = tiny_models["tiny-llama"]
    d = base.config.hidden_size
    generator = torch.Generator().manual_seed(0)
    u, v = torch.randn(d, 2, generator=generator), torch.randn(d, 2, generator=generator)
    matrix = torch.eye(d) + 0.05 * (u @ v.T) / math.sqrt(d)  # rank-2 change
    ft = _linear_ft(base, matrix)
    sample = _sample(base.config.vocab_size, rows=8, width=40)  # each half > d tokens
    layers, maps = analyse_layers(
        Model(base, tokenizer, "b"), Model(ft, tokenizer, "f"), sample, rank=2
    )
    key = "full" if rank is None else "rank_2"
    assert all(entry["linear_r2"][key] > 1 - 1e-6 for entry in layers)
    # each half's maps, fitted on its tokens alone, steer the whole sample, and miss nothing of
    # the other half's oracle
    assert all(entry["held_out_error"][key] < 1e-5 for entry in layers)
    for fitted in maps[key]:
        with co_run(base, maps=fitted) as forward:
            assert _kl(ft, forward(sample.input_ids, sample.attention_mask), sample) < 1e-6
    with co_run(base) as forward:  # unsteered, the base is far from it: the test can fail
        assert _kl(ft, forward(sample.input_ids, sample.attention_mask), sample) > 1e-4


def test_the_linear_maps_are_scored_on_the_half_they_were_not_fitted_on(tiny_models):
    """With fewer tokens per half than the hidden size, a full-rank map fits its own half
    exactly whatever the oracle is; on the other half it misses a good part of it. The
    in-sample R2 (every token) and the held-out error tell the two apart."""
    base, tokenizer = tiny_models["tiny-llama"]
    ft = _perturbed(base)
    sample = _sample(base.config.vocab_size, rows=4, width=30)  # ~55 tokens a half, d = 64
    layers, maps = analyse_layers(
        Model(base, tokenizer, "b"), Model(ft, tokenizer, "f"), sample, rank=2, ranks=(1,)
    )
    assert set(maps) == {"full", "rank_1", "rank_2"} and all(len(m) == 2 for m in maps.values())
    for entry in layers:
        assert set(entry["held_out_error"]) == {"full", "rank_1", "rank_2"}
        assert entry["held_out_error"]["full"] > 0.1
        for half in entry["halves"]:
            assert half["tokens"] < base.config.hidden_size
            assert 0 < half["mlp_share"]["of_block_output"] < 1
            assert half["covariance_effective_rank"]["delta"] > 0
    keep = sample.attention_mask.bool()
    seen = {}

    def on_layer(t):  # half 0's full map on half 0's own tokens: exact
        if t.index == 1:
            rows = keep.clone()
            rows[2:] = False
            seen["own"] = maps["full"][0][1].residual(
                t.base_out[rows], (t.ft_out - t.base_out)[rows]
            )

    with co_run(base, ft, oracle="block_output", on_layer=on_layer) as forward:
        forward(sample.input_ids, sample.attention_mask, logits=False)
    miss, energy = seen["own"]
    assert miss < 1e-6 * energy


def test_principal_angles_and_optimal_relative_error_in_known_cases():
    e = torch.eye(6)
    same = linalg.expressivity(e[:, :3], e[:, :3] @ torch.randn(3, 3))
    assert same.relative_error == pytest.approx(0, abs=1e-12)
    assert float(same.angles.max()) == pytest.approx(0, abs=1e-6)
    orthogonal = linalg.expressivity(e[:, :3], e[:, 3:5])
    assert orthogonal.relative_error == pytest.approx(1)
    assert torch.allclose(orthogonal.angles, torch.full((2,), math.pi / 2, dtype=torch.float64))
    theta = 0.3
    tilted = torch.tensor([[math.cos(theta)], [math.sin(theta)], [0.0]])
    known = linalg.expressivity(e[:3, :1], tilted)
    assert float(known.angles[0]) == pytest.approx(theta)
    assert known.relative_error == pytest.approx(math.sin(theta))
    assert linalg.principal_angles(e[:, :2], e[:, 1:3]).tolist() == pytest.approx([0, math.pi / 2])


def test_the_co_run_holds_one_layer_at_a_time(tiny_models):
    base, _ = tiny_models["tiny-qwen3"]
    ft = _perturbed(base)
    sample = _sample(base.config.vocab_size)
    refs: dict[int, list] = {}
    dead_at: dict[int, bool] = {}

    def on_layer(t):
        tensors = [t.base_attn, t.base_mlp, t.base_out, t.ft_attn, t.ft_mlp]
        refs[t.index] = [weakref.ref(x) for x in tensors]
        gc.collect()
        older = [r for i, rs in refs.items() if i <= t.index - 2 for r in rs]
        dead_at[t.index] = all(r() is None for r in older)

    with co_run(base, ft, oracle="block_output", on_layer=on_layer) as forward:
        forward(sample.input_ids, sample.attention_mask, logits=False)
    n = len(find_decoder_layers(base))
    assert sorted(dead_at) == list(range(n)) and n >= 3
    assert all(dead_at.values())
    gc.collect()
    assert all(r() is None for rs in refs.values() for r in rs)  # nothing kept after the pass


def _tiny_recipe(method: str):
    return build_recipe(
        {
            "method": method,
            "model": {"name": "tiny-llama"},
            "data": {"train_size": 8, "validation_size": 2, "test_size": 4},
            "train": {"max_steps": 2, "batch_size": 4, "lr": 1e-2},
            "eval": {"batch_size": 4, "before": False, "max_new_tokens": 4},
        }
    )


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle-runs")
    train.run(_tiny_recipe("sft"), root / "sft")
    train.run(_tiny_recipe("joint"), root / "joint")
    return root


def test_oracle_command_writes_json_and_plots_and_refuses_overwrite(trained_runs):
    sft, joint = trained_runs / "sft", trained_runs / "joint"
    args = ["oracle", "tiny-llama", str(sft), "--samples", "3", "--max-new-tokens", "4"]
    result = runner.invoke(app, [*args, "--runs", str(joint)])
    assert result.exit_code == 0, result.output
    out = sft / "oracle"
    data = json.loads((out / "oracle.json").read_text())
    assert data["sanity"]["ok"] and data["sanity"]["kl_max"]["oracle block_output"] < 1e-6
    names = {c["name"] for c in data["parameters"]["changed"]}
    assert "model.embed_tokens.weight" in names  # sft trains the embeddings too, and says so
    assert len(data["layers"]) == 3 and data["task"] == "listops" and data["samples"] == 3
    assert data["runs"][0]["method"] == "joint" and data["runs"][0]["diagnostics"]["layers"]
    assert set(data["kl"]) >= {"base", "linear full", "linear rank 8", "oracle mlp_output"}
    assert data["folds"] == [[0, 2], [2, 3]]
    for entry in [*data["kl"].values(), *(r["kl"] for r in data["runs"])]:
        assert len(entry["per_prompt"]) == 3  # one per prompt, in the sample's order
    # the blog's error control: every fitted map's worst held-out layer error beside its KL
    control = {point["maps"]: point for point in data["error_control"]}
    assert set(control) == {"full", "rank_1", "rank_4", "rank_8", "rank_16"}  # < hidden size
    for label, point in control.items():
        name = "linear " + label.replace("_", " ")
        assert point["kl"] == data["kl"][name]["mean_generated"]
        errors = [e["held_out_error"][label] for e in data["layers"]]
        assert point["max_layer_error"] == max(errors)
    for png in (*data["plots"], "kl_curve.png", "joint_alignment.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "oracle sanity" in result.output and "ok" in result.output
    assert data["warnings"] == [] and data["tokens"] > data["hidden_size"]
    for entry in data["layers"]:  # both MLP shares, named, for both models
        for who in ("base", "ft"):
            share = entry["mlp_share"][who]
            assert 0 < share["of_writes"] < 1 and share["of_update"] > 0
            assert 0 <= share["update_above_1"] <= 1
    assert "m/(a+m) base" in result.output and "m/|O-I| FT" in result.output
    fig = plots._mlp_share(plots._pyplot(), data)  # the paper's band beside its words only
    banded = [ax for ax in fig.axes if any("paper" in str(p.get_label()) for p in ax.patches)]
    assert [ax.get_ylabel() for ax in banded] == ["||m|| / ||O||"]
    assert len(fig.axes) == 3  # the two other readings drawn too, beside it, without the band

    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "already exists" in again.output
    replaced = runner.invoke(app, [*args, "--overwrite", "--json", "--rank", "2"])
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((out / "oracle.json").read_text())["rank"] == 2
    assert not list(sft.glob(".oracle.partial*")) and not list(sft.glob(".oracle.lock"))


def test_oracle_bad_inputs_are_clean_errors(trained_runs, tmp_path):
    sft = str(trained_runs / "sft")
    cases = [
        (["tiny-llama", str(tmp_path / "missing-run")], "does not exist"),
        (["tiny-llama", sft, "--task", "nosuchtask"], "unknown task"),
        (["tiny-llama", sft, "--runs", str(tmp_path)], "not a run directory"),
        (["tiny-llama", str(trained_runs / "joint")], "needs a full fine-tune"),
        (["tiny-llama", sft, "--samples", "1"], "needs at least 2 prompts"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["oracle", *args, "-o", str(tmp_path / "o")])
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert not (tmp_path / "o").exists()


def test_run_oracle_rejects_mismatched_models(tiny_models, tmp_path):
    other, tokenizer = tiny_models["tiny-qwen2"]
    other.save_pretrained(tmp_path / "qwen")
    tokenizer.save_pretrained(tmp_path / "qwen")
    with pytest.raises(SteerError, match="Qwen2ForCausalLM with other parameters"):
        run_oracle("tiny-llama", str(tmp_path / "qwen"), samples=2, max_new_tokens=2)


def _save(model, tokenizer, path):
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_an_ft_model_equal_to_its_base_is_a_clear_error(tmp_path):
    out = tmp_path / "o"
    args = ["oracle", "tiny-llama", "tiny-llama", "--samples", "2", "--max-new-tokens", "2"]
    result = runner.invoke(app, [*args, "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert "identical to the base model tiny-llama" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_layers_the_fine_tune_left_alone_report_nothing_to_fit(tiny_models, tmp_path, recwarn):
    base, tokenizer = tiny_models["tiny-llama"]
    ft = copy.deepcopy(base)
    last = find_decoder_layers(ft)[-1]
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in last.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    ft_dir = _save(ft, tokenizer, tmp_path / "ft")
    args = ["oracle", "tiny-llama", ft_dir, "--samples", "2", "--max-new-tokens", "3"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "o" / "oracle.json").read_text())
    for entry in data["layers"][:-1]:
        assert entry["oracle_norm"] == 0
        assert (
            entry["linear_r2"]["full"] is None and entry["expressivity"]["relative_error"] is None
        )
    assert data["layers"][-1]["linear_r2"]["full"] > 0
    assert any("layer(s) 0, 1:" in w for w in data["warnings"])
    assert "layer(s) 0, 1:" in " ".join(result.output.split())
    assert not [w for w in recwarn if "log-scaled" in str(w.message)]


def test_no_more_tokens_than_the_hidden_size_warns_that_fits_are_trivial(tmp_path):
    from transformers import LlamaForCausalLM

    from steer_cli.models import load_model

    tiny, tokenizer = load_model("tiny-llama", dtype="float32", device="cpu")
    config = copy.deepcopy(tiny.config)
    config.hidden_size, config.intermediate_size, config.num_hidden_layers = 512, 256, 2
    torch.manual_seed(0)
    wide = LlamaForCausalLM(config)
    base_dir = _save(wide, tokenizer, tmp_path / "base")
    ft_dir = _save(_perturbed(wide), tokenizer, tmp_path / "ft")
    args = ["oracle", base_dir, ft_dir, "--samples", "2", "--max-new-tokens", "2"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "o" / "oracle.json").read_text())
    assert data["tokens"] <= data["hidden_size"] == 512
    (warning,) = data["warnings"]
    assert f"{data['tokens']} tokens <= hidden size 512" in warning and "--samples" in warning
    assert "by construction" in " ".join(result.output.split())
    assert all(e["expressivity"]["relative_error"] < 1e-3 for e in data["layers"])  # ~0


def test_oracle_refuses_runs_trained_on_another_base(trained_runs, tmp_path):
    """--runs must have been trained on the oracle's base: same shapes, other weights is an
    error before any analysis runs (--force accepts it)."""
    from steer_cli.models import load_model

    model, tokenizer = load_model("tiny-llama", dtype="float32", device="cpu", seed=1)
    _save(model, tokenizer, tmp_path / "other")
    args = ["oracle", str(tmp_path / "other"), str(trained_runs / "sft"), "--samples", "2"]
    result = runner.invoke(
        app, [*args, "--runs", str(trained_runs / "joint"), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and "with other weights than the oracle's base" in result.output
    assert not (tmp_path / "o").exists()
