"""The model side of ``steer serve``: what one batch of requests becomes on the model.

Prompts are encoded as ``steer generate`` encodes them (``data.encode.prompt_token_ids``: raw
text for ``/v1/completions``, the run's chat template for ``/v1/chat/completions``) and
generated as evaluation generates: left-padded, each row's prompt span (its non-pad columns)
given to the attached adapters, greedy whatever the checkpoint's generation_config says
(``evaluate.generation.greedy_kwargs``), any of the run's EOS ids ending an answer. A joint run
answers in its recipe's ``eval.joint_mode``. Rows of one batch differ in budget and stop
sequences: a stopping criterion ends each row on its own (transformers pads the rows that
finished), so a row's tokens do not depend on the rows beside it.

Prompt log-probabilities (``echo`` with ``logprobs``) come from one right-padded forward pass,
as lm-eval's HFLM scores: the logits at column ``i`` give token ``i + 1``. The whole prompt is the
prompt span there (a server cannot know where a client's context ends and its continuation
starts), which matters only for adapters on positions other than ``all``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from steer_cli.engine.attach import prompt_span
from steer_cli.evaluate.generation import greedy_kwargs, left_pad
from steer_cli.generate import Sampling


@dataclass(frozen=True)
class Decoding:
    """What requests must share to run in one batch: the parts on or off, and the sampling."""

    steer: bool
    sampling: Sampling

    @classmethod
    def of(cls, steer: bool, temperature: float, top_p: float, seed: int | None) -> Decoding:
        sampling = Sampling(temperature=temperature, top_p=top_p, seed=seed or 0)
        if sampling.greedy:  # greedy ignores top_p and seed: one batch for every greedy request
            sampling = Sampling()
        return cls(steer, sampling)


@dataclass
class Job:
    """One prompt of one request, and (once run) its answer."""

    ids: list[int]
    max_new: int
    stops: list[str] = field(default_factory=list)
    logprobs: int | None = None  # how many alternatives per token (None: no log-probabilities)
    echo: bool = False  # with logprobs: the prompt tokens' log-probabilities too
    emit: Callable[[str], None] | None = None  # receives the text as it is generated
    # the answer
    tokens: list[int] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[int, float]] = field(default_factory=list)
    prompt_logprobs: list[float | None] = field(default_factory=list)
    prompt_top: list[dict[int, float] | None] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"


class Engine:
    """A loaded target (``evaluate.command.Target``: a run or a model) answering batches."""

    def __init__(self, target):
        self.target = target
        self.tokenizer = target.tokenizer
        self._sft_base = None  # an SFT run's base model, loaded on the first base request
        self._stack = contextlib.ExitStack()

    @contextlib.contextmanager
    def model(self, steer: bool) -> Iterator[torch.nn.Module]:
        """The model with the run's parts on (as the run evaluated: ``evaluating()``) or off."""
        target = self.target
        if steer or target.recipe is None:  # a model is its own base
            with target.evaluating():
                yield target.model
            return
        if getattr(target.parts, "kind", None) == "sft":  # loaded once, kept
            if self._sft_base is None:
                self._sft_base = self._stack.enter_context(target.base())
            yield self._sft_base.model
            return
        with target.base() as base:
            yield base.model

    def close(self) -> None:
        self._stack.close()

    def run(self, jobs: list[Job], decoding: Decoding) -> None:
        """Answer ``jobs`` (one batch, all decoded by ``decoding``) in place."""
        from steer_cli.loop_rng import seeded

        with self.model(decoding.steer) as model:
            echo = [job for job in jobs if job.echo and job.logprobs is not None]
            if echo:
                score_prompts(model, echo)
            generating = [job for job in jobs if job.max_new > 0]
            device = next(model.parameters()).device
            if generating:
                with seeded(decoding.sampling.seed, device):
                    generate(model, self.tokenizer, generating, decoding.sampling.overrides())
            for job in jobs:
                if job.max_new == 0:
                    job.finish_reason = "length"


@torch.no_grad()
def score_prompts(model, jobs: list[Job]) -> None:
    """Each prompt token's log-probability given the tokens before it (the first has none)."""
    lengths = [len(job.ids) for job in jobs]
    width = max(lengths)
    ids = torch.zeros((len(jobs), width), dtype=torch.long)
    for row, job in enumerate(jobs):
        ids[row, : len(job.ids)] = torch.tensor(job.ids)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with prompt_span(model, [0] * len(jobs), lengths), torch.nn.utils.parametrize.cached():
            logits = model(input_ids=ids.to(device)).logits
    finally:
        model.train(was_training)
    for row, job in enumerate(jobs):
        n = lengths[row]
        logp = torch.log_softmax(logits[row, : n - 1].float(), dim=-1)
        chosen = ids[row, 1:n].to(logp.device)
        job.prompt_logprobs = [None, *_floats(logp.gather(-1, chosen[:, None])[:, 0])]
        job.prompt_top = [None, *_tops(logp, chosen, job.logprobs)]


