"""pyreft's LoReFT training step, timed on the batches ``bench/run.py`` times steer's on.

Runs in its own process with pyreft and pyvene on ``PYTHONPATH`` (``bench/peers.py`` installs them
with ``--no-deps`` into a throw-away folder: pyreft 0.1.0 pins transformers 4.45.1 and a notebook
stack, none of which its training step needs). Prints one JSON object.

The interventions match steer's ``reft-original``: LoReFT of rank ``--rank`` at every layer's
``block_output``, one per layer shared by the first and last 7 prompt tokens (pyreft's
``share_weights=True``), in fp32. The batches are steer's (``measure.batch_order``: the same rows,
order and padding), and a step is timed from collating the batch to the optimizer's update, as
steer's is. Two variants, each on those batches:

- ``trainer``: what pyreft's own trainer does per batch: pyvene's forward with the intervention
  locations, the causal-LM loss the model computes from ``labels`` (logits over every position
  and the whole vocabulary), backward, AdamW;
- ``steer_loss``: the same forward, with steer's loss (``loop.supervised_loss``: logits only
  from the shortest prompt's last token on), backward, AdamW: like for like with steer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FIRST = LAST = 7  # f7+l7, steer's reft-original


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, required=True, help="steer's data order seed")
    args = parser.parse_args()

    from importlib.metadata import version

    import pyreft

    from bench.measure import batch_order
    from bench.workload import quickstart_rows  # the rows bench/run.py times steer on
    from steer_cli.data.encode import IGNORE_INDEX, collate_right_padded
    from steer_cli.loop import supervised_loss
    from steer_cli.models import load_model

    torch.manual_seed(0)
    model, tokenizer = load_model(args.model, dtype=args.dtype, device="cpu")
    model.requires_grad_(False)
    layers = model.config.num_hidden_layers
    config = pyreft.ReftConfig(
        representations=[
            {
                "layer": layer,
                "component": "block_output",
                "low_rank_dimension": args.rank,
                "intervention": pyreft.LoreftIntervention(
                    embed_dim=model.config.hidden_size,
                    low_rank_dimension=args.rank,
                    dtype=torch.float32,
                ),
            }
            for layer in range(layers)
        ]
    )
    reft = pyreft.get_reft_model(model, config, set_device=False)
    reft.train()
    params = [p for p in reft.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    rows, _ = quickstart_rows(tokenizer, args.batch * (args.warmup + args.steps), chat=True)
    batches = batch_order(rows, args.batch, args.warmup + args.steps, args.seed)

    def trainer(batch, where):
        _, out = reft(
            {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]},
            unit_locations={"sources->base": (None, [where] * layers)},
            labels=batch["labels"],
        )
        return out.loss

    def steer_loss(batch, where):
        def forward(**inputs):
            return reft(inputs, unit_locations={"sources->base": (None, [where] * layers)})[1]

        inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
        loss = supervised_loss(forward, model, inputs, batch["labels"], batch["prompt_lengths"])
        return loss / int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())

    variants = {}
    for name, step_loss in (("trainer", trainer), ("steer_loss", steer_loss)):
        times = []
        for i, chunk in enumerate(batches):
            start = time.perf_counter()
            batch = collate_right_padded(chunk, tokenizer.pad_token_id)
            where = [
                list(range(FIRST)) + list(range(int(n) - LAST, int(n)))
                for n in batch["prompt_lengths"]
            ]
            step_loss(batch, where).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
        variants[name] = {"step_seconds": statistics.median(times), "seconds": times}
    print(
        json.dumps(
            {
                "variants": variants,
                "params": sum(p.numel() for p in params),
                "pyreft": version("pyreft"),
                "pyvene": version("pyvene"),
            }
        )
    )


if __name__ == "__main__":
    main()
