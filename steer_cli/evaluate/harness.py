"""lm-evaluation-harness in-process: any loaded model, steered or not, behind lm-eval's ``HFLM``.

``SteeredLM`` is ``HFLM`` wrapping the in-memory model (base, peft, or base with adapters hooked
on) and sets the prompt span of the attached adapters around each of HFLM's model calls, with
the meaning ``engine/positions.py`` gives it and ``evaluate.scoring`` / ``evaluate.generation``
use:

- log-likelihood (right-padded ``(context + continuation)[:-1]``, no attention mask): the span
  is ``[0, prompt)`` of each row, after lm-eval's left truncation, where ``prompt`` counts the
  tokens of the request's context *string* as training encodes a prompt (:meth:`SteeredLM.
  prompt_length`). That is not always lm-eval's ``context_enc``: ``_encode_pair`` moves the
  context's trailing whitespace into the continuation, so a chat context ending in
  ``assistant\n`` (or a prompt ending in ``\n``) would otherwise be steered one token early.
  ``_model_call`` only sees the padded batch, so requests that need a span are handed to HFLM in
  groups of one input length (no padding), and an input occurring with two prompt lengths goes
  to separate groups: each row's span is then read off its tokens, unambiguously.
- generation (left-padded, KV cache): the span is each row's non-pad columns.

Adapters on ``all`` positions need no span, and HFLM runs unchanged.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import torch
from lm_eval.models.huggingface import HFLM

from steer_cli.data.sources import hub_offline_by_env, hub_offline_mode, hub_reachable
from steer_cli.engine.attach import attached_to, prompt_span
from steer_cli.errors import SteerError

TASKS_DIR = Path(__file__).with_name("tasks")
BUNDLED: dict[str, str] = {
    "steer_boolq": "boolq",
    "steer_winogrande": "winogrande",
    "steer_arc_challenge": "arc-challenge",
    "steer_gsm8k": "gsm8k",
    "steer_aqua": "aqua",
    "steer_listops": "listops",
}
"""Bundled task name -> the steer task it evaluates with the paper's prompt and parser."""
BUNDLED_GROUP = "steer_paper"  # the tag naming all six

# HFLM's notices for a model object (and custom datasets) that say nothing to a steer user.
_QUIET = (
    "`pretrained` model kwarg is not of type",
    "Passed an already-initialized model",
    "Custom kwargs can be passed",
    "For example --metadata",
)


class SteeredLM(HFLM):
    """``HFLM`` over an in-memory model whose attached adapters see the right prompt span."""

    def __init__(self, model, tokenizer, *, batch_size: int, max_length: int | None = None):
        # simple_evaluate ignores batch size and max length for a model object: set them here.
        super().__init__(
            pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length
        )
        self.needs_span = any(i.spec.positions != "all" for i in attached_to(model))
        self._context_lengths: dict[tuple[int, ...], int] | None = None

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        if not self.needs_span:
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        results: list = [None] * len(requests)
        prompts = [self.prompt_length(request) for request in requests]
        for lengths, indices in span_groups(requests, self.max_length, prompts):
            self._context_lengths = lengths
            try:
                out = super()._loglikelihood_tokens(
                    [requests[i] for i in indices], disable_tqdm=True, override_bs=override_bs
                )
            finally:
                self._context_lengths = None
            for i, answer in zip(indices, out, strict=True):
                results[i] = answer
        return results

    def prompt_length(self, request: tuple) -> int:
        """How many leading tokens of a request's model input are its prompt, as training counts
        them: the context string's own tokens (``data.encode`` encodes the prompt on its own).

        lm-eval's ``context_enc`` lacks the context's trailing whitespace (``_encode_pair`` moves
        it into the continuation, for word-boundary tokenization); the tokens it became still
        belong to the prompt. They are the continuation's first tokens that equal the context's
        own encoding at the same columns. A token that straddles the boundary (``" yes"`` from a
        context ending in a space) is no prompt token. Rolling windows and empty contexts
        (no context string) keep lm-eval's split.
        """
        key, context, continuation = request
        text = key[0] if isinstance(key, tuple) and key and isinstance(key[0], str) else ""
        n = len(context)
        if not text or text == text.rstrip():
            return n
        own = self.tok_encode(text)
        full = list(context) + list(continuation)
        while n < min(len(own), len(full)) and full[n] == own[n]:
            n += 1
        return n

    def _model_call(self, inps: torch.Tensor, attn_mask=None, labels=None) -> torch.Tensor:
        if not self.needs_span:
            with torch.nn.utils.parametrize.cached():
                return super()._model_call(inps, attn_mask, labels)
        if self._context_lengths is None:
            raise SteerError(
                "this adapter steers some positions only and lm-eval called the model outside "
                "log-likelihood scoring (batch size 'auto'?)",
                "pass a whole number as --batch-size",
            )
        try:
            ends = [self._context_lengths[tuple(row)] for row in inps.tolist()]
        except KeyError:
            raise RuntimeError(
                "lm-eval fed a row steer did not prepare a prompt span for"
            ) from None
        with (
            prompt_span(self.model, [0] * len(ends), ends),
            torch.nn.utils.parametrize.cached(),
        ):
            return super()._model_call(inps, attn_mask, labels)

    def _model_generate(self, context: torch.Tensor, max_length: int, stop, **generation_kwargs):
        mask = generation_kwargs.get("attention_mask")
        width = context.shape[1]
        pads = (width - mask.sum(dim=1)).tolist() if mask is not None else [0] * len(context)
        with (
            prompt_span(self.model, pads, [width] * len(context)),
            torch.nn.utils.parametrize.cached(),
        ):
            return super()._model_generate(context, max_length, stop, **generation_kwargs)


