"""``make test-interop``: a control vector from ``steer export --format llama-cpp`` run by
llama.cpp itself (llama-cpp-python, the ``interop`` extra), on the embedded SmolLM2-135M GGUF
that steer's default model is converted from.

Not part of ``make test`` (the file name does not match ``test_*.py``; pytest collects it only
when named): it builds llama.cpp and trains a run on the embedded model. Greedy continuations of
llama.cpp with the exported vector are compared with ``steer generate`` on the same run and
prompts (token ids from steer's own prompt encoding, so both see the same tokens). The GGUF is
Q4_1: steer runs its weights dequantized to fp32, llama.cpp runs the quantized kernels (with
8-bit activations), so a few continuations may part ways; the test prints the agreement and
requires it to be high, and requires that the vector is what moves llama.cpp towards steer's
steered answers (without the vector it agrees with steer's *base* answers instead).

``STEER_INTEROP_RUN=DIR`` uses an existing postblock-vector run (layers 1..N) instead of training
one; ``STEER_INTEROP_STEPS`` sets the training steps (default 40).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from llama_cpp_cvec import read_control_vector

llama_cpp = pytest.importorskip("llama_cpp", reason="needs the interop extra: make test-interop")

pytestmark = pytest.mark.slow
STEER = [sys.executable, "-m", "steer_cli"]
RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "methods" / "postblock-vector.yaml"
PROMPTS = 24
MAX_NEW_TOKENS = 24
MIN_AGREEMENT = 0.6  # share of prompts whose steered continuations are identical
MAX_KL_RATIO = 2.0  # steered KL / base KL (the quantisation's own)


def _steer(*args: str, timeout: int = 3600) -> str:
    done = subprocess.run(
        [*STEER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    if os.environ.get("STEER_INTEROP_RUN"):
        return Path(os.environ["STEER_INTEROP_RUN"])
    out = tmp_path_factory.mktemp("interop") / "vector-run"
    steps = os.environ.get("STEER_INTEROP_STEPS", "40")
    _steer(
        "train", str(RECIPE), "adapter.layers=1-29", f"train.max_steps={steps}",
        f"data.test_size={PROMPTS}", "data.validation_size=10", "eval.before=false",
        "-o", str(out),
    )  # fmt: skip
    return out


def _llama_cpp_model():
    from steer_cli.models.embedded import _SMOLLM2_GGUF, _smollm2_gguf_dir

    return llama_cpp.Llama(
        model_path=str(_smollm2_gguf_dir() / _SMOLLM2_GGUF),
        n_ctx=1024,
        logits_all=True,  # teacher-forced log-probabilities at every position
        n_threads=os.cpu_count() or 2,
        seed=0,
        verbose=False,
    )


def _set_control_vector(llm, control_vector) -> None:
    """What llama.cpp's common_init does with --control-vector: llama_set_adapter_cvec over
    layers [1, n_layer]; ``None`` clears it."""
    ctx = getattr(getattr(llm, "_ctx", None), "ctx", None)  # llama-cpp-python's context handle
    if ctx is None:
        raise RuntimeError(
            f"llama-cpp-python {llama_cpp.__version__} has no Llama._ctx.ctx; update this test"
        )
    n_layer = int(llm.metadata["llama.block_count"])
    if control_vector is None:
        err = llama_cpp.llama_set_adapter_cvec(ctx, None, 0, llm.n_embd(), -1, -1)
    else:
        n_embd, data = control_vector
        buffer = (llama_cpp.ctypes.c_float * data.size)(*data.tolist())
        err = llama_cpp.llama_set_adapter_cvec(ctx, buffer, data.size, n_embd, 1, n_layer)
    assert err == 0, f"llama_set_adapter_cvec failed ({err})"
    llm.reset()


def _greedy(llm, prompt_ids: list[int], stop: set[int]) -> list[int]:
    llm.reset()
    out: list[int] = []
    for token in llm.generate(prompt_ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        if token in stop or len(out) == MAX_NEW_TOKENS:
            break
        out.append(token)
    return out


def _llama_cpp_logprobs(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return _log_softmax(np.asarray(llm.scores[: len(ids)], dtype=np.float64))


def _steer_logprobs(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    return _log_softmax(logits.double().numpy())


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _compare(steer: list[np.ndarray], llama: list[np.ndarray]) -> tuple[float, float]:
    """Over every teacher-forced position: mean KL(steer || llama.cpp) of the next-token
    distributions, and how often their top-1 tokens agree."""
    kl, top1, n = 0.0, 0, 0
    for p, q in zip(steer, llama, strict=True):
        kl += float((np.exp(p) * (p - q)).sum())
        top1 += int((p.argmax(-1) == q.argmax(-1)).sum())
        n += p.shape[0]
    return kl / n, top1 / n


def _agreement(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def test_llama_cpp_runs_the_exported_control_vector_like_steer(run_dir, tmp_path):
    from steer_cli import generate as gen
    from steer_cli.evaluate.generation import eos_ids

    export = tmp_path / "cvec"
    _steer("export", str(run_dir), "--format", "llama-cpp", "-o", str(export))
    control_vector = read_control_vector(export / "control_vector.gguf")

    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    prompts = [row["prompt"] for row in rows][:PROMPTS]
    request = tmp_path / "prompts.jsonl"
    request.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    steer_rows = [
        json.loads(line)
        for line in _steer(
            "generate", str(run_dir), "--input", str(request), "--compare-base", "--json",
            "--max-new-tokens", str(MAX_NEW_TOKENS),
        ).splitlines()
    ]  # fmt: skip
    steered = [row["output"] for row in steer_rows]
    base = [row["base_output"] for row in steer_rows]

    # The same token ids steer generated from, and the same stop tokens.
    target, _, chat, _ = gen.plan(gen.GenerateRequest(str(run_dir), prompts=prompts))
    tokenizer = target.tokenizer
    ids = gen.encode(tokenizer, prompts, chat)
    stop = set(eos_ids(target.model, tokenizer))

    llm = _llama_cpp_model()

    def continuations() -> list[str]:
        return [tokenizer.decode(_greedy(llm, p, stop), skip_special_tokens=True) for p in ids]

    _set_control_vector(llm, control_vector)
    with_vector = continuations()
    # Teacher-forced: every prompt followed by its steered continuation, through both engines.
    sequences = [
        p + tokenizer.encode(c, add_special_tokens=False) for p, c in zip(ids, steered, strict=True)
    ]
    llama_steered = [_llama_cpp_logprobs(llm, seq) for seq in sequences]
    _set_control_vector(llm, None)
    without = continuations()
    llama_base = [_llama_cpp_logprobs(llm, seq) for seq in sequences]
    with target.evaluating():
        steer_steered = [_steer_logprobs(target.model, seq) for seq in sequences]
    with target.base() as base_target:
        steer_base = [_steer_logprobs(base_target.model, seq) for seq in sequences]
    kl_steered, top1_steered = _compare(steer_steered, llama_steered)
    kl_base, top1_base = _compare(steer_base, llama_base)
    kl_off, top1_off = _compare(steer_steered, llama_base)

    figures = {
        "prompts": len(prompts),
        "steered: llama.cpp+vector = steer generate": _agreement(with_vector, steered),
        "base: llama.cpp alone = steer generate --compare-base": _agreement(without, base),
        "llama.cpp alone = steer's steered": _agreement(without, steered),
        "the vector changed llama.cpp's output": 1 - _agreement(with_vector, without),
        "steer's adapter changed steer's output": 1 - _agreement(steered, base),
        "positions (teacher-forced)": sum(len(seq) for seq in sequences),
        "KL(steer steered || llama.cpp+vector)": kl_steered,
        "KL(steer base || llama.cpp alone)": kl_base,
        "KL(steer steered || llama.cpp alone)": kl_off,
        "top-1 agreement, steered / base / steered vs llama.cpp alone": (
            f"{top1_steered:.3f} / {top1_base:.3f} / {top1_off:.3f}"
        ),
    }
    print("\nllama.cpp interop (greedy continuations: share of prompts matching exactly;")
    print("teacher-forced steered continuations: next-token KL per position, top-1 agreement):")
    for name, value in figures.items():
        print(f"  {name}: {value:.4g}" if isinstance(value, float) else f"  {name}: {value}")
    for i in range(min(3, len(prompts))):
        print(f"  e.g. steer {steered[i]!r} | llama.cpp {with_vector[i]!r} | base {base[i]!r}")

    assert figures["steer's adapter changed steer's output"] > 0.25, "train longer: no effect"
    assert figures["the vector changed llama.cpp's output"] > 0.25
    assert figures["steered: llama.cpp+vector = steer generate"] >= MIN_AGREEMENT
    assert (
        figures["steered: llama.cpp+vector = steer generate"]
        > figures["llama.cpp alone = steer's steered"]
    )
    # The vector where steer puts it leaves only the quantisation's own difference (the base
    # model's, measured without a vector on both sides); a vector one layer off does not.
    assert kl_steered <= MAX_KL_RATIO * kl_base, (kl_steered, kl_base)
    assert kl_off > 10 * kl_steered
