"""Alert sinks: where findings go for the SOC, and the outbox delivery that feeds them.

    findings -> FindingsRecorder -> store (+ outbox rows) ... OutboxDelivery thread -> Sink

``--sink URL`` names a sink (``parse_sink_url``):

    jsonl:PATH | ecs:PATH | ocsf:PATH          one JSON document per line, appended to PATH
    syslog+udp://HOST:PORT                      RFC 5424 syslog, one datagram per event
                                                (UDP cannot confirm receipt: prefer tcp/tls)
    syslog+tcp://HOST:PORT                      RFC 5424 over TCP, RFC 6587 octet counting
    syslog+tls://HOST:PORT[?ca=PEM]             the same over TLS (RFC 5425), system CAs default
      ?format=cef|leef|json|ecs|ocsf (cef)  &facility=local0..local7|user|... (local4)
    splunk-hec://HOST:PORT?token=T              HEC over HTTPS (``splunk-hec+http://`` plain);
      &index=&sourcetype=&format=json|ecs|ocsf&ca=PEM   token also from $AUDITOR_HEC_TOKEN
    webhook+https://HOST/PATH                   JSON POST per alert (``webhook+http://`` plain)
      &format=json|ecs|ocsf &slack=1 (adds a Slack-compatible "text"); other query kept

Delivery never blocks the caller: ``FindingsRecorder`` only writes to the local SQLite store,
which queues an outbox row per sink (at most once per finding key and alert window, see
``auditor.store``). ``OutboxDelivery`` is a background thread that sends queued alerts in
order, marks them delivered, and on failure keeps them queued and retries that sink with
exponential backoff. Delivery is at least once: an alert sent just before a crash, not yet
marked, is sent again after the restart. (As far as the transport can tell: HTTP sinks confirm
each request; syslog over TCP/TLS has no application-level acknowledgement, so a message
written into a connection the receiver is just closing can be lost, and UDP confirms nothing.)
The outbox is in the store file, so a restart resumes where the previous process stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import random
import re
import socket
import sqlite3
import threading
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from auditor.model import Finding, Severity
from auditor.store import FindingsStore

# The alert formats, ssl and urllib.request are imported where an alert is formatted or sent:
# a run that only records into the store (``auditor pcap`` without --sink) never loads them.
if TYPE_CHECKING:
    import ssl

    from auditor.outputs.alert import Alert

log = logging.getLogger(__name__)

HEC_TOKEN_ENV = "AUDITOR_HEC_TOKEN"
NETWORK_TIMEOUT_SECONDS = 10.0  # a slow receiver delays only the delivery thread, this long
DELIVERED_RETENTION_SECONDS = 7 * 86400


class SinkURLError(ValueError):
    """A ``--sink`` URL that cannot be used; the message says what to write instead."""


class DeliveryError(Exception):
    """Sending failed after ``delivered`` of the batch's alerts had been accepted."""

    def __init__(self, message: str, delivered: int = 0) -> None:
        super().__init__(message)
        self.delivered = delivered


# -- body formats ------------------------------------------------------------------------

JSON_FORMAT_NAMES = ("json", "ecs", "ocsf")


@functools.cache
def json_formats() -> dict[str, Callable[[Alert], dict[str, Any]]]:
    """Format name (``JSON_FORMAT_NAMES``) -> the function making an alert's JSON document."""
    from auditor.outputs.ecs import alert_to_ecs
    from auditor.outputs.jsonl import alert_to_json
    from auditor.outputs.ocsf import alert_to_ocsf

    return {"json": alert_to_json, "ecs": alert_to_ecs, "ocsf": alert_to_ocsf}


