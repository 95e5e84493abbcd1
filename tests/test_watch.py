"""`scaler watch` run as users run it: under a pseudo-terminal (redrawn in place) and piped (plain lines)."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.fixtures.prometheus import Exporter, PrometheusServer, unique_metric
from tests.fixtures.scaler import ROOT, ScalerProcess
from tests.test_check import prometheus_trigger, scaled_object, with_crds, write

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("SCALER_")}


class PipedWatch:
    """`scaler watch` with stdout on a pipe; lines are read on a thread so a test can wait with a timeout."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scaler", *with_crds(["watch", *args])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=CLEAN_ENV,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} within {timeout}s; got:\n{''.join(self.seen[-20:])}")

    def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        _, stderr = self.proc.communicate(timeout=20)
        return self.proc.returncode, stderr


@pytest.fixture
def piped() -> Iterator[list[PipedWatch]]:
    started: list[PipedWatch] = []
    yield started
    for watch in started:
        if watch.proc.poll() is None:
            watch.proc.kill()
            watch.proc.wait(10)


def backlog(scraped: PrometheusServer, exporter: Exporter, value: float) -> str:
    metric = unique_metric("backlog")
    exporter.set(metric, value)
    scraped.wait_for_value(metric, value)
    return metric


def test_watch_on_a_terminal_redraws_the_table_when_the_reading_changes(
    tmp_path: Path, scaler: ScalerProcess, scraped: PrometheusServer, exporter: Exporter
) -> None:
    metric = backlog(scraped, exporter, 4242)
    trigger = prometheus_trigger(scraped, metric, "1000", name="backlog")
    path = write(tmp_path, scaled_object("backlog", [trigger], maxReplicaCount=20))
    child = pexpect.spawn(
        sys.executable,
        ["-m", "scaler", *with_crds(["watch", path, "--address", scaler.address, "--interval", "0.3"])],
        cwd=str(ROOT),
        env=CLEAN_ENV,
        encoding="utf-8",
        dimensions=(40, 200),
        timeout=20,
    )
    try:
        child.expect(r"0 backlog +prometheus +\S+ +4242 +1000 +AverageValue +yes +5 +[▁-█]+")
        assert "\x1b[2J" in child.before  # the screen is cleared once, then redrawn in place
        exporter.set(metric, 7373)
        child.expect(r"0 backlog +prometheus +\S+ +7373 +1000 +AverageValue +yes +8 +▁+█+")
        assert "\x1b[H" in child.before and "\x1b[2J" not in child.before  # redrawn from the top, not cleared
        child.expect("=> 8 replicas: max over triggers 8")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_watch_without_a_terminal_prints_plain_lines_and_exits_0_on_sigint(
    tmp_path: Path, scaler: ScalerProcess, scraped: PrometheusServer, exporter: Exporter, piped: list[PipedWatch]
) -> None:
    metric = backlog(scraped, exporter, 30)
    path = write(tmp_path, scaled_object("backlog", [prometheus_trigger(scraped, metric, "10", name="backlog")]))
    watch = PipedWatch(path, "--address", scaler.address, "--interval", "0.3")
    piped.append(watch)
    line = watch.wait_for(r"trigger=0:backlog metric=\S+ reading=30 target=10 active=yes$", 20)
    assert line.split()[1:3] == ["ScaledObject", "shop/backlog"]
    watch.wait_for(r"ScaledObject shop/backlog replicas=3 reason='max over triggers 3'$", 5)
    exporter.set(metric, 0)
    watch.wait_for(r"replicas=0 reason='every trigger inactive and minReplicaCount 0: scale to zero'$", 20)
    code, stderr = watch.interrupt()
    assert (code, stderr) == (0, "")
    assert not any("\x1b" in seen for seen in watch.seen)


def test_watch_shows_a_pushed_activation_before_the_next_poll(
    tmp_path: Path, scaler: ScalerProcess, scraped: PrometheusServer, exporter: Exporter, piped: list[PipedWatch]
) -> None:
    metric = backlog(scraped, exporter, 0)
    trigger = prometheus_trigger(scraped, metric, "10", name="backlog", kind="external-push")
    path = write(tmp_path, scaled_object("backlog", [trigger]))
    # A poll every 10 minutes: only the StreamIsActive push can report the activation in time.
    watch = PipedWatch(path, "--address", scaler.address, "--interval", "600")
    piped.append(watch)
    watch.wait_for(r"trigger=0:backlog .* reading=0 target=10 active=no$", 20)
    watch.wait_for(r"replicas=0 ", 5)
    exporter.set(metric, 25)
    # The pushed `true` activates at once (as in KEDA); the reading itself waits for the next poll.
    watch.wait_for(r"trigger=0:backlog .* reading=0 target=10 active=yes$", 20)
    watch.wait_for(r"replicas=1 reason='max over triggers 0, raised to the minimum 1'$", 5)
    assert watch.interrupt()[0] == 0
