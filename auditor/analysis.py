"""Offline analysis of capture files: the capture source wired to the pipeline.

``analyse_captures`` is what ``auditor pcap`` (and the benchmark) run: for each file, the chosen
engine yields observations, the pipeline turns them into findings and the per-host table.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from auditor.detectors.base import DetectionContext
from auditor.model import Connection, Finding, Observation
from auditor.pipeline import AnalysisResult, FindingCallback, Pipeline

if TYPE_CHECKING:
    from auditor.capture import CaptureStats

ENGINES = ("fast", "tshark")
# How often (wall time) ``sync_findings`` sees the merged findings during a run, so that a long
# analysis shows its findings in the store as it goes and a crash loses at most this much of
# it. Each sync rewrites every finding that grew since the previous one: a run of a few
# seconds (most captures) writes them once, at the end.
SYNC_INTERVAL_SECONDS = 5.0


@dataclass
class CaptureReport:
    """Per-file facts for the summary line: what was read and what was skipped."""

    path: Path
    stats: CaptureStats
    error: str | None = None


@dataclass
class OfflineResult:
    analysis: AnalysisResult
    captures: list[CaptureReport] = field(default_factory=list)

    @property
    def unreadable(self) -> list[CaptureReport]:
        return [c for c in self.captures if c.error]


def engine_reader(engine: str) -> Callable[..., Iterator[Observation]]:
    """The ``read_observations(path, stats, progress=None)`` function of an engine."""
    if engine == "fast":
        from auditor.capture.engine import read_observations

        return read_observations
    if engine == "tshark":
        from auditor.capture.tshark_engine import read_observations_tshark

        return read_observations_tshark
    raise ValueError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")


def analyse_captures(
    paths: Sequence[str | Path],
    ctx: DetectionContext,
    *,
    engine: str = "fast",
    on_connection: Callable[[Connection], None] | None = None,
    on_finding: FindingCallback | None = None,
    sync_findings: Callable[[Iterable[Finding]], None] | None = None,
    progress: Callable[[Path, int], None] | None = None,
) -> OfflineResult:
    """Analyse capture files in order, as one stream of traffic (DNS in one file names the next).

    ``sync_findings`` (e.g. ``FindingsRecorder.sync``) is handed every merged finding every
    ``SYNC_INTERVAL_SECONDS`` and at the end (also after an interruption): cheaper than
    ``on_finding``'s call per occurrence when only the running totals matter.
    A file that cannot be read is reported in ``captures`` with its error; the others go on.
    """
    from auditor.capture import CaptureError, CaptureStats

    read = engine_reader(engine)
    pipeline = Pipeline(ctx, on_connection=on_connection, on_finding=on_finding)
    # Signatures, modules and caches live for the whole run: move them out of the collector's
    # sight, and collect young objects less often (observations are short-lived and acyclic;
    # the flow table is bounded), which cut ~0.25 s per million packets.
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, *thresholds[1:])
    reports: list[CaptureReport] = []
    next_sync = time.monotonic() + SYNC_INTERVAL_SECONDS
    try:
        for raw_path in paths:
            path = Path(raw_path)
            stats = CaptureStats()
            report = CaptureReport(path=path, stats=stats)
            reports.append(report)

            def file_progress(done: int, _path: Path = path) -> None:
                if progress is not None:
                    progress(_path, done)

            try:
                for obs in read(path, stats, progress=file_progress):
                    pipeline.feed(obs)
                    if sync_findings is not None and time.monotonic() >= next_sync:
                        sync_findings(pipeline.findings.values())
                        next_sync = time.monotonic() + SYNC_INTERVAL_SECONDS
            except CaptureError as exc:
                report.error = str(exc)
    finally:
        if sync_findings is not None:
            sync_findings(pipeline.findings.values())
        gc.set_threshold(*thresholds)
        gc.unfreeze()
    return OfflineResult(analysis=pipeline.result(), captures=reports)
