"""An export's output directory, built in a hidden sibling and renamed into place when complete:
an error or Ctrl-C leaves no half-written export, and ``--overwrite`` replaces an old one only
once the new one is whole."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from steer_cli.errors import SteerError


class StagedExport:
    def __init__(self, final: Path, run_dir: Path, *, overwrite: bool = False):
        self.final = final
        self.run_dir = run_dir
        self.overwrite = overwrite
        self.staging: Path | None = None

    def check(self) -> None:
        """Refuse an existing output (unless overwriting a directory) and any output that holds
        the run itself, which overwriting would destroy."""
        final, run = self.final.resolve(), self.run_dir.resolve()
        if final == run or final in run.parents:
            raise SteerError(
                f"the output {self.final} holds the run {self.run_dir} itself",
                "write the export elsewhere (-o DIR outside the run directory)",
            )
        if not self.final.exists():
            return
        if not self.overwrite:
            raise SteerError(
                f"{self.final} already exists",
                "pass --overwrite to replace it, or -o DIR to write elsewhere",
            )
        if not self.final.is_dir():
            raise SteerError(f"{self.final} exists and is not a directory; not replacing it")

    def __enter__(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(
            tempfile.mkdtemp(prefix=f".{self.final.name}.partial-", dir=self.final.parent)
        )
        return self.staging

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.staging is not None
        if exc_type is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            return
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.staging, 0o777 & ~umask)  # mkdtemp makes it 0700
        old = None
        if self.final.exists():  # --overwrite: move the old one aside, then drop it
            old = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.old-", dir=self.final.parent))
            os.replace(self.final, old / self.final.name)
        try:
            os.replace(self.staging, self.final)
        except BaseException:
            if old is not None:  # put the old export back
                os.replace(old / self.final.name, self.final)
            shutil.rmtree(self.staging, ignore_errors=True)
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
