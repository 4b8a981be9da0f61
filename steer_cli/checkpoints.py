"""Training checkpoints, for resuming a run after a crash with the same bytes at the end.

A checkpoint is a directory ``checkpoints/step-NNNNNNNN/`` inside the run's staging directory:
``tensors.safetensors`` (the trained parameters and buffers, the optimizer's state, every RNG
state) and ``state.json`` (the position: stage, step, token counts; the scheduler's state, the
optimizer's groups, the parts' own training state, the evaluation before training, the resolved
recipe). Safetensors and JSON only, never pickle.

Writes are atomic: a checkpoint is written into a temporary directory, flushed to disk and renamed
into place, and ``state.json`` (written last) says it is complete; a directory without it, or a
temporary one, is never read. Only the newest complete checkpoint is kept.

What makes a resumed run byte-identical to an uninterrupted one: every tensor the next step reads
is restored exactly (parameters, LoFiT's head mask, AdamW's moments and step counts, the
schedule), torch's RNG (dropout) of every process and the adapters' own generator are set back
to their state after the saved step, and the data order, a pure function of the seed, is
replayed to the saved position; the resumed loop runs only the steps after it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

STATE = "state.json"
TENSORS = "tensors.safetensors"
FORMAT = "steer-checkpoint"
FORMAT_VERSION = 1


def latest(directory: Path) -> Path | None:
    """The newest complete checkpoint in ``directory`` (None: there is none)."""
    if not directory.is_dir():
        return None
    done = [
        d
        for d in directory.iterdir()
        if d.is_dir() and d.name.startswith("step-") and (d / STATE).is_file()
    ]
    return max(done, key=lambda d: d.name) if done else None


@dataclass
class Checkpoint:
    """A checkpoint read back: its tensors and its JSON state."""

    path: Path
    tensors: dict[str, torch.Tensor]
    state: dict

    @property
    def step(self) -> int:
        return int(self.state["position"]["step"])


def read(directory: Path) -> Checkpoint | None:
    from safetensors.torch import load_file

    path = latest(directory)
    if path is None:
        return None
    state = json.loads((path / STATE).read_text())
    if state.get("format") != FORMAT or state.get("format_version") != FORMAT_VERSION:
        return None
    return Checkpoint(path, load_file(str(path / TENSORS)), state)


@dataclass
class Checkpointer:
    """When and where a run saves: every ``every_steps`` optimizer steps and every
    ``every_seconds`` of training (either may be None), into ``directory``."""

    directory: Path
    every_steps: int | None = None
    every_seconds: float | None = None
    context: dict = field(default_factory=dict)  # JSON saved with every checkpoint
    _last: float = field(default_factory=time.monotonic)

    def due(self, step: int, total: int) -> bool:
        if step >= total:
            return False  # the run is about to finish; its files are the result
        if self.every_steps and step % self.every_steps == 0:
            return True
        return bool(self.every_seconds) and time.monotonic() - self._last >= self.every_seconds

    def save(self, step: int, tensors: dict[str, torch.Tensor], state: dict) -> Path:
        """Write the checkpoint of ``step`` atomically; remove the older ones."""
        from safetensors.torch import save_file

        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"step-{step:08d}"
        tmp = self.directory / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(contiguous, str(tmp / TENSORS))
        _fsync(tmp / TENSORS)
        record = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.context, **state}
        (tmp / STATE).write_text(json.dumps(record))
        _fsync(tmp / STATE)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _fsync(self.directory)
        for old in self.directory.iterdir():
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        self._last = time.monotonic()
        return final


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- a run's checkpoints -------------------------------------------------------------------


def resume_point(staged, recipe):
    """The newest checkpoint of this run to resume from (None: start afresh)."""
    from steer_cli.errors import SteerError

    point = read(staged.checkpoints) if staged.resume else None
    if point is None:
        return None
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return point  # the main process checks and says so
    if point.state.get("recipe") != recipe.resolved():
        raise SteerError(
            f"{staged.staging} holds a checkpoint of another recipe (step {point.step})",
            "pass --restart to discard it, or --output DIR to train elsewhere",
        )
    return point  # the loop says so when it has restored it (restore_loop)


def checkpointer_for(recipe, staged, results: dict) -> Checkpointer:
    t = recipe.train
    minutes = t.save_every_minutes
    return Checkpointer(
        staged.checkpoints,
        every_steps=t.save_every,
        every_seconds=None if minutes is None else 60 * minutes,
        context={"recipe": recipe.resolved(), "before": results["eval"].get("before")},
    )


def say_if_kept(staged) -> None:
    from steer_cli.report import err_console

    point = latest(staged.checkpoints) if staged.resume else None
    if point is not None and staged.staging.is_dir():
        err_console.print(
            f"a checkpoint of this run is kept ({point.name}): the same command resumes from "
            "it, --restart discards it",
            highlight=False,
        )


# -- what the loop saves -----------------------------------------------------------------------


def _ranked(rank: int, key: str) -> str:
    """A process's name for an RNG state: the main process's unprefixed (what one process
    saves), the others' ``rank<r>.``-prefixed."""
    return key if rank == 0 else f"rank{rank}.{key}"


