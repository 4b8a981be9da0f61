"""The intervention grid's vocabulary, torch-free so recipes validate against it quickly."""

SITES: tuple[str, ...] = ("block_output",)
PARAMETERIZATIONS: tuple[str, ...] = ("vector", "lowrank")
ACTIVATIONS: tuple[str, ...] = ("none", "silu", "relu", "gelu", "tanh")
POSITIONS: tuple[str, ...] = ("all",)
