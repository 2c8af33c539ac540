"""``--time-limit-min``: stop in time, with the learning rate decayed by then.

A run cut at 30 minutes with the learning rate still high ends on a noisy model, and the number of steps
that fit is hard to predict: epochs get faster as an embedding cache fills, and validations take minutes on a
CPU. So with a limit the poly decay follows whichever runs out first, the planned iterations or the time:
its progress is ``max(iteration / planned iterations, elapsed / limit)`` (``lr_schedule.learning_rate_at``).
The learning rate then falls smoothly and reaches zero when the time is up, where training stops (mid-epoch
if need be) and goes to the final checkpoint and validation. The clock starts when this process starts
training, also after ``--continue``.
"""
from __future__ import annotations

import time


class TimeBudget:
    def __init__(self, limit_minutes: float | None, start: float | None = None):
        self.limit_s = None if limit_minutes is None else float(limit_minutes) * 60.0
        self.start = time.monotonic() if start is None else start

    @property
    def limited(self) -> bool:
        return self.limit_s is not None

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def fraction_used(self) -> float:
        """Share of the limit spent so far, in [0, 1] (0 without a limit)."""
        if self.limit_s is None:
            return 0.0
        return min(1.0, self.elapsed() / max(self.limit_s, 1e-9))
