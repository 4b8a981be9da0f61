"""The bodies of OpenAI's answers: the envelope, usage, log-probabilities (legacy completions
and chat formats) and server-sent events."""

from __future__ import annotations

import json
import time
import uuid

from fastapi.responses import JSONResponse

from steer_cli.serve.engine import Job


class Reply:
    """The envelope of one answer: its id, object type, creation time and model id."""

    def __init__(self, prefix: str, kind: str, model: str):
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.kind, self.model, self.created = kind, model, int(time.time())
        self.chunk_object = "chat.completion.chunk" if kind == "chat.completion" else kind

    def body(self, choices: list[dict], jobs: list[Job]) -> JSONResponse:
        return JSONResponse(
            {
                "id": self.id,
                "object": self.kind,
                "created": self.created,
                "model": self.model,
                "choices": choices,
                "usage": usage(jobs),
            }
        )

    def chunk(self, kind: str, choices: list[dict]) -> dict:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }


def usage(jobs: list[Job]) -> dict:
    prompt = sum(len(job.ids) for job in jobs)
    completion = sum(len(job.tokens) for job in jobs)
    total = prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def legacy_logprobs(tokenizer, job: Job, echo: bool) -> dict:
    """OpenAI's completions ``logprobs``: token strings, their log-probabilities, the top
    alternatives and each token's character offset (the echoed prompt's tokens first)."""
    ids = (job.ids if echo else []) + job.tokens
    values = (job.prompt_logprobs if echo else []) + job.token_logprobs
    tops = (job.prompt_top if echo else []) + job.top_logprobs
    tokens = [tokenizer.decode([t]) for t in ids]
    offsets, at = [], 0
    for token in tokens:
        offsets.append(at)
        at += len(token)
    return {
        "tokens": tokens,
        "token_logprobs": values,
        "top_logprobs": [
            None if top is None else {tokenizer.decode([t]): v for t, v in top.items()}
            for top in tops
        ],
        "text_offset": offsets,
    }


def chat_logprobs(tokenizer, job: Job) -> dict:
    def entry(token: int, value: float) -> dict:
        text = tokenizer.decode([token])
        return {"token": text, "logprob": value, "bytes": list(text.encode())}

    content = []
    for token, value, top in zip(job.tokens, job.token_logprobs, job.top_logprobs, strict=True):
        alternatives = sorted(top.items(), key=lambda kv: -kv[1])
        content.append(
            {**entry(token, value), "top_logprobs": [entry(t, v) for t, v in alternatives]}
        )
    return {"content": content}
