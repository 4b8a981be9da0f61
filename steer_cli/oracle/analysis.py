"""``steer oracle`` end to end: a base model against a fine-tuned one, on N prompts of a task.

The sample (:mod:`.inputs`): N test prompts of the task, each followed by the fine-tuned model's
greedy continuation, teacher-forced for every model so that all KL curves score the same tokens.
KL (:mod:`.kl`) is ``KL(FT || model)`` of the next-token distributions, in nats; the curves
index the generated tokens (index k: the distribution that predicts continuation token k, EOS
included).

**Which oracle.** Steering overwrites the base model's residual stream layer after layer, so the
oracle vector at layer ``l`` is ``delta_l = h_FT,l - Block_base,l(h_FT,l-1)``: what an adapter at
``block_output`` must add given what it sees when every layer before it is already steered (the
blog's "sequential" oracle). The spectra, the linear fits and Theorem 3.1 all use these pairs
``(h, delta)`` with ``h = Block_base,l(h_FT,l-1)``. At layer 0 there is no steered layer before:
``h`` is the base layer on the *base* embeddings and the fine-tuned layer reads the fine-tuned
ones, so ``delta_0`` includes the embedding change (an ``sft`` run trains the embeddings).

**The sanity check and the head.** The paper takes the fine-tuned model to differ from the base
in its decoder blocks. Our ``sft`` method trains every weight, including the embeddings, the
final norm and ``lm_head`` (tied to the embeddings in SmolLM2): no hidden-state edit of the base
model reaches the final norm and the head. So the check scores the steered base model with the
fine-tuned model's final norm and ``lm_head`` (``FT head``); there the ``block_output`` oracle
must reproduce the fine-tuned model exactly (KL ~ 0, the streaming machinery's proof). With the
base head the same oracle measures what the non-block parameters alone change: the floor under
any steering of the base model (which is what the linearized oracle and trained runs are; their
curves use the base head). The output lists the non-block parameters that differ. The
``mlp_output`` and ``attn_output`` oracles replace only their branch's write (FT head too): what
they miss is the skip path and the other branch. A fine-tuned model equal to its base is an
error: every oracle vector would be 0.

**MLP share** (Fig. 2), per layer, for each model on its own residual stream, two ways
(:mod:`.layers`): ``of_writes``, the mean of ``||m|| / (||a|| + ||m||)`` over tokens (attention
writes ``a``, the MLP ``m``), a share in [0, 1] and the one comparable with the paper's 40-70%;
and ``of_update``, the mean of ``||m|| / ||O - I||``, which exceeds 1 wherever the two writes
partly cancel (``update_above_1`` counts those tokens); and ``of_block_output``, the mean of
``||m|| / ||O||``, the paper's own words for its Fig. 2 ("average MLP output norm with respect
to the layer's block output"). **Low rank**: the second-moment spectrum of ``delta`` per layer
and its effective rank (see :func:`linalg.spectrum`), and the covariance's (centred), beside the
covariance of the hidden states ``h`` the adapter reads. **Linearized oracle**: per layer, the
least-squares map ``h -> delta`` (with intercept; full rank, rank r and the ``ERROR_RANKS``),
fitted on one half of the prompts (:func:`layers.folds`) and used to steer the other half at
every layer, and the other way round (held out: the KL scores no token a map was fitted on);
``held_out_error`` is each layer's relative error of those maps on the other half's tokens, and
``error_control`` sets the worst layer's error beside the KL each rank reaches (the blog's
"Error Control": a small enough error at each layer keeps the model close). ``linear_r2`` is
the in-sample fit on every token. **Theorem 3.1**: ``A_p`` is the best rank-r post-MLP linear
steer toward the oracle (``GLU(Y) A_p ~ delta``); how well a linear post-block steer of
``O = Y + GLU(Y)`` can match it (:func:`linalg.expressivity`). With no more tokens than the
hidden size both are exact by construction (R2 = 1, relative error 0): the run warns, and says
how many prompts would give numbers that mean something. Each layer's ``halves`` repeat the
shares, effective ranks and Theorem 3.1's error on each half alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from steer_cli.errors import SteerError
from steer_cli.oracle.inputs import (
    DEFAULT_TASK,
    Model,
    Sample,
    build_sample,
    check_runs,
    load_fine_tuned,
    non_block_changes,
    task_and_data,
)
from steer_cli.oracle.kl import KLStats, ft_logprobs, kl_per_token, run_logits
from steer_cli.oracle.layers import analyse_layers, base_mlp_share, fit_labels, folds
from steer_cli.oracle.stream import SITES, co_run

__all__ = [
    "DEFAULT_TASK",
    "RESULT_FILE",
    "SANITY_TOLERANCE",
    "KLStats",
    "Model",
    "Sample",
    "analyse_layers",
    "build_sample",
    "kl_per_token",
    "run_oracle",
]

SANITY_TOLERANCE = 1e-5  # nats per token; float32 rounding is orders of magnitude below
RESULT_FILE = "oracle.json"
TOKENS_PER_DIMENSION = 4  # what --samples to suggest when the sample is too small to fit
ERROR_RANKS = (1, 4, 16, 64)  # besides --rank and full rank: the error-control sweep's ranks

Progress = Callable[[str], None]


def _warn_on_stderr(message: str) -> None:
    from steer_cli.report import err_console

    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, markup=True)


def run_oracle(
    base_name: str,
    ft_spec: str,
    *,
    task_name: str | None = None,
    samples: int = 32,
    max_new_tokens: int | None = None,
    rank: int = 8,
    runs: Sequence[str | Path] = (),
    batch_size: int = 8,
    progress: Progress = lambda message: None,
    warn: Progress = _warn_on_stderr,
    force: bool = False,
) -> dict:
    """Every analysis of the module docstring, as one JSON-ready dict. ``warn`` hears, as they
    are found, what makes numbers trivial (they are also kept under ``warnings``). Each of
    ``runs`` must have been trained on ``base_name`` (``force``: same shapes suffice)."""
    if rank < 1 or batch_size < 1:
        raise SteerError("--rank and the batch size must be at least 1")
    if samples < 2:
        raise SteerError(
            f"--samples {samples}: the oracle needs at least 2 prompts",
            "its linear maps are fitted on one half of the prompts and scored on the other",
        )
    check_runs(runs)
    base, ft, params = _load_pair(base_name, ft_spec, progress)
    from steer_cli.fingerprint import check

    for path in runs:  # before any analysis: a run on another base compares nothing
        check(Path(path), base.model, force=force, what=f"the oracle's base {base.label}")
    task, data = task_and_data(task_name, ft, samples)
    progress(f"{task.name}: the fine-tuned model's greedy continuations of {samples} prompts")
    sample = build_sample(ft, task, data, samples=samples, max_new_tokens=max_new_tokens)
    if len(sample) < 2:
        raise SteerError(
            f"task {task.name} has {len(sample)} test example(s); the oracle needs 2",
            "raise data.test_size",
        )
    warnings = []
    hidden = int(base.model.get_input_embeddings().weight.shape[1])
    small = _small_sample_warning(sample, hidden)
    if small:
        warn(small)
        warnings.append(small)
    progress(f"per-layer analyses on {int(sample.attention_mask.sum())} tokens (streaming)")
    ranks = tuple(r for r in ERROR_RANKS if r < hidden)
    layers, maps = analyse_layers(base, ft, sample, rank=rank, ranks=ranks)
    for entry, share in zip(layers, base_mlp_share(base, sample, batch_size), strict=True):
        entry["mlp_share"]["base"] = share
    unchanged = [e["layer"] for e in layers if e["oracle_norm"] == 0]
    if unchanged:
        message = (
            f"layer(s) {', '.join(map(str, unchanged))}: the fine-tuned layer computes what the "
            "base layer does (oracle 0): no fit, no Theorem 3.1 error to report there"
        )
        warn(message)
        warnings.append(message)

    kl = _steered_kl(base, ft, sample, maps, batch_size=batch_size, progress=progress)
    del maps
    run_results = [_run_kl(ft, path, sample, batch_size, progress, force) for path in runs]
    worst_sanity = kl["oracle block_output"]["max_token"]
    return {
        "base": base_name,
        "fine_tuned": ft.label,
        "task": task.name,
        "samples": len(sample),
        "tokens": int(sample.attention_mask.sum()),
        "generated_tokens": sum(sample.generated_lengths),
        "rank": rank,
        "hidden_size": hidden,
        "parameters": params,
        "warnings": warnings,
        "sanity": {
            "ok": worst_sanity <= SANITY_TOLERANCE,
            "tolerance": SANITY_TOLERANCE,
            "kl_mean": {name: kl[name]["mean_all_tokens"] for name in kl if "oracle" in name},
            "kl_max": {name: kl[name]["max_token"] for name in kl if "oracle" in name},
        },
        "folds": folds(len(sample)),
        "layers": layers,
        "kl": kl,
        "error_control": _error_control(layers, kl, rank, ranks),
        "runs": run_results,
        "examples": [
            {"prompt": p, "continuation": c}
            for p, c in zip(sample.prompts[:3], sample.continuations[:3], strict=True)
        ],
    }


def _load_pair(base_name: str, ft_spec: str, progress: Progress) -> tuple[Model, Model, dict]:
    """The base and fine-tuned models, and which of their parameters differ (all equal: an
    error, since every oracle vector would be 0)."""
    from steer_cli import models

    progress(f"loading the fine-tuned model {ft_spec}")
    ft = load_fine_tuned(ft_spec)
    progress(f"loading the base model {base_name}")
    base_model, base_tok = models.load_model(base_name, dtype="float32", device="cpu")
    base_model.requires_grad_(False)
    base = Model(base_model, base_tok, base_name)
    params = non_block_changes(base.model, ft.model)
    if not params["changed"] and not params["blocks_changed"]:
        raise SteerError(
            f"the fine-tuned model {ft.label} is identical to the base model {base_name}: "
            "every parameter is equal, so every oracle vector is 0",
            "FT_RUN is a model fine-tuned from BASE, e.g. an sft run directory",
        )
    return base, ft, params


def _small_sample_warning(sample: Sample, hidden: int) -> str | None:
    """With tokens <= hidden size the block outputs span every token: Theorem 3.1's error is 0
    and the full-rank fit exact whatever the models do. Says so, and what ``--samples`` would do."""
    tokens = int(sample.attention_mask.sum())
    if tokens > hidden:
        return None
    per_prompt = tokens / max(1, len(sample))
    enough = math.ceil(TOKENS_PER_DIMENSION * hidden / max(per_prompt, 1.0))
    return (
        f"{tokens} tokens <= hidden size {hidden}: Theorem 3.1's relative error is 0 and the "
        "full-rank linear fit's R2 is 1 by construction (the block outputs span every token); "
        f"use --samples {enough} or more (about {TOKENS_PER_DIMENSION} tokens per dimension)"
    )


def _linear_name(label: str) -> str:
    """``full`` -> ``linear full``, ``rank_8`` -> ``linear rank 8`` (the KL entries' names)."""
    return "linear " + label.replace("_", " ")


def _steered_kl(
    base: Model,
    ft: Model,
    sample: Sample,
    maps: dict,
    *,
    batch_size: int,
    progress: Progress,
) -> dict[str, dict]:
    """KL to the fine-tuned model of the base model, each oracle, and the linearized oracles
    (each half of the prompts steered by the maps fitted on the other half)."""
    modes: dict[str, dict] = {
        "base": {},
        **{f"oracle {site}": {"oracle": site, "ft_head": True} for site in SITES},
        "oracle block_output (base head)": {"oracle": "block_output"},
    }
    held_out = {_linear_name(label): fitted for label, fitted in maps.items()}
    progress(f"KL to the fine-tuned model: {len(modes) + len(held_out)} steered variants")
    stats = {name: KLStats() for name in [*modes, *held_out]}
    for half, batch in fold_batches(sample, batch_size):
        ref = ft_logprobs(ft, batch)
        runs = [(name, kwargs) for name, kwargs in modes.items()]
        runs += [(name, {"maps": fitted[1 - half]}) for name, fitted in held_out.items()]
        for name, kwargs in runs:
            needs_ft = "oracle" in kwargs
            with co_run(base.model, ft.model if needs_ft else None, **kwargs) as forward:
                logits = forward(batch.input_ids, batch.attention_mask)
            stats[name].add(kl_per_token(ref, logits), batch)
    return {name: s.as_dict() for name, s in stats.items()}


def fold_batches(sample: Sample, batch_size: int):
    """``(half, batch)`` in the sample's order, no batch straddling the two halves."""
    for half, (start, stop) in enumerate(folds(len(sample))):
        for first in range(start, stop, batch_size):
            yield half, sample.rows(first, min(first + batch_size, stop))


def _error_control(layers: list[dict], kl: dict, rank: int, ranks: tuple[int, ...]) -> list[dict]:
    """Per fitted rank: the worst (and mean) layer's held-out relative error, and the KL per
    generated token of the model those maps steer at every layer. Layers whose oracle is 0
    have no error to count."""
    out = []
    for label, _ in fit_labels(rank, ranks):
        errors = [e["held_out_error"][label] for e in layers]
        errors = [e for e in errors if e is not None]
        out.append(
            {
                "maps": label,
                "max_layer_error": max(errors) if errors else None,
                "mean_layer_error": sum(errors) / len(errors) if errors else None,
                "kl": kl[_linear_name(label)]["mean_generated"],
            }
        )
    return out


def _run_kl(
    ft: Model, path: str | Path, sample: Sample, batch_size: int, progress, force: bool
) -> dict:
    """A trained run's KL to the fine-tuned model, with its joint diagnostics if it has them."""
    from steer_cli.runs import load_run, read_config

    progress(f"KL of run {path}")
    model, _, _ = load_run(path, device="cpu", dtype="float32", force=force)
    stats = KLStats()
    for _, batch in fold_batches(sample, batch_size):  # per_prompt in the linear maps' order
        stats.add(kl_per_token(ft_logprobs(ft, batch), run_logits(model, batch)), batch)
    recipe = read_config(path)
    return {
        "path": str(path),
        "method": recipe.method,
        "model": recipe.model.name,
        "kl": stats.as_dict(),
        "diagnostics": _diagnostics(Path(path)),
    }


def _diagnostics(run_dir: Path) -> dict | None:
    from steer_cli import rundir

    path = run_dir / rundir.DIAGNOSTICS
    return json.loads(path.read_text()) if path.is_file() else None
