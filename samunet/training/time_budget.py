"""``--time-limit-min``: stop in time, and fit the learning-rate decay into the time available.

With a limit, the poly schedule should still reach a low learning rate before the run stops (a run cut at
30 minutes with the LR still high ends on a noisy model). After every epoch the number of epochs that fit
is re-estimated from the measured epoch times (validation included) and the schedule's horizon is set to
``min(planned epochs, epochs that fit)``. A hard stop mid-epoch still happens when the limit is reached.
"""
from __future__ import annotations

import math
import time


class TimeBudget:
    def __init__(self, limit_minutes: float | None, planned_epochs: int, start: float | None = None):
        self.limit_s = None if limit_minutes is None else float(limit_minutes) * 60.0
        self.planned_epochs = planned_epochs
        self.start = time.monotonic() if start is None else start
        self.epoch_seconds: list[float] = []

    @property
    def limited(self) -> bool:
        return self.limit_s is not None

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def exhausted(self) -> bool:
        return self.limit_s is not None and self.elapsed() >= self.limit_s

    def record_epoch(self, seconds: float) -> None:
        self.epoch_seconds.append(seconds)

    def horizon_epochs(self, completed_epochs: int) -> int:
        """Epochs the LR schedule should span: the planned number, or fewer when time will run out first."""
        if self.limit_s is None or not self.epoch_seconds:
            return self.planned_epochs
        recent = self.epoch_seconds[-3:]  # the first epoch includes start-up costs; recent ones are typical
        per_epoch = max(sum(recent) / len(recent), 1e-6)
        remaining = max(self.limit_s - self.elapsed(), 0.0)
        fits = completed_epochs + int(math.floor(remaining / per_epoch))
        return max(completed_epochs, min(self.planned_epochs, fits), 1)
