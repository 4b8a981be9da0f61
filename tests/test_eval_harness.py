"""`steer eval`: lm-eval in-process on runs and models, bundled steer_* tasks, --protocol paper."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import randomize
from typer.testing import CliRunner

from steer_cli.cli import app
from steer_cli.data.tasks import TASKS, get_task
from steer_cli.engine.attach import InterventionSpec, attach
from steer_cli.evaluate import harness
from steer_cli.evaluate.tasks import hooks
from steer_cli.models import load_model

FIXTURES = Path(__file__).parent / "fixtures"
runner = CliRunner()
FIXTURE_DIRS = {
    "boolq": "boolq",
    "winogrande": "winogrande",
    "arc-challenge": "arc",
    "gsm8k": "gsm8k",
    "aqua": "aqua",
    "listops": "listops",
}

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

# A log-likelihood (multiple-choice) task and a generate_until task over one local file.
MC_YAML = """\
task: parity_mc
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
  - metric: acc_norm
metadata:
  version: 1.0
"""
GEN_YAML = """\
task: parity_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
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


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def _clean_error(result, *fragments):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A trained tiny post-block run (one step: the adapter is no longer the identity)."""
    root = tmp_path_factory.mktemp("runs")
    recipe = root / "tiny.yaml"
    recipe.write_text(RECIPE)
    _ok(runner.invoke(app, ["train", str(recipe), "-o", str(root / "run")]))
    return root / "run"


@pytest.fixture(scope="module")
def identity_run(run_dir, tmp_path_factory):
    """The same run with its adapter re-initialised: the identity (delta = 0 exactly)."""
    from steer_cli.runs import load_run

    out = tmp_path_factory.mktemp("identity") / "run"
    shutil.copytree(run_dir, out)
    model, _, parts = load_run(out)
    spec = parts.interventions.spec
    parts.interventions.detach()
    attach(model, spec, seed=0).save(out)
    return out


@pytest.fixture(scope="module")
def custom_tasks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tasks")
    data = folder / "questions.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (folder / "parity_mc.yaml").write_text(MC_YAML.format(data=data))
    (folder / "parity_gen.yaml").write_text(GEN_YAML.format(data=data))
    return folder


def _summary(result) -> dict:
    return json.loads(_ok(result).stdout)


# ------------------------------------------------------------------------------- parity


def test_identity_adapter_matches_plain_hflm(identity_run, custom_tasks):
    """An untrained adapter through `steer eval` = lm-eval's own HFLM on the base model."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    tasks = ["parity_mc", "parity_gen", "steer_boolq"]
    args = ["eval", str(identity_run), "--tasks", ",".join(tasks), "--batch-size", "2"]
    args += ["--include-path", str(custom_tasks), "--data", f"steer_boolq={FIXTURES / 'boolq'}"]
    ours = _summary(runner.invoke(app, [*args, "--json"]))

    model, tokenizer = load_model("tiny-llama", dtype="float32", device="cpu")
    manager = harness.resolve_tasks(tasks, {"boolq": str(FIXTURES / "boolq")}, [custom_tasks])
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=2)
    reference = simple_evaluate(model=lm, tasks=tasks, task_manager=manager)

    assert ours["metrics"] == harness.metrics(reference)
    assert set(ours["metrics"]) == set(tasks)
    assert ours["metrics"]["parity_mc"].keys() >= {"acc,none", "acc_norm,none"}
    assert "exact_match,none" in ours["metrics"]["parity_gen"]
    assert ours["n_samples"] == {"parity_mc": 4, "parity_gen": 4, "steer_boolq": 10}


