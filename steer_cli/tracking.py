"""Experiment tracking through accelerate's trackers: TensorBoard (the default, offline; events in
``RUN/logs/``), Weights & Biases and MLflow, as ``train.report_to`` names them.

A run logs its resolved recipe as hyper-parameters, per optimizer step ``train/loss``,
``train/lr`` (``train/lr_group<k>`` when groups differ), ``train/tokens_per_second`` and
``train/grad_norm``, and its evaluations as ``eval/before_accuracy`` (step 0) and
``eval/after_accuracy`` (the last step). A sweep's trials are runs of their own, each logged under
its directory's name. Nothing is imported before a run starts, so ``steer --help`` stays fast.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from steer_cli.errors import SteerError

LOGS_DIR = "logs"
# What each tracker needs installed (a distribution that provides the module).
_NEEDS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
          "mlflow": ("mlflow", "mlflow")}  # fmt: skip


def check(names: list[str]) -> None:
    """Each named tracker's package is importable (before any model loads)."""
    for name in names:
        module, package = _NEEDS[name]
        if importlib.util.find_spec(module) is None:
            raise SteerError(
                f"train.report_to names {name}, but the {package} package is not installed",
                f"pip install {package}, or set train.report_to=[tensorboard] (or none)",
            )


def flat_hparams(recipe: dict, prefix: str = "") -> dict:
    """``{"train.lr": 0.002, ...}``: what trackers take as hyper-parameters (lists as text)."""
    out: dict = {}
    for key, value in recipe.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{name}."))
        elif value is None or isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = str(value)
    return out


class Tracking:
    """The trackers of one run: ``start``, ``log`` per step, ``finish`` before the run directory
    moves into place (their files are closed by then)."""

    def __init__(self, names: list[str], run_dir: Path, run_name: str, recipe: dict):
        self.names = names
        self.run_dir = Path(run_dir)
        self.run_name = run_name
        self.recipe = recipe
        self.trackers: list = []

    def start(self) -> Tracking:
        from accelerate import tracking

        logs = self.run_dir / LOGS_DIR
        made = {
            "tensorboard": lambda: tracking.TensorBoardTracker(self.run_name, logs),
            "wandb": lambda: tracking.WandBTracker(self.run_name, dir=str(logs)),
            "mlflow": lambda: tracking.MLflowTracker(
                "steer", logging_dir=str(logs), run_name=self.run_name
            ),
        }
        for name in self.names:
            tracker = made[name]()
            start = getattr(tracker, "start", None)  # newer accelerate starts on start()
            if callable(start):
                start()
            tracker.store_init_configuration(flat_hparams(self.recipe))
            self.trackers.append(tracker)
        return self

    def log(self, values: dict, step: int) -> None:
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []
