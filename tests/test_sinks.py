"""Sinks and outbox delivery against real receivers on loopback.

- a real rsyslogd (started here, in the foreground, with a generated config) receives CEF over
  UDP and TCP; what it wrote is parsed and every field compared, including '=', '\\', '|' and
  newlines;
- a Python TLS server (certificates from trustme) receives RFC 5425 syslog over TLS;
- local http.server instances stand in for Splunk HEC and a webhook;
- the outage test: receiver down while findings are produced, the store closed and reopened,
  the receiver back: every finding arrives exactly once per alert window.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from soc_helpers import NASTY_EVIDENCE, NASTY_TITLE, make_finding, validator

from auditor.model import Severity
from auditor.outputs.alert import Alert, finding_uid
from auditor.outputs.cef import parse_cef
from auditor.pipeline import Pipeline
from auditor.sinks import (
    DeliveryError,
    FileSink,
    OutboxDelivery,
    Sink,
    SinkURLError,
    SplunkHecSink,
    SyslogSink,
    WebhookSink,
    open_recorder,
    parse_sink_url,
)
from auditor.store import FindingsStore

FAKE_TOKEN = "test-token-" + "0" * 8  # obviously fake, never a real HEC token


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- URL parsing -------------------------------------------------------------------------


def test_parse_sink_urls() -> None:
    sink = parse_sink_url("jsonl:/tmp/x.jsonl")
    assert isinstance(sink, FileSink) and sink.format == "json"
    assert str(sink.path) == "/tmp/x.jsonl"
    assert parse_sink_url("ocsf:rel/path.jsonl").format == "ocsf"  # type: ignore[attr-defined]
    syslog = parse_sink_url("syslog+tcp://127.0.0.1:6000?format=leef&facility=local0")
    assert isinstance(syslog, SyslogSink)
    assert (syslog.transport, syslog.port, syslog.format, syslog.facility) == (
        "tcp", 6000, "leef", 16
    )
    assert parse_sink_url("syslog+udp://siem.example").port == 514  # type: ignore[attr-defined]
    hec = parse_sink_url(f"splunk-hec://splunk.example:8088?token={FAKE_TOKEN}&format=ecs")
    assert isinstance(hec, SplunkHecSink)
    assert hec.url == "https://splunk.example:8088/services/collector/event"
    assert FAKE_TOKEN not in hec.name and "token=***" in hec.name
    fake_secret = "Zx" + "9" * 22  # shaped like a chat-webhook secret, obviously fake
    slack_like = parse_sink_url(f"webhook+https://hooks.example/services/T0/B0/{fake_secret}")
    assert fake_secret not in slack_like.name
    assert slack_like.name == "webhook+https://hooks.example/services/T0/B0/***"
    assert fake_secret in slack_like.url  # type: ignore[attr-defined]
    long_file = parse_sink_url("jsonl:/var/log/auditor2026findings0001.jsonl")
    assert long_file.name == "jsonl:/var/log/auditor2026findings0001.jsonl"
    hook = parse_sink_url("webhook+http://127.0.0.1:9/hook?slack=1&channel=sec")
    assert isinstance(hook, WebhookSink) and hook.slack
    assert hook.url == "http://127.0.0.1:9/hook?channel=sec"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nothing", "expected SCHEME"),
        ("ftp://x", "unknown sink scheme"),
        ("syslog+sctp://x:1", "syslog\\+udp://"),
        ("syslog+udp://x:port", "port is not a number"),
        ("syslog+udp://x:1?format=xml", "format=xml not supported"),
        ("syslog+udp://x:1?facility=bogus", "unknown facility"),
        ("splunk-hec://x:1", "needs \\?token"),
        ("syslog+tls://x:1?ca=/nonexistent.pem", "cannot read CA file"),
    ],
)
def test_bad_sink_urls_are_one_line_errors(
    url: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUDITOR_HEC_TOKEN", raising=False)
    with pytest.raises(SinkURLError, match=message) as info:
        parse_sink_url(url)
    assert "\n" not in str(info.value)


# -- receivers ---------------------------------------------------------------------------


class HttpReceiver:
    """A loopback HTTP server recording every POST; ``status`` is what it answers."""

    def __init__(
        self, port: int = 0, status: int = 200, tls: ssl.SSLContext | None = None
    ) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.status = status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append((self.path, dict(self.headers), body))
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/json")
                payload = b'{"text":"Success","code":0}'
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@contextlib.contextmanager
def http_receiver(
    port: int = 0, status: int = 200, tls: ssl.SSLContext | None = None
) -> Iterator[HttpReceiver]:
    receiver = HttpReceiver(port, status, tls)
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A real rsyslogd on loopback: UDP and TCP inputs, every message's MSG to a file."""
    binary = shutil.which("rsyslogd") or shutil.which("rsyslogd", path="/usr/sbin:/sbin")
    if binary is None:
        pytest.skip("rsyslogd not installed (Debian package rsyslog; scripts/setup.sh installs it)")
    udp_port, tcp_port = free_port(socket.SOCK_DGRAM), free_port()
    output = tmp_path / "received.log"
    config = tmp_path / "rsyslog.conf"
    config.write_text(
        f'global(workDirectory="{tmp_path}" maxMessageSize="64k")\n'
        'module(load="imudp")\nmodule(load="imtcp")\n'
        f'input(type="imudp" address="127.0.0.1" port="{udp_port}")\n'
        f'input(type="imtcp" address="127.0.0.1" port="{tcp_port}")\n'
        # RFC 5424 header fields as rsyslog parsed them, then the message itself
        'template(name="fields" type="string"'
        ' string="%app-name% %msgid% %syslogfacility% %syslogseverity% %msg%\\n")\n'
        f'action(type="omfile" file="{output}" template="fields")\n'
    )
    errors = (tmp_path / "rsyslogd.err").open("w")  # a file, not a pipe nobody drains
    process = subprocess.Popen(
        [binary, "-n", "-f", str(config), "-i", str(tmp_path / "rsyslogd.pid")],
        stdout=subprocess.DEVNULL,
        stderr=errors,
    )
    try:

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", tcp_port), 0.2).close()
            except OSError:
                return False
            return True

        if not wait_for(listening, 10):
            process.kill()
            message = (tmp_path / "rsyslogd.err").read_text()
            raise RuntimeError(f"rsyslogd did not start: {message!r}")
        time.sleep(0.2)  # UDP input opens alongside TCP; give it a moment
        yield {"udp": udp_port, "tcp": tcp_port, "output": output}
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        errors.close()


def _received_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _received(path: Path) -> list[tuple[list[str], str]]:
    """([app-name, msgid, facility, severity], message) per line rsyslog wrote."""
    parsed = []
    for line in _received_lines(path):
        *header, message = line.split(" ", 4)
        parsed.append((header, message.strip()))
    return parsed


# -- syslog ------------------------------------------------------------------------------


@pytest.mark.network
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_cef_through_real_rsyslog_round_trips(
    transport: str, rsyslog: dict[str, Any]
) -> None:
    findings = [
        make_finding(title=NASTY_TITLE, evidence=NASTY_EVIDENCE, evidence_key="a=b|c\\d"),
        make_finding(host="second.example", severity=Severity.LOW, evidence={"n": "x\ny"}),
    ]
    sink = parse_sink_url(f"syslog+{transport}://127.0.0.1:{rsyslog[transport]}")
    try:
        sink.deliver([Alert(f) for f in findings])
    finally:
        sink.close()
    assert wait_for(lambda: len(_received_lines(rsyslog["output"])) >= 2)
    received = _received(rsyslog["output"])
    assert len(received) == 2
    # rsyslog's RFC 5424 parser read our header: app, msgid, facility local4, severity
    assert [fields for fields, _ in received] == [
        ["ai-egress-auditor", "finding", "20", "3"],  # HIGH -> error
        ["ai-egress-auditor", "finding", "20", "5"],  # LOW -> notice
    ]
    for finding, (_, line) in zip(findings, received, strict=True):
        header, extension = parse_cef(line)
        assert header[:4] == ["CEF:0", "AI Egress Auditor", "ai-egress-auditor", header[3]]
        assert header[4] == finding.kind
        assert header[5] == finding.title.replace("\n", " ")
        assert extension["msg"] == finding.title
        assert extension["dhost"] == finding.host
        assert json.loads(extension["cs1"]) == finding.evidence
        assert extension["cs2"] == finding.evidence_key
        assert extension["externalId"] == finding_uid(finding)
        assert extension["cnt"] == "1"


