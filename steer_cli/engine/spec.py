"""What to steer: the site, the adapter's shape, the layers and the tokens (one frozen record)."""

from __future__ import annotations

from dataclasses import dataclass, field

from steer_cli.engine.adapters import AdapterShape
from steer_cli.engine.names import SITES, check_positions


@dataclass(frozen=True)
class InterventionSpec:
    """Where (site, layers), how (shape) and on which tokens (positions) to steer."""

    site: str = "block_output"
    shape: AdapterShape = field(default_factory=AdapterShape)
    layers: str | tuple[int, ...] = "all"
    positions: str = "all"

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise ValueError(f"unknown site {self.site!r}; choose from {', '.join(SITES)}")
        if self.shape.head_wise and self.site != "attn_heads":
            raise ValueError(
                f"{self.shape.parameterization} edits attention heads: use site attn_heads, "
                f"not {self.site}"
            )
        try:
            check_positions(self.positions)
        except ValueError as err:
            raise ValueError(f"positions {self.positions!r}: {err}") from None