def _json_text(document: dict[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, sort_keys=True, default=str)


def syslog_text(alert: Alert, fmt: str) -> str:
    if fmt == "cef":
        from auditor.outputs.cef import alert_to_cef

        return alert_to_cef(alert)
    if fmt == "leef":
        from auditor.outputs.leef import alert_to_leef

        return alert_to_leef(alert)
    return _json_text(json_formats()[fmt](alert))


# -- sinks -------------------------------------------------------------------------------


class Sink(ABC):
    """One destination. ``name`` is the URL with secrets masked: it keys the outbox."""

    name: str

    @abstractmethod
    def deliver(self, alerts: Sequence[Alert]) -> None:
        """Send ``alerts`` in order; raise ``DeliveryError`` saying how many got through."""

    def close(self) -> None:  # noqa: B027 - most sinks hold nothing open
        """Release connections and files."""


class FileSink(Sink):
    """``jsonl:PATH``, ``ecs:PATH``, ``ocsf:PATH``: JSON lines appended to a local file."""

    def __init__(self, name: str, path: Path, fmt: str) -> None:
        self.name = name
        self.path = path
        self.format = fmt

    def deliver(self, alerts: Sequence[Alert]) -> None:
        lines = "".join(_json_text(json_formats()[self.format](a)) + "\n" for a in alerts)
        try:
            # Opened per batch so rotation (rename + new file) by logrotate just works.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as stream:
                stream.write(lines)
        except OSError as exc:
            raise DeliveryError(f"{self.path}: {exc.strerror}") from None


SYSLOG_FACILITIES = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "ntp": 12,
    "audit": 13,
    "alert": 14,
    "clock": 15,
    "local0": 16,
    "local1": 17,
    "local2": 18,
    "local3": 19,
    "local4": 20,
    "local5": 21,
    "local6": 22,
    "local7": 23,
}

# Syslog severity (RFC 5424 section 6.2.1) for each finding severity.
SYSLOG_SEVERITY: dict[Severity, int] = {
    Severity.INFO: 6,  # informational
    Severity.LOW: 5,  # notice
    Severity.MEDIUM: 4,  # warning
    Severity.HIGH: 3,  # error
    Severity.CRITICAL: 2,  # critical
}


def rfc5424_message(alert: Alert, text: str, *, facility: int, hostname: str, now: float) -> str:
    """``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`` (no structured data)."""
    from auditor.outputs.alert import PRODUCT_NAME

    pri = facility * 8 + SYSLOG_SEVERITY[alert.finding.severity]
    stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    stamp = stamp.replace("+00:00", "Z")
    host = "".join(c for c in hostname if 33 <= ord(c) <= 126)[:255] or "-"
    return f"<{pri}>1 {stamp} {host} {PRODUCT_NAME} {os.getpid()} finding - {text}"


