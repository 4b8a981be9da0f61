"""The ``!function`` hooks of the bundled lm-eval task YAMLs (``steer_*``, in this folder).

They reuse :mod:`steer_cli.data` rather than copying it: the rows come from the task's hub
dataset, local files or the ListOps generator through ``sources.load_splits`` (same split plan,
seed 42), each doc is the task's formatted :class:`~steer_cli.data.tasks.Example` (the paper's
prompt, target and canonical gold answer), the ``paper`` filter is the task's answer parser and
``acc`` is the task's own equality (GSM8K's numeric tolerance included). So a bundled task scores
a generation exactly as ``steer train`` does.

Generated ListOps is the exception to "same splits": its test split is a stream of its own that
skips every expression a recipe trains on (:mod:`steer_cli.evaluate.tasks.listops`), since the
seed-42 stream's first 2,000 expressions are other recipes' training data.
"""

from __future__ import annotations

from steer_cli.data.tasks import get_task

DATA_KEY = "steer_data"
"""Task metadata key: ``{task name: data path}`` for tasks read from local files."""
DOC_FIELDS = ("prompt", "target", "answer", "task")


def load_dataset(task: str, **metadata):
    """Our train/validation/test splits of ``task`` as a ``datasets.DatasetDict`` of docs.

    ``metadata[DATA_KEY][task]`` (``steer eval --data``) points at local files; without it the
    task reads its usual source (the hub; the seeded generator for ListOps, at the paper's sizes).
    """
    import datasets

    from steer_cli.data.sources import load_splits
    from steer_cli.recipe import DataSection

    spec = get_task(task)
    path = (metadata.get(DATA_KEY) or {}).get(spec.name)
    data = DataSection(
        task=spec.name, path=path, train_size=None, validation_size=None, test_size=None
    )
    splits = load_splits(spec, data)
    if spec.name == "listops" and path is None:  # generated: a test split no recipe trains on
        from steer_cli.evaluate.tasks.listops import held_out_rows

        splits["test"] = [spec.format(row) for row in held_out_rows()]
    # Explicit string features: an empty split (no validation plan) still has the columns.
    features = datasets.Features({key: datasets.Value("string") for key in DOC_FIELDS})
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_list(
                [
                    {"prompt": ex.prompt, "target": ex.target, "answer": ex.answer, "task": task}
                    for ex in examples
                ],
                features=features,
            )
            for split, examples in splits.items()
        }
    )


def parse_answers(resps: list[list[str]], docs: list[dict]) -> list[list[str | None]]:
    """The ``paper`` filter: each generation -> the task's parsed answer (``None``: none found)."""
    return [
        [get_task(doc["task"]).parse(text) for text in texts]
        for texts, doc in zip(resps, docs, strict=True)
    ]


def process_results(doc: dict, results: list[str | None]) -> dict[str, float]:
    """``acc``: the parsed answer equals the gold one under the task's equality."""
    predicted = results[0]
    task = get_task(doc["task"])
    return {"acc": float(predicted is not None and task.equal(predicted, doc["answer"]))}
