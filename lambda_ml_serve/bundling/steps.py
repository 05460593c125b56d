"""Which step a build is in, for a person watching: rich's spinner on a terminal, nothing otherwise.

The build code announces each step with :func:`step`; whoever runs the build chooses, with
:func:`showing_steps`, whether and where they are shown. Without it (tests, scripts, a pipe) a step
costs a lookup and prints nothing, so the output stays what scripts parse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

_reporter: ContextVar[Callable[[str], None] | None] = ContextVar("lambda_ml_serve_build_steps", default=None)


def step(name: str) -> None:
    """Announce that the build starts ``name`` (and so finished the previous step)."""
    reporter = _reporter.get()
    if reporter is not None:
        reporter(name)


class TerminalSteps:
    """Each step on its own line: a spinner while it runs, then a tick and the time it took."""

    def __init__(self, stream: TextIO, *, force_terminal: bool | None = None) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            SpinnerColumn(finished_text="[green]✓[/green]"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=Console(file=stream, force_terminal=force_terminal),
            transient=False,
        )
        self._task: Any = None

    def __call__(self, name: str) -> None:
        self._finish()
        self._task = self._progress.add_task(name, total=1)

    def _finish(self) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=1)

    def __enter__(self) -> TerminalSteps:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._finish()
        self._progress.stop()


@contextmanager
def showing_steps(stream: TextIO, *, force_terminal: bool | None = None) -> Iterator[None]:
    """Show the build's steps on ``stream`` while the block runs, when it is a terminal (or forced)."""
    if not (force_terminal or (force_terminal is None and stream.isatty())):
        yield
        return
    with TerminalSteps(stream, force_terminal=force_terminal) as reporter:
        token = _reporter.set(reporter)
        try:
            yield
        finally:
            _reporter.reset(token)
