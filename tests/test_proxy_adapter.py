"""The mitmproxy adapter, driven in-process with mitmproxy's own test flows and the real pipeline.

These tests call the addon's hooks the way mitmproxy does, with mitmproxy objects, and check
the observations it feeds and the findings the real detectors make of them. Destinations are
documentation addresses (TEST-NET), so nothing is sent anywhere.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import ssl
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mitmproxy")

from mitmproxy import connection, http
from mitmproxy.exceptions import OptionsError
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import taddons, tflow
from mitmproxy.tls import ClientHello as MitmClientHello
from mitmproxy.tls import ClientHelloData, TlsData

from auditor.model import Connection, HTTPRequest, LLMCall, Observation, TLSHandshake
from auditor.pipeline import Pipeline
from auditor.proxy.adapter import (
    MAX_HTTP_PER_CONNECTION,
    EgressAudit,
    SSEStreamObserver,
    cipher_code,
    decoded_prefix,
    flow_tuple,
    server_name_for,
)

PUBLIC_IP = "203.0.113.7"  # TEST-NET-3: routable-looking, never contacted


def fake_key() -> str:
    # An obviously fake OpenAI-shaped key, generated here (never a real one).
    return "sk-proj-" + "FAKEFAKE" * 6


@pytest.fixture
def recorded() -> list[Observation]:
    return []


@pytest.fixture
def audit(tmp_path: Path, recorded: list[Observation]) -> Iterator[tuple[EgressAudit, Path]]:
    """The addon with the real pipeline, recording what it is fed, findings to a file."""

    def recording_pipeline(detection: Any, on_finding: Callable[..., None]) -> Pipeline:
        pipeline = Pipeline(detection, on_finding=on_finding)
        real_feed = pipeline.feed

        def feed(obs: Observation) -> None:
            recorded.append(obs)
            real_feed(obs)

        pipeline.feed = feed  # type: ignore[method-assign]
        return pipeline

    addon = EgressAudit(pipeline_factory=recording_pipeline)
    findings = tmp_path / "findings.jsonl"
    with taddons.context(addon) as tctx:
        tctx.configure(addon, auditor_findings_jsonl=str(findings))
        yield addon, findings


@contextlib.contextmanager
def stopped_at_the_end(addon: EgressAudit) -> Iterator[None]:
    """done() even when the test fails: loading the addon started its detection worker."""
    try:
        yield
    finally:
        addon.done()


def findings_in(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def kinds(path: Path) -> dict[str, str]:
    return {f["kind"]: f["severity"] for f in findings_in(path)}


def server_at(ip: str, port: int, sni: str | None, tls: bool) -> connection.Server:
    server = tflow.tserver_conn()
    server.address = (ip, port)
    server.peername = (ip, port)
    server.sni = sni
    server.tls = tls
    return server


def chat_flow(
    *,
    host: str,
    ip: str = PUBLIC_IP,
    tls: bool = True,
    response_body: bytes | None = None,
    response_headers: dict[str, str] | None = None,
    model: str = "gpt-4o-mini",
) -> http.HTTPFlow:
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "Summarise the Q3 report"}]}
    ).encode()
    request = http.Request.make(
        "POST",
        f"{'https' if tls else 'http'}://{host}/v1/chat/completions",
        body,
        {"content-type": "application/json", "authorization": f"Bearer {fake_key()}"},
    )
    client = tflow.tclient_conn()
    client.tls = tls
    client.sni = host if tls else None
    server = server_at(ip, 443 if tls else 80, host if tls else None, tls)
    flow = tflow.tflow(client_conn=client, server_conn=server)
    flow.request = request
    if response_body is not None:
        flow.response = http.Response.make(
            200, response_body, response_headers or {"content-type": "application/json"}
        )
    return flow


def completion_body(model: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-test1",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }
    ).encode()


# --- options -------------------------------------------------------------------------------


def test_configure_rejects_unreadable_inputs_with_clear_messages(tmp_path: Path) -> None:
    addon = EgressAudit()
    with taddons.context(addon) as tctx, stopped_at_the_end(addon):
        with pytest.raises(OptionsError, match=r"auditor_policy: .*missing\.yaml: cannot read"):
            tctx.configure(addon, auditor_policy=str(tmp_path / "missing.yaml"))
        with pytest.raises(OptionsError, match=r"auditor_signatures: .*nowhere: no such directory"):
            tctx.configure(addon, auditor_signatures=str(tmp_path / "nowhere"))
        with pytest.raises(OptionsError, match="auditor_max_body_scan must be a positive"):
            tctx.configure(addon, auditor_max_body_scan=0)
        with pytest.raises(OptionsError, match="auditor_findings_jsonl: cannot write"):
            tctx.configure(addon, auditor_findings_jsonl=str(tmp_path / "no" / "dir" / "f.jsonl"))
        not_a_database = tmp_path / "countries.mmdb"
        not_a_database.write_bytes(b"not a MaxMind database")
        with pytest.raises(OptionsError, match=r"auditor_geoip_db: .*countries\.mmdb"):
            tctx.configure(addon, auditor_geoip_db=str(not_a_database))
        bad_policy = tmp_path / "policy.yaml"
        bad_policy.write_text("min_tls_versoin: tls1.2\n")
        with pytest.raises(OptionsError, match="unknown policy keys: min_tls_versoin"):
            tctx.configure(addon, auditor_policy=str(bad_policy))


def test_reveal_evidence_option_overrides_the_policy(audit: tuple[EgressAudit, Path]) -> None:
    addon, _ = audit
    assert addon.context is not None and addon.context.policy.reveal_evidence is False
    with taddons.context(addon) as tctx:
        tctx.configure(addon, auditor_reveal_evidence=True)
    assert addon.context.policy.reveal_evidence is True


# --- HTTP ----------------------------------------------------------------------------------


def test_cleartext_llm_call_is_a_critical_finding_and_passes_unchanged(
    audit: tuple[EgressAudit, Path], recorded: list[Observation]
) -> None:
    addon, findings = audit
    flow = chat_flow(host="llm.example.net", tls=False, response_body=completion_body("m1"))
    before = (flow.request.get_state(), flow.response.get_state())

    addon.response(flow)

    assert (flow.request.get_state(), flow.response.get_state()) == before  # audit only
    found = kinds(findings)
    assert found["plaintext-llm.prompt"] == "critical"
    assert found["plaintext-llm.api-key"] == "critical"
    # The key never reaches the findings file, only its masked form.
    assert fake_key() not in findings.read_text()
    request = next(o for o in recorded if isinstance(o, HTTPRequest))
    assert request.encrypted is False
    assert request.server_name == "llm.example.net"
    assert request.flow.dst_ip == PUBLIC_IP


def test_tls_call_to_relay_in_transparent_mode_is_named_from_sni(
    audit: tuple[EgressAudit, Path], recorded: list[Observation]
) -> None:
    addon, findings = audit
    # Transparent mode: the server address is the original destination IP, the name is SNI.
    flow = chat_flow(host="api.chatanywhere.tech", response_body=completion_body("gpt-4o-mini"))
    flow.request.host = PUBLIC_IP
    flow.request.headers["host"] = "api.chatanywhere.tech"

    addon.response(flow)

    by_kind = {f["kind"]: f for f in findings_in(findings)}
    assert by_kind["relay-domain.known"]["severity"] == "high"
    assert by_kind["relay-domain.known"]["host"] == "api.chatanywhere.tech"
    assert "plaintext-llm.prompt" not in by_kind
    call = next(o for o in recorded if isinstance(o, LLMCall))
    assert call.request.encrypted is True
    assert call.model_served == "gpt-4o-mini"  # the response was parsed for the LLM call
    assert call.response_id == "chatcmpl-test1"


def test_error_after_response_feeds_the_exchange_once(
    audit: tuple[EgressAudit, Path], recorded: list[Observation]
) -> None:
    addon, _ = audit
    flow = chat_flow(host="llm.example.net", tls=False, response_body=completion_body("m1"))
    addon.response(flow)
    flow.error = tflow.terr("client disconnected")
    addon.error(flow)
    assert sum(isinstance(o, HTTPRequest) for o in recorded) == 1


def test_request_without_answer_is_still_fed_on_error(
    audit: tuple[EgressAudit, Path], recorded: list[Observation]
) -> None:
    addon, findings = audit
    flow = chat_flow(host="llm.example.net", tls=False)
    flow.error = tflow.terr("connection refused")
    addon.error(flow)
    request = next(o for o in recorded if isinstance(o, HTTPRequest))
    assert request.response is None
    assert kinds(findings)["plaintext-llm.prompt"] == "critical"


def test_streamed_answer_is_observed_chunk_by_chunk_and_parsed(
    audit: tuple[EgressAudit, Path], recorded: list[Observation]
) -> None:
    addon, _ = audit
    flow = chat_flow(host="api.openai.com", response_body=b"")
    flow.response.headers["content-type"] = "text/event-stream; charset=utf-8"

    addon.responseheaders(flow)
    stream = flow.response.stream
    assert callable(stream)
    events = [
        b'data: {"id":"chatcmpl-s1","object":"chat.completion.chunk","model":"gpt-4o-mini-2024",'
        b'"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n',
        b'data: {"id":"chatcmpl-s1","object":"chat.completion.chunk","model":"gpt-4o-mini-2024",'
        b'"choices":[{"index":0,"delta":{"content":"lo"}}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    wire = b"".join(events)
    # Odd chunk boundaries, one inside an event end marker: every chunk comes back unchanged.
    chunks = [wire[:7], wire[7:150], wire[150:151], wire[151:]]
    assert [stream(c) for c in chunks] == chunks
    assert stream(b"") == b""
    flow.response.content = None  # mitmproxy keeps no body of a streamed answer
    addon.response(flow)

    call = next(o for o in recorded if isinstance(o, LLMCall))
    assert call.model_served == "gpt-4o-mini-2024"
    assert call.response_id == "chatcmpl-s1"


def test_non_event_stream_answers_are_not_streamed_by_the_auditor(
    audit: tuple[EgressAudit, Path],
) -> None:
    addon, _ = audit
    flow = chat_flow(host="api.openai.com", response_body=b"{}")
    addon.responseheaders(flow)
    assert flow.response.stream is False


def test_a_failing_pipeline_never_breaks_the_flow(tmp_path: Path) -> None:
    class BrokenPipeline:
        def feed(self, obs: Observation) -> None:
            raise RuntimeError("detector core exploded")

    addon = EgressAudit(pipeline_factory=lambda detection, on_finding: BrokenPipeline())
    with taddons.context(addon) as tctx:
        tctx.configure(addon)
        flow = chat_flow(host="api.openai.com", response_body=completion_body("m"))
        assert addon.response(flow) is None
        assert addon.error(flow) is None
        assert addon.stats["errors.response"] == 1
        assert any("errors.response" in line for line in addon.summary_lines())


# --- TLS -----------------------------------------------------------------------------------


def real_client_hello(sni: str) -> bytes:
    """A ClientHello made by this Python's OpenSSL, as mitmproxy hands it over (no headers)."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    record = outgoing.read()
    return record[5 + 4 :]  # record header, handshake header


