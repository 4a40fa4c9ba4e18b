"""``winnow train``'s console: a progress bar of steps with samples/s and loss, instead of open_clip's log.

open_clip logs through the root logger: its parameter dump (~180 lines) when training starts,
then one ``Train Epoch: E [N/M (P%)] ... X/s ... Loss: L`` line every ``log_every_n_steps``.
``TrainConsole`` turns those lines into a bar and keeps the parameter dump off the console
unless ``verbose``. It filters only open_clip's console handlers: its ``out.log`` keeps every line.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

TRAIN_LINE = re.compile(r"Train Epoch: (?P<epoch>\d+) \[\s*(?P<seen>\d+)/(?P<per_epoch>\d+) .*?"
                        r"(?P<rate>[0-9.e+]+)/s, .*?[Ll]oss: (?P<loss>[0-9.e+-]+)")


class _ConsoleFilter(logging.Filter):
    """On open_clip's console handler: training lines feed the bar, the parameter dump is hidden."""

    def __init__(self, console: TrainConsole) -> None:
        super().__init__()
        self.console = console
        self.in_params = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message == "Params:":
            self.in_params = True
            return self.console.verbose
        if self.in_params and message.startswith("  "):
            return self.console.verbose
        self.in_params = False
        match = TRAIN_LINE.search(message)
        if match is not None:
            self.console.update(int(match["epoch"]), int(match["seen"]), int(match["per_epoch"]),
                                float(match["rate"]), float(match["loss"]))
            return self.console.verbose
        return True


class TrainConsole:
    """A bar of optimizer steps with samples/s and the contrastive loss, fed by open_clip's log lines."""

    def __init__(self, total_steps: int, samples_per_step: int, verbose: bool = False, show: bool = True) -> None:
        self.total_steps = total_steps
        self.samples_per_step = max(samples_per_step, 1)
        self.verbose = verbose
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                                 TextColumn("{task.fields[rate]:>8.1f} samples/s"),
                                 TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TextColumn("eta"),
                                 TimeRemainingColumn(), disable=not show)
        self.task = self.progress.add_task("train", total=total_steps, rate=0.0, loss=float("nan"))
        self._filter = _ConsoleFilter(self)

    def update(self, epoch: int, seen: int, per_epoch: int, rate: float, loss: float) -> None:
        steps = (epoch * per_epoch + seen) // self.samples_per_step
        self.progress.update(self.task, completed=min(steps, self.total_steps), rate=rate, loss=loss)

    def _install(self, record: logging.LogRecord) -> bool:
        """A root-logger filter that puts the console filter on open_clip's console handlers as they appear."""
        for handler in logging.getLogger().handlers:
            if (type(handler) is logging.StreamHandler  # not its FileHandler: out.log keeps every line
                    and self._filter not in handler.filters):
                handler.addFilter(self._filter)
        return True

    @contextlib.contextmanager
    def attached(self) -> Iterator[TrainConsole]:
        root = logging.getLogger()
        root.addFilter(self._install)
        try:
            with self.progress:
                yield self
            self.progress.update(self.task, completed=self.total_steps)
        finally:
            root.removeFilter(self._install)
