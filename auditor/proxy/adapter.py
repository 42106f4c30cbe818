"""The mitmproxy addon logic: proxy events in, observations out, into the shared pipeline.

    client -> mitmproxy -> [this module: flow -> observations] -> Pipeline.feed -> findings

This is a *source*, like the pcap reader: it knows mitmproxy's objects and nothing of
detection. Parsing (TLS ClientHello, certificates) and detection are the same code the offline
analyser runs (``auditor.capture``, ``auditor.detectors``); this module only adapts.

What it observes (audit only: requests and responses pass unchanged):

- ``tls_clienthello``: the client's raw ClientHello, parsed by ``auditor.capture.tls`` (JA4).
- ``tls_established_server`` / ``tls_failed_server``: what the upstream negotiated (version,
  cipher, certificate chain), or why it failed (mitmproxy refuses TLS < 1.2 upstream by
  default, and that refusal is evidence). Fed as one ``TLSHandshake`` with the client's hello.
- ``responseheaders``: a ``text/event-stream`` answer gets an observing ``stream`` callable that
  hands every chunk on at once (a streamed completion reaches the client as it is produced)
  while keeping a bounded copy of its events for the LLM parser.
- ``response`` / ``error``: one ``HTTPRequest`` per exchange, response attached, bodies decoded
  and bounded by ``auditor_max_body_scan``.
- ``server_disconnected`` / ``client_disconnected`` / ``done``: one ``Connection`` per upstream.

Where detection runs (``auditor_detection``): ``worker`` (the default) hands each observation
to a detection worker process (``auditor.proxy.detection_worker``) without waiting, so the
detectors cost the proxied request nothing and can use another core; the worker writes the
outputs below. ``inline`` runs the pipeline in mitmproxy's event loop (tests, or a one-core box).

Out: each new finding is one line in mitmproxy's log and one JSON line in
``auditor_findings_jsonl``; ``auditor_store`` / ``auditor_sinks`` record findings as
``auditor pcap --store/--sink`` does; ``auditor_connections_jsonl`` gets ECS connection records;
``done()`` prints per-host totals.

Every hook is guarded: an exception inside the auditor is counted and logged, never raised
into mitmproxy, so the flow goes on as if the auditor were not there.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import re
import ssl
import time
import zlib
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, TypeVar

from mitmproxy import connection, ctx, http
from mitmproxy.exceptions import OptionsError

from auditor.model import (
    Certificate,
    ClientHello,
    Connection,
    Finding,
    FlowTuple,
    HTTPRequest,
    HTTPResponse,
    Observation,
    ServerHello,
    Severity,
    TLSHandshake,
)

if TYPE_CHECKING:
    from mitmproxy import tls
    from mitmproxy.addonmanager import Loader
    from mitmproxy.proxy.server_hooks import ServerConnectionHookData

    from auditor.context import ContextInput
    from auditor.detectors.base import DetectionContext
    from auditor.proxy.detection_worker import DetectionWorker
    from auditor.signatures import Signatures
    from auditor.sinks import FindingsRecorder

log = logging.getLogger(__name__)

ORIGIN = "proxy"

# How much of a body is decoded and scanned. 1 MiB holds any realistic prompt or completion
# while keeping a hostile body (or a decompression bomb) from costing more than that.
DEFAULT_MAX_BODY_SCAN = 1 << 20

# The record-layer version of a ClientHello is not given by mitmproxy (it hands over the
# handshake message only); 0x0303 is what mitmproxy itself assumes when it re-wraps one.
# JA4 and JA3 do not use it.
ASSUMED_RECORD_VERSION = 0x0303

# The option that gives each input of the detection context, for error messages.
CONTEXT_OPTIONS: dict[ContextInput, str] = {
    "signatures": "auditor_signatures",
    "policy": "auditor_policy",
    "GeoIP database": "auditor_geoip_db",
}

# Options whose change needs a new detection context (and so a new pipeline).
DETECTION_OPTIONS = frozenset(
    {"auditor_policy", "auditor_signatures", "auditor_geoip_db", "auditor_reveal_evidence"}
)

# Options the detection worker reads: a change restarts it with the new values.
WORKER_OPTIONS = DETECTION_OPTIONS | {
    "auditor_findings_jsonl",
    "auditor_store",
    "auditor_sinks",
    "auditor_connections_jsonl",
}
DETECTION_MODES = ("worker", "inline")
# Hand-overs (an observation, or a batch of up to detection_worker.BATCH_SIZE) waiting for the
# worker; beyond this they are dropped and counted. Bursts fit, while a stalled worker cannot
# make the proxy hold unbounded bodies (each at most auditor_max_body_scan per direction).
DEFAULT_DETECTION_QUEUE = 64

# error() can follow response() for one flow; remembering this many fed flows is plenty.
FED_FLOWS_REMEMBERED = 4096

# Requests kept on a Connection observation (for per-connection outputs); they were all fed
# to the detectors already, this only bounds memory on long keep-alive connections.
MAX_HTTP_PER_CONNECTION = 32

# A cipher the local OpenSSL names but whose IANA code is not known: kept out of cipher lookups.
UNKNOWN_CIPHER_CODE = -1

PipelineFactory = Callable[["DetectionContext", Callable[[Finding, bool], None]], Any]
HookFunction = TypeVar("HookFunction", bound=Callable[..., Any])


def guarded(hook: HookFunction) -> HookFunction:
    """Run a hook so that whatever fails inside the auditor is counted and logged, not raised."""

    @functools.wraps(hook)
    def run_guarded(self: Any, *args: Any) -> Any:  # an addon with hook_failed()
        try:
            return hook(self, *args)
        except Exception as exc:
            self.hook_failed(hook.__name__, exc)
            return None

    return run_guarded  # type: ignore[return-value]


# --- addresses and names -----------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # the same few addresses on every request of a connection
def plain_ip(address: str) -> str:
    """'::ffff:127.0.0.1' -> '127.0.0.1' (dual-stack sockets report IPv4 peers mapped)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


