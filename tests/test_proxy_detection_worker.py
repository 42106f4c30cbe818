"""The audit addon's detection worker (auditor.proxy.detection_worker): same findings as inline
detection, a full queue drops without blocking, a killed worker is replaced.

Observations come from the shipped sample capture (the same types the proxy hooks build) and
are handed to the addon's ``feed``, the single entry point every hook uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mitmproxy")

from mitmproxy.test import taddons

from auditor.capture.engine import CaptureStats, read_observations
from auditor.model import HTTPRequest, Observation
from auditor.proxy.adapter import EgressAudit
from auditor.proxy.detection_worker import LIVENESS_CHECK_INTERVAL

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "egress-demo.pcap"


def sample_observations() -> list[Observation]:
    return list(read_observations(SAMPLE, CaptureStats()))


def findings_in(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_host(path: Path, host: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(f["host"] == host for f in findings_in(path)):
            return
        time.sleep(0.05)
    raise AssertionError(f"no finding for {host} in {path} within {timeout} s")


@pytest.fixture
def worker_audit(tmp_path: Path) -> Iterator[tuple[EgressAudit, Path, Any]]:
    """The addon in worker mode, findings to a file; stopped (and its worker) even on failure."""
    addon = EgressAudit()
    findings = tmp_path / "findings.jsonl"
    with taddons.context(addon) as tctx:
        try:
            tctx.configure(
                addon,
                auditor_detection="worker",
                auditor_detection_queue=4,
                auditor_findings_jsonl=str(findings),
            )
            assert addon.worker is not None
            yield addon, findings, tctx
        finally:
            worker = addon.worker
            if worker is not None and worker.process is not None and worker.pid is not None:
                with contextlib.suppress(ProcessLookupError):  # a test may have paused it
                    os.kill(worker.pid, signal.SIGCONT)
            addon.done()


def finding_order(finding: dict[str, Any]) -> tuple[str, str, str]:
    return finding["host"], finding["kind"], json.dumps(finding, sort_keys=True)


def run_sample(tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture) -> tuple[list, list]:
    addon = EgressAudit()
    findings = tmp_path / f"findings-{mode}.jsonl"
    caplog.clear()
    with taddons.context(addon) as tctx, caplog.at_level(logging.INFO, logger="auditor"):
        tctx.configure(
            addon,
            auditor_detection=mode,
            auditor_detection_queue=1000,  # the whole sample fits: nothing dropped
            auditor_findings_jsonl=str(findings),
        )
        assert (addon.worker is not None) == (mode == "worker")
        for obs in sample_observations():
            addon.feed(obs)
        addon.done()
    totals = [r.getMessage() for r in caplog.records if "[auditor]" in r.getMessage()]
    return findings_in(findings), totals


def test_worker_gives_the_same_findings_and_totals_as_inline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inline_findings, inline_totals = run_sample(tmp_path, "inline", caplog)
    worker_findings, worker_totals = run_sample(tmp_path, "worker", caplog)
    assert len(inline_findings) >= 5  # the sample shows every detector
    assert sorted(worker_findings, key=finding_order) == sorted(inline_findings, key=finding_order)
    host_lines = [line for line in inline_totals if "host(s) seen" in line or "]   " in line]
    assert len(host_lines) > 1
    assert [line for line in worker_totals if line in host_lines] == host_lines


def test_a_full_queue_drops_and_counts_without_blocking(
    worker_audit: tuple[EgressAudit, Path, Any],
) -> None:
    addon, _, _ = worker_audit
    assert addon.worker is not None and addon.worker.pid is not None
    os.kill(addon.worker.pid, signal.SIGSTOP)  # a stalled worker reads nothing
    observations = sample_observations()
    started = time.monotonic()
    for obs in observations:
        addon.feed(obs)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0  # put_nowait: a flow never waits for the worker
    # No event loop runs here, so each observation is its own hand-over: the queue held 4.
    assert addon.worker.dropped == len(observations) - 4
    assert any(
        f"'detection.dropped_queue_full': {len(observations) - 4}" in line
        for line in addon.summary_lines()
    )


def test_a_killed_worker_is_restarted_and_later_findings_arrive(
    worker_audit: tuple[EgressAudit, Path, Any],
) -> None:
    addon, findings, _ = worker_audit
    requests = {o.server_name: o for o in sample_observations() if isinstance(o, HTTPRequest)}
    first, second = sorted(requests)[:2]
    assert addon.worker is not None
    addon.feed(requests[first])
    wait_for_host(findings, first)
    first_pid = addon.worker.pid
    assert first_pid is not None
    os.kill(first_pid, signal.SIGKILL)
    addon.worker.process.join(timeout=5)
    time.sleep(LIVENESS_CHECK_INTERVAL * 1.5)  # the hand-over checks at most this often
    addon.feed(requests[second])
    assert addon.worker.restarts == 1
    assert addon.worker.pid != first_pid
    wait_for_host(findings, second)
    worker = addon.worker
    addon.done()
    assert worker.process is None  # stopped
    assert addon.stats["detection.worker_restarts"] == 1


def test_worker_options_are_checked_in_the_proxy(tmp_path: Path) -> None:
    from mitmproxy.exceptions import OptionsError

    addon = EgressAudit()
    with taddons.context(addon) as tctx:
        try:
            with pytest.raises(OptionsError, match="auditor_detection_queue must be a positive"):
                tctx.configure(addon, auditor_detection_queue=0)
            with pytest.raises(OptionsError, match="auditor_findings_jsonl: cannot write"):
                tctx.configure(
                    addon, auditor_findings_jsonl=str(tmp_path / "no" / "dir" / "f.jsonl")
                )
        finally:
            addon.done()


def test_in_an_event_loop_observations_go_over_in_batches_and_all_arrive(tmp_path: Path) -> None:
    from auditor.proxy.adapter import WORKER_OPTIONS
    from auditor.proxy.detection_worker import BATCH_DELAY, DetectionWorker

    options: dict[str, Any] = {name: "" for name in WORKER_OPTIONS}
    options.update(auditor_reveal_evidence=False, auditor_sinks=[])
    worker = DetectionWorker(options, queue_size=8)
    observations = sample_observations()
    worker.start()
    try:

        async def hand_over() -> int:
            puts = 0
            real_flush = worker.flush

            def counting_flush() -> bool:
                nonlocal puts
                puts += bool(worker.batch)
                return real_flush()

            worker.flush = counting_flush  # type: ignore[method-assign]
            for obs in observations:
                worker.submit(obs)
            await asyncio.sleep(BATCH_DELAY * 5)  # the last partial batch goes by the timer
            return puts

        puts = asyncio.run(hand_over())
        assert not worker.batch
        assert puts < len(observations) / 10  # batched, yet 8 hand-overs held all of them
        assert worker.dropped == 0 and worker.handed_over == len(observations)
    finally:
        report = worker.stop()
    assert report is not None and report.stats["observations"] == len(observations)
    assert any("host(s) seen" in line for line in report.summary_lines)
