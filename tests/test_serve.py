"""`steer serve`: a real server in a fresh process, answered by clients steer did not write (the
official `openai` package, lm-eval's own API models), checked against `steer generate` and
`steer eval` on the same run."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from steer_cli.cli import app

openai = pytest.importorskip("openai")
runner = CliRunner()

RECIPE = """\
model: tiny-llama
method: postblock
data:
  task: listops
  train_size: 8
  validation_size: 2
  test_size: 6
train:
  max_steps: 1
  batch_size: 4
eval:
  batch_size: 4
  before: false
"""
MC_YAML = """\
task: serve_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: ["yes", "no", "maybe so"]
doc_to_target: label
metric_list:
  - metric: acc
metadata:
  version: 1.0
"""
GEN_YAML = """\
task: serve_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["a"]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
metadata:
  version: 1.0
"""
QUESTIONS = [
    {"question": "is the sky blue", "label": 0, "answer": "yes"},
    {"question": "can fish fly over mountains at night", "label": 1, "answer": "no"},
    {"question": "two", "label": 2, "answer": "maybe so"},
    {"question": "is water wet when it is frozen solid", "label": 0, "answer": "yes"},
]
PROMPTS = ["[MAX 2 9 ]", "hello there, how are you today?", "x"]
NAME = "tiny-run"
KEY = "s3cret"
MAX_NEW = 48
MAX_PROMPT = 120


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


class Server:
    """`steer serve ARGS` in a fresh process on a free port, ready when /health answers."""

    def __init__(self, args: list[str], log: Path):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models on a shared CPU
        command = [sys.executable, "-m", "steer_cli", "serve", *args, "--port", str(self.port)]
        self.process = subprocess.Popen(
            command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.process.poll() is None, log.read_text()
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.3)
        raise AssertionError(f"the server did not start:\n{log.read_text()}")

    def health(self) -> dict:
        return requests.get(f"{self.url}/health", timeout=10).json()

    def post(self, path: str, body, **kwargs) -> requests.Response:
        if isinstance(body, dict | list):
            kwargs["json"] = body
        else:
            kwargs["data"] = body
        return requests.post(f"{self.url}/v1/{path}", timeout=120, **kwargs)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def _train(root: Path, *overrides: str, weights: str = "adapter.safetensors") -> Path:
    """A trained tiny post-block run (trained with the chat template, as tiny-llama has one)
    whose adapter makes a large edit: one step moves it too little to change a greedy answer,
    and steered and base answers must differ for a mix-up between them to show."""
    import torch
    from safetensors.torch import load_file, save_file

    (root / "tiny.yaml").write_text(RECIPE)
    args = ["train", str(root / "tiny.yaml"), "-o", str(root / "run"), *overrides]
    _ok(runner.invoke(app, args))
    weights = root / "run" / weights
    generator = torch.Generator().manual_seed(0)
    tensors = {
        k: torch.randn(v.shape, generator=generator, dtype=v.dtype) * 0.5
        for k, v in load_file(weights).items()
    }
    save_file(tensors, weights)
    return root / "run"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def server(run_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "server.log"
    args = [str(run_dir), "--name", NAME, "--max-new-tokens", str(MAX_NEW)]
    args += ["--max-prompt-tokens", str(MAX_PROMPT), "--max-batch-size", "8"]
    args += ["--batch-window-ms", "50"]
    server = Server(args, log)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def _generate(run_dir, *options, prompts=PROMPTS) -> list[dict]:
    args = ["generate", str(run_dir), *prompts, "--max-new-tokens", "12", "--json", *options]
    result = _ok(runner.invoke(app, args))
    return [json.loads(line) for line in result.stdout.splitlines()]


# ------------------------------------------------------------------ the openai client


def test_models_lists_the_run_and_its_base(client):
    assert [m.id for m in client.models.list()] == [NAME, "base"]


def test_chat_and_completions_equal_steer_generate(run_dir, client):
    """Chat goes through the run's chat template, as `steer generate` prompts this run;
    completions take the text as it is, as `steer generate --no-chat-template` does. Both
    greedy, both the steered run; `base` and `"steer": false` are the base model."""
    chat = _generate(run_dir, "--compare-base")
    plain = _generate(run_dir, "--no-chat-template")
    assert [r["output"] for r in chat] != [r["base_output"] for r in chat]  # the run steers
    for prompt, row, raw in zip(PROMPTS, chat, plain, strict=True):
        messages = [{"role": "user", "content": prompt}]
        answer = client.chat.completions.create(model=NAME, messages=messages, max_tokens=12)
        assert answer.choices[0].message.content == row["output"]
        assert answer.choices[0].message.role == "assistant"
        base = client.chat.completions.create(model="base", messages=messages, max_tokens=12)
        assert base.choices[0].message.content == row["base_output"]
        off = client.chat.completions.create(
            model=NAME, messages=messages, max_tokens=12, extra_body={"steer": False}
        )
        assert off.choices[0].message.content == row["base_output"]
        completion = client.completions.create(model=NAME, prompt=prompt, max_tokens=12)
        assert completion.choices[0].text == raw["output"]
        assert completion.usage.completion_tokens <= 12


def test_sampling_equals_steer_generate_with_the_same_seed(run_dir, client):
    """temperature/top_p/seed sample as `steer generate` samples (a request alone in its
    batch draws what `steer generate` draws for one prompt)."""
    sampling = ["--temperature", "1.5", "--top-p", "0.9", "--seed", "3"]
    [row] = _generate(run_dir, *sampling, prompts=[PROMPTS[1]])
    messages = [{"role": "user", "content": PROMPTS[1]}]
    sampled = client.chat.completions.create(
        model=NAME, messages=messages, max_tokens=12, temperature=1.5, top_p=0.9, seed=3
    )
    assert sampled.choices[0].message.content == row["output"]
    greedy = client.chat.completions.create(model=NAME, messages=messages, max_tokens=12)
    assert greedy.choices[0].message.content != row["output"]


def test_streaming_sends_the_same_text(client):
    for prompt in PROMPTS:
        whole = client.completions.create(model=NAME, prompt=prompt, max_tokens=20)
        chunks = list(
            client.completions.create(model=NAME, prompt=prompt, max_tokens=20, stream=True)
        )
        assert len(chunks) > 2  # streamed, not one piece
        assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
        assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
        messages = [{"role": "user", "content": prompt}]
        whole = client.chat.completions.create(model=NAME, messages=messages, max_tokens=20)
        stream = client.chat.completions.create(
            model=NAME,
            messages=messages,
            max_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == whole.choices[0].message.content
        assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stop_sequences_cut_the_answer(client):
    whole = client.completions.create(model=NAME, prompt=PROMPTS[1], max_tokens=30).choices[0]
    stop = whole.text[5:7]
    assert len(stop) == 2
    cut = client.completions.create(model=NAME, prompt=PROMPTS[1], max_tokens=30, stop=[stop])
    assert cut.choices[0].text == whole.text[: whole.text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(
        model=NAME, prompt=PROMPTS[1], max_tokens=30, stop=stop, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == cut.choices[0].text


def test_echo_logprobs_score_the_prompt(client, run_dir):
    """echo + logprobs + max_tokens 0: one log-probability per prompt token after the first,
    each the model's own (a forward pass here, in the test)."""
    import torch

    from steer_cli.runs import load_run

    answer = client.completions.create(
        model=NAME, prompt=PROMPTS[1], max_tokens=0, echo=True, logprobs=1
    ).choices[0]
    assert answer.text == PROMPTS[1]
    values = answer.logprobs.token_logprobs
    model, tokenizer, _ = load_run(run_dir, device="cpu")
    ids = tokenizer(PROMPTS[1])["input_ids"]
    assert len(values) == len(ids) and values[0] is None
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
    expected = [logp[i - 1, ids[i]].item() for i in range(1, len(ids))]
    assert values[1:] == pytest.approx(expected, abs=1e-4)
    for value, top in zip(values[1:], answer.logprobs.top_logprobs[1:], strict=True):
        assert max(top.values()) >= value - 1e-6