def tls_context(sni: str, ip: str) -> Context:
    client = tflow.tclient_conn()
    client.sni = sni
    context = Context(client, taddons.context().options)
    context.server = server_at(ip, 443, sni, tls=True)
    return context


def test_weak_upstream_tls_is_reported_with_the_client_ja4(
    audit: tuple[EgressAudit, Path], recorded: list[Observation]
) -> None:
    addon, findings = audit
    context = tls_context("weak-llm.example.net", PUBLIC_IP)
    addon.tls_clienthello(
        ClientHelloData(context, MitmClientHello(real_client_hello("weak-llm.example.net")))
    )
    server = context.server
    server.tls_version = "TLSv1"
    server.cipher = "ECDHE-RSA-AES128-SHA"
    addon.tls_established_server(TlsData(server, context))

    handshake = next(o for o in recorded if isinstance(o, TLSHandshake))
    assert handshake.client is not None and handshake.client.ja4.startswith("t13d")
    assert handshake.server is not None and handshake.server.version == 0x0301
    assert handshake.server.cipher_suite == 0xC013  # from OpenSSL's own name table
    assert handshake.server_name == "weak-llm.example.net"
    by_kind = {f["kind"]: f for f in findings_in(findings)}
    assert by_kind["weak-tls.protocol"]["evidence"]["version"] == "TLS 1.0"

    addon.server_disconnected(ServerConnectionHookData(server, context.client))
    conn = next(o for o in recorded if isinstance(o, Connection))
    assert conn.tls is handshake and conn.app_protocol == "tls"