def span_groups(
    requests: Sequence[tuple], max_length: int, prompts: Sequence[int] | None = None
) -> Iterator[tuple[dict[tuple[int, ...], int], list[int]]]:
    """Requests ``(key, context_ids, continuation_ids)`` in groups HFLM can batch without
    padding: ``({model input: prompt length in it}, request indices)`` per group.

    The model input is lm-eval's ``(context + continuation)[-(max_length + 1):][:-1]``; the
    prompt length is what is left of each request's prompt (``prompts``, default: its context)
    after that left truncation.
    """
    groups: dict[int, list[tuple[dict[tuple[int, ...], int], list[int]]]] = {}
    for index, (_, context, continuation) in enumerate(requests):
        full = list(context) + list(continuation)
        inp = tuple(full[-(max_length + 1) :][:-1])
        dropped = max(0, len(full) - (max_length + 1))
        prompt = len(context) if prompts is None else prompts[index]
        ctx = max(0, prompt - dropped)
        for lengths, indices in groups.setdefault(len(inp), []):
            if lengths.get(inp, ctx) == ctx:
                lengths[inp] = ctx
                indices.append(index)
                break
        else:
            groups[len(inp)].append(({inp: ctx}, [index]))
    for same_length in groups.values():
        yield from same_length


# ---------------------------------------------------------------------------------- tasks


@lru_cache(maxsize=4)
def task_manager(
    with_defaults: bool, data: tuple[tuple[str, str], ...] = (), include: tuple[str, ...] = ()
):
    """lm-eval's task index over our bundled YAMLs and ``include`` folders (and lm-eval's own
    tasks if asked: indexing them takes seconds). ``data``: ``(steer task, path)`` pairs."""
    from lm_eval.tasks import TaskManager

    from steer_cli.evaluate.tasks.hooks import DATA_KEY

    return TaskManager(
        include_path=[str(TASKS_DIR), *include],
        include_defaults=with_defaults,
        metadata={DATA_KEY: dict(data)} if data else None,
    )


def resolve_tasks(
    names: Sequence[str],
    data: dict[str, str] | None = None,
    include: Sequence[str | Path] = (),
):
    """The ``TaskManager`` that knows ``names``; a :class:`SteerError` suggesting close names
    for any it does not know. ``data``: bundled task (``steer_boolq`` or ``boolq``) -> path;
    ``include``: folders of the user's own task YAMLs."""
    if not names:
        raise SteerError("no tasks given", "e.g. --tasks steer_listops,arc_easy")
    folders = tuple(str(Path(p).expanduser().resolve()) for p in include)
    for folder in folders:
        if not Path(folder).is_dir():
            raise SteerError(f"--include-path {folder} is not a folder of task YAMLs")
    pairs = tuple(sorted(_data_pairs(data or {}).items()))
    small = task_manager(False, pairs, folders)
    if set(names) <= set(small.all_tasks):
        return small
    manager = task_manager(True, pairs, folders)
    known = set(manager.all_tasks)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
            prefixed = f"steer_{name.replace('-', '_')}"
            if prefixed in BUNDLED and prefixed not in close:
                close.insert(0, prefixed)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise SteerError(
                f"unknown lm-eval task {name!r}",
                f"{hint}bundled: {', '.join(BUNDLED)}; `lm-eval ls tasks` lists lm-eval's own",
            )
    return manager