def test_last_prompt_loglikelihoods_match_scoring(tiny_models):
    """lm-eval's log-likelihood requests (its own encoding, its batching) steer exactly the
    tokens `evaluate.scoring.score` does, two requests with one model input included."""
    from lm_eval.api.instance import Instance

    from steer_cli.evaluate.scoring import score

    model, tokenizer = tiny_models["tiny-llama"]
    interventions = attach(model, InterventionSpec(positions="last_prompt"), seed=0)
    randomize(interventions)
    try:
        lm = harness.SteeredLM(model, tokenizer, batch_size=3)
        assert lm.needs_span
        pairs = [
            ("the cat", " sat on"),
            ("the cat sat", " on"),  # the same model input as the row above, another prompt
            ("ab", " c"),
            ("a longer context here", " and more"),
            ("xyz", " uv"),
        ]
        requests = [
            Instance("loglikelihood", {}, pair, idx=0, metadata=("t", i, 1))
            for i, pair in enumerate(pairs)
        ]
        ours = [ll for ll, _ in lm.loglikelihood(requests, disable_tqdm=True)]
        contexts = [tokenizer(c)["input_ids"] for c, _ in pairs]
        continuations = [
            tokenizer(c + x)["input_ids"][len(ids) :]
            for (c, x), ids in zip(pairs, contexts, strict=True)
        ]
        expected = score(model, tokenizer, contexts, continuations)
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-4)
        interventions.enabled = False
        plain = score(model, tokenizer, contexts, continuations)
        assert all(abs(a - b) > 1e-4 for a, b in zip(expected, plain, strict=True))
    finally:
        interventions.detach()


# Multiple choice through lm-eval with a prompt as steer's tasks write them (ending in "\n",
# the answer right after it), and with lm-eval's usual "Answer:" + " choice".
NEWLINE_MC_YAML = """\
task: newline_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\n"
target_delimiter: ""
doc_to_choice: ["yes", "no", "maybe so"]
doc_to_target: label
metric_list:
  - metric: acc
metadata:
  version: 1.0
"""
LL_PROMPTS = {"newline_mc": "Question: {question}\n", "parity_mc": "Question: {question}\nAnswer:"}


@pytest.fixture(scope="module")
def mc_tasks(custom_tasks):
    data = custom_tasks / "questions.jsonl"
    (custom_tasks / "newline_mc.yaml").write_text(NEWLINE_MC_YAML.format(data=data))
    return custom_tasks


@pytest.mark.parametrize(
    ("task", "chat"),
    [("newline_mc", True), ("newline_mc", False), ("parity_mc", True), ("parity_mc", False)],
    ids=["chat", "newline", "chat-answer", "answer"],
)
@pytest.mark.parametrize("positions", ["prompt", "generated", "last_prompt", "f2+l2"])
def test_loglikelihood_steers_the_tokens_training_steered(
    tiny_models, mc_tasks, task, chat, positions
):
    """Through simple_evaluate (lm-eval's prompts, chat template, `_encode_pair`, batching):
    each choice's log-likelihood is that of lm-eval's tokens with the prompt span training
    gives the same prompt, in every position mode. Under a chat template the context ends in
    `assistant\\n`, and lm-eval moves that `\\n` into the continuation."""
    from types import SimpleNamespace

    from steer_cli.data.encode import collate_right_padded, encode_for_training

    model, tokenizer = tiny_models["tiny-llama"]
    interventions = attach(model, InterventionSpec(positions=positions), seed=0)
    randomize(interventions)
    template = LL_PROMPTS[task]
    try:
        results = harness.evaluate(
            model,
            tokenizer,
            [task],
            batch_size=3,
            apply_chat_template=chat,
            log_samples=True,
            include=[mc_tasks],
        )
        samples = results["samples"][task]
        assert len(samples) == len(QUESTIONS)
        checked = 0
        for sample in samples:
            prompt = template.format(**sample["doc"])
            for (context, continuation), [(ll, _)] in zip(
                sample["arguments"], sample["resps"], strict=True
            ):
                # What training steers on this prompt: its own encoding's prompt span.
                example = SimpleNamespace(prompt=prompt, target=continuation)
                rows, _ = encode_for_training(tokenizer, [example], chat=chat, max_length=512)
                trained = int(collate_right_padded(rows, 0)["prompt_lengths"][0])
                # lm-eval's tokens: the whole string, split where its stripped context ends.
                full = tokenizer(context + continuation)["input_ids"]
                split = len(tokenizer(context.rstrip())["input_ids"])
                assert full[:trained] == rows[0]["input_ids"][:trained]
                with torch.no_grad(), interventions.prompt_span([0], [trained]):
                    logits = model(input_ids=torch.tensor([full[:-1]])).logits[0]
                logprobs = torch.log_softmax(logits, dim=-1)
                expected = sum(float(logprobs[i - 1, full[i]]) for i in range(split, len(full)))
                assert ll == pytest.approx(expected, abs=1e-4)
                checked += 1
        assert checked == 3 * len(QUESTIONS)
    finally:
        interventions.detach()