def test_upstream_certificate_chain_goes_through_the_shared_parser(
    audit: tuple[EgressAudit, Path], recorded: list[Observation]
) -> None:
    trustme = pytest.importorskip("trustme")
    from mitmproxy.certs import Cert

    addon, findings = audit
    leaf = trustme.CA().issue_cert("api.openai.com")
    context = tls_context("api.openai.com", PUBLIC_IP)
    server = context.server
    server.tls_version = "TLSv1.3"
    server.cipher = "TLS_AES_256_GCM_SHA384"
    server.certificate_list = [Cert.from_pem(leaf.cert_chain_pems[0].bytes())]
    server.timestamp_tls_setup = time.time()  # validity is judged at the handshake's time
    addon.tls_established_server(TlsData(server, context))

    assert not addon.stats.get("errors.tls_established_server")
    handshake = next(o for o in recorded if isinstance(o, TLSHandshake))
    assert handshake.server is not None and handshake.server.version == 0x0304
    assert handshake.server.cipher_suite == 0x1302
    [certificate] = handshake.certificates
    assert "api.openai.com" in certificate.sans
    assert not any(f["detector"] == "weak-tls" for f in findings_in(findings))


def test_failed_upstream_handshake_is_fed_with_its_reason(
    audit: tuple[EgressAudit, Path], recorded: list[Observation]
) -> None:
    addon, _ = audit
    context = tls_context("old.example.net", PUBLIC_IP)
    addon.tls_clienthello(
        ClientHelloData(context, MitmClientHello(real_client_hello("old.example.net")))
    )
    context.server.error = "The remote server and mitmproxy cannot agree on a TLS version."
    addon.tls_failed_server(TlsData(context.server, context))
    handshake = next(o for o in recorded if isinstance(o, TLSHandshake))
    assert handshake.server is None
    assert handshake.failure is not None and "cannot agree" in handshake.failure
    assert handshake.client is not None  # the client's hello travels with it
    assert addon.stats["tls.upstream_failed"] == 1


