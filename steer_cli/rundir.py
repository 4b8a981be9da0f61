"""Run directories: built in a hidden sibling, moved into place only when complete.

An error or Ctrl-C never touches an existing run, and ``overwrite`` replaces one only once the
new one is complete. The staging directory (``.NAME.partial``) is removed on failure, unless it
holds a training checkpoint (``resume``): then it stays, for the same command to resume from. A
lock (``.NAME.lock``, released by the OS when the process dies) keeps two processes from writing
the same run at once.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import TracebackType

from steer_cli.errors import SteerError

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
RESULTS = "results.json"
PREDICTIONS = "predictions.jsonl"
DIAGNOSTICS = "diagnostics.json"  # joint runs: weight/activation alignment per layer
CHECKPOINTS = "checkpoints"  # inside the staging directory, while a run trains


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory ``steer train`` wrote (it has the resolved recipe)."""
    return (Path(path).expanduser() / CONFIG).is_file()


class StagedRun:
    def __init__(self, final: str | Path, *, overwrite: bool = False, resume: bool = False):
        self.final = Path(final)
        self.overwrite = overwrite
        self.resume = resume
        self.staging = self.final.with_name(f".{self.final.name}.partial")
        self.lock_path = self.final.with_name(f".{self.final.name}.lock")
        self._lock_fd: int | None = None

    def check(self) -> None:
        """Fail before any expensive work if the run cannot be written."""
        if self.final.exists() and not self.overwrite:
            raise SteerError(
                f"run directory {self.final} already exists",
                "pass --overwrite to replace it, or --output DIR to write elsewhere",
            )
        if self.final.exists() and not self.final.is_dir():
            raise SteerError(f"{self.final} exists and is not a directory")

    @property
    def checkpoints(self) -> Path:
        return self.staging / CHECKPOINTS

    def has_checkpoint(self) -> bool:
        from steer_cli.checkpoints import latest

        return self.staging.is_dir() and latest(self.checkpoints) is not None

    def __enter__(self) -> Path:
        self.check()
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            for stale in self.final.parent.glob(f".{self.final.name}.partial-*"):
                shutil.rmtree(stale, ignore_errors=True)  # steer 0.1.0's, per process
            if not (self.resume and self.has_checkpoint()):
                shutil.rmtree(self.staging, ignore_errors=True)
            self.staging.mkdir(parents=True, exist_ok=True)
        except BaseException:
            self._unlock()
            raise
        return self.staging

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is not None:
                if not (self.resume and self.has_checkpoint()):
                    shutil.rmtree(self.staging, ignore_errors=True)
                return
            old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
            if self.final.exists():
                os.replace(self.final, old)
            os.replace(self.staging, self.final)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            self._unlock()

    def _lock(self) -> None:
        import fcntl

        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SteerError(
                f"another steer process is writing {self.final} (it holds {self.lock_path})",
                "wait for it to finish, or write elsewhere with --output DIR",
            ) from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is None:
            return
        import fcntl

        self.lock_path.unlink(missing_ok=True)
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)
        self._lock_fd = None


class ShadowRun:
    """What a non-main process of a multi-process run writes into: a scratch directory that is
    discarded, and the main process's checkpoints to resume from (read only, never locked)."""

    def __init__(self, final: str | Path, *, resume: bool = False):
        self.main = StagedRun(final, resume=resume)
        self.resume = resume
        self.staging = self.main.staging
        self._scratch: Path | None = None

    @property
    def checkpoints(self) -> Path:
        return self.main.checkpoints

    def has_checkpoint(self) -> bool:
        return self.main.has_checkpoint()

    def check(self) -> None:
        """The main process checks the output."""

    def __enter__(self) -> Path:
        import tempfile

        self._scratch = Path(tempfile.mkdtemp(prefix="steer-rank-"))
        return self._scratch

    def __exit__(self, *exc) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


def default_output(name: str) -> Path:
    return Path("runs") / name