@functools.lru_cache(maxsize=4096)
def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def flow_tuple(
    client: connection.Client,
    server: connection.Server | None,
    fallback: tuple[str, int] | None = None,
) -> FlowTuple:
    """client -> upstream server, as a capture of the upstream leg would orient it.

    The destination is the address actually connected to (``peername``); before the connection
    is made (or when it failed) it is the address mitmproxy was going to use, which in
    transparent mode is the original destination IP and in regular mode may be a name.
    """
    src_ip, src_port = ("0.0.0.0", 0)
    if client.peername:
        src_ip, src_port = plain_ip(str(client.peername[0])), int(client.peername[1])
    dst_ip, dst_port = ("0.0.0.0", 0)
    address = (server.peername or server.address) if server is not None else None
    # A request whose upstream connection failed has no server address: use its target.
    address = address or fallback
    if address:
        dst_ip, dst_port = plain_ip(str(address[0])), int(address[1])
    transport = "udp" if server is not None and server.transport_protocol == "udp" else "tcp"
    return FlowTuple(transport, src_ip, src_port, dst_ip, dst_port)


def host_without_port(host: str | None) -> str | None:
    """'api.openai.com:443' -> 'api.openai.com'; '[::1]:8080' -> '::1'."""
    if not host:
        return None
    host = host.strip()
    if host.startswith("["):
        return host[1:].split("]", 1)[0] or None
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.lower().rstrip(".") or None


def server_name_for(
    client: connection.Client | None,
    server: connection.Server | None,
    flow: http.HTTPFlow | None = None,
) -> str | None:
    """The destination's name: SNI, else the Host header, else a name mitmproxy connected to.

    In transparent mode the server address is an IP, so the name comes from SNI or Host.
    An IP is never returned as a name (``Observation.host`` falls back to the address).
    """
    candidates: list[str | None] = []
    if server is not None:
        candidates.append(server.sni)
    if client is not None:
        candidates.append(client.sni)
    if flow is not None:
        candidates.append(flow.request.host_header)
        candidates.append(flow.request.host)
    if server is not None and server.address:
        candidates.append(str(server.address[0]))
    for candidate in candidates:
        name = host_without_port(candidate)
        if name and not is_ip(name):
            return name
    return None


# --- bodies --------------------------------------------------------------------------------


@dataclass(slots=True)
class BodyPrefix:
    """The decoded beginning of a message body, as much as the scan bound allows."""

    data: bytes = b""
    truncated: bool = False
    error: str | None = None


def _inflate(raw: bytes, limit: int, wbits: int) -> tuple[bytes, bool]:
    decompressor = zlib.decompressobj(wbits)
    # max_length bounds the output, whatever the compression ratio.
    data = decompressor.decompress(raw, limit + 1)
    return data[:limit], len(data) > limit or bool(decompressor.unconsumed_tail)


def _unbrotli(raw: bytes, limit: int) -> tuple[bytes, bool]:
    import brotli

    decompressor = brotli.Decompressor()
    out = bytearray()
    # brotli has no output bound: feed small pieces and stop once past the limit.
    for start in range(0, len(raw), 256):
        out += decompressor.process(raw[start : start + 256])
        if len(out) > limit:
            return bytes(out[:limit]), True
    return bytes(out), False


def _unzstd(raw: bytes, limit: int) -> tuple[bytes, bool]:
    import io

    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw))
    data = reader.read(limit + 1)
    return data[:limit], len(data) > limit