def test_unparsable_client_hello_is_skipped_and_counted(
    audit: tuple[EgressAudit, Path], recorded: list[Observation]
) -> None:
    addon, _ = audit
    context = tls_context("x.example.net", PUBLIC_IP)
    hello = MitmClientHello(real_client_hello("x.example.net"))
    hello._raw_bytes = hello._raw_bytes[:20]  # cut short after mitmproxy parsed it
    addon.tls_clienthello(ClientHelloData(context, hello))
    assert addon.stats["skipped.client_hello"] == 1
    assert not addon.stats.get("errors.tls_clienthello")


def test_client_hello_without_upstream_handshake_is_fed_at_disconnect(
    audit: tuple[EgressAudit, Path], recorded: list[Observation]
) -> None:
    addon, _ = audit
    context = tls_context("api.openai.com", PUBLIC_IP)
    addon.tls_clienthello(
        ClientHelloData(context, MitmClientHello(real_client_hello("api.openai.com")))
    )
    assert not recorded
    addon.client_disconnected(context.client)
    handshake = next(o for o in recorded if isinstance(o, TLSHandshake))
    assert handshake.client is not None and handshake.client.server_name == "api.openai.com"


def test_done_prints_per_host_totals(
    audit: tuple[EgressAudit, Path], caplog: pytest.LogCaptureFixture
) -> None:
    addon, _ = audit
    addon.response(chat_flow(host="llm.example.net", tls=False, response_body=b"{}"))
    with caplog.at_level("INFO"):
        addon.done()
    text = caplog.text
    assert "llm.example.net: max critical" in text


# --- pieces --------------------------------------------------------------------------------


def test_sse_observer_keeps_first_and_last_events_within_its_bound() -> None:
    observer = SSEStreamObserver(limit=400)
    events = [f"data: event {i:03d}".encode() + b"\r\n\r\n" for i in range(100)]
    for event in events:
        assert observer(event) == event
    observer(b"")
    body = observer.body
    assert len(body) <= 400
    assert body.startswith(b"data: event 000\n\n")
    assert body.endswith(b"data: event 099\n\n")
    assert observer.events == 100 and observer.truncated


def test_sse_observer_drops_an_endless_event_instead_of_growing() -> None:
    observer = SSEStreamObserver(limit=100)
    for _ in range(50):
        observer(b"x" * 64)
    assert len(observer.pending) <= 100
    assert observer.dropped_events >= 1


def test_decoded_prefix_bounds_decompression_and_reports_bad_data() -> None:
    bomb = gzip.compress(b"\0" * 5_000_000)
    body = decoded_prefix(bomb, "gzip", 1000)
    assert len(body.data) == 1000 and body.truncated and body.error is None
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    deflated = raw_deflate.compress(b"hello") + raw_deflate.flush()
    assert decoded_prefix(deflated, "deflate", 100).data == b"hello"
    broken = decoded_prefix(b"not gzip at all", "gzip", 100)
    assert broken.data == b"not gzip at all" and broken.error is not None
    assert decoded_prefix(None, None, 10).truncated


