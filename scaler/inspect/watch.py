"""`scaler watch FILE`: the check table, polled every --interval, until Ctrl-C.

Polls like KEDA (GetMetricSpec once, and again after an error; then GetMetrics + IsActive), keeps a short
history of each reading, and holds a StreamIsActive open per external-push trigger so an activation
shows the moment the scaler pushes it (a pushed `true` counts at once; the next poll may clear it, as in
KEDA). On a terminal the table is redrawn in place; otherwise each poll prints plain lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from grpc import aio

from adapters.api import redact

from ..settings import SettingsError
from .check import EXIT_BAD_INPUT, EXIT_OK, current_replicas, load, open_client
from .crd import Schemas
from .manifests import ScaledResource, TriggerSpec
from .probe import ScalerClient, TriggerResult, record_error
from .report import Report, evaluate, number, render_table

HISTORY = 30
_STREAM_BACKOFF = (2.0, 60.0)  # KEDA's retry for a broken StreamIsActive: 2 s doubling to 60 s
_HOME, _CLEAR_BELOW, _CLEAR = "\x1b[H", "\x1b[J", "\x1b[2J"


@dataclass
class TriggerState:
    trigger: TriggerSpec
    specs: list[tuple[str, float]] | None = None  # from GetMetricSpec; None: ask again
    result: TriggerResult | None = None
    pushed_active: bool = False  # a StreamIsActive `true` since the last poll
    history: dict[str, deque[float]] = field(default_factory=dict)


@dataclass
class ResourceState:
    resource: ScaledResource
    current: int
    triggers: list[TriggerState]

    def report(self) -> Report:
        results = []
        for state in self.triggers:
            result = state.result or TriggerResult(state.trigger)
            if state.pushed_active and result.ok:
                result = TriggerResult(result.trigger, result.metrics, True)
            results.append(result)
        return evaluate(self.resource, results, self.current)

    def history(self) -> dict[tuple[int, str], deque[float]]:
        return {(s.trigger.index, name): values for s in self.triggers for name, values in s.history.items()}


async def poll(client: ScalerClient, resource: ScaledResource, state: TriggerState) -> None:
    if not state.trigger.external:
        state.result = TriggerResult(state.trigger)
        return
    if state.specs is None:
        try:
            state.specs = await client.spec(resource, state.trigger)
        except aio.AioRpcError as error:
            state.result = record_error(TriggerResult(state.trigger), error)
            return
    result = await client.read(resource, state.trigger, state.specs)
    if not result.ok:
        state.specs = None  # KEDA asks for the spec again after a scaler error
    for metric in result.metrics:
        state.history.setdefault(metric.name, deque(maxlen=HISTORY)).append(metric.reading)
    state.result, state.pushed_active = result, False


async def follow_pushes(
    client: ScalerClient, resource: ScaledResource, state: TriggerState, wake: Callable[[], None]
) -> None:
    """Hold StreamIsActive open; a `true` wakes the display at once. Reconnects with KEDA's backoff."""
    delay = _STREAM_BACKOFF[0]
    while True:
        call = client.stream_is_active(resource, state.trigger)
        try:
            async for message in call:
                # Redraw only for news: an activation the last poll had not seen.
                if message.result and not state.pushed_active and not (state.result and state.result.active):
                    state.pushed_active = True
                    wake()
            delay = _STREAM_BACKOFF[0]  # a clean end (e.g. the scaler restarting gracefully)
        except aio.AioRpcError:
            call.cancel()
        await asyncio.sleep(delay)
        delay = min(delay * 2, _STREAM_BACKOFF[1])


class Display:
    def __init__(self, out: TextIO, interval: float, schemas: str = "") -> None:
        self.out = out
        self.interval = interval
        self.schemas = schemas
        self.tty = out.isatty()
        self.first = True

    def show(self, states: list[ResourceState]) -> None:
        if self.tty:
            self._redraw(states)
        else:
            self._lines(states)
        self.out.flush()

    def _redraw(self, states: list[ResourceState]) -> None:
        now = time.strftime("%H:%M:%S")
        title = f"scaler watch: every {number(self.interval)}s, {now}. Ctrl-C to stop. Schemas: {self.schemas}."
        tables = "\n\n".join(render_table(s.report(), s.history()) for s in states)
        # Home, draw, clear what is left of the last frame: no flicker from clearing first.
        lines = [line + "\x1b[K" for line in f"{title}\n\n{tables}".splitlines()]
        self.out.write((_CLEAR if self.first else "") + _HOME + "\n".join(lines) + "\n" + _CLEAR_BELOW)
        self.first = False

    def _lines(self, states: list[ResourceState]) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.first:
            self.out.write(f"{stamp} schemas={self.schemas!r}\n")
            self.first = False
        for state in states:
            report = state.report()
            title = f"{stamp} {state.resource.kind} {state.resource.namespace}/{state.resource.name}"
            for result in report.results:
                label = f"trigger={result.trigger.label.replace(' ', ':')}"
                if not result.trigger.external:
                    self.out.write(f"{title} {label} not-checked type={result.trigger.type}\n")
                elif not result.ok:
                    self.out.write(f"{title} {label} error={result.error_code} message={result.error_message!r}\n")
                for metric in result.metrics:
                    self.out.write(
                        f"{title} {label} metric={metric.name} reading={number(metric.reading)} "
                        f"target={number(metric.target)} active={'yes' if result.active else 'no'}\n"
                    )
            noun = "jobs" if state.resource.kind == "ScaledJob" else "replicas"
            self.out.write(f"{title} {noun}={report.decision.replicas} reason={report.decision.reason!r}\n")


async def _watch(args: argparse.Namespace, resources: list[ScaledResource], schemas: Schemas) -> int:
    states = [ResourceState(r, current_replicas(args, r), [TriggerState(t) for t in r.triggers]) for r in resources]
    display = Display(sys.stdout, args.interval, schemas.origin)
    wake = asyncio.Event()
    stopping = False

    def stop() -> None:
        nonlocal stopping
        stopping = True
        wake.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    async with open_client(args) as client:
        streams = [
            asyncio.create_task(follow_pushes(client, s.resource, t, wake.set))
            for s in states
            for t in s.triggers
            if t.trigger.push
        ]
        try:
            next_poll = 0.0
            while not stopping:
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + args.interval
                    await asyncio.gather(*(poll(client, s.resource, t) for s in states for t in s.triggers))
                if stopping:
                    break
                display.show(states)
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), max(0.0, next_poll - time.monotonic()))
        finally:
            for task in streams:
                task.cancel()
            await asyncio.gather(*streams, return_exceptions=True)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        print("scaler: --interval must be more than 0", file=sys.stderr)
        return EXIT_BAD_INPUT
    loaded = load(args)
    if loaded is None:
        return EXIT_BAD_INPUT
    try:
        return asyncio.run(_watch(args, *loaded))
    except KeyboardInterrupt:  # Ctrl-C before the loop's own handler was installed
        return EXIT_OK
    except (SettingsError, OSError) as exc:
        print(f"scaler: {redact(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        if sys.stdout.isatty():
            sys.stdout.write("\n")