class SyslogSink(Sink):
    """RFC 5424 syslog over UDP, TCP (RFC 6587 octet counting) or TLS (RFC 5425)."""

    def __init__(
        self,
        name: str,
        transport: str,
        host: str,
        port: int,
        fmt: str,
        facility: int,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.transport = transport
        self.host = host
        self.port = port
        self.format = fmt
        self.facility = facility
        self.tls_context = tls_context
        self.hostname = socket.gethostname()
        self._socket: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self._socket is not None:
            return self._socket
        if self.transport == "udp":
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
            sock.connect(address)  # connected UDP: ICMP refusals surface as errors
        else:
            sock = socket.create_connection((self.host, self.port), NETWORK_TIMEOUT_SECONDS)
            if self.transport == "tls":
                assert self.tls_context is not None
                sock = self.tls_context.wrap_socket(sock, server_hostname=self.host)
        sock.settimeout(NETWORK_TIMEOUT_SECONDS)
        self._socket = sock
        return sock

    def deliver(self, alerts: Sequence[Alert]) -> None:
        sent = 0
        try:
            sock = self._connect()
            for alert in alerts:
                message = rfc5424_message(
                    alert,
                    syslog_text(alert, self.format),
                    facility=self.facility,
                    hostname=self.hostname,
                    now=time.time(),
                )
                data = message.encode("utf-8")
                if self.transport == "udp":
                    sock.send(data)
                else:
                    sock.sendall(f"{len(data)} ".encode("ascii") + data)
                sent += 1
        except OSError as exc:  # ssl.SSLError included
            self.close()
            where = f"{self.transport}://{self.host}:{self.port}"
            raise DeliveryError(f"{where}: {exc}", sent) from None

    def close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            finally:
                self._socket = None


class HttpJsonSink(Sink):
    """Base for sinks that POST JSON over HTTP(S)."""

    def __init__(
        self, name: str, url: str, headers: dict[str, str], tls_context: ssl.SSLContext | None
    ) -> None:
        self.name = name
        self.url = url
        self.headers = {"Content-Type": "application/json", **headers}
        self.tls_context = tls_context

    def _post(self, body: bytes) -> None:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(
                request, timeout=NETWORK_TIMEOUT_SECONDS, context=self.tls_context
            ) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read(200).decode("utf-8", "replace")
            raise DeliveryError(f"HTTP {exc.code} {exc.reason}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"{_redacted(self.url)}: {reason}") from None


class SplunkHecSink(HttpJsonSink):
    """Splunk HTTP Event Collector: one POST per batch, envelopes concatenated."""

    def __init__(
        self,
        name: str,
        url: str,
        token: str,
        fmt: str,
        options: dict[str, str],
        tls_context: ssl.SSLContext | None,
    ) -> None:
        super().__init__(name, url, {"Authorization": f"Splunk {token}"}, tls_context)
        self.format = fmt
        self.index = options.get("index") or None
        self.sourcetype = options.get("sourcetype") or None
        self.host = options.get("host") or socket.gethostname()

    def deliver(self, alerts: Sequence[Alert]) -> None:
        from auditor.outputs.splunk_hec import hec_event

        events = [
            _json_text(
                hec_event(
                    a,
                    json_formats()[self.format](a),
                    index=self.index,
                    sourcetype=self.sourcetype,
                    host=self.host,
                )
            )
            for a in alerts
        ]
        self._post("\n".join(events).encode("utf-8"))


class WebhookSink(HttpJsonSink):
    """A JSON POST per alert (chat webhooks take one message per request)."""

    def __init__(
        self, name: str, url: str, fmt: str, slack: bool, tls_context: ssl.SSLContext | None
    ) -> None:
        super().__init__(name, url, {}, tls_context)
        self.format = fmt
        self.slack = slack

    def deliver(self, alerts: Sequence[Alert]) -> None:
        from auditor.outputs.webhook import webhook_body

        for sent, alert in enumerate(alerts):
            body = webhook_body(alert, json_formats()[self.format](alert), slack=self.slack)
            try:
                self._post(_json_text(body).encode("utf-8"))
            except DeliveryError as exc:
                raise DeliveryError(str(exc), sent) from None


# -- URL parsing -------------------------------------------------------------------------

_SECRET_PARAMS = {"token", "key", "apikey", "api_key", "secret", "password", "sig"}


# A path segment that looks like a credential: chat webhooks (Slack, Discord, Teams) put their
# secret in the path. Long runs of letters and digits, at least one of each.
_SECRET_PATH_SEGMENT = re.compile(r"^(?=[^/]*[A-Za-z])(?=[^/]*\d)[A-Za-z0-9_-]{16,}$")


def _redacted(url: str) -> str:
    """The URL with credentials, secret query values and secret-looking path parts masked."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    masked = [(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in query]
    path = parts.path
    if netloc:  # network URLs only: file sink paths are not secrets
        path = "/".join(
            "***" if _SECRET_PATH_SEGMENT.match(segment) else segment for segment in path.split("/")
        )
    return urllib.parse.urlunsplit(
        (parts.scheme, netloc, path, urllib.parse.urlencode(masked, safe="*"), "")
    )


def _tls_context(options: dict[str, str], url: str) -> ssl.SSLContext:
    import ssl

    context = ssl.create_default_context()
    ca = options.get("ca")
    if ca:
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise SinkURLError(f"{url}: cannot read CA file {ca}: {exc}") from None
    return context


def _format(options: dict[str, str], allowed: Sequence[str], default: str, url: str) -> str:
    fmt = options.get("format", default).lower()
    if fmt not in allowed:
        choices = ", ".join(allowed)
        raise SinkURLError(f"{url}: format={fmt} not supported here; use one of {choices}")
    return fmt


def parse_sink_url(url: str) -> Sink:
    """The sink a ``--sink`` URL names. Raises ``SinkURLError`` with a one-line reason."""
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if not sep or not rest:
        raise SinkURLError(f"{url!r}: expected SCHEME:..., e.g. jsonl:/var/log/ai-egress.jsonl")
    name = _redacted(url)
    if scheme in ("jsonl", "ecs", "ocsf"):
        path = Path(rest.removeprefix("//") if rest.startswith("///") else rest)
        fmt = "json" if scheme == "jsonl" else scheme
        return FileSink(name, path.expanduser(), fmt)
    parts = urllib.parse.urlsplit(url)
    options = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    try:
        port = parts.port
    except ValueError:
        raise SinkURLError(f"{name}: the port is not a number") from None
    if scheme.startswith("syslog+"):
        transport = scheme.removeprefix("syslog+")
        if transport not in ("udp", "tcp", "tls"):
            raise SinkURLError(f"{name}: use syslog+udp://, syslog+tcp:// or syslog+tls://")
        if not parts.hostname:
            raise SinkURLError(f"{name}: missing host, e.g. {scheme}://siem.example:514")
        facility_name = options.get("facility", "local4").lower()
        if facility_name not in SYSLOG_FACILITIES:
            raise SinkURLError(f"{name}: unknown facility {facility_name!r}")
        default_port = 6514 if transport == "tls" else 514
        return SyslogSink(
            name,
            transport,
            parts.hostname,
            port or default_port,
            _format(options, ("cef", "leef", "json", "ecs", "ocsf"), "cef", name),
            SYSLOG_FACILITIES[facility_name],
            _tls_context(options, name) if transport == "tls" else None,
        )
    if scheme in ("splunk-hec", "splunk-hec+https", "splunk-hec+http"):
        token = options.get("token") or os.environ.get(HEC_TOKEN_ENV, "")
        if not token:
            raise SinkURLError(f"{name}: needs ?token=... or ${HEC_TOKEN_ENV}")
        if not parts.hostname:
            raise SinkURLError(f"{name}: missing host, e.g. splunk-hec://splunk.example:8088")
        plain = scheme == "splunk-hec+http"
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        from auditor.outputs.splunk_hec import EVENT_PATH

        target = f"{'http' if plain else 'https'}://{host}:{port or 8088}{EVENT_PATH}"
        return SplunkHecSink(
            name,
            target,
            token,
            _format(options, JSON_FORMAT_NAMES, "json", name),
            options,
            None if plain else _tls_context(options, name),
        )
    if scheme in ("webhook+http", "webhook+https"):
        if not parts.hostname:
            raise SinkURLError(f"{name}: missing host, e.g. webhook+https://hooks.example/path")
        fmt = _format(options, JSON_FORMAT_NAMES, "json", name)
        slack = options.get("slack", "").lower() in ("1", "true", "yes")
        kept = [
            (k, v)
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            if k not in ("format", "slack", "ca")
        ]
        target = urllib.parse.urlunsplit(
            (
                scheme.removeprefix("webhook+"),
                parts.netloc,
                parts.path or "/",
                urllib.parse.urlencode(kept),
                "",
            )
        )
        context = _tls_context(options, name) if scheme == "webhook+https" else None
        return WebhookSink(name, target, fmt, slack, context)
    raise SinkURLError(
        f"{name}: unknown sink scheme {scheme!r}; use jsonl:, ecs:, ocsf:, syslog+udp://, "
        "syslog+tcp://, syslog+tls://, splunk-hec://, webhook+https://"
    )


# -- delivery ----------------------------------------------------------------------------


class OutboxDelivery:
    """The background thread that drains the store's outbox into the sinks.

    Each sink is retried independently: after a failure it waits ``base_backoff`` seconds,
    doubling per consecutive failure up to ``max_backoff`` (with +-20 % jitter so many
    auditors do not hammer a recovering SIEM in step); a success resets it.
    """

    def __init__(
        self,
        store: FindingsStore,
        sinks: Sequence[Sink],
        *,
        base_backoff: float = 1.0,
        max_backoff: float = 300.0,
        batch_size: int = 100,
        idle_poll: float = 1.0,
    ) -> None:
        self.store = store
        self.sinks = list(sinks)
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self.batch_size = batch_size
        self.idle_poll = idle_poll
        self._failures: dict[str, int] = {s.name: 0 for s in self.sinks}
        self._next_try: dict[str, float] = {s.name: 0.0 for s in self.sinks}
        self._ticks: list[Callable[[], None]] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        store.set_active_sinks(s.name for s in self.sinks)

    def start(self) -> None:
        # Delivered rows are kept a week for ``sinks status`` and audits, then forgotten
        # (the alert window lives in alert_state, not in these rows).
        self.store.prune_delivered(time.time() - DELIVERED_RETENTION_SECONDS)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="outbox-delivery", daemon=True)
            self._thread.start()

    def add_tick(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` from the delivery thread before every pass (at least every
        ``idle_poll`` seconds): how coalesced findings reach the store when traffic stops."""
        self._ticks.append(callback)

    def notify(self) -> None:
        """Something was queued: deliver now rather than at the next poll."""
        self._wake.set()

    def run_once(self) -> int:
        """One pass over every sink that is not backing off; how many alerts were delivered."""
        delivered = 0
        for sink in self.sinks:
            if self._stop.is_set():
                break
            if time.monotonic() < self._next_try[sink.name]:
                continue
            delivered += self._drain(sink)
        return delivered

    def _drain(self, sink: Sink) -> int:
        from auditor.outputs.alert import Alert

        delivered = 0
        while not self._stop.is_set():
            entries = self.store.pending(sink.name, self.batch_size)
            if not entries:
                return delivered
            alerts = [Alert(e.finding, e.is_new) for e in entries]
            try:
                sink.deliver(alerts)
                done, error = len(entries), None
            except DeliveryError as exc:
                done, error = exc.delivered, str(exc)
            except Exception as exc:  # a formatting bug must not kill the thread
                log.exception("sink %s failed", sink.name)
                done, error = 0, f"{type(exc).__name__}: {exc}"
            self.store.mark_delivered(sink.name, [e.id for e in entries[:done]])
            delivered += done
            if error is not None:
                self.store.mark_failed(sink.name, [e.id for e in entries[done:]], error)
                self._back_off(sink.name)
                log.warning("sink %s: %s (alerts stay queued)", sink.name, error)
                return delivered
            self._failures[sink.name] = 0
        return delivered

    def _back_off(self, name: str) -> None:
        self._failures[name] += 1
        delay = min(self.max_backoff, self.base_backoff * 2 ** (self._failures[name] - 1))
        self._next_try[name] = time.monotonic() + delay * random.uniform(0.8, 1.2)

    def _run(self) -> None:
        while not self._stop.is_set():
            for tick in self._ticks:
                try:
                    tick()
                except Exception:  # a failing hook must not stop delivery
                    log.exception("outbox delivery: tick failed")
            try:
                self.run_once()
            except sqlite3.Error as exc:  # store closed or locked: try again later
                log.warning("outbox delivery: store error: %s", exc)
            except Exception:  # never let the thread die: alerts would silently pile up
                log.exception("outbox delivery: unexpected error")
            now = time.monotonic()
            waits = [t - now for t in self._next_try.values() if t > now]
            self._wake.wait(min([self.idle_poll, *waits]))
            self._wake.clear()

    def backlog(self) -> int:
        names = {s.name for s in self.sinks}
        return sum(s.backlog for s in self.store.sink_status() if s.name in names)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the backlog to empty; True when it did."""
        deadline = time.monotonic() + timeout
        while self.backlog():
            if time.monotonic() >= deadline:
                return False
            self.notify()
            time.sleep(0.05)
        return True

    def close(self, flush_timeout: float = 0.0) -> None:
        """Stop the thread (after trying to flush for ``flush_timeout`` s); close the sinks."""
        if flush_timeout > 0 and self._thread is not None:
            self.flush(flush_timeout)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(NETWORK_TIMEOUT_SECONDS + 1)
            self._thread = None
        for sink in self.sinks:
            sink.close()


class _Pending(NamedTuple):
    """A finding waiting for the next flush: the caller's finding and, as of its latest call,
    the fields ``Finding.merge`` changes (the others never change after creation)."""

    finding: Finding
    count: int
    first_seen: float
    last_seen: float
    severity: Severity
    title: str
    evidence: dict[str, Any]

    def to_finding(self) -> Finding:
        return dataclasses.replace(
            self.finding,
            count=self.count,
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            severity=self.severity,
            title=self.title,
            evidence=self.evidence,
        )


class FindingsRecorder:
    """Store every finding, queue alerts, wake delivery: fed one of two ways.

    ``Pipeline(on_finding=recorder)`` (the live proxy): the pipeline passes its running merged
    finding on every occurrence. Repeats are coalesced in memory and written together every
    ``flush_interval`` seconds (by the next call or the delivery thread) and on ``close``, so a
    busy proxy pays a dictionary update per repeat, not a database transaction; a finding not
    stored yet, or one whose severity rose, is written at once: its alert must not wait.

    ``recorder.sync(pipeline.findings.values())`` (offline analysis, which holds every merged
    finding itself): called every few seconds and at the end, it writes the findings that are
    new or grew since the last sync in one transaction, so an offline run pays nothing per
    occurrence. Nobody waits on its alerts.

    Either way the flush turns running counts into the number of new occurrences, so the
    stored count is right across flushes and restarts. A store error is logged and counted,
    never raised into the proxy or the analysis.
    """

    def __init__(
        self,
        store: FindingsStore,
        delivery: OutboxDelivery | None = None,
        *,
        flush_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.delivery = delivery
        self.flush_interval = flush_interval
        self.errors = 0
        self._lock = threading.Lock()
        self._stored_counts: dict[tuple[str, str, str, str], int] = {}
        self._written_severity: dict[tuple[str, str, str, str], Severity] = {}
        self._pending: dict[tuple[str, str, str, str], _Pending] = {}
        self._last_flush = time.monotonic()
        if delivery is not None:
            delivery.add_tick(self._flush_if_due)

    def __call__(self, finding: Finding, is_new: bool) -> None:
        with self._lock:
            key = self._queue(finding)
            written = self._written_severity.get(key)
            urgent = written is None or finding.severity > written
            due = urgent or time.monotonic() - self._last_flush >= self.flush_interval
        if due:
            self.flush()

    def sync(self, findings: Iterable[Finding]) -> None:
        """Record the caller's merged findings as they stand now: those new or grown since
        the last sync (every merge adds to the count), in one transaction.

        Called on the thread that merges into ``findings``, so they cannot change while they
        are written: they are handed to the store as they are, without the snapshot
        ``__call__`` takes."""
        items: list[tuple[Finding, int]] = []
        with self._lock:
            stored = self._stored_counts
            for finding in findings:
                key = finding.key
                previous = stored.get(key)
                if finding.count != previous:
                    items.append((finding, finding.count - (previous or 0)))
                    stored[key] = finding.count
        self._write(items)

    def _queue(self, finding: Finding) -> tuple[str, str, str, str]:
        """Note ``finding`` for the next flush (lock held); its key."""
        key = finding.key
        # The caller goes on merging repeats into ``finding`` on its own thread while a flush
        # may run on the delivery thread, so the changing fields are read here, on the
        # caller's thread right after its merge (consistent), rather than at flush time; the
        # finding to store is built from them once per flush, not copied on every call.
        first_seen, last_seen = finding.first_seen, finding.last_seen
        queued = self._pending.get(key)
        if queued is not None:  # callers that pass a new object per occurrence
            first_seen = min(first_seen, queued.first_seen)
            last_seen = max(last_seen, queued.last_seen)
        self._pending[key] = _Pending(
            finding,
            finding.count,
            first_seen,
            last_seen,
            finding.severity,
            finding.title,
            finding.evidence,
        )
        return key

    def _flush_if_due(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        """Write every coalesced finding now (one transaction) and wake delivery."""
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
            self._last_flush = time.monotonic()
            items: list[tuple[Finding, int]] = []
            for entry in pending:
                key = entry.finding.key
                # New occurrences since the last flush: the running count's growth.
                items.append((entry.to_finding(), entry.count - self._stored_counts.get(key, 0)))
                self._stored_counts[key] = entry.count
                previous = self._written_severity.get(key)
                if previous is None or entry.severity > previous:
                    self._written_severity[key] = entry.severity
        self._write(items)

    def _write(self, items: list[tuple[Finding, int]]) -> None:
        """Record (finding, new occurrences) pairs in one transaction and wake delivery."""
        if not items:
            return
        try:
            self.store.record_many(items)
        except sqlite3.Error as exc:
            self.errors += 1
            log.warning("findings store %s: cannot record findings: %s", self.store.path, exc)
            return
        if self.delivery is not None:
            self.delivery.notify()

    def close(self, flush_timeout: float = 5.0) -> None:
        self.flush()
        if self.delivery is not None:
            self.delivery.close(flush_timeout)
        self.store.close()


def open_recorder(
    store_path: str | Path,
    sink_urls: Sequence[str] = (),
    *,
    alert_window: float | None = None,
    flush_interval: float = 1.0,
    **delivery_options: Any,
) -> FindingsRecorder:
    """Open the store, parse the sinks and start delivery: what ``--store``/``--sink`` do.

    Raises ``SinkURLError`` or ``auditor.store.StoreError`` with a one-line message.
    """
    sinks = [parse_sink_url(url) for url in sink_urls]
    kwargs = {} if alert_window is None else {"alert_window": alert_window}
    store = FindingsStore(store_path, **kwargs)
    delivery = None
    if sinks:
        delivery = OutboxDelivery(store, sinks, **delivery_options)
        delivery.start()
    return FindingsRecorder(store, delivery, flush_interval=flush_interval)