# ------------------------------------------------------------- lm-eval's API models


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tasks")
    data = folder / "questions.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (folder / "serve_mc.yaml").write_text(MC_YAML.format(data=data))
    (folder / "serve_gen.yaml").write_text(GEN_YAML.format(data=data))
    return folder


def _responses(samples: list[dict]) -> dict[str, list]:
    out: dict[str, list] = {}
    for sample in sorted(samples, key=lambda s: (s["task"], s["doc_id"])):
        out.setdefault(sample["task"], []).append(sample["resps"])
    return out


def test_lm_eval_api_models_score_as_steer_eval(run_dir, server, tasks_dir, tmp_path):
    """lm-eval's `local-completions` (a log-likelihood task and a generate_until task) and
    `local-chat-completions` (generate_until) against the server give `steer eval`'s scores
    on the same run, under the same (chat template) prompts."""
    from lm_eval import simple_evaluate
    from transformers import AutoTokenizer  # noqa: F401  (lm-eval loads the tokenizer by path)

    from steer_cli.evaluate import harness
    from steer_cli.models import load_model

    tasks = ["serve_mc", "serve_gen"]
    args = ["eval", str(run_dir), "--tasks", ",".join(tasks), "--include-path", str(tasks_dir)]
    args += ["--batch-size", "2", "--log-samples", "-o", str(tmp_path), "--json"]
    ours = json.loads(_ok(runner.invoke(app, args)).stdout)
    assert ours["apply_chat_template"] is True
    [samples_file] = [f for f in ours["files"] if f.endswith(".samples.jsonl")]
    reference = _responses([json.loads(x) for x in Path(samples_file).read_text().splitlines()])

    tokenizer_dir = tmp_path / "tokenizer"  # lm-eval tokenizes by itself: the same tokenizer
    load_model("tiny-llama", dtype="float32", device="cpu")[1].save_pretrained(tokenizer_dir)
    manager = harness.resolve_tasks(tasks, None, [tasks_dir])
    completions = simple_evaluate(
        model="local-completions",
        model_args={
            "base_url": f"{server.url}/v1/completions",
            "model": NAME,
            "tokenizer": str(tokenizer_dir),
            "tokenizer_backend": "huggingface",
            "tokenized_requests": True,
            "batch_size": 2,
            "max_length": 512,
        },
        tasks=tasks,
        task_manager=manager,
        apply_chat_template=True,
        log_samples=True,
    )
    assert harness.metrics(completions) == ours["metrics"]
    theirs = _responses([{"task": t, **s} for t, ss in completions["samples"].items() for s in ss])
    assert theirs["serve_gen"] == reference["serve_gen"]  # the same generated text
    assert any(r[0][0] for r in theirs["serve_gen"])  # not all empty
    for mine, served in zip(reference["serve_mc"], theirs["serve_mc"], strict=True):
        assert [c[0][0] for c in served] == pytest.approx([c[0][0] for c in mine], abs=1e-4)

    chat = simple_evaluate(
        model="local-chat-completions",
        model_args={"base_url": f"{server.url}/v1/chat/completions", "model": NAME},
        tasks=["serve_gen"],
        task_manager=manager,
        apply_chat_template=True,
        log_samples=True,
    )
    assert harness.metrics(chat)["serve_gen"] == ours["metrics"]["serve_gen"]
    assert [
        s["resps"] for s in sorted(chat["samples"]["serve_gen"], key=lambda s: s["doc_id"])
    ] == (reference["serve_gen"])