def test_last_prompt_generation_matches_generate(tiny_models):
    """lm-eval's generate_until path steers the prompt as `evaluate.generation.generate` does."""
    from lm_eval.api.instance import Instance

    from steer_cli.evaluate.generation import generate

    model, tokenizer = tiny_models["tiny-qwen3"]
    interventions = attach(model, InterventionSpec(positions="last_prompt"), seed=0)
    randomize(interventions, std=0.5)
    try:
        prompts = ["a short one", "a considerably longer prompt than the first", "mid size x"]
        kwargs = {"until": [], "max_gen_toks": 5, "do_sample": False}
        requests = [
            Instance("generate_until", {}, (p, dict(kwargs)), idx=0, metadata=("t", i, 1))
            for i, p in enumerate(prompts)
        ]
        lm = harness.SteeredLM(model, tokenizer, batch_size=3)
        ours = lm.generate_until(requests, disable_tqdm=True)
        ids = [tokenizer(p)["input_ids"] for p in prompts]
        expected = generate(model, tokenizer, ids, max_new_tokens=5, batch_size=3)
        assert ours == expected
        interventions.enabled = False
        assert generate(model, tokenizer, ids, max_new_tokens=5, batch_size=3) != expected
    finally:
        interventions.detach()


def test_span_groups_never_pad_and_never_mix_context_lengths():
    requests = [(None, [1, 2], [3, 4]), (None, [1, 2, 3], [4]), (None, [7, 8], [9, 1])]
    groups = list(harness.span_groups(requests, max_length=100))
    assert sorted(i for _, indices in groups for i in indices) == [0, 1, 2]
    for lengths, _ in groups:
        assert len({len(inp) for inp in lengths}) == 1
    by_index = {i: lengths for lengths, indices in groups for i in indices}
    assert by_index[0][(1, 2, 3)] == 2 and by_index[1][(1, 2, 3)] == 3
    # Left truncation to max_length + 1 tokens: the context loses what was cut.
    [(lengths, _)] = harness.span_groups([(None, [1, 2, 3, 4, 5], [6, 7])], max_length=4)
    assert lengths == {(3, 4, 5, 6): 3}


# ----------------------------------------------------------------------- bundled tasks


def test_bundled_yamls_use_each_tasks_budget():
    data = {name: str(FIXTURES / folder) for name, folder in FIXTURE_DIRS.items()}
    manager = harness.resolve_tasks(list(harness.BUNDLED), data)
    loaded = manager.load(list(harness.BUNDLED))["tasks"]
    assert set(loaded) == set(harness.BUNDLED)
    for name, task in harness.BUNDLED.items():
        budget = loaded[name].config.generation_kwargs["max_gen_toks"]
        assert budget == get_task(task).max_new_tokens
    assert set(harness.BUNDLED.values()) == set(TASKS) - {"alpaca", "local"}


@pytest.mark.parametrize(("task", "folder"), FIXTURE_DIRS.items())
def test_bundled_docs_are_the_tasks_examples(task, folder):
    from steer_cli.data.sources import load_splits
    from steer_cli.recipe import DataSection

    path = str(FIXTURES / folder)
    docs = hooks.load_dataset(task, **{hooks.DATA_KEY: {task: path}})
    data = DataSection(task=task, path=path, train_size=None, validation_size=None, test_size=None)
    examples = load_splits(get_task(task), data)
    for split in ("train", "test"):
        assert [d["prompt"] for d in docs[split]] == [e.prompt for e in examples[split]]
        assert [d["answer"] for d in docs[split]] == [e.answer for e in examples[split]]
        assert len(docs[split]) > 0


@pytest.mark.parametrize(
    ("task", "text", "parsed", "gold", "correct"),
    [
        ("gsm8k", "so 1200 in all.\nAnswer: $1,200.", "1200", "1200", 1.0),
        ("gsm8k", "Answer: 0.33334", "0.33334", "0.33333", 1.0),  # the task's tolerance
        ("boolq", "Answer: True.", "true", "false", 0.0),
        ("arc-challenge", "Answer: (C) iron", "C", "C", 1.0),
        ("listops", "<answer> 7 </answer>", "7", "7", 1.0),
        ("winogrande", "no idea", None, "option1", 0.0),
    ],
)
def test_paper_filter_and_metric(task, text, parsed, gold, correct):
    doc = {"task": task, "answer": gold}
    assert hooks.parse_answers([[text]], [doc]) == [[parsed]]
    assert hooks.process_results(doc, [parsed]) == {"acc": correct}


