"""Live progress of a search in the terminal: a bar over trial-epochs and a line per finished trial."""

from __future__ import annotations

import math

from ray.tune import Callback
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class SearchProgress(Callback):
    """Counts epochs against the worst case (every trial runs every epoch) and the best metric so far."""

    def __init__(self, console: Console, num_samples: int, max_epochs: int, metric: str, mode: str):
        self.console = console
        self.metric, self.mode = metric, mode
        self.max_epochs = max_epochs
        self.best = math.inf if mode == "min" else -math.inf
        self._trials_done = 0
        self._num_samples = num_samples
        self._epochs_seen: dict[str, int] = {}
        self._make_bar()

    def _make_bar(self) -> None:
        self._progress = Progress(
            TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=self.console, transient=False,
        )
        self._task = self._progress.add_task("search", total=self._num_samples * self.max_epochs, status="")

    # Tune pickles its run config (callbacks included) into the experiment directory so that
    # `Tuner.restore` can rebuild it; the terminal handles are rebuilt rather than pickled.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_progress", None)
        state.pop("console", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.console = Console(stderr=True)
        self._make_bar()

    def setup(self, **info) -> None:
        self._progress.start()

    def _improves(self, value: float) -> bool:
        return value < self.best if self.mode == "min" else value > self.best

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get(self.metric)
        if value is not None and self._improves(value):
            self.best = value
        self._epochs_seen[trial.trial_id] = int(result.get("epoch", 0))
        self._progress.update(self._task, completed=sum(self._epochs_seen.values()), status=self._status())

    def _finish(self, trial, how: str) -> None:
        self._trials_done += 1
        last = trial.last_result or {}
        epochs = int(last.get("epoch", 0))
        if how == "completed" and epochs < self.max_epochs:
            how = "stopped early"
        # a trial that ends early releases its remaining epochs from the bar's worst case
        self._progress.update(self._task, total=self._task_total() - (self.max_epochs - epochs),
                              status=self._status())
        value = last.get(self.metric)
        shown = f"{value:.5f}" if isinstance(value, float) else "-"
        self.console.log(f"trial {trial.trial_id} {how} after {epochs} epoch(s): {self.metric}={shown}")

    def _task_total(self) -> float:
        return self._progress.tasks[0].total or 0

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, "completed")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, "[red]failed[/red]")

    def _status(self) -> str:
        best = "-" if math.isinf(self.best) else f"{self.best:.5f}"
        return f"trials {self._trials_done}/{self._num_samples} · best {self.metric} {best}"

    def on_experiment_end(self, trials, **info) -> None:
        self._progress.stop()