def decoded_prefix(raw: bytes | None, content_encoding: str | None, limit: int) -> BodyPrefix:
    """At most ``limit`` bytes of ``raw`` with its content-encoding removed.

    On a decoding error the raw prefix is kept and the error named (as the capture side does).
    """
    if raw is None:
        return BodyPrefix(truncated=True, error="body streamed through the proxy; not kept")
    encoding = (content_encoding or "").strip().lower()
    try:
        if encoding in ("", "identity", "none"):
            return BodyPrefix(raw[:limit], len(raw) > limit)
        if encoding in ("gzip", "x-gzip"):
            return BodyPrefix(*_inflate(raw, limit, 16 + zlib.MAX_WBITS))
        if encoding == "deflate":
            try:  # RFC 9110 says zlib-wrapped; some servers send raw deflate
                return BodyPrefix(*_inflate(raw, limit, zlib.MAX_WBITS))
            except zlib.error:
                return BodyPrefix(*_inflate(raw, limit, -zlib.MAX_WBITS))
        if encoding == "br":
            return BodyPrefix(*_unbrotli(raw, limit))
        if encoding == "zstd":
            return BodyPrefix(*_unzstd(raw, limit))
    except Exception as exc:
        return BodyPrefix(raw[:limit], len(raw) > limit, f"{encoding}: {exc}")
    return BodyPrefix(raw[:limit], len(raw) > limit, f"{encoding}: unsupported content-encoding")


# --- streamed answers ------------------------------------------------------------------------

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class SSEStreamObserver:
    """The ``flow.response.stream`` callable for a ``text/event-stream`` answer.

    It returns every chunk unchanged at once, so the client receives each event as the upstream
    produces it, and keeps a bounded copy for the LLM parser: the first events (the model and
    response id come first) and the last ones (usage comes last), ``limit`` bytes in all.
    Events are split incrementally as chunks arrive; nothing here can raise into mitmproxy.
    """

    def __init__(self, limit: int, on_error: Callable[[Exception], None] | None = None) -> None:
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        self.head = bytearray()
        self.tail: deque[bytes] = deque()
        self.tail_bytes = 0
        self.pending = bytearray()
        self.scan_from = 0  # where in ``pending`` the next event end may start
        self.events = 0
        self.dropped_events = 0
        self.total_bytes = 0
        self.finished = False
        self.on_error = on_error

    def __call__(self, chunk: bytes) -> bytes:
        try:
            self.observe(chunk)
        except Exception as exc:  # observing must never cost the client its answer
            if self.on_error is not None:
                self.on_error(exc)
        return chunk

    def observe(self, chunk: bytes) -> None:
        if self.finished:
            return
        if not chunk:  # mitmproxy's end-of-stream call
            if self.pending.strip():
                self._keep(bytes(self.pending))
            self.pending.clear()
            self.finished = True
            return
        self.total_bytes += len(chunk)
        self.pending += chunk
        while True:
            end = _EVENT_END.search(self.pending, self.scan_from)
            if end is None:
                # An end marker may straddle chunks: rescan the last few bytes next time.
                self.scan_from = max(0, len(self.pending) - 3)
                break
            self._keep(bytes(self.pending[: end.start()]))
            del self.pending[: end.end()]
            self.scan_from = 0
        if len(self.pending) > self.tail_limit + self.head_limit:
            # One endless "event": give up on it rather than grow without bound.
            self.pending.clear()
            self.scan_from = 0
            self.dropped_events += 1

    def _keep(self, event: bytes) -> None:
        self.events += 1
        if not self.tail and len(self.head) + len(event) + 2 <= self.head_limit:
            self.head += event + b"\n\n"
            return
        self.tail.append(event)
        self.tail_bytes += len(event) + 2
        while self.tail and self.tail_bytes > self.tail_limit:
            self.tail_bytes -= len(self.tail.popleft()) + 2
            self.dropped_events += 1

    @property
    def body(self) -> bytes:
        """The kept events, in order, as an event-stream body."""
        return bytes(self.head) + b"".join(event + b"\n\n" for event in self.tail)

    @property
    def truncated(self) -> bool:
        return self.dropped_events > 0 or not self.finished


# --- TLS -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def openssl_cipher_codes() -> dict[str, int]:
    """OpenSSL cipher name -> IANA code, as the local OpenSSL itself reports them.

    mitmproxy reports the negotiated cipher by OpenSSL name; signatures are keyed by IANA code.
    The mapping comes from OpenSSL at run time, so no cipher name is written in this code.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    except ssl.SSLError:
        context.set_ciphers("ALL")
    # OpenSSL ids carry the SSLv3/TLS marker 0x03000000 above the two-byte IANA code.
    return {c["name"]: c["id"] & 0xFFFF for c in context.get_ciphers()}


def cipher_code(name: str | None, signatures: Signatures | None) -> int:
    """The IANA code of a cipher mitmproxy reported by its OpenSSL name."""
    if not name:
        return UNKNOWN_CIPHER_CODE
    code = openssl_cipher_codes().get(name)
    if code is not None:
        return code
    if signatures is not None:  # TLS 1.3 suites: OpenSSL uses the IANA name
        for suite in signatures.cipher_suites.values():
            if suite.name == name:
                return suite.code
    return UNKNOWN_CIPHER_CODE


# OpenSSL's protocol names -> wire codes (a fallback: pyOpenSSL usually gives the code itself).
_VERSION_CODES = {
    "SSLv3": 0x0300,
    "TLSv1": 0x0301,
    "TLSv1.1": 0x0302,
    "TLSv1.2": 0x0303,
    "TLSv1.3": 0x0304,
}


def negotiated_version(conn: connection.Connection, ssl_conn: Any) -> int | None:
    """The wire code of the negotiated version (pyOpenSSL gives it directly when present)."""
    if ssl_conn is not None:
        try:
            code = int(ssl_conn.get_protocol_version())
            if code > 0:
                return code
        except Exception:
            pass
    return _VERSION_CODES.get(conn.tls_version or "")


def certificates_of(conn: connection.Connection) -> list[Certificate]:
    """The upstream's chain (leaf first) through the shared X.509 parser."""
    if not conn.certificate_list:
        return []
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from auditor.capture.x509 import parse_certificate

    chain = []
    for cert in conn.certificate_list:
        # mitmproxy 11's Cert gives PEM; the shared parser reads DER, as sent on the wire.
        der = x509.load_pem_x509_certificate(cert.to_pem()).public_bytes(Encoding.DER)
        chain.append(parse_certificate(der))
    return chain


