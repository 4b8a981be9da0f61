"""`make bench` runs end to end as a user runs it (a fresh process), on tiny models, and what it
prints follows from what it recorded: the floor ran on the methods' own batches, every ratio is
the quotient of the recorded medians, every target is judged from its value. No timing is
asserted (benchmarks are not tests); the saved-for-backward bytes are exact counts."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.measure import backward_stops_at, parameter_storages, saved  # noqa: E402
from bench.report import BEGIN, END, block  # noqa: E402
from bench.run import TARGETS, verdict  # noqa: E402

QUICK = ["--warmup", "1", "--steps", "2", "--decode-batches", "1", "2", "--new-tokens", "2",
         "--rounds", "2", "--no-pyreft"]  # fmt: skip


def _bench(tmp_path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "results.json"
    command = [sys.executable, str(ROOT / "bench" / "run.py"), *QUICK, *args, "--output", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text()), done.stdout


def _row(table: str, name: str) -> list[str]:
    (line,) = [x for x in table.splitlines() if x.startswith(f"| {name} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_bench_ratios_are_the_recorded_medians_on_the_floors_batches(tmp_path, dtype):
    results, table = _bench(tmp_path, "--model", "tiny-llama", "--dtype", dtype)
    floor, methods, ratios = results["floor"], results["methods"], results["ratios"]
    assert results["dtype"] == dtype and results["machine"]["torch"] == torch.__version__
    assert floor["stops_at_layer"] == 0  # post-block steers every layer
    assert set(methods) == {"postblock", "postblock-vector", "reft", "reft-original", "lora",
                            "joint-orth", "sft"}  # fmt: skip
    for name, m in methods.items():  # the same rows, order and padding as the floor's
        assert m["tokens"] == floor["tokens"] and m["same_batches_as_floor"], name
        assert m["padded_tokens"] == floor["padded_tokens"], name
        assert len(m["seconds"]) == 2 and m["step_seconds"] == statistics.median(m["seconds"])
        assert ratios[f"{name}_vs_floor"] == pytest.approx(
            m["step_seconds"] / statistics.median(floor["seconds"]), rel=1e-12
        )
        assert m["activation"]["bytes"] <= m["activation"]["reference_bytes"]
        estimate = m["activation"]["dry_run_estimate"]  # steer train --dry-run's, same shapes
        assert 0.8 <= estimate / m["activation"]["bytes"] <= 1.25, name
    post, lora = methods["postblock"], methods["lora"]
    assert ratios["lora_vs_postblock"] == pytest.approx(
        lora["step_seconds"] / post["step_seconds"], rel=1e-12
    )
    memory = post["activation"]["bytes"] / lora["activation"]["bytes"]
    assert ratios["postblock_vs_lora_activation_memory"] == pytest.approx(memory, rel=1e-12)
    assert (
        post["activation_checkpointed"]["bytes"] / post["activation"]["bytes"]
        == ratios["postblock_checkpointed_vs_plain_activation_memory"]
        < 0.5
    )
    for n in (1, 2):
        rounds = post[f"generation_b{n}_overhead_rounds"]
        assert len(rounds) == 2 and ratios[f"generation_b{n}_overhead"] == statistics.median(rounds)
    for name, value in ratios.items():  # the table prints what was computed, judged as such
        cells = _row(table, name)
        assert cells[1].split(" ")[0] == f"{value:.3f}"
        assert cells[2] == verdict(name, value, dtype)
    assert ("MISSED" in _row(table, "postblock_vs_floor")[2]) == (
        ratios["postblock_vs_floor"] > 1.05
    )
    assert results["pyreft"].startswith("not measured: --no-pyreft")


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_each_target_is_judged_on_its_side(name):
    op, limit, dtype = TARGETS[name]
    dtype = dtype or "float32"
    good, bad = (limit * 0.99, limit * 1.01) if op == "<=" else (limit * 1.01, limit * 0.99)
    assert verdict(name, good, dtype) == f"{op} {limit:.2f} (met)"
    assert verdict(name, bad, dtype) == f"{op} {limit:.2f} (MISSED)"
    assert verdict("not_a_target", bad, dtype) == ""


def test_bench_shape_builds_random_weights_of_fixed_length(tmp_path):
    results, _ = _bench(
        tmp_path, "--shape", "small", "--seq-len", "32", "--methods", "postblock", "lora",
        "--peak-tflops", "1",
    )  # fmt: skip
    assert results["floor"]["padded_tokens"] == [8 * 32] * 2
    assert set(results["methods"]) == {"postblock", "lora"}
    assert set(results["mfu"]) == {"floor", "postblock", "lora"}
    n = results["non_embedding_params"]
    floor = results["floor"]
    assert results["mfu"]["floor"] == pytest.approx(4 * n * 8 * 32 / (floor["step_seconds"] * 1e12))


def test_saved_counts_each_storage_once():
    x = torch.randn(64, 32, requires_grad=True)
    weight = torch.nn.Linear(32, 32, bias=False).requires_grad_(False)
    nbytes = 64 * 32 * 4

    def run():
        y = x * x  # saves x twice (as self and as other)
        z = y[:, :16].sin()  # saves a view of y, which holds y's whole storage
        (z.sum() + (y @ weight.weight).sum()).backward()  # saves the weight: excluded

    counted = saved(run, parameter_storages(weight))
    assert counted == {"bytes": 2 * nbytes, "reference_bytes": 2 * nbytes + nbytes // 2}


def test_saved_leaves_no_graph_behind():
    """An op that saves its own output (exp) must not keep it alive through the counting hook:
    the bench counts graphs it never runs backward on, one per method."""
    import gc
    import weakref

    outputs = []

    def run():
        y = torch.exp(torch.randn(256, 256, requires_grad=True))
        outputs.append(weakref.ref(y))

    assert saved(run, set())["bytes"] == 256 * 256 * 4
    gc.collect()
    assert outputs[0]() is None


def test_the_floor_builds_no_graph_below_its_layer():
    """Backward stops at the chosen layer's output: the higher the layer, the less is saved, and
    the layer itself runs without a graph (its output becomes a leaf after it)."""
    from steer_cli.models import load_model

    model, tokenizer = load_model("tiny-llama", dtype="float32", device="cpu", seed=0)
    model.requires_grad_(False)  # as the bench's model: frozen
    ids = tokenizer(["[MAX 1 2 [MIN 3 4 ] ]"] * 2, return_tensors="pt")["input_ids"]
    params = parameter_storages(model)

    def loss():
        return model(input_ids=ids).logits.float().logsumexp(-1).sum()

    def saved_from(layer):
        with backward_stops_at(model, layer):
            return saved(loss, params)["bytes"]

    counts = [saved_from(i) for i in range(model.config.num_hidden_layers)]
    assert all(a > b > 0 for a, b in zip(counts, counts[1:], strict=False))
    outputs = []  # registered first: sees layer 0's own output, before it becomes the leaf
    handle = model.model.layers[0].register_forward_hook(lambda m, a, o: outputs.append(o))
    try:
        with backward_stops_at(model, 0):
            loss().backward()
    finally:
        handle.remove()
    output = outputs[0][0] if isinstance(outputs[0], tuple) else outputs[0]
    assert output.grad_fn is None and not output.requires_grad


def test_performance_page_block_is_the_committed_results():
    page = (ROOT / "docs" / "performance.md").read_text()
    assert page.count(BEGIN) == 1 and page.count(END) == 1
    assert block() in page, "stale: run python bench/report.py --write"
    for name in ("results.json", "results-gpu.json", "results-gpu-8b.json"):
        measured = json.loads((ROOT / "bench" / name).read_text())
        assert measured["machine"]["date"] in page
    check = [sys.executable, "bench/report.py", "--check"]  # what a user runs
    done = subprocess.run(check, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