def _tops(logp: torch.Tensor, chosen: torch.Tensor, k: int) -> list[dict[int, float]]:
    """Per row of ``logp``: the ``k`` most likely tokens and the chosen one, with their
    log-probabilities (as OpenAI's legacy ``top_logprobs``, which holds the sampled token too)."""
    out = []
    values, indices = logp.topk(max(k, 1), dim=-1)
    for row in range(logp.shape[0]):
        top = dict(zip(indices[row, :k].tolist(), _floats(values[row, :k]), strict=True))
        token = int(chosen[row])
        top.setdefault(token, *_floats(logp[row, token : token + 1]))
        out.append(top)
    return out


# JSON has no -inf: a token of probability 0 (in float) gets this, as other servers do.
MIN_LOGPROB = -9999.0


def _floats(values: torch.Tensor) -> list[float]:
    return [max(v, MIN_LOGPROB) for v in values.tolist()]


class RowStops(StoppingCriteria):
    """Ends each row on its own: at an EOS id, at one of its stop sequences, or at its own
    budget; and hands a streaming row its new text as it comes (holding back what could be the
    start of a stop sequence)."""

    def __init__(self, tokenizer, width: int, jobs: list[Job], eos: set[int]):
        self.tokenizer, self.width, self.jobs, self.eos = tokenizer, width, jobs, eos
        self.ended: list[int | None] = [None] * len(jobs)  # tokens kept when the row ended
        self.reason: list[str] = ["length"] * len(jobs)
        self.sent = [0] * len(jobs)  # characters streamed so far

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, self.width :].tolist()
        for row, job in enumerate(self.jobs):
            if self.ended[row] is not None:
                continue
            tokens = new[row]
            text = None
            if tokens[-1] in self.eos:
                self.ended[row], self.reason[row] = len(tokens), "stop"
            elif job.stops:
                text = self.text(tokens)
                if cut_at_stop(text, job.stops)[1]:
                    self.ended[row], self.reason[row] = len(tokens), "stop"
            if self.ended[row] is None and len(tokens) >= job.max_new:
                self.ended[row] = len(tokens)
            if self.ended[row] is None and job.emit is not None:
                self.stream(row, text if text is not None else self.text(tokens))
        done = [ended is not None for ended in self.ended]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def stream(self, row: int, text: str) -> None:
        """Send what is certain: not a partial character, nor what a stop sequence may start."""
        hold = max((len(s) - 1 for s in self.jobs[row].stops), default=0)
        safe = len(text) - hold
        while safe > 0 and text[safe - 1] == "\ufffd":
            safe -= 1
        if safe > self.sent[row]:
            self.jobs[row].emit(text[self.sent[row] : safe])
            self.sent[row] = safe

    def finish(self, row: int, text: str) -> None:
        job = self.jobs[row]
        if job.emit is not None and len(text) > self.sent[row]:
            job.emit(text[self.sent[row] :])
            self.sent[row] = len(text)


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop sequence in it (as lm-eval cuts at ``until``)."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(found)], True) if found else (text, False)


@torch.no_grad()
def generate(model, tokenizer, jobs: list[Job], overrides: dict) -> None:
    """One left-padded batched generation for ``jobs`` (evaluation's ``generate_ids``, with a
    budget and stop sequences per row)."""
    ids, mask = left_pad([job.ids for job in jobs], tokenizer.pad_token_id)
    width = ids.shape[1]
    budget = max(job.max_new for job in jobs)
    settings = {**greedy_kwargs(model, tokenizer, budget), **overrides}
    stops = RowStops(tokenizer, width, jobs, set(settings["eos_token_id"]))
    settings["stopping_criteria"] = StoppingCriteriaList([stops])
    want_logprobs = any(job.logprobs is not None for job in jobs)
    if want_logprobs:
        settings.update(output_logits=True, return_dict_in_generate=True)
    device = next(model.parameters()).device
    starts = [width - len(job.ids) for job in jobs]
    was_training = model.training
    model.eval()
    try:
        with prompt_span(model, starts, [width] * len(jobs)), torch.nn.utils.parametrize.cached():
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), **settings
            )
    finally:
        model.train(was_training)
    sequences = out.sequences if want_logprobs else out
    for row, job in enumerate(jobs):
        generated = sequences[row, width:].tolist()
        kept = stops.ended[row] if stops.ended[row] is not None else len(generated)
        job.tokens = generated[:kept]
        text, stopped = cut_at_stop(stops.text(job.tokens), job.stops)
        job.text = text
        job.finish_reason = "stop" if stopped or stops.reason[row] == "stop" else "length"
        if job.logprobs is not None:
            logp = torch.stack([step[row] for step in out.logits[:kept]]).float().log_softmax(-1)
            chosen = torch.tensor(job.tokens, device=logp.device)
            job.token_logprobs = _floats(logp.gather(-1, chosen[:, None])[:, 0])
            job.top_logprobs = _tops(logp, chosen, job.logprobs)
        stops.finish(row, text)
