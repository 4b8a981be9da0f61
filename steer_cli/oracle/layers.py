"""The per-layer analyses, streamed: each decoder layer's tensors are reduced to numbers (and
fitted maps) as the co-run passes it, never kept (see :mod:`steer_cli.oracle.analysis`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from steer_cli.oracle import linalg
from steer_cli.oracle.inputs import Model, Sample
from steer_cli.oracle.stream import LayerTensors, co_run


@dataclass
class ShareStats:
    """Running means of one layer's two MLP shares (:mod:`.linalg`) over micro-batches."""

    of_writes: float = 0.0
    writes_tokens: int = 0
    of_update: float = 0.0
    update_tokens: int = 0
    update_above_one: int = 0

    def add(
        self, attn: torch.Tensor, mlp: torch.Tensor, block_in: torch.Tensor, block_out: torch.Tensor
    ) -> None:
        writes = linalg.mlp_share_of_writes(mlp, attn)
        update = linalg.mlp_share_of_update(mlp, block_in, block_out)
        self.of_writes += float(writes.sum())
        self.writes_tokens += writes.numel()
        self.of_update += float(update.sum())
        self.update_tokens += update.numel()
        self.update_above_one += int((update > 1).sum())

    def as_dict(self) -> dict:
        """``of_writes``: mean ``||m|| / (||a|| + ||m||)`` (comparable with the paper's 40-70%);
        ``of_update``: mean ``||m|| / ||O - I||``; ``update_above_1``: the share of tokens where
        the latter exceeds 1 (attention and MLP writes partly cancelling)."""
        return {
            "of_writes": self.of_writes / max(1, self.writes_tokens),
            "of_update": self.of_update / max(1, self.update_tokens),
            "update_above_1": self.update_above_one / max(1, self.update_tokens),
        }


def analyse_layers(base: Model, ft: Model, sample: Sample, *, rank: int) -> tuple[list, dict]:
    """The per-layer analyses on the whole sample in one oracle-steered co-run, streaming: the
    hook sees one layer at a time and keeps only numbers and the fitted maps.

    Layer 0's pair ``(h, delta)`` starts from each model's own embeddings: ``h`` is the base
    layer 0 on the base embeddings, so ``delta_0`` also carries what the fine-tune changed in
    the embeddings (for an ``sft`` run, which trains them: a post-block adapter at layer 0 must
    add that too). From layer 1 on, both read the fine-tuned stream.
    """
    keep = sample.attention_mask.bool()
    layers: list[dict] = []
    maps: dict[str, dict[int, linalg.LinearMap]] = {"full": {}, "rank": {}}

    def on_layer(t: LayerTensors) -> None:
        h, delta = t.base_out[keep], (t.ft_out - t.base_out)[keep]
        full, low = linalg.fit_linear(h, delta, ranks=(None, rank))
        maps["full"][t.index], maps["rank"][t.index] = full, low
        glu = t.base_mlp[keep]
        (post_mlp,) = linalg.fit_linear(glu, delta, ranks=(rank,), bias=False)
        steer = glu.double() @ post_mlp.weight.double()
        ft_share = ShareStats()
        ft_share.add(t.ft_attn[keep], t.ft_mlp[keep], t.ft_in[keep], t.ft_out[keep])
        layers.append(
            {
                "layer": t.index,
                "mlp_share": {"ft": ft_share.as_dict()},
                "oracle_norm": float(delta.norm(dim=-1).mean()),
                "oracle_relative_norm": float(
                    (delta.norm(dim=-1) / t.ft_out[keep].norm(dim=-1).clamp(min=1e-12)).mean()
                ),
                "spectrum": linalg.spectrum(delta).as_dict(),
                "linear_r2": {"full": full.r2, f"rank_{rank}": low.r2},
                "post_mlp_r2": post_mlp.r2,
                "expressivity": linalg.expressivity(h, steer).as_dict(),
            }
        )

    with co_run(base.model, ft.model, oracle="block_output", on_layer=on_layer) as forward:
        forward(sample.input_ids, sample.attention_mask, logits=False)
    return layers, maps


def base_mlp_share(base: Model, sample: Sample, batch_size: int) -> list[dict]:
    """Per layer, the base model's MLP shares on its own stream (micro-batched running means)."""
    stats: dict[int, ShareStats] = {}
    keep: torch.Tensor | None = None

    def on_layer(t: LayerTensors) -> None:
        share = stats.setdefault(t.index, ShareStats())
        share.add(t.base_attn[keep], t.base_mlp[keep], t.base_in[keep], t.base_out[keep])

    with co_run(base.model, on_layer=on_layer) as forward:
        for start in range(0, len(sample), batch_size):
            batch = sample.rows(start, start + batch_size)
            keep = batch.attention_mask.bool()
            forward(batch.input_ids, batch.attention_mask, logits=False)
    return [stats[i].as_dict() for i in sorted(stats)]