def client_hello_from(raw_handshake_body: bytes, over_quic: bool = False) -> ClientHello:
    """The shared TLS parser's ClientHello (JA4 and JA3 filled in) for mitmproxy's raw hello."""
    from auditor.capture.tls import parse_client_hello

    if not over_quic:
        return parse_client_hello(raw_handshake_body, ASSUMED_RECORD_VERSION)
    from auditor.enrich.fingerprints import ja4

    # QUIC carries the hello in CRYPTO frames, with no record layer; JA4 marks it "q".
    hello = parse_client_hello(raw_handshake_body, 0)
    hello.over_quic = True
    hello.ja4, hello.ja4_r = ja4(hello, "q")
    return hello


# --- per-connection state ------------------------------------------------------------------


@dataclass
class UpstreamState:
    """What the adapter has gathered about one upstream connection until it closes."""

    client: connection.Client
    server: connection.Server
    tls: TLSHandshake | None = None
    http: list[HTTPRequest] = field(default_factory=list)
    bytes_out: int = 0  # HTTP message bytes as the proxy relayed them (decrypted)
    bytes_in: int = 0


@dataclass
class PendingHello:
    """A client's ClientHello waiting for its upstream handshake to complete or fail."""

    hello: ClientHello
    client: connection.Client
    server: connection.Server
    ts: float


# --- options shared by the auditor addons ---------------------------------------------------


def declare_detection_options(loader: Loader) -> None:
    """The options that shape detection; shared by every auditor addon (declared identically)."""
    loader.add_option(
        "auditor_policy",
        str,
        "",
        "Policy YAML for the auditor (default: policies/default.yaml).",
    )
    loader.add_option(
        "auditor_signatures", str, "", "Signature directory (default: the shipped signatures/)."
    )
    loader.add_option(
        "auditor_geoip_db",
        str,
        "",
        "MaxMind .mmdb for destination countries (default: built in).",
    )
    loader.add_option(
        "auditor_reveal_evidence",
        bool,
        False,
        "Write full prompts and keys into findings (off: masked, as the policy default).",
    )


def detection_context_from(options: Any) -> DetectionContext:
    """Signatures, policy and GeoIP as the options say, or an ``OptionsError`` naming which."""
    from auditor.context import ContextError, load_context

    try:
        return load_context(
            options.auditor_signatures,
            options.auditor_policy,
            options.auditor_geoip_db,
            reveal_evidence=options.auditor_reveal_evidence,
        )
    except ContextError as exc:
        raise OptionsError(f"{CONTEXT_OPTIONS[exc.which]}: {exc.detail}") from None


# --- the addon -----------------------------------------------------------------------------


