"""llama.cpp's control-vector semantics, ported line for line from its source (the llama.cpp
vendored by llama-cpp-python 0.3.36), for the tests: what llama.cpp reads from a control-vector
GGUF, and where it adds it.

- ``read_control_vector``: ``common_control_vector_load_one`` (common/common.cpp): every tensor
  must be named ``direction.N`` with ``N >= 1`` (``direction.0`` or an unparsable name rejects
  the file), F32, 1-D, one length ``n_embd``; the result is one flat buffer in which layer ``N``'s
  direction sits at ``[(N - 1) * n_embd, N * n_embd)`` ("layer 1 at [0]"), summed where a layer
  repeats.
- ``apply_as_llama_cpp``: ``llama_adapter_cvec::apply``/``apply_to`` (src/llama-adapter.cpp)
  and ``build_cvec(cur, il)`` at the end of each layer ``il`` of the model graph
  (src/models/llama.cpp): layer ``il`` (0-based, ``il >= 1``; there is no tensor for layer 0)
  gets the buffer's ``[(il - 1) * n_embd, il * n_embd)`` added to its output, on every token,
  for ``il`` in ``[layer_start, layer_end]``, which common sets to ``[1, n_layer]`` by default.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch


def read_control_vector(path: str | Path) -> tuple[int, np.ndarray]:
    """``(n_embd, data)`` as llama.cpp's loader builds them (strength 1)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    n_embd = -1
    data = np.zeros(0, dtype=np.float32)
    for tensor in reader.tensors:
        prefix, _, index = tensor.name.partition(".")
        if prefix != "direction" or not index.isdigit():
            raise ValueError(f"invalid/unparsable direction tensor layer index: {tensor.name}")
        layer = int(index)
        if layer == 0:
            raise ValueError("invalid (zero) direction tensor layer index")
        if tensor.tensor_type.name != "F32":
            raise ValueError("invalid (non-F32) direction tensor type")
        if len(tensor.shape) != 1:
            raise ValueError("invalid (non-1D) direction tensor shape")
        if n_embd == -1:
            n_embd = int(tensor.n_elements)
        elif tensor.n_elements != n_embd:
            raise ValueError("direction tensor does not match previous dimensions")
        if data.size < n_embd * layer:
            data = np.concatenate([data, np.zeros(n_embd * layer - data.size, np.float32)])
        data[n_embd * (layer - 1) : n_embd * layer] += np.asarray(tensor.data, np.float32)
    return n_embd, data


@contextlib.contextmanager
def apply_as_llama_cpp(model, control_vector: tuple[int, np.ndarray]):
    """Add the control vector to a transformers model's layer outputs as llama.cpp does."""
    from steer_cli.engine.sites import find_decoder_layers

    n_embd, data = control_vector
    layers = find_decoder_layers(model)
    layer_start, layer_end = 1, len(layers)  # common's defaults
    handles = []
    for il in range(1, len(layers)):  # llama.cpp allocates no tensor for layer 0
        off = n_embd * (il - 1)
        if off + n_embd > data.size or not layer_start <= il <= layer_end:
            continue
        direction = torch.from_numpy(data[off : off + n_embd].copy())

        def hook(module, args, output, direction=direction):
            hidden = output[0] if isinstance(output, tuple) else output
            hidden = hidden + direction.to(hidden.dtype)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        handles.append(layers[il].register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