# ------------------------------------------------------------------------- batching


def test_concurrent_clients_are_batched_and_answered_as_one_by_one(server):
    """32 clients at once: every one answered, in fewer batches than requests, each answer the
    one it gets alone (greedy; left padding does not change a row's tokens)."""
    prompts = [f"{'ab' * (i % 7)} question {i}: {'x' * (i % 5)}" for i in range(32)]

    def ask(prompt: str) -> str:
        response = server.post(
            "completions", {"model": NAME, "prompt": prompt, "max_tokens": 1 + len(prompt) % 9}
        )
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["text"]

    before = server.health()
    with ThreadPoolExecutor(32) as pool:
        together = list(pool.map(ask, prompts))
    during = server.health()
    alone = [ask(prompt) for prompt in prompts]
    assert together == alone
    assert len(set(alone)) > 1
    assert during["largest_batch"] > 1
    assert during["batches"] - before["batches"] < len(prompts)


# --------------------------------------------------------------------------- errors


def _is_openai_error(response: requests.Response, status: int, param=None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["type"]
    if param is not None:
        assert error["param"] == param
    return error


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("completions", '{"prompt": "x",', 400, None),
        ("completions", "[1, 2]", 400, None),
        ("completions", {"prompt": "x", "temprature": 0}, 400, "temprature"),
        ("completions", {"prompt": "x" * (MAX_PROMPT + 1)}, 400, "prompt"),
        ("completions", {"prompt": "x", "temperature": 3}, 400, "temperature"),
        ("completions", {"prompt": "x", "temperature": "hot"}, 400, "temperature"),
        ("completions", {"prompt": "x", "max_tokens": MAX_NEW + 1}, 400, "max_tokens"),
        ("completions", {"prompt": "x", "max_tokens": -1}, 400, "max_tokens"),
        ("completions", {"prompt": [5, 10**9]}, 400, "prompt"),
        ("completions", {"prompt": []}, 400, "prompt"),
        ("completions", {"prompt": 5}, 400, "prompt"),
        ("completions", {"prompt": "x", "top_p": 0}, 400, "top_p"),
        ("completions", {"prompt": "x", "logprobs": 50}, 400, "logprobs"),
        ("completions", {"prompt": "x", "logprobs": 1, "stream": True}, 400, "logprobs"),
        ("completions", {"prompt": "x", "stop": [""]}, 400, "stop"),
        ("completions", {"prompt": "x", "n": 2}, 400, "n"),
        ("completions", {"prompt": "x", "model": "gpt-4"}, 404, "model"),
        ("completions", {"max_tokens": 3}, 400, "prompt"),
        ("chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, 400, None),
        ("chat/completions", {"messages": [], "max_tokens": 3}, 400, "messages"),
        (
            "chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "tools": []},
            400,
            "tools",
        ),
    ],
)
def test_bad_requests_get_openai_shaped_4xx(server, path, body, status, param):
    _is_openai_error(server.post(path, body), status, param)
    assert server.health()["status"] == "ok"  # and the server lives on


