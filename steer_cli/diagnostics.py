"""Weight/activation diagnostics of a joint run (SPEC 9; the paper's Fig. 3, 5 and 6).

Written to ``run/diagnostics.json`` at the end of ``steer train`` for joint kinds, on a fixed,
seeded sample of training examples (prompt and answer, teacher-forced, as in training). Per layer:

- ``shift_cosine``: per token, the cosine between the adapter's shift (delta h at its site) and
  LoRA's shift of the MLP output (with minus without LoRA, same input); mean |cos|, mean and
  quantiles (Fig. 5: naive joint is aligned, joint-orth near 0). The projection does not force
  this to 0: LoRA on gate/up_proj moves the MLP output inside col(W_down), not col(B);
- ``writer_cosine``: the same against what LoRA's writers add through B (the o_proj and
  down_proj LoRA outputs; Gemma: before its sandwich norms): what the output projection makes
  orthogonal (0 for joint-orth);
- ``adapter_shift_norm`` / ``lora_shift_norm``: the mean norms of those two shifts;
- ``subspace_overlap``: mean squared cosine of the principal angles between the top-k left
  singular vectors of the adapter's ``W_up`` and LoRA's ``B`` (``down_proj``, ``o_proj``),
  k = min of the ranks, with ``chance`` = k/d for random subspaces (Fig. 3);
- ``W_up_in_lora_span``: ``||Q^T W_up||_F / ||W_up||_F`` for Q spanning col([B_o, B_down]);
- ``norms``: Frobenius and spectral norms of ``W_up``, ``W_down`` (Fig. 6: the projection does
  not simply zero the adapter).
"""

from __future__ import annotations

import random

import torch

SAMPLE = 32  # examples
BATCH = 8


def joint_diagnostics(parts, rows: list[dict], *, pad_id: int, n: int = SAMPLE, seed: int = 0):
    """The diagnostics of a joint ``parts`` (both parts on) on ``n`` seeded rows of ``rows``."""
    from steer_cli.data.encode import collate_right_padded
    from steer_cli.engine.joint_diagnostics import cosine_summary, matrix_stats, shift_cosines
    from steer_cli.engine.names import RESIDUAL_SITES

    model, interventions = parts.model, parts.interventions
    site = interventions.spec.site
    if site not in RESIDUAL_SITES:  # its shift lives before o_proj or the MLP
        return {"skipped": f"no residual-stream shift to compare at site {site}", "layers": []}
    picked = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    sample = [rows[i] for i in picked]
    device = next(model.parameters()).device
    per_layer: dict[int, dict[str, list[torch.Tensor]]] = {}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(sample), BATCH):
            batch = collate_right_padded(sample[start : start + BATCH], pad_id)
            with parts.batch_context(batch):
                shifts = shift_cosines(
                    model,
                    interventions,
                    batch["input_ids"].to(device),
                    batch["attention_mask"].to(device),
                )
            for i, values in shifts.items():
                for key, tensor in values.items():
                    per_layer.setdefault(i, {}).setdefault(key, []).append(tensor)
    finally:
        model.train(was_training)
    layers = []
    for i in interventions.layer_ids:
        values = {k: torch.cat(v) for k, v in per_layer[i].items()}
        layers.append(
            {
                "layer": i,
                "shift_cosine": cosine_summary(values["cos"]),
                **(
                    {"writer_cosine": cosine_summary(values["writer_cos"])}
                    if "writer_cos" in values
                    else {}
                ),
                "adapter_shift_norm": float(values["adapter_norm"].mean()),
                "lora_shift_norm": float(values["lora_norm"].mean()),
                **matrix_stats(interventions, model, i),
            }
        )
    return {
        "sample": {"examples": len(sample), "seed": seed, "rows": picked},
        "site": interventions.spec.site,
        "orth": parts.summary().get("orth"),
        "layers": layers,
        "mean": _means(layers),
    }


def _means(layers: list[dict]) -> dict:
    def mean(get) -> float | None:
        values = [v for v in (get(layer) for layer in layers) if v is not None]
        return sum(values) / len(values) if values else None

    def overlap(writer: str):
        return mean(lambda x: x.get("subspace_overlap", {}).get(writer))

    return {
        "shift_cosine_mean_abs": mean(lambda x: x["shift_cosine"].get("mean_abs")),
        "writer_cosine_mean_abs": mean(lambda x: x.get("writer_cosine", {}).get("mean_abs")),
        "subspace_overlap_down_proj": overlap("down_proj"),
        "subspace_overlap_o_proj": overlap("o_proj"),
        "W_up_in_lora_span": mean(lambda x: x.get("W_up_in_lora_span")),
        "W_up_fro": mean(lambda x: x.get("norms", {}).get("W_up_fro")),
    }