def test_bundled_task_scores_with_the_paper_parser(run_dir, tmp_path):
    """Through lm-eval: each generation goes through the parser, acc is the task's check."""
    args = ["eval", str(run_dir), "--tasks", "steer_gsm8k", "--limit", "3", "--log-samples"]
    args += ["--data", str(FIXTURES / "gsm8k"), "-o", str(tmp_path), "--json"]
    summary = _summary(runner.invoke(app, args))
    [samples_file] = [Path(f) for f in summary["files"] if f.endswith(".samples.jsonl")]
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(samples) == 3 == summary["n_samples"]["steer_gsm8k"]
    task = get_task("gsm8k")
    for sample in samples:
        generated = sample["resps"][0][0]
        assert sample["filtered_resps"][0] == task.parse(generated)
        gold = sample["doc"]["answer"]
        expected = task.parse(generated) is not None and task.equal(task.parse(generated), gold)
        assert sample["acc"] == float(expected)
    accuracy = sum(s["acc"] for s in samples) / 3
    assert summary["metrics"]["steer_gsm8k"]["acc,paper"] == pytest.approx(accuracy)


# ------------------------------------------------------------------ CLI, files, protocol


def test_results_written_under_run_dir(run_dir):
    args = ["eval", str(run_dir), "--tasks", "steer_listops", "--limit", "2", "--json"]
    args += ["--data", str(FIXTURES / "listops")]
    result = runner.invoke(app, args)
    summary = json.loads(_ok(result).stdout)  # stdout holds the JSON and nothing else
    assert summary["run"] == str(run_dir) and summary["method"] == "postblock"
    assert summary["model"] == "tiny-llama" and summary["tasks"] == ["steer_listops"]
    assert "acc,paper" in summary["metrics"]["steer_listops"]
    [written] = [Path(f) for f in summary["files"]]
    assert written.parent == run_dir / "eval" and written.name.startswith("harness-")
    document = json.loads(written.read_text())
    assert document["summary"]["metrics"] == summary["metrics"]
    assert "steer_listops" in document["results"]["results"]
    assert not list((run_dir / "eval").glob(".*tmp*"))


def test_table_output(run_dir):
    args = ["eval", str(run_dir), "--tasks", "steer_listops", "--limit", "1"]
    result = _ok(runner.invoke(app, [*args, "--data", str(FIXTURES / "listops")]))
    assert "steer_listops" in result.stdout and "acc" in result.stdout
    assert "written:" in result.stdout


def test_protocol_paper_equals_evaluate_accuracy(run_dir):
    from steer_cli.data.encode import prompt_token_ids
    from steer_cli.data.tasks import load_splits, task_for
    from steer_cli.evaluate.generation import evaluate_accuracy
    from steer_cli.runs import load_run, read_config

    result = runner.invoke(app, ["eval", str(run_dir), "--protocol", "paper", "--limit", "4"])
    summary = json.loads(
        _ok(
            runner.invoke(
                app, ["eval", str(run_dir), "--protocol", "paper", "--limit", "4", "--json"]
            )
        ).stdout
    )
    assert "results.json" in result.stdout

    recipe = read_config(run_dir)
    model, tokenizer, _ = load_run(run_dir)
    task = task_for(recipe.data)
    test = load_splits(task, recipe.data)["test"][:4]
    prompts = [prompt_token_ids(tokenizer, ex.prompt, False) for ex in test]
    expected, _ = evaluate_accuracy(
        model, tokenizer, task, test, prompts, max_new_tokens=task.max_new_tokens, batch_size=4
    )
    assert summary["metrics"] == {"listops": {"acc,paper": expected["accuracy"]}}
    assert summary["n_samples"] == {"listops": 4}
    trained = json.loads((run_dir / "results.json").read_text())["eval"]["after"]["accuracy"]
    assert summary["trained_accuracy"] == trained


def test_unknown_task_suggests_close_names(run_dir):
    result = runner.invoke(app, ["eval", str(run_dir), "--tasks", "steer_boolk"])
    _clean_error(result, "unknown lm-eval task 'steer_boolk'", "steer_boolq")


def test_missing_run_dir(tmp_path):
    missing = tmp_path / "no-such-run"
    result = runner.invoke(app, ["eval", str(missing), "--tasks", "steer_listops", "-o", "x"])
    _clean_error(result, "no run directory or model at")


