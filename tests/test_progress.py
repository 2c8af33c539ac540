"""Progress without a terminal: plain log lines with done/total, rate and time left, also from loops over
iterations (a slow epoch under nohup must not look hung); on a terminal, a bar and no log lines."""
from __future__ import annotations

import pytest

import samunet.utils.progress as progress_module
from samunet.utils.logs import setup_logging


@pytest.fixture
def fake_clock(monkeypatch):
    """perf_counter returns ``clock.now``; the test moves it on between items."""

    class Clock:
        now = 0.0

    clock = Clock()
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: clock.now)
    return clock


def run_loop(clock, items, seconds_per_item: float, **options) -> list:
    out = []
    for item in progress_module.progress(items, **options):
        out.append(item)
        clock.now += seconds_per_item
    return out


def test_an_iteration_loop_prints_a_line_with_rate_and_time_left_after_30_s(fake_clock, capsys, monkeypatch,
                                                                             tmp_path):
    monkeypatch.setattr(progress_module, "interactive", lambda: False)
    log_file = setup_logging(tmp_path, "train")
    # 250 iterations of 0.5 s: lines at 30, 60, 90 and 120 s (iterations 60, 120, 180, 240), none for the last
    assert run_loop(fake_clock, range(250), 0.5, desc="epoch 0", unit="it", lines=False) == list(range(250))
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(" (")[0] for ln in lines] == [f"epoch 0: {n}/250 it(s) done" for n in (60, 120, 180, 240)]
    assert lines[0] == "epoch 0: 60/250 it(s) done (30 s, 2.00 it/s, 1.6 min left)"
    assert lines[-1] == "epoch 0: 240/250 it(s) done (2.0 min, 2.00 it/s, 5 s left)"
    assert lines[0] in log_file.read_text()  # the fold's log file gets the same line


def test_a_slow_iteration_loop_reports_seconds_per_item(fake_clock, capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "interactive", lambda: False)
    setup_logging()
    run_loop(fake_clock, range(10), 40.0, desc="slices", unit="chunk", lines=False)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10  # each 40 s chunk passes the 30 s mark
    assert lines[0] == "slices: 1/10 chunk(s) done (40 s, 40.0 s/chunk, 6.0 min left)"
    assert lines[-1] == "slices: 10/10 chunk(s) done (6.7 min, 40.0 s/chunk)"


def test_a_fast_iteration_loop_prints_nothing(fake_clock, capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "interactive", lambda: False)
    setup_logging()
    run_loop(fake_clock, range(100), 0.29, desc="epoch 1", unit="it", lines=False)  # 29 s in all
    assert capsys.readouterr().out == ""


def test_case_lines_come_at_most_every_10_s_and_at_the_end(fake_clock, capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "interactive", lambda: False)
    setup_logging()
    run_loop(fake_clock, list("abcdefgh"), 4.0, desc="predicting", unit="case")
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["predicting: 3/8 case(s) done (12 s, 4.0 s/case, 20 s left)",
                     "predicting: 6/8 case(s) done (24 s, 4.0 s/case, 8 s left)",
                     "predicting: 8/8 case(s) done (32 s, 4.0 s/case)"]


def test_a_disabled_loop_prints_nothing_however_long(fake_clock, capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "interactive", lambda: False)
    setup_logging()
    assert run_loop(fake_clock, range(5), 60.0, desc="epoch 0", lines=False, disable=True) == list(range(5))
    assert capsys.readouterr().out == ""


def test_a_terminal_run_draws_a_bar_and_logs_no_line(fake_clock, capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "interactive", lambda: True)
    setup_logging()
    run_loop(fake_clock, range(5), 60.0, desc="epoch 0", unit="it", lines=False)
    run_loop(fake_clock, range(3), 60.0, desc="predicting", unit="case")
    captured = capsys.readouterr()
    assert captured.out == ""  # no log lines: the bar (on stderr) is the progress
    assert "epoch 0" in captured.err and "predicting" in captured.err