def test_unknown_route_and_method_are_openai_shaped(server):
    _is_openai_error(requests.get(f"{server.url}/v1/nothing", timeout=10), 404)
    _is_openai_error(requests.get(f"{server.url}/v1/completions", timeout=10), 405)


# ------------------------------------------------------ api key, SIGTERM, the command


def test_api_key_and_sigterm_drain(tmp_path):
    """--api-key: no key or a wrong one is a 401 in OpenAI's shape. SIGTERM while a request is
    generating: that request is answered in full, then the server exits cleanly."""
    args = ["tiny-llama", "--api-key", KEY, "--max-new-tokens", "400"]
    server = Server(args, tmp_path / "server.log")
    try:
        body = {"model": "tiny-llama", "prompt": "hello", "max_tokens": 3}
        _is_openai_error(server.post("completions", body), 401)
        wrong = {"Authorization": "Bearer nope"}
        assert _is_openai_error(server.post("completions", body, headers=wrong), 401)["code"] == (
            "invalid_api_key"
        )
        _is_openai_error(requests.get(f"{server.url}/v1/models", timeout=10), 401)
        good = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
        bearer = {"Authorization": f"Bearer {KEY}"}
        assert good.completions.create(**body).choices[0].text

        # the model's context (512) holds prompt + max_tokens: a default budget shrinks to fit
        near_full = {"model": "tiny-llama", "prompt": "y" * 500}
        fitted = good.completions.create(**near_full)
        assert fitted.usage.prompt_tokens == 500 and fitted.usage.completion_tokens <= 12
        over = server.post("completions", {**near_full, "max_tokens": 13}, headers=bearer)
        assert _is_openai_error(over, 400, "prompt")["code"] == "context_length_exceeded"

        long = {"model": "tiny-llama", "prompt": "x", "max_tokens": 400}
        expected = good.completions.create(**long)
        assert expected.usage.completion_tokens > 50  # long enough to be caught in flight
        long["stream"] = True
        started, signalled = threading.Event(), threading.Event()
        pieces, finish, ended_after_signal = [], [], []

        def stream() -> None:
            with requests.post(
                f"{server.url}/v1/completions",
                json=long,
                headers=bearer,
                timeout=120,
                stream=True,
            ) as response:
                for line in response.iter_lines(decode_unicode=True):
                    if line.startswith("data: {"):
                        choice = json.loads(line[6:])["choices"][0]
                        pieces.append(choice["text"])
                        finish.append(choice["finish_reason"])
                        started.set()
                        if choice["finish_reason"] is not None:
                            ended_after_signal.append(signalled.is_set())

        reader = threading.Thread(target=stream)
        reader.start()
        assert started.wait(60)
        signalled.set()
        server.process.send_signal(signal.SIGTERM)
        reader.join(120)
        assert ended_after_signal == [True]  # the request was still generating when signalled
        assert finish[-1] == expected.choices[0].finish_reason  # answered in full
        assert "".join(pieces) == expected.choices[0].text
        # uvicorn re-raises the signal once it has shut down, so the exit says SIGTERM
        assert server.process.wait(timeout=60) == -signal.SIGTERM
        assert "Application shutdown complete" in server.log.read_text()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{server.url}/health", timeout=10)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/missing"], "no run directory or model"),
        (["tiny-llama", "--max-prompt-tokens", "512"], "leaves no room in the model's context"),
        (["tiny-llama", "--name", "base"], "is the id of the base model"),
        (["tiny-llama", "--api-key", " "], "--api-key is empty"),
    ],
)
def test_bad_options_are_clean_errors(tmp_path, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    result = runner.invoke(app, ["serve", *args])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert message in result.output


def test_positions_mean_what_they_mean_in_training(tmp_path):
    """An adapter on the first and last two prompt tokens only: concurrent requests of
    different lengths, batched with left padding, each steered at its own prompt tokens, so
    their answers are `steer generate`'s (which batches them differently)."""
    run = _train(tmp_path, "adapter.positions=f2+l2")
    prompts = [f"{'(' * i} question {i}" for i in range(6)]
    args = ["generate", str(run), *prompts, "--max-new-tokens", "8", "--json", "--compare-base"]
    expected = [json.loads(line) for line in _ok(runner.invoke(app, args)).stdout.splitlines()]
    assert [r["output"] for r in expected] != [r["base_output"] for r in expected]
    server = Server([str(run), "--batch-window-ms", "200"], tmp_path / "server.log")
    try:

        def ask(prompt: str) -> str:
            body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 8}
            response = server.post("chat/completions", body)
            assert response.status_code == 200, response.text
            return response.json()["choices"][0]["message"]["content"]

        with ThreadPoolExecutor(len(prompts)) as pool:
            answers = list(pool.map(ask, prompts))
        assert server.health()["largest_batch"] > 1
        assert answers == [r["output"] for r in expected]
    finally:
        server.stop()


def test_an_sft_runs_base_is_its_base_model(tmp_path):
    """An SFT run's trained part is its weights: `base` loads the base model beside it (once)
    and answers as `steer generate --compare-base` does."""
    run = _train(tmp_path, "method=sft", weights="model/model.safetensors")
    args = ["generate", str(run), *PROMPTS, "--max-new-tokens", "8", "--json", "--compare-base"]
    expected = [json.loads(line) for line in _ok(runner.invoke(app, args)).stdout.splitlines()]
    assert [r["output"] for r in expected] != [r["base_output"] for r in expected]
    server = Server([str(run)], tmp_path / "server.log")
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        for prompt, row in zip(PROMPTS, expected, strict=True):
            messages = [{"role": "user", "content": prompt}]
            for model, key in (("base", "base_output"), ("run", "output"), ("base", "base_output")):
                answer = client.chat.completions.create(
                    model=model, messages=messages, max_tokens=8
                )
                assert answer.choices[0].message.content == row[key]
    finally:
        server.stop()
