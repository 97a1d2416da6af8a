"""A paired run as it goes: its repeats, server starts, phases' results and status, saved to
results.json (and report.md) after every step, so nothing measured is lost."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfgate import environment
from perfgate.documents.io import (
    ResultError,
    check_writable_dir,
    special_file_problem,
    write_json,
    write_text_private,
)
from perfgate.documents.run import CompareRun, recorded
from perfgate.documents.spec import ScenarioError
from perfgate.measure.bench import ProgressFn
from perfgate.report.markdown import render_compare_markdown


class RunFailed(Exception):
    """The run could not finish; results so far are written. ``status`` says how it ended;
    ``run`` (set by ``run_compare``) is the run, with where its files went."""

    def __init__(self, message: str, status: str = "failed") -> None:
        super().__init__(message)
        self.status = status
        self.run: LiveRun | None = None


SayFn = Callable[[str], None]  # one line per phase


_SAVING = threading.RLock()


def make_run_dir(run_dir: Path) -> None:
    """Create the run directory readable by its owner only (it holds server logs and the
    servers' environment), and prove it can be written before anything is measured."""
    try:
        check_writable_dir(run_dir, f"--out-dir {run_dir}", private=True)
    except ResultError as exc:
        raise ScenarioError(str(exc)) from None
    for name in ("results.json", "report.md"):
        if (problem := special_file_problem(run_dir / name)) is not None:
            raise ScenarioError(f"--out-dir {run_dir}: {name} there is {problem}; give another")


@dataclass
class LiveRun(CompareRun):
    """A compare run as it goes: the document, where its files go, and how it saves them."""

    run_dir: Path = Path(".")
    environment: dict[str, Any] = field(default_factory=environment.capture)
    bench_progress: ProgressFn | None = None
    # Where results go once the run directory cannot be written (disk full, removed): a
    # private temporary directory, so nothing measured is lost. ``save_error`` says why.
    fallback_dir: Path | None = None
    save_error: str | None = None

    @property
    def results_path(self) -> Path:
        return (self.fallback_dir or self.run_dir) / "results.json"

    @property
    def report_path(self) -> Path:
        return self.results_path.parent / "report.md"

    def write_report(self) -> None:
        """report.md beside results.json, rendered from what results.json holds."""
        write_text_private(self.report_path, render_compare_markdown(recorded(self)))

    def save(self) -> None:
        """Write results.json; if the run directory cannot take it, write it to a private
        temporary directory instead (and keep writing there), never losing the data. Safe
        from several threads (arms measured in parallel)."""
        with _SAVING:
            self._save()

    def _save(self) -> None:
        doc = self.to_json()
        try:
            write_json(self.results_path, doc)
        except OSError as exc:
            if self.fallback_dir is not None:
                raise
            self.save_error = f"cannot write {self.results_path} ({exc.strerror or exc})"
            self.fallback_dir = Path(tempfile.mkdtemp(prefix=f"perfgate-{self.scenario.name}-"))
            write_json(self.results_path, doc)
