"""A progress bar per stage on a terminal (Spark's console progress bar): tasks
done / total, records and shuffle bytes. Silent when stderr is not a terminal."""

from __future__ import annotations

import sys
from typing import Any

from shoal.core.units import format_size


class ProgressReporter:
    def __init__(self, enabled: bool = True, console: Any = None) -> None:
        """``console``: a rich Console to draw on (default: stderr, when a terminal)."""
        self.enabled = enabled and (console is not None or sys.stderr.isatty())
        self._console = console
        self._progress: Any = None
        self._bars: dict[int, Any] = {}
        self._totals: dict[int, dict[str, int]] = {}

    def _ensure(self) -> Any:
        if self._progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                console=self._console or Console(stderr=True), transient=True, auto_refresh=False,
            )
            self._progress.start()
        return self._progress

    def stage_started(self, stage_id: int, attempt: int, name: str, num_tasks: int) -> None:
        if not self.enabled:
            return
        p = self._ensure()
        label = f"Stage {stage_id}" + (f".{attempt}" if attempt else "") + f" ({name})"
        self._totals[stage_id] = {"records": 0, "shuffle": 0}
        self._bars[stage_id] = p.add_task(label, total=num_tasks, detail="")

    def task_ended(self, stage_id: int, res: Any) -> None:
        if not self.enabled or stage_id not in self._bars or res.state != "succeeded":
            return
        t = self._totals[stage_id]
        m = res.metrics
        t["records"] += m.records_in or m.shuffle_read_records
        t["shuffle"] += m.shuffle_read_bytes + m.shuffle_write_bytes
        detail = f"{t['records']:,} records, shuffle {format_size(t['shuffle'])}"
        self._progress.update(self._bars[stage_id], advance=1, detail=detail)

    def stage_ended(self, stage_id: int, failure: str) -> None:
        if not self.enabled:
            return
        bar = self._bars.pop(stage_id, None)
        if bar is not None:
            self._progress.remove_task(bar)

    def refresh(self) -> None:
        if self._progress is not None:
            self._progress.refresh()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
