"""The per-layer analyses, streamed: each decoder layer's tensors are reduced to numbers (and
fitted maps) as the co-run passes it, never kept (see :mod:`steer_cli.oracle.analysis`).

The sample's prompts are cut into two halves (:func:`folds`). The linear maps ``h -> delta`` are
fitted on each half and scored on the other (``held_out_error``; the KL of the linearized oracle
steers each half with the other half's maps), and every per-layer number that a verdict reads is
also given for each half alone (``halves``), so that a reader can see whether two independent
halves of the sample agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from steer_cli.oracle import linalg
from steer_cli.oracle.inputs import Model, Sample
from steer_cli.oracle.stream import LayerTensors, co_run


def folds(prompts: int) -> list[tuple[int, int]]:
    """The two halves of the sample, as ``[start, stop)`` ranges of prompts (the first has the
    odd one out). The sample's prompts are the task's test split in its own (random) order."""
    middle = (prompts + 1) // 2
    return [(0, middle), (middle, prompts)]


def fit_labels(rank: int, ranks: tuple[int, ...] = ()) -> list[tuple[str, int | None]]:
    """The linear maps fitted per half: full rank, ``rank`` and the extra ``ranks``, as
    ``(label, rank)`` with labels ``full`` and ``rank_R``."""
    return [("full", None)] + [(f"rank_{r}", r) for r in sorted({rank, *ranks})]


@dataclass
class ShareStats:
    """Running means of one layer's three MLP shares (:mod:`.linalg`) over micro-batches."""

    of_block_output: float = 0.0
    output_tokens: int = 0
    of_writes: float = 0.0
    writes_tokens: int = 0
    of_update: float = 0.0
    update_tokens: int = 0
    update_above_one: int = 0

    def add(
        self, attn: torch.Tensor, mlp: torch.Tensor, block_in: torch.Tensor, block_out: torch.Tensor
    ) -> None:
        output = linalg.mlp_share_of_output(mlp, block_out)
        writes = linalg.mlp_share_of_writes(mlp, attn)
        update = linalg.mlp_share_of_update(mlp, block_in, block_out)
        self.of_block_output += float(output.sum())
        self.output_tokens += output.numel()
        self.of_writes += float(writes.sum())
        self.writes_tokens += writes.numel()
        self.of_update += float(update.sum())
        self.update_tokens += update.numel()
        self.update_above_one += int((update > 1).sum())

    def as_dict(self) -> dict:
        """``of_block_output``: mean ``||m|| / ||O||`` (the paper's words for its Fig. 2);
        ``of_writes``: mean ``||m|| / (||a|| + ||m||)``; ``of_update``: mean
        ``||m|| / ||O - I||``; ``update_above_1``: the share of tokens where the latter exceeds 1
        (attention and MLP writes partly cancelling)."""
        return {
            "of_block_output": self.of_block_output / max(1, self.output_tokens),
            "of_writes": self.of_writes / max(1, self.writes_tokens),
            "of_update": self.of_update / max(1, self.update_tokens),
            "update_above_1": self.update_above_one / max(1, self.update_tokens),
        }


Maps = dict[str, list[dict[int, linalg.LinearMap]]]  # label -> per half: layer -> map