class EgressAudit:
    """mitmproxy addon: audit AI egress through the shared detector pipeline, never intervene."""

    def __init__(self, pipeline_factory: PipelineFactory | None = None) -> None:
        # ``pipeline_factory`` lets tests watch observations without the detector core.
        self.pipeline_factory = pipeline_factory
        self.pipeline: Any = None
        self.context: DetectionContext | None = None
        self.max_body_scan = DEFAULT_MAX_BODY_SCAN
        self.findings_file: IO[str] | None = None
        self.recorder: FindingsRecorder | None = None  # findings store and sink delivery
        self.connections_file: IO[str] | None = None
        self.connection_writer: Callable[[Connection], None] | None = None
        self.stats: Counter[str] = Counter()
        self.hellos: dict[str, PendingHello] = {}  # client connection id ->
        self.upstreams: dict[str, UpstreamState] = {}  # server connection id ->
        self.streams: dict[str, SSEStreamObserver] = {}  # flow id ->
        # Flows already fed, so that error() after response() does not feed one twice; bounded.
        self.fed_flows: OrderedDict[str, None] = OrderedDict()
        self.detection_mode = "inline"  # until configure() reads auditor_detection
        self.detection_queue = DEFAULT_DETECTION_QUEUE
        self.worker: DetectionWorker | None = None

    # -- options ---------------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        declare_detection_options(loader)
        loader.add_option(
            "auditor_findings_jsonl",
            str,
            "",
            "Append each new finding as a JSON line to this file.",
        )
        loader.add_option(
            "auditor_max_body_scan",
            int,
            DEFAULT_MAX_BODY_SCAN,
            "Bytes of each decoded body (or streamed answer) the auditor keeps and scans.",
        )
        loader.add_option(
            "auditor_store",
            str,
            "",
            "Record findings in this findings store (SQLite), as 'auditor pcap --store' does.",
        )
        loader.add_option(
            "auditor_sinks",
            Sequence[str],
            [],
            "Deliver findings to these sinks (needs auditor_store): jsonl:PATH, "
            "syslog+udp://HOST:PORT, ... (repeat --set to add more).",
        )
        loader.add_option(
            "auditor_connections_jsonl",
            str,
            "",
            "Write one ECS JSON line per upstream connection to this file as it closes.",
        )
        loader.add_option(
            "auditor_detection",
            str,
            "worker",
            "Where the detectors run: 'worker' (a separate process; requests never wait for "
            "detection) or 'inline' (in the proxy's event loop).",
            choices=DETECTION_MODES,
        )
        loader.add_option(
            "auditor_detection_queue",
            int,
            DEFAULT_DETECTION_QUEUE,
            "Hand-overs (batches of observations) waiting for the detection worker; more are "
            "dropped and counted.",
        )

    def configure(self, updated: set[str]) -> None:
        options = ctx.options
        if options.auditor_detection_queue <= 0:
            raise OptionsError(
                f"auditor_detection_queue must be a positive number of observations, "
                f"not {options.auditor_detection_queue}"
            )
        # A pipeline_factory (tests watching observations) cannot cross into a process.
        mode = "inline" if self.pipeline_factory is not None else options.auditor_detection
        if (mode, options.auditor_detection_queue) != (self.detection_mode, self.detection_queue):
            # Switching: every output is reopened where it now belongs.
            updated = updated | WORKER_OPTIONS
            self._stop_worker()
            self.detection_mode = mode
            self.detection_queue = options.auditor_detection_queue
        if "auditor_max_body_scan" in updated:
            if options.auditor_max_body_scan <= 0:
                raise OptionsError(
                    f"auditor_max_body_scan must be a positive number of bytes, "
                    f"not {options.auditor_max_body_scan}"
                )
            self.max_body_scan = options.auditor_max_body_scan
        if "auditor_findings_jsonl" in updated:
            findings_file = open_for_append(
                options.auditor_findings_jsonl, "auditor_findings_jsonl"
            )
            if self.findings_file is not None:
                self.findings_file.close()
            self.findings_file = findings_file
        if updated & {"auditor_store", "auditor_sinks"}:
            recorder = open_findings_recorder(options.auditor_store, options.auditor_sinks)
            self._close_recorder()
            self.recorder = recorder
        # A new detection context means a new pipeline (its findings so far are dropped), so
        # it is rebuilt only when what the detectors read changes.
        if self.pipeline is None or updated & DETECTION_OPTIONS:
            detection = detection_context_from(options)
            try:
                pipeline = self._make_pipeline(detection)
            except ImportError as exc:
                raise OptionsError(f"auditor: the detector core cannot be loaded: {exc}") from None
            self.context = detection
            self.pipeline = pipeline
        if updated & {"auditor_connections_jsonl"} or updated & DETECTION_OPTIONS:
            self._open_connection_records(options.auditor_connections_jsonl)
        if self.detection_mode == "worker" and (self.worker is None or updated & WORKER_OPTIONS):
            # The outputs above were opened to check the options (a clear error now, not in
            # the worker later); the worker opens its own.
            self.close_outputs()
            self._stop_worker()
            from auditor.proxy.detection_worker import DetectionWorker

            self.worker = DetectionWorker(
                {name: getattr(options, name) for name in sorted(WORKER_OPTIONS)},
                self.detection_queue,
            )
            self.worker.start()

    def open_outputs(self, options: Any) -> None:
        """Detection context, pipeline and outputs from option values, at once (the detection
        worker's start; ``configure`` does the same piece by piece)."""
        self.context = detection_context_from(options)
        self.findings_file = open_for_append(
            options.auditor_findings_jsonl, "auditor_findings_jsonl"
        )
        self.recorder = open_findings_recorder(options.auditor_store, options.auditor_sinks)
        self.pipeline = self._make_pipeline(self.context)
        self._open_connection_records(options.auditor_connections_jsonl)

    def close_outputs(self) -> None:
        if self.findings_file is not None:
            self.findings_file.close()
            self.findings_file = None
        if self.connections_file is not None:
            self.connections_file.close()
            self.connections_file, self.connection_writer = None, None
        self._close_recorder()

    def _stop_worker(self) -> list[str]:
        """Stop the detection worker after it has finished what is queued; its host totals."""
        if self.worker is None:
            return []
        worker, self.worker = self.worker, None
        report = worker.stop()
        self.stats["detection.dropped_queue_full"] += worker.dropped
        self.stats["detection.worker_restarts"] += worker.restarts
        self.stats["detection.lost_in_dead_worker"] += worker.lost
        if report is None:
            return ["[auditor] the detection worker gave no totals (see the warning above)"]
        self.stats["errors.detection_worker"] += report.stats.get("errors", 0)
        return report.summary_lines

    def _make_pipeline(self, detection: DetectionContext) -> Any:
        if self.pipeline_factory is not None:
            return self.pipeline_factory(detection, self.on_finding)
        from auditor.pipeline import Pipeline

        return Pipeline(detection, on_finding=self.on_finding, on_connection=self.on_connection)

    def _open_connection_records(self, path: str) -> None:
        """ECS connection records (``auditor.outputs.connections``), as ``auditor pcap`` writes."""
        if self.connections_file is not None:
            self.connections_file.close()
            self.connections_file, self.connection_writer = None, None
        if not path or self.context is None:
            return
        from auditor.outputs.connections import ConnectionWriter

        self.connections_file = open_for_append(path, "auditor_connections_jsonl")
        self.connection_writer = ConnectionWriter(
            self.connections_file, self.context.signatures, self.context.geo
        )

    def _close_recorder(self) -> None:
        if self.recorder is not None:
            self.recorder.close(flush_timeout=10.0)  # deliver what is queued before leaving
            self.recorder = None

    # -- output ----------------------------------------------------------------------------

    def on_finding(self, finding: Finding, is_new: bool) -> None:
        """Record every finding (store/sinks); print a new one and append it to the file."""
        if self.recorder is not None:
            self.recorder(finding, is_new)  # counts repeats; never raises (logs and counts)
        if not is_new:
            return
        self.stats["findings.new"] += 1
        level = logging.WARNING if finding.severity >= Severity.MEDIUM else logging.INFO
        log.log(
            level,
            "[auditor] %s %s %s: %s",
            finding.severity.label.upper(),
            finding.host,
            finding.kind,
            finding.title,
        )
        if self.findings_file is not None:
            record = json.dumps(finding.to_dict(), ensure_ascii=False, sort_keys=True, default=str)
            self.findings_file.write(record + "\n")
            self.findings_file.flush()  # live: a tail -f or a test sees it at once

    def on_connection(self, conn: Connection) -> None:
        if self.connection_writer is not None and self.connections_file is not None:
            self.connection_writer(conn)
            self.connections_file.flush()

    def hook_failed(self, hook: str, exc: Exception) -> None:
        self.stats[f"errors.{hook}"] += 1
        # The traceback of the first few failures of a hook is enough to debug it.
        with_traceback = self.stats[f"errors.{hook}"] <= 3
        log.warning(
            "[auditor] %s failed (flow passes unchanged): %s: %s",
            hook,
            type(exc).__name__,
            exc,
            exc_info=with_traceback,
        )

    def feed(self, obs: Observation) -> None:
        if self.pipeline is None:
            self.stats["observations.before_configure"] += 1
            return
        obs.origin = ORIGIN
        if self.worker is not None:
            self.worker.submit(obs)  # never waits: a full queue drops (counted by the worker)
            return
        self.pipeline.feed(obs)

    # -- TLS -------------------------------------------------------------------------------

    @guarded
    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        client = data.context.client
        try:
            over_quic = client.transport_protocol == "udp"
            raw = data.client_hello.raw_bytes(wrap_in_record=False)
            hello = client_hello_from(raw, over_quic)
        except ImportError:
            raise
        except Exception as exc:  # a hello our parser cannot read: counted, never fatal
            self.stats["skipped.client_hello"] += 1
            log.debug("[auditor] unparsable ClientHello from %s: %s", client.peername, exc)
            return
        self.hellos[client.id] = PendingHello(hello, client, data.context.server, time.time())

    @guarded
    def tls_established_server(self, data: tls.TlsData) -> None:
        server = data.conn
        assert isinstance(server, connection.Server)
        signatures = self.context.signatures if self.context is not None else None
        version = negotiated_version(server, data.ssl_conn)
        server_hello = None
        if version is not None:
            server_hello = ServerHello(
                legacy_version=min(version, 0x0303),
                cipher_suite=cipher_code(server.cipher, signatures),
                selected_version=version if version >= 0x0304 else None,
                alpn=server.alpn.decode("ascii", "replace") if server.alpn else None,
            )
        self._feed_handshake(data, server, server_hello, certificates_of(server), None)

    @guarded
    def tls_failed_server(self, data: tls.TlsData) -> None:
        server = data.conn
        assert isinstance(server, connection.Server)
        self.stats["tls.upstream_failed"] += 1
        failure = server.error or "TLS handshake with the upstream server failed"
        self._feed_handshake(data, server, None, [], failure)

    def _feed_handshake(
        self,
        data: tls.TlsData,
        server: connection.Server,
        server_hello: ServerHello | None,
        certificates: list[Certificate],
        failure: str | None,
    ) -> None:
        client = data.context.client
        pending = self.hellos.pop(client.id, None)
        handshake = TLSHandshake(
            flow=flow_tuple(client, server),
            ts=server.timestamp_tls_setup or time.time(),
            server_name=server_name_for(client, server),
            client=pending.hello if pending is not None else None,
            server=server_hello,
            certificates=certificates,
            failure=failure,
        )
        self._upstream(client, server).tls = handshake
        self.feed(handshake)

    # -- HTTP ------------------------------------------------------------------------------

    @guarded
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or response.stream:  # another addon already streams it: leave it
            return
        content_type = (response.headers.get("content-type") or "").lower()
        if content_type.startswith("text/event-stream"):
            observer = SSEStreamObserver(self.max_body_scan, self._stream_failed)
            self.streams[flow.id] = observer
            response.stream = observer
            self.stats["http.streams_observed"] += 1

    def _stream_failed(self, exc: Exception) -> None:
        self.hook_failed("response_stream", exc)

    @guarded
    def response(self, flow: http.HTTPFlow) -> None:
        self._feed_exchange(flow)

    @guarded
    def error(self, flow: http.HTTPFlow) -> None:
        # A request that got no (complete) answer is still evidence: a prompt went out.
        if flow.request is not None:
            self._feed_exchange(flow)

    def _feed_exchange(self, flow: http.HTTPFlow) -> None:
        if flow.id in self.fed_flows:
            return
        self.fed_flows[flow.id] = None
        if len(self.fed_flows) > FED_FLOWS_REMEMBERED:
            self.fed_flows.popitem(last=False)
        observer = self.streams.pop(flow.id, None)
        request = http_request_from(flow, self.max_body_scan, observer)
        upstream = self._upstream(flow.client_conn, flow.server_conn)
        if len(upstream.http) < MAX_HTTP_PER_CONNECTION:
            upstream.http.append(request)
        else:  # a long keep-alive connection must not hold every body until it closes
            self.stats["http.not_kept_on_connection"] += 1
        upstream.bytes_out += len(flow.request.raw_content or b"")
        if flow.response is not None:
            upstream.bytes_in += len(flow.response.raw_content or b"") or (
                observer.total_bytes if observer is not None else 0
            )
        self.stats["http.exchanges"] += 1
        self.feed(request)

    @guarded
    def websocket_start(self, flow: http.HTTPFlow) -> None:
        # The upgrade request was fed as an exchange; frames are relayed, not inspected (yet).
        self.stats["websocket.started"] += 1
        name = server_name_for(flow.client_conn, flow.server_conn, flow)
        log.info("[auditor] websocket to %s (frames not audited)", name or flow.server_conn.address)

    # -- connections -----------------------------------------------------------------------

    def _upstream(self, client: connection.Client, server: connection.Server) -> UpstreamState:
        state = self.upstreams.get(server.id)
        if state is None:
            state = self.upstreams[server.id] = UpstreamState(client, server)
        return state

    @guarded
    def server_disconnected(self, data: ServerConnectionHookData) -> None:
        state = self.upstreams.pop(data.server.id, None)
        if state is None:
            state = UpstreamState(data.client, data.server)
        self._feed_connection(state)

    @guarded
    def client_disconnected(self, client: connection.Client) -> None:
        pending = self.hellos.pop(client.id, None)
        if pending is not None:  # the upstream TLS handshake never happened: the hello alone
            self.feed(
                TLSHandshake(
                    flow=flow_tuple(client, pending.server),
                    ts=pending.ts,
                    server_name=server_name_for(client, pending.server),
                    client=pending.hello,
                )
            )
        for server_id in [s for s, st in self.upstreams.items() if st.client.id == client.id]:
            self._feed_connection(self.upstreams.pop(server_id))

    def _feed_connection(self, state: UpstreamState) -> None:
        server = state.server
        now = time.time()
        first = server.timestamp_start or state.client.timestamp_start or now
        last = server.timestamp_end or now
        tls_seen = server.tls or (state.tls is not None)
        self.feed(
            Connection(
                flow=flow_tuple(state.client, server),
                ts=last,
                server_name=server_name_for(state.client, server)
                or next((r.server_name for r in state.http if r.server_name), None),
                first_seen=first,
                last_seen=last,
                bytes_out=state.bytes_out,
                bytes_in=state.bytes_in,
                tls=state.tls,
                http=state.http,
                app_protocol="tls" if tls_seen else ("http" if state.http else None),
            )
        )

    # -- the end ---------------------------------------------------------------------------

    @guarded
    def done(self) -> None:
        for client_id in list(self.hellos):
            pending = self.hellos[client_id]
            self.client_disconnected(pending.client)
        for server_id in list(self.upstreams):
            self._feed_connection(self.upstreams.pop(server_id))
        # The worker finishes what is queued (bounded wait) and closes its outputs first.
        host_lines = self._stop_worker() if self.worker is not None else None
        for line in self.summary_lines(host_lines):
            log.info(line)
        self.close_outputs()

    def summary_lines(self, host_lines: list[str] | None = None) -> list[str]:
        """Per-host totals (most severe first; the worker's when given) and the adapter's own
        counters."""
        lines = host_lines if host_lines is not None else host_summary_lines(self.pipeline)
        lines = list(lines)
        counts = Counter(self.stats)
        if self.worker is not None:  # still running: its counts so far
            counts["detection.dropped_queue_full"] += self.worker.dropped
            counts["detection.worker_restarts"] += self.worker.restarts
        problems = {
            k: v
            for k, v in sorted(counts.items())
            if k.startswith(("errors.", "skip", "detection.")) and v
        }
        if problems:
            lines.append(f"[auditor] problems (flows went on unchanged): {problems}")
        return lines


