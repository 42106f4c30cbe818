"""Detection off the proxy's request path: a worker process runs the pipeline for the audit addon.

    mitmproxy hooks -> observations -> [bounded queue] -> worker process: Pipeline.feed
                                                            -> findings file, store/sinks,
                                                               live finding lines, host totals

The audit addon (``auditor.proxy.adapter.EgressAudit``) only builds observations in mitmproxy's
event loop and hands them over here with ``put_nowait``: a user's request never waits for the
detectors, and since the worker is a *process* (threads would share the GIL with mitmproxy)
detection can use another core. Observations are plain dataclasses; the queue pickles them.

- Observations are handed over in batches (up to ``BATCH_SIZE``, or what arrived within
  ``BATCH_DELAY`` when an event loop runs): one queue put, one wake-up of the queue's feeder
  thread and one pipe write per batch rather than per observation, which is what the hand-over
  costs the proxy. Without a running event loop (tests, scripts) each goes over at once.
- The queue is bounded (in hand-overs); when it is full the batch is dropped and its
  observations counted, never waited for (``dropped``).
- A dead worker (killed, crashed) is noticed at the next hand-over, logged, and replaced with a
  new process and a new queue (``restarts``; what the dead one had not read yet is lost and
  counted in ``lost``). The new worker starts with empty state: a finding it meets again is
  new to it and is written again.
- ``stop()`` hands over an end marker and waits (bounded) for the worker to finish what is
  queued; the worker then closes its outputs and sends back its per-host totals.

The enforcement addon does not use this: it must judge a flow before it is sent on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import queue
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from auditor.model import Observation

log = logging.getLogger(__name__)

# "spawn": a fresh interpreter, nothing inherited from mitmproxy's event loop and threads
# (fork would copy them mid-flight).
START_METHOD = "spawn"
# How often the hand-over checks that the worker is alive (a syscall, so not on every call).
LIVENESS_CHECK_INTERVAL = 0.25
# The worker looks for its parent this often while idle, and leaves when the parent is gone.
PARENT_CHECK_INTERVAL = 1.0
# A batch goes over when it holds this many observations, or BATCH_DELAY after its first one:
# findings show up at most that much later, and the per-put costs are shared.
BATCH_SIZE = 32
BATCH_DELAY = 0.02
# How long stop() waits for the worker to finish what is queued and report.
DEFAULT_STOP_TIMEOUT = 10.0


@dataclass
class WorkerReport:
    """What a worker sends back when it stops."""

    summary_lines: list[str] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)


class DetectionWorker:
    """The proxy side: starts the worker process, hands observations over, restarts, stops."""

    def __init__(self, options: dict[str, Any], queue_size: int) -> None:
        # ``options``: the auditor_* option values the worker needs (plain, picklable).
        self.options = dict(options)
        self.queue_size = queue_size
        self.context = multiprocessing.get_context(START_METHOD)
        self.process: Any = None
        self.observations: Any = None
        self.reports: Any = None
        self.handed_over = 0
        self.dropped = 0
        self.restarts = 0
        self.lost = 0
        self._last_check = 0.0
        self.batch: list[Observation] = []
        self._flush_scheduled = False

    def start(self) -> None:
        self.observations = self.context.Queue(self.queue_size)
        self.reports = self.context.Queue()
        # Never let interpreter exit wait on the queue's feeder thread (a dead reader would
        # hang it): what must be delivered is flushed by stop().
        self.observations.cancel_join_thread()
        self.process = self.context.Process(
            target=run_detection_worker,
            args=(self.options, self.observations, self.reports),
            name="auditor-detection",
            daemon=True,
        )
        self.process.start()
        self._last_check = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def submit(self, obs: Observation) -> None:
        """Hand ``obs`` over without ever waiting (batched; a full queue drops and counts)."""
        now = time.monotonic()
        if now - self._last_check >= LIVENESS_CHECK_INTERVAL:
            self._last_check = now
            self.ensure_alive()
        self.batch.append(obs)
        if len(self.batch) >= BATCH_SIZE:
            self.flush()
        elif not self._flush_scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop to come back later: hand it over now
                self.flush()
                return
            self._flush_scheduled = True
            loop.call_later(BATCH_DELAY, self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> bool:
        """Put the gathered batch on the queue now; False when the queue was full (dropped)."""
        batch, self.batch = self.batch, []
        if not batch or self.observations is None:
            return True
        try:
            self.observations.put_nowait(batch)
        except queue.Full:
            self.dropped += len(batch)
            return False
        self.handed_over += len(batch)
        return True

    def ensure_alive(self) -> None:
        """Replace a worker that died (new process, new queue: the old queue's lock may be
        held by the dead reader)."""
        if self.process is None or self.process.is_alive():
            return
        exit_code = self.process.exitcode
        with contextlib.suppress(NotImplementedError, OSError):  # qsize: not on every OS
            self.lost += self.observations.qsize()
        self._discard_queues()
        self.restarts += 1
        log.warning(
            "[auditor] detection worker (pid %s) died with exit code %s; restarting it "
            "(restart %d)",
            self.process.pid,
            exit_code,
            self.restarts,
        )
        self.start()

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> WorkerReport | None:
        """Finish what is queued (waiting at most ``timeout``), stop the worker, return its
        report (None if it could not give one)."""
        if self.process is None:
            return None
        self.ensure_alive()  # a dead worker cannot flush; a new one reports at least totals
        deadline = time.monotonic() + timeout
        report: WorkerReport | None = None
        try:
            batch, self.batch = self.batch, []
            if batch:  # what was gathered still goes, waiting (bounded) for room
                self.observations.put(batch, timeout=max(0.1, deadline - time.monotonic()))
            self.observations.put(None, timeout=max(0.1, deadline - time.monotonic()))
            report = self.reports.get(timeout=max(0.1, deadline - time.monotonic()))
        except (queue.Full, queue.Empty):
            log.warning(
                "[auditor] detection worker did not finish within %.0f s; stopping it", timeout
            )
        self.process.join(timeout=max(0.1, deadline - time.monotonic()))
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=2.0)
        self._discard_queues()
        self.process = None
        return report

    def _discard_queues(self) -> None:
        for channel in (self.observations, self.reports):
            if channel is not None:
                channel.cancel_join_thread()
                channel.close()
        self.observations = self.reports = None


# --- the worker process ----------------------------------------------------------------------


def run_detection_worker(options: dict[str, Any], observations: Any, reports: Any) -> None:
    """Worker process main: the pipeline and the audit addon's outputs, fed from the queue."""
    from auditor.proxy.adapter import EgressAudit, host_summary_lines

    _log_to_stdout()
    audit = EgressAudit()
    audit.open_outputs(SimpleNamespace(**options))
    parent = os.getppid()
    stats: dict[str, int] = {"observations": 0, "errors": 0}
    while True:
        try:
            batch = observations.get(timeout=PARENT_CHECK_INTERVAL)
        except queue.Empty:
            if os.getppid() != parent:  # the proxy is gone without stopping us
                break
            continue
        if batch is None:  # the end marker: everything before it has been read
            break
        for obs in batch:
            stats["observations"] += 1
            _feed_guarded(audit.pipeline.feed, obs, stats)
    lines = host_summary_lines(audit.pipeline)
    audit.close_outputs()
    reports.put(WorkerReport(lines, stats))
    reports.close()
    reports.join_thread()  # the report must be in the pipe before this process exits


def _feed_guarded(
    feed: Callable[[Observation], None], obs: Observation, stats: dict[str, int]
) -> None:
    # The pipeline already guards each detector; this catches the rest (outputs, naming) so one
    # bad observation never ends the worker.
    try:
        feed(obs)
    except Exception as exc:
        stats["errors"] += 1
        log.warning("[auditor] detection failed on %s: %s: %s", type(obs).__name__,
                    type(exc).__name__, exc, exc_info=stats["errors"] <= 3)  # fmt: skip


def _log_to_stdout() -> None:
    """The live finding lines go where mitmdump prints its own log."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    auditor_log = logging.getLogger("auditor")
    auditor_log.addHandler(handler)
    auditor_log.setLevel(logging.INFO)
    auditor_log.propagate = False
