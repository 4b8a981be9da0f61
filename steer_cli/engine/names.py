"""The intervention grid's vocabulary, torch-free so recipes validate against it quickly."""

import re

SITES: tuple[str, ...] = ("block_output", "mlp_output", "mlp_input", "attn_output", "attn_heads")
# Sites whose edit is added to the residual stream as it is (what Joint-Orth projects and the
# joint diagnostics compare with LoRA's writes); mlp_input and attn_heads reach it only through a
# module (the MLP, o_proj).
RESIDUAL_SITES: tuple[str, ...] = ("block_output", "mlp_output", "attn_output")
PARAMETERIZATIONS: tuple[str, ...] = ("vector", "lowrank", "loreft", "lofit", "jola")
ACTIVATIONS: tuple[str, ...] = ("none", "silu", "relu", "gelu", "tanh")
# How JoLA's expected-L0 penalty is scaled (see ``Interventions.penalty``).
JOLA_PENALTIES: tuple[str, ...] = ("jola", "sum")
POSITIONS: tuple[str, ...] = ("all", "prompt", "generated", "last_prompt")
FIRST_LAST = re.compile(r"^f(\d+)\+l(\d+)$")  # pyreft's "first k and last k prompt tokens"


def check_positions(text: str) -> str:
    """``text`` if it names a position mode, else ValueError saying what is valid."""
    if text in POSITIONS or FIRST_LAST.match(text):
        return text
    raise ValueError(f"must be one of {', '.join(POSITIONS)} or f<k>+l<k> (e.g. f7+l7)")