def test_names_and_addresses_in_transparent_mode() -> None:
    client = tflow.tclient_conn()
    client.peername = ("::ffff:10.0.0.5", 50000)
    client.sni = None
    server = server_at("198.51.100.9", 443, None, tls=True)
    assert flow_tuple(client, server).src_ip == "10.0.0.5"
    assert server_name_for(client, server) is None  # an IP is never a name
    flow = tflow.tflow(client_conn=client, server_conn=server)
    flow.request.host = "198.51.100.9"
    flow.request.headers["host"] = "api.example.org:8443"
    assert server_name_for(client, server, flow) == "api.example.org"


def test_cipher_names_map_to_iana_codes_without_a_table_in_code() -> None:
    assert cipher_code("ECDHE-RSA-AES128-GCM-SHA256", None) == 0xC02F
    assert cipher_code("TLS_AES_128_GCM_SHA256", None) == 0x1301
    assert cipher_code("NO-SUCH-CIPHER", None) == -1


def test_quic_client_hello_is_fingerprinted_as_quic(
    audit: tuple[EgressAudit, Path], recorded: list[Observation]
) -> None:
    addon, _ = audit
    context = tls_context("api.openai.com", PUBLIC_IP)
    context.client.transport_protocol = "udp"
    addon.tls_clienthello(
        ClientHelloData(context, MitmClientHello(real_client_hello("api.openai.com")))
    )
    addon.client_disconnected(context.client)
    handshake = next(o for o in recorded if isinstance(o, TLSHandshake))
    assert handshake.client is not None and handshake.client.over_quic
    assert handshake.client.ja4.startswith("q13d")


def test_long_keep_alive_connection_keeps_a_bounded_request_list(
    audit: tuple[EgressAudit, Path], recorded: list[Observation]
) -> None:
    addon, _ = audit
    first = chat_flow(host="api.openai.com", response_body=completion_body("m"))
    for _ in range(MAX_HTTP_PER_CONNECTION + 8):
        flow = chat_flow(host="api.openai.com", response_body=completion_body("m"))
        flow.client_conn, flow.server_conn = first.client_conn, first.server_conn
        addon.response(flow)
    addon.server_disconnected(ServerConnectionHookData(first.server_conn, first.client_conn))
    # every request was inspected; the connection record keeps a bounded list
    assert sum(isinstance(o, HTTPRequest) for o in recorded) == MAX_HTTP_PER_CONNECTION + 8
    conn = next(o for o in recorded if isinstance(o, Connection))
    assert len(conn.http) == MAX_HTTP_PER_CONNECTION
    assert addon.stats["http.not_kept_on_connection"] == 8


def test_changing_the_findings_file_live_keeps_the_findings_so_far(
    audit: tuple[EgressAudit, Path], tmp_path: Path
) -> None:
    addon, first_file = audit
    pipeline = addon.pipeline
    addon.response(chat_flow(host="llm.example.net", tls=False, response_body=b"{}"))
    second_file = tmp_path / "second.jsonl"
    with taddons.context(addon) as tctx:
        tctx.configure(addon, auditor_findings_jsonl=str(second_file), auditor_max_body_scan=64)
    assert addon.pipeline is pipeline and addon.max_body_scan == 64
    addon.response(chat_flow(host="other.example.net", tls=False, response_body=b"{}"))
    assert {f["host"] for f in findings_in(first_file)} == {"llm.example.net"}
    assert {f["host"] for f in findings_in(second_file)} == {"other.example.net"}