def host_summary_lines(pipeline: Any) -> list[str]:
    """Per-host totals of a pipeline's host table, most severe first."""
    hosts = getattr(pipeline, "hosts", None)
    rows = list(hosts.rows.values()) if hosts is not None else []
    rows.sort(key=lambda r: (-(r.max_severity if r.max_severity is not None else -1), r.host))
    lines = [f"[auditor] {len(rows)} host(s) seen"]
    for row in rows:
        severity = row.max_severity.label if row.max_severity is not None else "-"
        findings = sum(f.count for f in row.findings.values())
        kinds = ", ".join(sorted({f.kind for f in row.findings.values()}))
        lines.append(
            f"[auditor]   {row.host}: max {severity}, {findings} finding(s), "
            f"{row.connections} connection(s){': ' + kinds if kinds else ''}"
        )
    return lines


def http_request_from(
    flow: http.HTTPFlow, limit: int, stream: SSEStreamObserver | None = None
) -> HTTPRequest:
    """One exchange as the ``HTTPRequest`` observation, response attached when there is one."""
    request = flow.request
    body = decoded_prefix(request.raw_content, request.headers.get("content-encoding"), limit)
    response = None
    if flow.response is not None:
        answer = flow.response
        if stream is not None:
            kept = BodyPrefix(stream.body, stream.truncated)
            if answer.headers.get("content-encoding"):
                kept = decoded_prefix(stream.body, answer.headers.get("content-encoding"), limit)
                kept.truncated = kept.truncated or stream.truncated
        else:
            kept = decoded_prefix(answer.raw_content, answer.headers.get("content-encoding"), limit)
        response = HTTPResponse(
            status=answer.status_code,
            headers=list(answer.headers.items(multi=True)),
            body=kept.data,
            body_truncated=kept.truncated,
            ts=answer.timestamp_end or answer.timestamp_start,
        )
    # On the network the prompt is encrypted only if both legs were TLS: the client's leg to
    # the proxy and the proxy's leg upstream (reverse mode may terminate TLS and go on plain).
    if flow.server_conn.timestamp_start:
        upstream_tls = flow.server_conn.tls
    else:  # never connected: what it was going to be
        upstream_tls = request.scheme == "https"
    encrypted = bool(flow.client_conn.tls) and bool(upstream_tls)
    return HTTPRequest(
        flow=flow_tuple(flow.client_conn, flow.server_conn, (request.host, request.port)),
        ts=request.timestamp_start,
        server_name=server_name_for(flow.client_conn, flow.server_conn, flow),
        method=request.method,
        host=host_without_port(request.host_header) or host_without_port(request.host),
        path=request.path,
        http_version=request.http_version,
        headers=list(request.headers.items(multi=True)),
        body=body.data,
        body_truncated=body.truncated,
        body_error=body.error,
        encrypted=encrypted,
        response=response,
    )


def open_for_append(path: str, option: str) -> IO[str] | None:
    """``path`` opened for appending lines (kept open for the proxy's life), None when unset."""
    if not path:
        return None
    try:
        return open(path, "a", encoding="utf-8")
    except OSError as exc:
        raise OptionsError(f"{option}: cannot write {path}: {exc.strerror}") from None


def open_findings_recorder(store: str, sink_urls: Sequence[str]) -> FindingsRecorder | None:
    """The findings store and sink delivery ``auditor pcap --store/--sink`` would open."""
    if sink_urls and not store:
        raise OptionsError(
            "auditor_sinks: sinks deliver from the findings store; set auditor_store"
        )
    if not store:
        return None
    from auditor.sinks import SinkURLError, open_recorder
    from auditor.store import StoreError

    try:
        return open_recorder(store, list(sink_urls))
    except SinkURLError as exc:
        raise OptionsError(f"auditor_sinks: {exc}") from None
    except (StoreError, OSError) as exc:
        raise OptionsError(f"auditor_store: {exc}") from None