def test_not_a_run_dir(tmp_path):
    result = runner.invoke(app, ["eval", str(tmp_path), "--tasks", "steer_listops", "-o", "x"])
    _clean_error(result, "neither a run directory", "config.yaml")


def test_bad_limit(run_dir):
    result = runner.invoke(app, ["eval", str(run_dir), "--tasks", "steer_listops", "--limit", "0"])
    _clean_error(result, "--limit 0")


def test_plain_model_prints_without_saving(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["eval", "tiny-llama", "--tasks", "steer_listops", "--limit", "2"]
    result = runner.invoke(app, [*args, "--data", str(FIXTURES / "listops"), "--json"])
    assert _summary(result)["files"] == []
    assert list(tmp_path.iterdir()) == []


def test_plain_model_log_samples_needs_output():
    args = ["eval", "tiny-llama", "--tasks", "steer_listops", "--log-samples"]
    _clean_error(runner.invoke(app, args), "not a run directory", "--output")


def test_paper_protocol_needs_a_run(tmp_path):
    args = ["eval", "tiny-llama", "--protocol", "paper", "-o", str(tmp_path)]
    _clean_error(runner.invoke(app, args), "--protocol paper evaluates a run")


def test_unknown_protocol(run_dir):
    result = runner.invoke(app, ["eval", str(run_dir), "--protocol", "helm"])
    _clean_error(result, "unknown protocol 'helm'", "harness, paper, alpaca")


def test_lm_eval_task_offline_fails_fast_and_clearly(run_dir, monkeypatch):
    from steer_cli.evaluate import harness

    monkeypatch.setattr(harness, "hub_reachable", lambda: False)
    result = runner.invoke(app, ["eval", str(run_dir), "--tasks", "arc_easy", "--limit", "2"])
    # the message comes only from the offline branch, which reads the datasets cache alone
    _clean_error(result, "arc_easy", "hub is unreachable", "--data")


# ------------------------------------------------------------------ like for like (--baseline)


def test_baseline_scores_the_base_model_under_the_runs_prompts(
    run_dir, identity_run, custom_tasks, tmp_path
):
    """A run is prompted through the chat template it was trained with, a plain model is not:
    --baseline scores the base model in the same command under the run's prompts."""

    def log_likelihoods(path: str) -> list:
        return [json.loads(line)["resps"] for line in Path(path).read_text().splitlines()]

    tasks = ["--tasks", "parity_mc", "--include-path", str(custom_tasks), "--batch-size", "2"]
    args = ["eval", str(run_dir), *tasks, "--baseline", "--log-samples", "--json"]
    trained = _summary(runner.invoke(app, args))
    assert trained["apply_chat_template"] is True
    base = trained["baseline"]
    assert base["model"] == "tiny-llama" and base["n_samples"] == trained["n_samples"]
    main, ours, theirs = trained["files"]
    assert theirs.endswith(".baseline.samples.jsonl")
    args = ["eval", "tiny-llama", *tasks, "--apply-chat-template", "--log-samples"]
    same_prompts = _summary(runner.invoke(app, [*args, "-o", str(tmp_path), "--json"]))
    assert base["metrics"] == same_prompts["metrics"]
    assert log_likelihoods(theirs) == log_likelihoods(same_prompts["files"][1])
    assert log_likelihoods(ours) != log_likelihoods(theirs)  # the run's adapter is on
    assert json.loads(Path(main).read_text())["baseline_results"]["results"]["parity_mc"]
    # The identity adapter has no effect, measured like for like.
    identity = _summary(
        runner.invoke(app, ["eval", str(identity_run), *tasks, "--baseline", "--json"])
    )
    assert identity["metrics"] == identity["baseline"]["metrics"] == base["metrics"]


def test_every_table_says_its_prompts_and_the_baseline_is_beside(run_dir, custom_tasks):
    tasks = ["--tasks", "parity_mc", "--include-path", str(custom_tasks), "--limit", "2"]
    ours = _ok(runner.invoke(app, ["eval", str(run_dir), *tasks, "--baseline"])).stdout
    assert "· chat template" in ours and "base" in ours and "Δ" in ours
    assert "base: tiny-llama, the run's base model, same prompts" in ours
    model = _ok(runner.invoke(app, ["eval", "tiny-llama", *tasks])).stdout
    assert "· no chat template" in model and "Δ" not in model


def test_protocol_paper_baseline_is_the_base_model_on_the_same_prompts(run_dir):
    from steer_cli.data.encode import prompt_token_ids
    from steer_cli.data.tasks import load_splits, task_for
    from steer_cli.evaluate.generation import evaluate_accuracy
    from steer_cli.runs import load_run, read_config

    args = ["eval", str(run_dir), "--protocol", "paper", "--limit", "4", "--baseline", "--json"]
    summary = _summary(runner.invoke(app, args))
    recipe = read_config(run_dir)
    model, tokenizer, parts = load_run(run_dir)
    task = task_for(recipe.data)
    test = load_splits(task, recipe.data)["test"][:4]
    prompts = [prompt_token_ids(tokenizer, ex.prompt, True) for ex in test]
    with parts.disabled():
        expected, _ = evaluate_accuracy(
            model, tokenizer, task, test, prompts, max_new_tokens=task.max_new_tokens, batch_size=4
        )
    assert summary["apply_chat_template"] is True
    assert summary["baseline"]["metrics"] == {"listops": {"acc,paper": expected["accuracy"]}}


def test_an_sft_runs_baseline_is_its_base_model_loaded_beside_it(run_dir, tmp_path):
    """SFT's trained part is every weight: its base is loaded beside it, and scores as the
    adapter run's base does on the same recipe data."""
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(RECIPE.replace("method: postblock", "method: sft"))
    _ok(runner.invoke(app, ["train", str(recipe), "-o", str(tmp_path / "sft")]))
    args = ["--protocol", "paper", "--limit", "4", "--baseline", "--json"]
    sft = _summary(runner.invoke(app, ["eval", str(tmp_path / "sft"), *args]))
    adapter = _summary(runner.invoke(app, ["eval", str(run_dir), *args]))
    assert sft["method"] == "sft" and sft["baseline"] == adapter["baseline"]


def test_baseline_needs_a_run():
    args = ["eval", "tiny-llama", "--tasks", "steer_listops", "--baseline"]
    _clean_error(runner.invoke(app, args), "--baseline", "is a model")


# ------------------------------------------------------------- errors before the model loads


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any model load fails the test: these errors must come before one."""
    from steer_cli import models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_model", refuse)


def test_a_folder_with_only_a_config_is_no_run(run_dir, tmp_path, no_model_loads):
    copy = tmp_path / "copied"
    copy.mkdir()
    shutil.copy(run_dir / "config.yaml", copy / "config.yaml")
    for args in (["--tasks", "steer_listops"], ["--protocol", "paper"]):
        result = runner.invoke(app, ["eval", str(copy), *args])
        _clean_error(result, "is not a finished run", "adapter.safetensors")
    result = runner.invoke(app, ["eval", str(copy), "--instructions", "everyday"])
    _clean_error(result, "is not a finished run")


def test_an_unknown_task_is_reported_before_the_model_loads(run_dir, no_model_loads):
    result = runner.invoke(app, ["eval", str(run_dir), "--tasks", "steer_listops,steer_boolk"])
    _clean_error(result, "unknown lm-eval task 'steer_boolk'")


@pytest.mark.parametrize(
    "option",
    [
        ["--apply-chat-template"],
        ["--no-apply-chat-template"],
        ["--num-fewshot", "3"],
        ["--max-length", "64"],
        ["--seed", "1"],
    ],
    ids=lambda o: o[0],
)
def test_protocol_paper_refuses_the_options_it_would_ignore(run_dir, option, no_model_loads):
    result = runner.invoke(app, ["eval", str(run_dir), "--protocol", "paper", *option])
    flag = option[0].replace("--no-", "--").replace("--apply", "--[no-]apply")
    _clean_error(result, "--protocol paper repeats the run's own evaluation", flag)


def test_alpaca_judging_refuses_lm_eval_options(run_dir, no_model_loads):
    args = ["eval", str(run_dir), "--instructions", "everyday", "--num-fewshot", "2", "--baseline"]
    _clean_error(runner.invoke(app, args), "--num-fewshot, --baseline", "AlpacaEval-style")


def test_a_bundled_task_offline_says_how_to_pass_local_files(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    result = runner.invoke(app, ["eval", "tiny-llama", "--tasks", "steer_boolq", "--limit", "2"])
    _clean_error(result, "cannot load the dataset google/boolq", "--data steer_boolq=DIR")
    assert "data.path" not in result.output