def rng_tensors(accelerator, generator: torch.Generator | None) -> dict:
    """Every process's RNG states, gathered (a collective: call it in every process): torch's
    CPU state and its CUDA devices' (``rng.torch``, ``rng.cuda.<i>``, per rank, see
    :func:`_ranked`), and the adapters' generator (one: it is the same in every process)."""
    own = {"rng.torch": torch.get_rng_state()}
    if accelerator.device.type == "cuda":
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            own[f"rng.cuda.{i}"] = state
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        every = gather_object([own])  # in rank order
    else:
        every = [own]
    out = {_ranked(rank, k): v for rank, states in enumerate(every) for k, v in states.items()}
    if generator is not None:
        out["rng.adapters"] = generator.get_state()
    return out


def restore_rng(tensors: dict, accelerator, generator: torch.Generator | None) -> None:
    """Set this process's RNG states back to its own saved ones. A process the checkpoint has
    none for (it was written by fewer processes) keeps its RNG as seeded."""
    rank = accelerator.process_index
    if _ranked(rank, "rng.torch") in tensors:
        torch.set_rng_state(tensors[_ranked(rank, "rng.torch")])
    if accelerator.device.type == "cuda":
        count = torch.cuda.device_count()
        cuda = [tensors.get(_ranked(rank, f"rng.cuda.{i}")) for i in range(count)]
        if all(state is not None for state in cuda):
            torch.cuda.set_rng_state_all(cuda)
    if generator is not None and "rng.adapters" in tensors:
        generator.set_state(tensors["rng.adapters"])


def optimizer_tensors(optimizer) -> tuple[dict, dict]:
    """AdamW's state as tensors (``optim.<param index>.<key>``) and its groups as JSON."""
    state = optimizer.state_dict()
    tensors = {}
    scalars: dict = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer, tensors: dict, saved: dict) -> None:
    state: dict = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, values in saved.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    groups = [
        {**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in saved["param_groups"]
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# -- a training loop's state ------------------------------------------------------------------


def _module_of(parts):
    """The module holding parts' parameters outside the model (adapters), if any."""
    from torch import nn

    module = parts if isinstance(parts, nn.Module) else getattr(parts, "module", None)
    return module if isinstance(module, nn.Module) else None


def loop_state(loop, parts, *, stage: int, local: int, counts) -> tuple[dict, dict]:
    """``(tensors, state)`` of a loop after step ``counts.steps`` (``local`` in ``stage``)."""
    tensors = {f"param.{i}": p for i, p in enumerate(loop.params)}
    module = _module_of(parts)
    if module is not None:
        tensors.update({f"buffer.{n}": b for n, b in module.named_buffers()})
    optim, groups = optimizer_tensors(loop.optimizer)
    tensors.update(optim)
    tensors.update(rng_tensors(loop.accelerator, getattr(parts, "generator", None)))
    training_state = getattr(parts, "training_state", None)
    state = {
        "position": {
            "stage": stage,
            "local": local,
            "step": counts.steps,
            "tokens": counts.tokens,
            "supervised": counts.supervised,
            "padded": counts.padded,
            "loss": counts.loss,
            "processes": loop.accelerator.num_processes,
        },
        "scheduler": loop.scheduler.state_dict(),
        "optimizer": groups,
        "parts": training_state() if training_state is not None else {},
    }
    return tensors, state


def restore_loop(loop, parts, checkpoint: Checkpoint, counts) -> int:
    """Put a loop (and its parts) back to a checkpoint's state, say so (the main process), and
    return the stage-local step it was at: the loop runs the steps after it.

    Call it inside the loop's seeded context, after the stage's setup (``begin_stage``,
    ``begin_training``), whose draws and edits this overwrites."""
    tensors, state = checkpoint.tensors, checkpoint.state
    with torch.no_grad():
        for i, p in enumerate(loop.params):
            p.copy_(tensors[f"param.{i}"].to(p.device, p.dtype))
        module = _module_of(parts)
        if module is not None:
            for name, buffer in module.named_buffers():
                if f"buffer.{name}" in tensors:
                    buffer.copy_(tensors[f"buffer.{name}"].to(buffer.device, buffer.dtype))
    load_training_state = getattr(parts, "load_training_state", None)
    if load_training_state is not None:
        load_training_state(state["parts"])
    restore_optimizer(loop.optimizer, tensors, state["optimizer"])
    loop.scheduler.load_state_dict(state["scheduler"])
    restore_rng(tensors, loop.accelerator, getattr(parts, "generator", None))
    position = state["position"]
    counts.steps, counts.loss = position["step"], position["loss"]
    counts.tokens, counts.supervised = position["tokens"], position["supervised"]
    counts.padded = position["padded"]
    if loop.accelerator.is_main_process:
        _say_resumed(checkpoint, counts.total, position, loop.accelerator.num_processes)
    return int(position["local"])


def _say_resumed(checkpoint: Checkpoint, total: int, position: dict, processes: int) -> None:
    from steer_cli.report import err_console

    step = checkpoint.step
    err_console.print(
        f"resumed from the checkpoint at step {step} of {total}: steps {step + 1}-{total} to go "
        f"({checkpoint.path}; --restart discards it)",
        highlight=False,
        soft_wrap=True,
    )
    saved = position.get("processes", 1)
    if saved != processes:
        err_console.print(
            f"[yellow]warning:[/] the checkpoint was written by {saved} processes, this run has "
            f"{processes}: it will not end with the bytes of an uninterrupted run (each "
            "process's share of a batch and its random draws differ)",
            highlight=False,
            soft_wrap=True,
        )
