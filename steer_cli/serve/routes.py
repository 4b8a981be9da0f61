"""The routes' work: check a request whole before it is queued (model id, prompt length, budget,
token ids), so a bad one costs nothing and gets a 4xx; then queue its prompts with the batching
worker and answer as OpenAI's JSON, or as server-sent events with ``"stream": true``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi.responses import StreamingResponse

from steer_cli.serve import errors, replies
from steer_cli.serve.batching import Batcher
from steer_cli.serve.engine import Decoding, Engine, Job
from steer_cli.serve.errors import ApiError
from steer_cli.serve.schemas import ChatRequest, CompletionRequest

BASE_ID = "base"  # the model id that answers with the run's trained parts off


@dataclass
class Settings:
    name: str  # the served model id (a run: its directory name)
    chat: bool  # whether the tokenizer has a chat template
    is_run: bool
    default_max_tokens: int  # as `steer generate`: the run's evaluation budget, 128 for a model
    max_new_tokens: int  # the most a request may ask for
    max_prompt_tokens: int
    context: int | None  # the model's context length, when its config says
    max_batch_size: int = 8
    window_s: float = 0.01
    api_key: str | None = None


class Served:
    """The routes' work: check, queue, answer."""

    def __init__(self, engine: Engine, settings: Settings, batcher: Batcher):
        self.engine, self.settings, self.batcher = engine, settings, batcher
        self.tokenizer = engine.tokenizer
        self.created = int(time.time())

    def model_ids(self) -> list[str]:
        return [self.settings.name, BASE_ID] if self.settings.is_run else [self.settings.name]

    def model_card(self, model_id: str) -> dict:
        return {"id": model_id, "object": "model", "created": self.created, "owned_by": "steer"}

    # ------------------------------------------------------------------------- checks

    def decoding(self, body) -> Decoding:
        model = body.model if body.model is not None else self.settings.name
        if model not in self.model_ids():
            raise ApiError(
                f"the model {model!r} does not exist; this server has "
                f"{', '.join(self.model_ids())}",
                status=404,
                param="model",
                code="model_not_found",
            )
        temperature = body.temperature if body.temperature is not None else 0.0
        top_p = body.top_p if body.top_p is not None else 1.0
        return Decoding.of(body.steer and model != BASE_ID, temperature, top_p, body.seed)

    def budget(self, asked: int | None, param: str) -> int:
        cap = self.settings.max_new_tokens
        if asked is None:
            return min(self.settings.default_max_tokens, cap)
        if asked > cap:
            raise ApiError(
                f"{param} is {asked}; this server generates at most {cap} tokens "
                "(steer serve --max-new-tokens)",
                param=param,
                code="max_tokens_exceeded",
            )
        return asked

    def fit(self, ids: list[int], max_new: int, asked: bool, param: str) -> int:
        """The prompt's budget once its length is checked: the asked budget must fit in the
        model's context with it; a default one shrinks to fit."""
        if not ids:
            raise ApiError("the prompt is empty (no tokens)", param=param)
        cap, context = self.settings.max_prompt_tokens, self.settings.context
        if len(ids) > cap:
            raise ApiError(
                f"the prompt is {len(ids)} tokens; this server takes at most {cap} "
                "(steer serve --max-prompt-tokens)",
                param=param,
                code="context_length_exceeded",
            )
        if context is not None and len(ids) + max_new > context:
            if not asked and len(ids) < context:
                return context - len(ids)
            raise ApiError(
                f"the prompt ({len(ids)} tokens) and max_tokens ({max_new}) exceed the model's "
                f"context of {context} tokens",
                param=param,
                code="context_length_exceeded",
            )
        return max_new

    def token_ids(self, prompt: str | list[int]) -> list[int]:
        from steer_cli.data.encode import prompt_token_ids

        if isinstance(prompt, str):
            return prompt_token_ids(self.tokenizer, prompt, False)
        vocab = len(self.tokenizer)
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise ApiError(
                f"token id {bad[0]} is outside the vocabulary (0 to {vocab - 1})", param="prompt"
            )
        return list(prompt)

    def chat_ids(self, body: ChatRequest) -> list[int]:
        if not self.settings.chat:
            raise ApiError(
                f"{self.settings.name} has no chat template; send the text to /v1/completions",
                param="messages",
            )
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        try:  # as data.encode.prompt_token_ids encodes a prompt under the chat template
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        except Exception as err:  # a template's own raise_exception(), e.g. on roles
            raise ApiError(
                f"the chat template refused the messages: {err}", param="messages"
            ) from None
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # ------------------------------------------------------------------------ answers

    async def completions(self, body: CompletionRequest):
        decoding = self.decoding(body)
        max_new = self.budget(body.max_tokens, "max_tokens")
        if body.stream and body.logprobs is not None:
            raise ApiError("logprobs are not streamed: drop stream or logprobs", param="logprobs")
        jobs, echoed = [], []
        for prompt in body.prompts():
            ids = self.token_ids(prompt)
            fitted = self.fit(ids, max_new, body.max_tokens is not None, "prompt")
            echoed.append(prompt if isinstance(prompt, str) else self.tokenizer.decode(ids))
            jobs.append(Job(ids, fitted, body.stops(), logprobs=body.logprobs, echo=body.echo))
        reply = replies.Reply("cmpl", "text_completion", body.model or self.settings.name)
        if body.stream:
            return self.stream_completions(reply, jobs, decoding, body, echoed)
        done = await self.answer(jobs, decoding)
        choices = [self.completion_choice(i, job, body, echoed[i]) for i, job in enumerate(done)]
        return reply.body(choices, done)

    def completion_choice(self, index: int, job: Job, body: CompletionRequest, prompt: str):
        """One choice; ``echo``: the prompt as sent, then the answer."""
        text = job.text
        logprobs = None
        if body.echo:
            text = prompt + text
        if body.logprobs is not None:
            logprobs = replies.legacy_logprobs(self.tokenizer, job, body.echo)
        return {
            "index": index,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": job.finish_reason,
        }

    async def chat(self, body: ChatRequest):
        decoding = self.decoding(body)
        max_new = self.budget(body.budget(), "max_tokens")
        ids = self.chat_ids(body)
        max_new = self.fit(ids, max_new, body.budget() is not None, "messages")
        want = (body.top_logprobs or 0) if body.logprobs else None
        if body.stream and want is not None:
            raise ApiError("logprobs are not streamed: drop stream or logprobs", param="logprobs")
        job = Job(ids, max_new, body.stops(), logprobs=want)
        reply = replies.Reply("chatcmpl", "chat.completion", body.model or self.settings.name)
        if body.stream:
            return self.stream_chat(reply, job, decoding, body)
        [done] = await self.answer([job], decoding)
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": done.text},
            "logprobs": replies.chat_logprobs(self.tokenizer, done) if want is not None else None,
            "finish_reason": done.finish_reason,
        }
        return reply.body([choice], [done])

    async def answer(self, jobs: list[Job], decoding: Decoding) -> list[Job]:
        futures = self.batcher.submit(jobs, decoding)
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))

    # ---------------------------------------------------------------------- streaming

    def stream_completions(self, reply, jobs, decoding, body: CompletionRequest, echoed):
        def chunk(index: int, text: str, finish: str | None = None) -> dict:
            choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
            return reply.chunk("text_completion", [choice])

        first = [chunk(i, echoed[i]) for i in range(len(jobs)) if body.echo]
        return self.stream(reply, jobs, decoding, body, chunk, first)

    def stream_chat(self, reply, job, decoding, body: ChatRequest):
        def chunk(index: int, text: str, finish: str | None = None) -> dict:
            delta = {"content": text} if finish is None else {}
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            return reply.chunk("chat.completion.chunk", [choice])

        opening = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None}
        first = [reply.chunk("chat.completion.chunk", [{**opening, "finish_reason": None}])]
        return self.stream(reply, [job], decoding, body, chunk, first)

    def stream(self, reply, jobs, decoding, body, chunk, first: list[dict]) -> StreamingResponse:
        """Server-sent events: each job's text as it is generated, its finish reason, the usage
        if asked (``stream_options.include_usage``), then ``[DONE]``."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        for index, job in enumerate(jobs):
            job.emit = lambda text, i=index: loop.call_soon_threadsafe(
                events.put_nowait, ("text", i, text)
            )
        futures = self.batcher.submit(jobs, decoding)
        for index, future in enumerate(futures):
            future.add_done_callback(
                lambda f, i=index: loop.call_soon_threadsafe(events.put_nowait, ("done", i, f))
            )
        usage = body.stream_options is not None and body.stream_options.include_usage

        async def events_out() -> AsyncIterator[str]:
            for event in first:
                yield replies.sse(event)
            remaining = len(jobs)
            while remaining:
                kind, index, payload = await events.get()
                if kind == "text":
                    if payload:
                        yield replies.sse(chunk(index, payload))
                    continue
                remaining -= 1
                if payload.exception() is not None:
                    err = payload.exception()
                    yield replies.sse(errors.error_body(f"generation failed: {err}", 500))
                    continue
                yield replies.sse(chunk(index, "", payload.result().finish_reason))
            if usage:
                yield replies.sse(
                    {**reply.chunk(reply.chunk_object, []), "usage": replies.usage(jobs)}
                )
            yield "data: [DONE]\n\n"

        return StreamingResponse(events_out(), media_type="text/event-stream")
