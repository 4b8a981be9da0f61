"""``--format llama-cpp``: a GGUF control vector for llama.cpp (``--control-vector FILE``).

What llama.cpp does with one (llama.cpp's ``common_control_vector_load`` in common/common.cpp,
``llama_adapter_cvec`` in src/llama-adapter.cpp, ``build_cvec`` at the end of each layer of the
model graphs): the file's tensors ``direction.N`` (F32, 1-D, ``n_embd`` long) are added to the
output of decoder layer ``N`` (0-based, the index of ``model.layers`` in transformers), at every
position, after the residual adds. ``N`` must be at least 1: llama.cpp keeps no slot for layer 0
and rejects the whole file for a ``direction.0``. Metadata: ``general.architecture`` is
``controlvector``, ``controlvector.model_hint`` the model's architecture (informative only),
``controlvector.layer_count`` the number of direction tensors.

That is exactly steer's ``vector`` adapter at the ``block_output`` site with positions ``all``
(``h <- h + v`` after the layer), so such a run exports exactly, steer layer ``i`` as
``direction.i``, as long as layer 0's vector is zero. Anything else is refused with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

from steer_cli.errors import SteerError

FILE = "control_vector.gguf"
ARCH = "controlvector"
SITE, PARAMETERIZATION, POSITIONS = "block_output", "vector", "all"


def _refuse(run, why: str, hint: str | None = None) -> SteerError:
    return SteerError(
        f"cannot export {run.path} for llama.cpp: {why}",
        hint
        or "llama.cpp's control vectors carry one constant vector added after each layer on "
        "every token: a postblock-vector run (positions all) exports",
    )


def _vectors(run) -> dict[int, object]:
    """``{layer: vector}`` (fp32 tensors) of the run's adapter, after checking that it is what
    a control vector can carry."""
    from safetensors.torch import load_file

    from steer_cli import fingerprint
    from steer_cli.engine.attach import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    if run.kind != "adapter":
        what = {"lora": "a LoRA", "sft": "fine-tuned weights", "joint": "a LoRA and an adapter"}
        raise _refuse(run, f"a {run.recipe.method} run trains {what[run.kind]}, not a vector")
    config = json.loads((run.path / ADAPTER_CONFIG).read_text())
    found = (config["site"], config["parameterization"], config["positions"])
    problems = [
        f"{name} {value!r} (llama.cpp: {needed!r})"
        for name, value, needed in zip(
            ("site", "parameterization", "positions"),
            found,
            (SITE, PARAMETERIZATION, POSITIONS),
            strict=True,
        )
        if value != needed
    ]
    if problems:
        raise _refuse(run, f"its adapter has {', '.join(problems)}")
    tensors = load_file(str(run.path / ADAPTER_WEIGHTS))
    vectors = {int(i): tensors[f"adapters.{i}.vector"].float() for i in config["layers"]}
    if 0 in vectors and bool(vectors[0].abs().sum() > 0):
        last = (fingerprint.recorded(run.path) or {}).get("num_layers", 0) - 1
        raise _refuse(
            run,
            "it steers layer 0, and llama.cpp cannot add a vector after layer 0 (its direction.N "
            "goes after layer N >= 1)",
            "train every layer but the first to export for llama.cpp: adapter.layers="
            + (f"1-{last}" if last > 0 else "'1:'"),
        )
    kept = {layer: v for layer, v in vectors.items() if layer != 0}
    if not kept:
        raise _refuse(run, "its only steered layer is layer 0, whose vector is zero")
    return kept


def check(run) -> None:
    _vectors(run)


def _model_hint(run) -> str:
    """The base's architecture as llama.cpp names it (``LlamaForCausalLM`` -> ``llama``)."""
    from steer_cli import fingerprint

    base = fingerprint.recorded(run.path) or {}
    architecture = str(base.get("architecture") or "")
    return architecture.removesuffix("ForCausalLM").lower() or str(run.recipe.model.name)


def write(run, directory: Path) -> list[str]:
    import gguf

    vectors = _vectors(run)
    writer = gguf.GGUFWriter(str(directory / FILE), ARCH)
    writer.add_string(f"{ARCH}.model_hint", _model_hint(run))
    writer.add_int32(f"{ARCH}.layer_count", len(vectors))
    for layer in sorted(vectors):
        writer.add_tensor(f"direction.{layer}", vectors[layer].numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    layers = sorted(vectors)
    return [
        f"{FILE}: a control vector for layers {layers[0]}..{layers[-1]} of "
        f"{run.recipe.model.name} ({len(layers)} layers)",
        f"use: llama-cli -m BASE.gguf --control-vector {{output}}/{FILE} (BASE: the run's base "
        "model as GGUF)",
    ]
