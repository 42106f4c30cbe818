"""The proxy benchmark (``bench/bench_proxy.py``): its arithmetic, its report, and one tiny run.

No timing is asserted: the run checks that every configuration answered every request, that the
auditor really audited the traffic, that the streamed answer arrived in pieces, and that the
benchmark left no process of its own behind.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import bench_proxy  # noqa: E402  (bench/ is a directory of scripts, not a package)

# --- arithmetic and the request -------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 100..1, unsorted on purpose
    assert bench_proxy.percentile(values, 0.50) == 50.0
    assert bench_proxy.percentile(values, 0.99) == 99.0
    assert bench_proxy.percentile(values, 1.0) == 100.0
    assert bench_proxy.percentile([7.0], 0.99) == 7.0
    assert bench_proxy.percentile([], 0.5) == 0.0


def test_chat_request_carries_a_prompt_of_the_asked_size() -> None:
    body = bench_proxy.chat_request(2048)
    assert body["model"] and "stream" not in body
    assert len(body["messages"][-1]["content"]) == 2048
    assert 2048 < len(json.dumps(body)) < 2600  # ~2 KB on the wire, as the brief says
    assert bench_proxy.chat_request(100, stream=True)["stream"] is True


def test_process_cpu_seconds_counts_this_process_work() -> None:
    before = bench_proxy.process_cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.1
    while time.process_time() < deadline:
        pass
    assert bench_proxy.process_cpu_seconds(os.getpid()) > before
    assert bench_proxy.process_cpu_seconds(2**22 + 12345) == 0.0  # no such process


def test_arguments_are_bounded() -> None:
    with pytest.raises(SystemExit):
        bench_proxy.parse_arguments(["--requests", "0"])
    with pytest.raises(SystemExit):
        bench_proxy.parse_arguments(["--phase-seconds", "0"])


# --- the report ------------------------------------------------------------------------------


def _result(auditor_rate: float, auditor_first_chunk_ms: float) -> bench_proxy.Result:
    def summary(name: str, rate: float, p50: float, cpu: float | None) -> bench_proxy.Summary:
        return bench_proxy.Summary(name, 1000, 0, 1000 / rate, rate, p50, p50 * 3, 0.0, 0.0, cpu)

    settings = vars(bench_proxy.parse_arguments(["--stream-pause", "0.25"]))
    return bench_proxy.Result(
        date="2026-01-01 00:00 UTC",
        machine={
            "cpus": 2,
            "platform": "test",
            "python": "3.11",
            "mitmproxy": "11.0.2",
            "load_average_at_start": [0.0, 0.0, 0.0],
        },
        settings=settings,
        summaries=[
            summary(bench_proxy.DIRECT, 1000.0, 5.0, None),
            summary(bench_proxy.NO_ADDON, 500.0, 15.0, 2.0),
            summary(bench_proxy.NOOP_ADDON, 400.0, 16.0, 2.5),
            summary(bench_proxy.AUDITOR_ADDON, auditor_rate, 18.0, 1000 / auditor_rate),
        ],
        rounds=[],
        streams=[
            {
                "configuration": bench_proxy.DIRECT,
                "streams": 1,
                "errors": 0,
                "first_error": None,
                "first_chunk_p50_ms": 1.0,
                "first_chunk_max_ms": 1.0,
                "complete_p50_ms": 251.0,
            },
            {
                "configuration": bench_proxy.AUDITOR_ADDON,
                "streams": 1,
                "errors": 0,
                "first_error": None,
                "first_chunk_p50_ms": auditor_first_chunk_ms,
                "first_chunk_max_ms": auditor_first_chunk_ms,
                "complete_p50_ms": 255.0,
            },
        ],
        auditor_saw=["ai-service.inventory"],
        auditor_problems=[],
    )


def test_report_gives_the_ratio_and_says_when_the_target_is_missed() -> None:
    within = _result(auditor_rate=380.0, auditor_first_chunk_ms=4.0)
    assert within.auditor_vs_noop == pytest.approx(0.95)
    assert within.auditor_vs_noop_cpu == pytest.approx((1000 / 380) / 2.5)
    text = bench_proxy.report(within)
    assert "0.950 (cost 5.0%; target < 10%: within)" in text
    assert "| mitmdump + egress_audit.py | 1,000 | 0 | 380 | 0.38x |" in text
    assert "before the upstream's pause ended in every stream" in text

    over = bench_proxy.report(_result(auditor_rate=300.0, auditor_first_chunk_ms=4.0))
    assert "(cost 25.0%; target < 10%: OVER)" in over


def test_report_flags_a_stream_whose_first_chunk_waited_for_the_pause() -> None:
    text = bench_proxy.report(_result(auditor_rate=380.0, auditor_first_chunk_ms=260.0))
    assert (
        f"BUFFERED? first chunk not before the pause through: {bench_proxy.AUDITOR_ADDON}" in text
    )


# --- the upstream and a whole run, on loopback -----------------------------------------------


def _child_pids() -> set[int]:
    children: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with open(task / "children", encoding="ascii") as listing:
            children.update(int(pid) for pid in listing.read().split())
    return {pid for pid in children if Path(f"/proc/{pid}").exists()}


@pytest.mark.network
def test_pausing_upstream_sends_the_first_chunk_before_the_rest(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    httpx = pytest.importorskip("httpx")
    ca = trustme.CA()
    issued = ca.issue_cert(bench_proxy.API_NAME)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    issued.configure_cert(tls)
    upstream = bench_proxy.Upstream(lambda asked: asked, tls)
    upstream.release_stream = bench_proxy.FixedPause(0.3)  # type: ignore[assignment]
    try:
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        target = bench_proxy.Target(
            "direct",
            f"https://127.0.0.1:{upstream.port}{bench_proxy.CHAT_PATH}",
            ca_file,
            sni_hostname=bench_proxy.API_NAME,
        )
        with target.client(timeout=10) as client, client.stream(
            "POST", target.url, json=bench_proxy.chat_request(64, stream=True),
            extensions=target.extensions,
        ) as answer:  # fmt: skip
            chunks = answer.iter_bytes()
            first = next(chunks)
            rest = b"".join(chunks)
        assert isinstance(answer, httpx.Response) and answer.status_code == 200
        assert b"Hel" in first and b" there" not in first  # the rest waited for the pause
        assert b" there" in rest and b"[DONE]" in rest
    finally:
        upstream.stop()


@pytest.mark.network
def test_a_tiny_run_measures_every_configuration_and_stops_everything() -> None:
    pytest.importorskip("trustme")
    pytest.importorskip("httpx")
    pytest.importorskip("mitmproxy")
    if shutil.which("mitmdump") is None:
        pytest.skip("mitmdump not installed (pip install -e '.[proxy]')")
    children_before = _child_pids()
    args = bench_proxy.parse_arguments(
        ["--requests", "15", "--rounds", "1", "--clients", "2", "--streams", "1",
         "--stream-pause", "0.2", "--phase-seconds", "30"]
    )  # fmt: skip
    result = bench_proxy.run(args, log=lambda line: None)

    assert [s.configuration for s in result.summaries] == list(bench_proxy.CONFIGURATIONS)
    for summary in result.summaries:
        assert (summary.requests, summary.errors) == (15, 0), summary.first_error
    assert result.summary(bench_proxy.DIRECT).proxy_cpu_ms_per_request is None
    assert result.summary(bench_proxy.AUDITOR_ADDON).proxy_cpu_ms_per_request is not None
    # The auditor saw the calls under the name the clients used, and nothing inside it failed.
    assert "ai-service.inventory" in result.auditor_saw
    assert result.auditor_problems == []
    assert [(s["configuration"], s["streams"], s["errors"]) for s in result.streams] == [
        (bench_proxy.DIRECT, 1, 0),
        (bench_proxy.AUDITOR_ADDON, 1, 0),
    ]
    assert "auditor addon / no-op addon throughput" in bench_proxy.report(result)
    assert _child_pids() <= children_before  # upstream and the three mitmdumps are gone