@pytest.mark.network
def test_leef_through_real_rsyslog(rsyslog: dict[str, Any]) -> None:
    sink = parse_sink_url(f"syslog+tcp://127.0.0.1:{rsyslog['tcp']}?format=leef")
    try:
        sink.deliver([Alert(make_finding(title="caret ^ and\nnewline"))])
    finally:
        sink.close()
    assert wait_for(lambda: bool(_received_lines(rsyslog["output"])))
    ((_, line),) = _received(rsyslog["output"])
    assert line.startswith("LEEF:2.0|AI Egress Auditor|ai-egress-auditor|")
    assert "name=caret \\^ and\\nnewline^" in line


@pytest.mark.network
def test_syslog_over_tls_octet_counted(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    server_cert = authority.issue_cert("localhost")
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server_context)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]
    received: list[bytes] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with server_context.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(10)
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
                received.append(data)
        except OSError as exc:  # surfaced by the assertion below
            received.append(repr(exc).encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        sink = parse_sink_url(f"syslog+tls://localhost:{port}?ca={ca_file}")
        alerts = [Alert(make_finding(title=NASTY_TITLE)), Alert(make_finding(host="b.example"))]
        sink.deliver(alerts)
        sink.close()
        thread.join(10)
    finally:
        listener.close()
    (data,) = received
    # RFC 6587 octet counting: "LEN SP MSG", twice
    messages = []
    while data:
        length, _, rest = data.partition(b" ")
        messages.append(rest[: int(length)])
        data = rest[int(length) :]
    assert len(messages) == 2
    first = messages[0].decode("utf-8")
    assert first.startswith("<163>1 ")  # local4 (20) * 8 + error (3) for HIGH
    _, extension = parse_cef(first)
    assert extension["msg"] == NASTY_TITLE


@pytest.mark.network
def test_syslog_tls_rejects_untrusted_server(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("localhost").configure_cert(server_context)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with contextlib.suppress(OSError), server_context.wrap_socket(conn, server_side=True):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        sink = parse_sink_url(f"syslog+tls://localhost:{port}")  # system CAs: not trustme's
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED") as info:
            sink.deliver([Alert(make_finding())])
        assert info.value.delivered == 0
        sink.close()
    finally:
        listener.close()
        thread.join(10)


# -- HTTP sinks --------------------------------------------------------------------------


@pytest.mark.network
def test_splunk_hec_receives_events_with_token() -> None:
    with http_receiver() as hec:
        sink = parse_sink_url(
            f"splunk-hec+http://127.0.0.1:{hec.port}?token={FAKE_TOKEN}&format=ocsf&index=sec"
        )
        sink.deliver([Alert(make_finding()), Alert(make_finding(host="b.example"), False)])
        ((path, headers, body),) = hec.requests
    assert path == "/services/collector/event"
    assert headers["Authorization"] == f"Splunk {FAKE_TOKEN}"
    assert headers["Content-Type"] == "application/json"
    events = [json.loads(line) for line in body.decode().splitlines()]
    assert [e["event"]["activity_id"] for e in events] == [1, 2]
    assert events[0]["index"] == "sec"
    assert events[0]["time"] == 1_763_900_000.25
    assert events[0]["fields"]["severity"] == "high"
    for event in events:
        validator("ocsf_detection_finding.schema.json").validate(event["event"])


@pytest.mark.network
def test_splunk_hec_over_https_with_private_ca(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    with http_receiver(tls=server_context) as hec:
        untrusted = parse_sink_url(f"splunk-hec://localhost:{hec.port}?token={FAKE_TOKEN}")
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusted.deliver([Alert(make_finding())])
        sink = parse_sink_url(f"splunk-hec://localhost:{hec.port}?token={FAKE_TOKEN}&ca={ca_file}")
        sink.deliver([Alert(make_finding())])
        ((path, headers, _),) = hec.requests
    assert path == "/services/collector/event"
    assert headers["Authorization"] == f"Splunk {FAKE_TOKEN}"


@pytest.mark.network
def test_hec_error_status_is_a_delivery_error() -> None:
    with http_receiver(status=403) as hec:
        sink = parse_sink_url(f"splunk-hec+http://127.0.0.1:{hec.port}?token={FAKE_TOKEN}")
        with pytest.raises(DeliveryError, match="HTTP 403"):
            sink.deliver([Alert(make_finding())])


@pytest.mark.network
def test_webhook_posts_one_json_per_alert_with_slack_text() -> None:
    with http_receiver() as hook:
        sink = parse_sink_url(f"webhook+http://127.0.0.1:{hook.port}/hooks/soc?slack=1&format=ecs")
        sink.deliver([Alert(make_finding()), Alert(make_finding(host="b.example"))])
        bodies = [json.loads(body) for _, _, body in hook.requests]
        paths = {path for path, _, _ in hook.requests}
    assert paths == {"/hooks/soc"}
    assert len(bodies) == 2
    assert bodies[0]["text"].startswith("[HIGH] Traffic to a known AI relay — host api.relay")
    del bodies[0]["text"]
    validator("ecs_alert.schema.json").validate(bodies[0])


# -- outbox delivery ---------------------------------------------------------------------


class BlockingSink(Sink):
    """A sink that hangs until released: stands in for a SIEM that stopped answering."""

    def __init__(self) -> None:
        self.name = "blocking"
        self.release = threading.Event()
        self.delivered: list[Alert] = []

    def deliver(self, alerts: Any) -> None:
        self.release.wait(10)
        self.delivered.extend(alerts)


def test_slow_sink_never_blocks_recording(tmp_path: Path) -> None:
    sink = BlockingSink()
    store = FindingsStore(tmp_path / "f.db")
    delivery = OutboxDelivery(store, [sink])
    delivery.start()
    try:
        store.record(make_finding(host="first.example"))
        delivery.notify()
        time.sleep(0.1)  # the delivery thread is now stuck inside deliver()
        started = time.monotonic()
        for n in range(50):
            store.record(make_finding(host=f"h{n}.example"))
        assert time.monotonic() - started < 2.0
        sink.release.set()
        assert delivery.flush(10)
    finally:
        sink.release.set()
        delivery.close()
        store.close()
    assert len(sink.delivered) == 51


@pytest.mark.network
def test_outage_restart_every_finding_once(tmp_path: Path) -> None:
    """Receiver down -> findings queued -> auditor restarts -> receiver up -> all arrive once."""
    port = free_port()
    store_path = tmp_path / "findings.sqlite3"
    url = f"webhook+http://127.0.0.1:{port}/alerts"
    hosts = [f"relay{n}.example" for n in range(5)]
    options = {"base_backoff": 0.05, "max_backoff": 0.2}

    # First run: nothing listens on the port. Each host is seen 3 times within the window.
    recorder = open_recorder(store_path, [url], alert_window=3600, **options)
    try:
        for repeat in range(3):
            for host in hosts:
                # as the pipeline does: its running finding, merged, count going up
                running = make_finding(host=host, ts=1000.0 + repeat)
                running.count = repeat + 1
                recorder(running, repeat == 0)
        assert wait_for(lambda: any(s.last_error for s in recorder.store.sink_status()), 5)
    finally:
        recorder.close(flush_timeout=0.2)
    with FindingsStore(store_path) as store:
        (status,) = store.sink_status()
        assert status.backlog == len(hosts) and status.delivered == 0
        assert "Connection refused" in (status.last_error or "")

    # Second run: the receiver is back; the restarted auditor drains the outbox, and repeats
    # of the same findings inside the alert window add nothing to it.
    with http_receiver(port) as hook:
        recorder = open_recorder(store_path, [url], alert_window=3600, **options)
        try:
            for host in hosts:
                recorder(make_finding(host=host, ts=1500.0), False)
            assert recorder.delivery is not None and recorder.delivery.flush(10)
        finally:
            recorder.close(flush_timeout=1)
        received = [json.loads(body) for _, _, body in hook.requests]
    assert sorted(r["host"] for r in received) == hosts
    assert all(r["alert"] == "new" for r in received)
    with FindingsStore(store_path) as store:
        (status,) = store.sink_status()
        assert status.backlog == 0 and status.delivered == len(hosts)
        assert {f.host: f.count for f in store.findings()} == dict.fromkeys(hosts, 4)


def test_backoff_grows_and_resets(tmp_path: Path) -> None:
    class FlakySink(Sink):
        def __init__(self) -> None:
            self.name = "flaky"
            self.calls = 0
            self.fail = True

        def deliver(self, alerts: Any) -> None:
            self.calls += 1
            if self.fail:
                raise DeliveryError("receiver down")

    sink = FlakySink()
    with FindingsStore(tmp_path / "f.db") as store:
        delivery = OutboxDelivery(store, [sink], base_backoff=0.2, max_backoff=0.4)
        store.record(make_finding())
        assert delivery.run_once() == 0 and sink.calls == 1
        assert delivery.run_once() == 0 and sink.calls == 1  # backing off: not retried yet
        time.sleep(0.25)
        assert delivery.run_once() == 0 and sink.calls == 2  # retried, failed again
        assert delivery._failures["flaky"] == 2
        sink.fail = False
        time.sleep(0.5)  # 0.4 s cap (+20 % jitter at most)
        assert delivery.run_once() == 1
        assert delivery._failures["flaky"] == 0
        (status,) = store.sink_status()
        assert status.backlog == 0 and status.last_error == "receiver down"
        delivery.close()


def test_partial_batch_keeps_the_rest_queued(tmp_path: Path) -> None:
    class HalfSink(Sink):
        name = "half"

        def deliver(self, alerts: Any) -> None:
            raise DeliveryError("dropped mid-batch", delivered=2)

    with FindingsStore(tmp_path / "f.db") as store:
        delivery = OutboxDelivery(store, [HalfSink()])
        for n in range(5):
            store.record(make_finding(host=f"h{n}.example"))
        assert delivery.run_once() == 2
        assert [e.finding.host for e in store.pending("half")] == [
            "h2.example", "h3.example", "h4.example"
        ]
        delivery.close()


def test_pipeline_callback_counts_occurrences_once(tmp_path: Path) -> None:
    """The pipeline hands over its running merged finding; the store must not double count."""
    from auditor.detectors.base import DetectionContext, Detector
    from auditor.enrich.geo import GeoLookup
    from auditor.model import DNSMessage, FlowTuple, Observation, finding_for
    from auditor.policy import Policy
    from auditor.signatures import Signatures

    class EveryQuery(Detector):
        name = "every-query"
        description = "a finding for every DNS query (test only)"
        observes = (DNSMessage,)

        def inspect(self, obs: Observation, ctx: DetectionContext) -> list[Any]:
            return [finding_for(obs, detector=self.name, kind="every-query.seen",
                                severity=Severity.MEDIUM, title="query seen", evidence={})]

    jsonl = tmp_path / "alerts.jsonl"
    recorder = open_recorder(tmp_path / "f.db", [f"jsonl:{jsonl}"])
    try:
        pipeline = Pipeline(
            DetectionContext(Signatures(), Policy(), GeoLookup()), detectors=[EveryQuery()],
            on_finding=recorder,
        )
        for n in range(4):
            pipeline.feed(
                DNSMessage(
                    flow=FlowTuple("udp", "10.0.0.5", 5353, "10.0.0.1", 53), ts=100.0 + n,
                    server_name="relay.example", query_name="relay.example", query_type="A",
                    transaction_id=n, is_response=False,
                )
            )
        recorder.flush()  # repeats are coalesced until the interval passes or a flush
        assert recorder.delivery is not None and recorder.delivery.flush(5)
        (stored,) = recorder.store.findings()
        assert stored.count == 4 and stored.last_seen == 103.0
    finally:
        recorder.close()
    lines = jsonl.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["alert"] == "new"


def test_recorder_coalesces_repeats_and_flushes_when_traffic_stops(tmp_path: Path) -> None:
    jsonl = tmp_path / "alerts.jsonl"
    recorder = open_recorder(
        tmp_path / "f.db", [f"jsonl:{jsonl}"], flush_interval=0.3, idle_poll=0.05
    )
    try:
        running = make_finding(ts=100.0)
        recorder(running, True)  # new: written and alerted at once
        assert [f.count for f in recorder.store.findings()] == [1]
        calls = []
        original = recorder.store.record_many

        def counting(items: Any) -> Any:
            calls.append(len(items))
            return original(items)

        recorder.store.record_many = counting  # type: ignore[method-assign]
        for n in range(1, 2000):
            running.count += 1
            running.last_seen = 100.0 + n
            recorder(running, False)
        assert len(calls) < 50  # repeats coalesced (0.3 s apart), not 1999 transactions
        # no more traffic: the delivery thread's tick writes the rest
        assert wait_for(lambda: [f.count for f in recorder.store.findings()] == [2000], 3)
        (stored,) = recorder.store.findings()
        assert (stored.first_seen, stored.last_seen) == (100.0, 2099.0)
        # a severity rise is written (and alerted) without waiting for the interval
        running.count += 1
        running.severity = Severity.CRITICAL
        recorder(running, False)
        assert recorder.store.findings()[0].severity is Severity.CRITICAL
        assert recorder.delivery is not None and recorder.delivery.flush(5)
    finally:
        recorder.close()
    alerts = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [(a["alert"], a["severity"]) for a in alerts] == [
        ("new", "high"), ("update", "critical")
    ]


def test_sync_records_merged_findings_once_each(tmp_path: Path) -> None:
    """``recorder.sync(findings)`` (auditor pcap): only new or grown findings are written, one
    transaction per sync, and the store and the alerts come out as if each occurrence had been
    recorded: no occurrence lost, none counted twice, one alert per finding."""
    store_path, jsonl = tmp_path / "f.db", tmp_path / "alerts.jsonl"
    recorder = open_recorder(store_path, [f"jsonl:{jsonl}"], flush_interval=3600)
    transactions = []
    original = recorder.store.record_many

    def counting(items: Any) -> Any:
        transactions.append(len(items))
        return original(items)

    recorder.store.record_many = counting  # type: ignore[method-assign]
    try:
        running = {host: make_finding(host, ts=100.0) for host in ("a.example", "b.example")}
        recorder.sync(running.values())
        for n in (1, 2):  # as the pipeline merges repeats into its running findings
            running["a.example"].count += 1
            running["a.example"].last_seen = 100.0 + n
        recorder.sync(running.values())  # only a.example grew
        recorder.sync(running.values())  # nothing changed: no transaction
        running["b.example"].count += 1
        running["b.example"].severity = Severity.CRITICAL
        recorder.sync(running.values())
        assert transactions == [2, 1, 1]
    finally:
        recorder.close()
    with FindingsStore(store_path) as store:
        stored = {f.host: f for f in store.findings()}
    assert {h: (f.count, f.first_seen, f.last_seen, f.severity) for h, f in stored.items()} == {
        "a.example": (3, 100.0, 102.0, Severity.HIGH),
        "b.example": (2, 100.0, 100.0, Severity.CRITICAL),
    }
    alerts = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert sorted((a["host"], a["alert"], a["severity"]) for a in alerts) == [
        ("a.example", "new", "high"),
        ("b.example", "new", "high"),
        ("b.example", "update", "critical"),
    ]


def test_offline_sync_stores_what_a_call_per_occurrence_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``analyse_captures(sync_findings=recorder.sync)`` syncing after every observation (the
    interval at 0) leaves the same findings table as the pipeline's call per occurrence."""
    from auditor import analysis
    from auditor.context import load_context

    demo = Path(__file__).resolve().parent.parent / "samples" / "egress-demo.pcap"
    ctx = load_context(None, None, None)
    stored = {}
    transactions: list[int] = []
    for way in ("per-occurrence", "sync"):
        recorder = open_recorder(tmp_path / f"{way}.db")
        try:
            if way == "sync":
                monkeypatch.setattr(analysis, "SYNC_INTERVAL_SECONDS", 0.0)
                original = recorder.store.record_many

                def counting(items: Any, _original: Any = original) -> Any:
                    transactions.append(len(items))
                    return _original(items)

                recorder.store.record_many = counting  # type: ignore[method-assign]
                analysis.analyse_captures([demo], ctx, sync_findings=recorder.sync)
                assert len(transactions) > 20  # periodic syncs, not only the last
            else:
                analysis.analyse_captures([demo], ctx, on_finding=recorder)
            stored[way] = [
                (f.key, f.count, f.first_seen, f.last_seen, f.severity, f.title, f.evidence)
                for f in recorder.store.findings()
            ]
        finally:
            recorder.close()
    assert stored["sync"] == stored["per-occurrence"] and len(stored["sync"]) > 20


def test_recorder_stores_the_finding_as_of_its_latest_call(tmp_path: Path) -> None:
    """The caller's later merges (maybe in progress while the delivery thread flushes) are not
    read at flush time: they are recorded with the call that follows them."""
    recorder = open_recorder(tmp_path / "f.db", flush_interval=3600)
    try:
        running = make_finding(ts=100.0)
        recorder(running, True)
        running.count, running.last_seen = 2, 200.0  # merged, recorder not called yet
        running.severity, running.title = Severity.CRITICAL, "escalated"
        recorder.flush()
        (stored,) = recorder.store.findings()
        assert (stored.count, stored.last_seen, stored.severity) == (1, 100.0, Severity.HIGH)
        recorder(running, False)
        recorder.flush()
        (stored,) = recorder.store.findings()
        assert (stored.count, stored.last_seen, stored.title) == (2, 200.0, "escalated")
        assert stored.severity is Severity.CRITICAL
    finally:
        recorder.close()


def test_recording_without_sinks_does_not_load_the_alert_formats_or_tls(tmp_path: Path) -> None:
    # auditor pcap without --sink only writes the store: it should not pay for these imports.
    code = (
        "import sys; from auditor.sinks import open_recorder; "
        f"open_recorder({str(tmp_path / 'f.db')!r}).close(); "
        "print(sorted(m for m in ('ssl', 'urllib.request', 'auditor.outputs.alert',"
        " 'auditor.outputs.cef', 'auditor.outputs.ecs', 'auditor.outputs.webhook')"
        " if m in sys.modules))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"