def test_streamed_answer_from_a_swapping_relay_reaches_model_substitution(tmp_path: Path) -> None:
    from auditor.detectors.model_substitution import ModelSubstitutionDetector

    addon = EgressAudit(
        pipeline_factory=lambda detection, on_finding: Pipeline(
            detection, detectors=[ModelSubstitutionDetector()], on_finding=on_finding
        )
    )
    findings = tmp_path / "findings.jsonl"
    with taddons.context(addon) as tctx:
        tctx.configure(addon, auditor_findings_jsonl=str(findings))
        flow = chat_flow(host="api.chatanywhere.tech", model="gpt-4o", response_body=b"")
        flow.response.headers["content-type"] = "text/event-stream"
        addon.responseheaders(flow)
        stream = flow.response.stream
        for text in ("Hel", "lo"):
            chunk = {
                "id": "chatcmpl-r",
                "object": "chat.completion.chunk",
                "model": "gpt-3.5-turbo-0125",
                "choices": [{"delta": {"content": text}}],
            }
            stream(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        stream(b"")
        addon.response(flow)
    # The relay's reply also lacks OpenAI's shape (a low shape-mismatch); the swap is the point.
    swaps = [f for f in findings_in(findings) if f["kind"] != "model-substitution.shape-mismatch"]
    [finding] = swaps
    assert finding["kind"] == "model-substitution.other-model"
    assert finding["severity"] == "high"
    assert finding["evidence"]["model_served"] == "gpt-3.5-turbo-0125"


def test_http2_request_is_named_from_its_authority(
    audit: tuple[EgressAudit, Path], recorded: list[Observation]
) -> None:
    addon, _ = audit
    flow = chat_flow(host="api.openai.com", response_body=completion_body("gpt-4o-mini"))
    flow.request.http_version = "HTTP/2.0"
    flow.request.host = PUBLIC_IP  # transparent mode: only an address
    flow.request.headers.pop("host", None)
    flow.request.authority = "api.openai.com:443"
    flow.client_conn.sni = flow.server_conn.sni = None
    addon.response(flow)
    request = next(o for o in recorded if isinstance(o, HTTPRequest))
    assert request.http_version == "HTTP/2.0"
    assert request.server_name == "api.openai.com" and request.host == "api.openai.com"
    assert any(isinstance(o, LLMCall) for o in recorded)


def test_findings_reach_the_store_and_sinks_and_connections_become_ecs_records(
    tmp_path: Path,
) -> None:
    from auditor.store import FindingsStore

    store, alerts, connections = tmp_path / "f.db", tmp_path / "alerts.jsonl", tmp_path / "c.jsonl"
    addon = EgressAudit()
    with taddons.context(addon) as tctx:
        tctx.configure(
            addon,
            auditor_store=str(store),
            auditor_sinks=[f"jsonl:{alerts}"],
            auditor_connections_jsonl=str(connections),
        )
        first = chat_flow(host="llm.example.net", tls=False, response_body=completion_body("m"))
        addon.response(first)
        again = chat_flow(host="llm.example.net", tls=False, response_body=completion_body("m"))
        again.client_conn, again.server_conn = first.client_conn, first.server_conn
        addon.response(again)
        addon.server_disconnected(ServerConnectionHookData(first.server_conn, first.client_conn))
        addon.done()  # flushes the store and delivers queued alerts

    with FindingsStore(store) as db:
        stored = {f.kind: f for f in db.findings(host="llm.example.net")}
    assert stored["plaintext-llm.prompt"].count == 2  # repeats counted, not duplicated
    assert "plaintext-llm.prompt" in alerts.read_text()
    [record] = [json.loads(line) for line in connections.read_text().splitlines()]
    assert record["destination"]["ip"] == PUBLIC_IP


def test_sinks_without_a_store_are_refused(tmp_path: Path) -> None:
    addon = EgressAudit()
    with (
        taddons.context(addon) as tctx,
        stopped_at_the_end(addon),
        pytest.raises(OptionsError, match="set auditor_store"),
    ):
        tctx.configure(addon, auditor_sinks=[f"jsonl:{tmp_path / 'a.jsonl'}"])


def test_client_leaving_mid_stream_feeds_what_was_seen(
    audit: tuple[EgressAudit, Path], recorded: list[Observation]
) -> None:
    addon, _ = audit
    flow = chat_flow(host="api.openai.com", response_body=b"")
    flow.response.headers["content-type"] = "text/event-stream"
    addon.responseheaders(flow)
    first = b'data: {"id":"chatcmpl-p","object":"chat.completion.chunk","model":"gpt-4o"}\n\n'
    assert flow.response.stream(first) == first
    flow.error = tflow.terr("client disconnected")
    addon.error(flow)  # no end-of-stream call, no response() hook
    request = next(o for o in recorded if isinstance(o, HTTPRequest))
    assert request.response is not None and request.response.body_truncated
    assert request.response.body.startswith(b"data: ")
    assert not [k for k in addon.stats if k.startswith("errors.")]
    assert not addon.streams  # nothing left behind for this flow


def test_websocket_is_noted_and_left_alone(audit: tuple[EgressAudit, Path]) -> None:
    addon, _ = audit
    flow = tflow.tflow(resp=True, ws=True)
    before = flow.get_state()
    addon.websocket_start(flow)
    assert addon.stats["websocket.started"] == 1
    assert flow.get_state() == before