def analyse_layers(
    base: Model, ft: Model, sample: Sample, *, rank: int, ranks: tuple[int, ...] = ()
) -> tuple[list, Maps]:
    """The per-layer analyses on the whole sample in one oracle-steered co-run, streaming: the
    hook sees one layer at a time and keeps only numbers and the fitted maps. The maps (one per
    label of :func:`fit_labels`) are fitted per half of the sample: ``maps[label][f]`` on half
    ``f``'s tokens, to steer the other half's.

    Layer 0's pair ``(h, delta)`` starts from each model's own embeddings: ``h`` is the base
    layer 0 on the base embeddings, so ``delta_0`` also carries what the fine-tune changed in
    the embeddings (for an ``sft`` run, which trains them: a post-block adapter at layer 0 must
    add that too). From layer 1 on, both read the fine-tuned stream.
    """
    keep = sample.attention_mask.bool()
    halves = []
    for start, stop in folds(len(sample)):
        half = torch.zeros_like(keep)
        half[start:stop] = keep[start:stop]
        halves.append(half)
    labels = fit_labels(rank, ranks)
    layers: list[dict] = []
    maps: Maps = {label: [{} for _ in halves] for label, _ in labels}

    def on_layer(t: LayerTensors) -> None:
        h_all, delta_all = t.base_out, t.ft_out - t.base_out
        h, delta = h_all[keep], delta_all[keep]
        full, low = linalg.fit_linear(h, delta, ranks=(None, rank))
        for f, half in enumerate(halves):
            fits = linalg.fit_linear(
                h_all[half], delta_all[half], ranks=tuple(r for _, r in labels)
            )
            for (label, _), fitted in zip(labels, fits, strict=True):
                maps[label][f][t.index] = fitted
        ft_share = ShareStats()
        ft_share.add(t.ft_attn[keep], t.ft_mlp[keep], t.ft_in[keep], t.ft_out[keep])
        expressivity, post_mlp_r2 = _expressivity(t, keep, delta_all, rank)
        layers.append(
            {
                "layer": t.index,
                "mlp_share": {"ft": ft_share.as_dict()},
                "oracle_norm": float(delta.norm(dim=-1).mean()),
                "oracle_relative_norm": float(
                    (delta.norm(dim=-1) / t.ft_out[keep].norm(dim=-1).clamp(min=1e-12)).mean()
                ),
                "spectrum": linalg.spectrum(delta).as_dict(),
                "covariance": {
                    "delta": linalg.spectrum(delta, centred=True).as_dict(),
                    "hidden": linalg.spectrum(h, centred=True).as_dict(),
                },
                "linear_r2": {"full": full.r2, f"rank_{rank}": low.r2},
                "held_out_error": {
                    label: _held_out(maps[label], t.index, halves, h_all, delta_all)
                    for label, _ in labels
                },
                "post_mlp_r2": post_mlp_r2,
                "expressivity": expressivity.as_dict(),
                "halves": [_half(t, half, h_all, delta_all, rank) for half in halves],
            }
        )

    with co_run(base.model, ft.model, oracle="block_output", on_layer=on_layer) as forward:
        forward(sample.input_ids, sample.attention_mask, logits=False)
    return layers, maps


def _expressivity(
    t: LayerTensors, rows: torch.Tensor, delta_all: torch.Tensor, rank: int
) -> tuple[linalg.Expressivity, float | None]:
    """Theorem 3.1 on the tokens ``rows``: the best rank-``rank`` post-MLP steer toward the
    oracle, fitted there (``GLU(Y) A_p ~ delta``), against a linear post-block steer."""
    glu = t.base_mlp[rows]
    (post_mlp,) = linalg.fit_linear(glu, delta_all[rows], ranks=(rank,), bias=False)
    steer = glu.double() @ post_mlp.weight.double()
    return linalg.expressivity(t.base_out[rows], steer), post_mlp.r2


def _held_out(
    fitted: list[dict[int, linalg.LinearMap]],
    layer: int,
    halves: list[torch.Tensor],
    h_all: torch.Tensor,
    delta_all: torch.Tensor,
) -> float | None:
    """The relative error of each half's map on the other half's tokens, pooled:
    ``sqrt(sum ||delta - map(h)||^2 / sum ||delta||^2)``; ``None`` where the oracle is 0."""
    miss = energy = 0.0
    for f in range(len(halves)):
        other = halves[1 - f]
        m, e = fitted[f][layer].residual(h_all[other], delta_all[other])
        miss, energy = miss + m, energy + e
    return math.sqrt(miss / energy) if energy > 0 else None


def _half(
    t: LayerTensors, rows: torch.Tensor, h_all: torch.Tensor, delta_all: torch.Tensor, rank: int
) -> dict:
    """A half's own numbers: the MLP shares, the covariance effective ranks of the oracle and
    of the hidden states, and Theorem 3.1's relative error (each computed on that half alone)."""
    share = ShareStats()
    share.add(t.ft_attn[rows], t.ft_mlp[rows], t.ft_in[rows], t.ft_out[rows])
    h, delta = h_all[rows], delta_all[rows]
    expressivity, _ = _expressivity(t, rows, delta_all, rank)
    return {
        "tokens": int(rows.sum()),
        "mlp_share": share.as_dict(),
        "covariance_effective_rank": {
            "delta": linalg.spectrum(delta, centred=True).effective_rank,
            "hidden": linalg.spectrum(h, centred=True).effective_rank,
        },
        "relative_error": expressivity.relative_error,
    }


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
