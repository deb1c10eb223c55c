"""JobRunner: jobs run off the GUI thread; progress, results, errors and stops reach the GUI."""

import threading
import time

import pytest

import gui.bridge
from engine.jobs import JobError
from gui.bridge import JobRunner


def counting_job(config, ctx):
    for i in range(config["n"]):
        ctx.check()
        ctx.report({"i": i, "thread": threading.get_ident()})
    return {"status": "done", "count": config["n"]}


def slow_job(config, ctx):
    for i in range(10_000):
        if ctx.stopped():
            return {"status": "stopped", "at": i}
        time.sleep(0.01)
    return {"status": "done"}


def record(runner):
    events = {"progress": [], "returned": [], "errored": [], "order": []}
    runner.started.connect(lambda: events["order"].append("started"))
    runner.progress.connect(lambda batch: (events["progress"].append(batch),
                                           events["order"].append("progress")))
    runner.returned.connect(lambda r: (events["returned"].append(r),
                                       events["order"].append("returned")))
    runner.errored.connect(lambda e: (events["errored"].append(e),
                                      events["order"].append("errored")))
    runner.finished.connect(lambda: events["order"].append("finished"))
    return events


def test_all_progress_arrives_in_order_batched_before_the_result(qtbot):
    runner = JobRunner()
    events = record(runner)
    with qtbot.waitSignal(runner.finished, timeout=30_000):
        runner.start(counting_job, {"n": 50_000})
    updates = [u for batch in events["progress"] for u in batch]
    assert [u["i"] for u in updates] == list(range(50_000))
    assert len(events["progress"]) < 50_000 / 10  # batched, not one signal per report
    assert updates[0]["thread"] != threading.get_ident()  # ran on the worker thread
    assert events["returned"] == [{"status": "done", "count": 50_000}]
    assert events["order"][0] == "started"
    assert events["order"][-2:] == ["returned", "finished"]
    assert not runner.is_running()


def test_job_error_reaches_gui_with_its_message(qtbot):
    def failing(config, ctx):
        raise JobError("the CSV has no numbers on line 3")

    runner = JobRunner()
    events = record(runner)
    with qtbot.waitSignal(runner.finished, timeout=10_000):
        runner.start(failing)
    assert events["errored"] == ["the CSV has no numbers on line 3"]
    assert events["returned"] == []


def test_unexpected_exception_is_reported_not_swallowed(qtbot):
    def buggy(config, ctx):
        return 1 / 0

    runner = JobRunner()
    events = record(runner)
    with qtbot.waitSignal(runner.finished, timeout=10_000):
        runner.start(buggy)
    assert len(events["errored"]) == 1
    assert events["errored"][0].startswith("ZeroDivisionError")


def test_stop_ends_a_running_job(qtbot):
    runner = JobRunner()
    events = record(runner)
    runner.start(slow_job)
    qtbot.wait(100)
    runner.stop()
    with qtbot.waitSignal(runner.finished, timeout=5_000):
        pass
    assert events["returned"][0]["status"] == "stopped"


def test_stopped_exception_becomes_a_stopped_result(qtbot):
    runner = JobRunner()
    events = record(runner)
    runner.start(counting_job, {"n": 10**9})
    qtbot.waitUntil(lambda: bool(events["progress"]), timeout=10_000)
    with qtbot.waitSignal(runner.finished, timeout=5_000):
        runner.stop()
    assert events["returned"] == [{"status": "stopped"}]


def test_shutdown_stops_and_joins_the_thread(qtbot):
    runner = JobRunner()
    runner.start(slow_job)
    qtbot.wait(50)
    assert runner.is_running()
    assert runner.shutdown(timeout_ms=2_000)
    assert not runner.is_running()


def test_one_job_at_a_time(qtbot):
    runner = JobRunner()
    runner.start(slow_job)
    try:
        with pytest.raises(RuntimeError):
            runner.start(slow_job)
    finally:
        runner.shutdown()


def test_runner_can_run_again_after_finishing(qtbot):
    runner = JobRunner()
    events = record(runner)
    for n in (3, 5):
        with qtbot.waitSignal(runner.finished, timeout=10_000):
            runner.start(counting_job, {"n": n})
    assert [r["count"] for r in events["returned"]] == [3, 5]


def test_worker_pauses_while_the_gui_handles_a_batch(qtbot, monkeypatch):
    """The worker waits at its next report while a progress handler runs (no GIL tug-of-war)."""
    # This checks the wait, not its cap: a long cap keeps a stalled machine from letting the
    # worker through.
    monkeypatch.setattr(gui.bridge, "FRAME_YIELD_S", 5.0)
    counter = {"reports": 0}

    def busy_job(config, ctx):
        while not ctx.stopped():
            counter["reports"] += 1
            ctx.report({"n": counter["reports"]})
        return {"status": "stopped"}

    advanced_during_handler = []

    def slow_handler(batch):
        before = counter["reports"]
        time.sleep(0.02)
        advanced_during_handler.append(counter["reports"] - before)

    runner = JobRunner()
    runner.progress.connect(slow_handler)
    runner.start(busy_job)
    qtbot.waitUntil(lambda: len(advanced_during_handler) >= 5, timeout=10_000)
    with qtbot.waitSignal(runner.finished, timeout=5_000):
        runner.stop()
    assert max(advanced_during_handler) <= 1


def test_progress_arrives_as_the_job_sent_it(qtbot):
    """A file name that is not UTF-8 (lone surrogates in Python) must reach the tab intact."""
    def job(config, ctx):
        ctx.report({"path": "bad\udcff.jpg", "top": [(1, 2.5)]})
        return {"status": "done"}

    runner = JobRunner()
    events = record(runner)
    with qtbot.waitSignal(runner.finished, timeout=10_000):
        runner.start(job, {})
    updates = [u for batch in events["progress"] for u in batch]
    assert updates == [{"path": "bad\udcff.jpg", "top": [(1, 2.5)]}]


def test_an_outcome_queued_before_shutdown_does_not_end_the_next_job(qtbot):
    """A job that ended just before shutdown() (its outcome still queued) must not be reported
    afterwards, nor taken for the job started next."""
    runner = JobRunner()
    events = record(runner)
    runner.start(counting_job, {"n": 1})
    runner._thread.wait(5_000)  # the outcome is queued; the event loop has not run yet
    assert runner.shutdown(timeout_ms=2_000)
    runner.start(slow_job)
    try:
        started = time.perf_counter()
        qtbot.wait(100)  # delivers the old outcome
        assert time.perf_counter() - started < 2  # did not wait for the slow job
        assert runner.is_running()
        assert events["returned"] == []
    finally:
        runner.shutdown()


def test_a_job_raising_system_exit_is_reported_and_the_runner_is_free(qtbot):
    def exiting_job(config, ctx):
        raise SystemExit(2)  # argparse's way to fail, say

    runner = JobRunner()
    events = record(runner)
    with qtbot.waitSignal(runner.finished, timeout=5_000):
        runner.start(exiting_job)
    assert events["errored"] == ["SystemExit: 2"]
    assert not runner.is_running()
