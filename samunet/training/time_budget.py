"""``--time-limit-min``: stop in time, and fit the learning-rate decay into the time available.

With a limit, the poly schedule should still reach a low learning rate before the run stops (a run cut at
30 minutes with the LR still high ends on a noisy model). After every epoch the number of epochs that fit
is re-estimated and the schedule's horizon is set to ``min(planned epochs, epochs that fit)``. The estimate
takes the latest epoch's training time (epochs get faster while an embedding cache fills, so older ones
overstate the cost) plus the validation and checkpoint time averaged over the epochs so far. A hard stop
mid-epoch still happens when the limit is reached.
"""
from __future__ import annotations

import math
import time


class TimeBudget:
    def __init__(self, limit_minutes: float | None, planned_epochs: int, start: float | None = None):
        self.limit_s = None if limit_minutes is None else float(limit_minutes) * 60.0
        self.planned_epochs = planned_epochs
        self.start = time.monotonic() if start is None else start
        self.train_seconds: list[float] = []
        self.overhead_seconds = 0.0

    @property
    def limited(self) -> bool:
        return self.limit_s is not None

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def exhausted(self) -> bool:
        return self.limit_s is not None and self.elapsed() >= self.limit_s

    def record_epoch(self, train_seconds: float, overhead_seconds: float = 0.0) -> None:
        """An epoch's training time, and what came with it (validation, checkpoints)."""
        self.train_seconds.append(train_seconds)
        self.overhead_seconds += overhead_seconds

    def horizon_epochs(self, completed_epochs: int) -> int:
        """Epochs the LR schedule should span: the planned number, or fewer when time will run out first."""
        if self.limit_s is None or not self.train_seconds:
            return self.planned_epochs
        per_epoch = max(self.train_seconds[-1] + self.overhead_seconds / len(self.train_seconds), 1e-6)
        remaining = max(self.limit_s - self.elapsed(), 0.0)
        fits = completed_epochs + int(math.floor(remaining / per_epoch))
        return max(completed_epochs, min(self.planned_epochs, fits), 1)