def _data_pairs(data: dict[str, str]) -> dict[str, str]:
    """``{steer_boolq | boolq: path}`` -> ``{boolq: path}`` (the key the hooks read)."""
    from steer_cli.data.tasks import get_task

    out = {}
    for name, path in data.items():
        task = BUNDLED.get(name, name)
        try:
            out[get_task(task).name] = str(Path(path).expanduser())
        except SteerError:
            raise SteerError(
                f"--data {name}={path}: {name!r} is not a bundled task",
                f"local data is for the bundled tasks: {', '.join(BUNDLED)}",
            ) from None
    return out


# ----------------------------------------------------------------------------- evaluation


@contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    """Drop the notices in ``_QUIET`` (a filter acts only on its own logger: set it on each)."""

    class Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            message = str(record.getMessage())
            return not any(notice in message for notice in _QUIET)

    drop = Drop()
    names = [n for n in list(logging.root.manager.loggerDict) if n.startswith("lm_eval")]
    loggers = [logging.getLogger(n) for n in names]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


def evaluate(
    model,
    tokenizer,
    tasks: Sequence[str],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    limit: int | None = None,
    num_fewshot: int | None = None,
    apply_chat_template: bool = False,
    seed: int | None = None,
    log_samples: bool = False,
    data: dict[str, str] | None = None,
    include: Sequence[str | Path] = (),
) -> dict:
    """lm-eval's results dict for ``tasks`` on ``model`` as it is (adapters attached and all).

    With ``log_samples`` the dict holds ``samples`` (per task, per doc) as lm-eval's does.
    """
    from lm_eval import simple_evaluate

    manager = resolve_tasks(tasks, data, include)
    seeds = {}
    if seed is not None:
        seeds = dict(
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    # lm-eval's own tasks load hub datasets: with the hub unreachable, read the datasets cache
    # only, failing at once rather than after huggingface_hub's retries (~40 s).
    own = [t for t in tasks if t not in BUNDLED and t != BUNDLED_GROUP]
    offline = bool(own) and (hub_offline_by_env() or not hub_reachable())
    with _quiet_lm_eval(), hub_offline_mode(offline):
        lm = SteeredLM(model, tokenizer, batch_size=batch_size, max_length=max_length)
        try:
            results = simple_evaluate(
                model=lm,
                tasks=list(tasks),
                num_fewshot=num_fewshot,
                limit=limit,
                log_samples=log_samples,
                apply_chat_template=apply_chat_template,
                task_manager=manager,
                **seeds,
            )
        except SteerError as err:
            raise _with_data_hint(err, tasks, data or {}) from None
        except OSError as exc:  # datasets' ConnectionError included
            if not offline:
                raise
            raise SteerError(
                f"lm-eval task(s) {', '.join(own)}: the hub is unreachable and their dataset is "
                f"not in the datasets cache ({str(exc).strip().splitlines()[0][:120]})",
                "run once where the hub is reachable (the cache is reused offline), or use the "
                f"bundled tasks with local files: --tasks {next(iter(BUNDLED))} --data PATH",
            ) from None
    if results is None:  # pragma: no cover - only for non-zero ranks of a distributed run
        raise SteerError("lm-eval returned no results")
    return results


def _with_data_hint(err: SteerError, tasks: Sequence[str], data: dict[str, str]) -> SteerError:
    """A bundled task's data error, with the hint in ``steer eval``'s terms: the data layer
    speaks of recipe keys (``data.path=DIR``), which ``steer eval`` takes as ``--data``."""
    from steer_cli.data.tasks import get_task

    wanted = list(BUNDLED) if BUNDLED_GROUP in tasks else [t for t in tasks if t in BUNDLED]
    for name in wanted:
        spec = get_task(BUNDLED[name])
        if name in data or spec.name in data or not spec.source:
            continue
        if err.message.startswith(f"cannot load the dataset {spec.source}"):
            fields = f" ({', '.join(spec.fields)})" if spec.fields else ""
            return SteerError(
                err.message,
                f"download it where there is a network, or pass local files in the hub's "
                f"schema{fields}: --data {name}=DIR (one file per split: train.jsonl, "
                f"validation.jsonl, ...)",
            )
    return err


def metrics(results: dict) -> dict[str, dict[str, float]]:
    """Per task (and group): its metrics keyed ``metric,filter`` as lm-eval keys them."""
    return {
        task: {k: v for k, v in values.items() if "," in k and isinstance(v, int | float)}
        for task, values in results.get("results", {}).items()
    }


def sample_counts(results: dict) -> dict[str, int]:
    """Per task: how many docs were evaluated."""
    return {task: int(n["effective"]) for task, n in results.get("n-samples", {}).items()}
