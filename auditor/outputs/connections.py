"""Per-connection records in Elastic Common Schema (ECS) field names, as JSON lines.

One document per ``Connection``: the flow (``source.*``, ``destination.*``, ``network.*``),
its TLS handshake (``tls.*`` with the IANA cipher name and JA4/JA3), its first cleartext HTTP
request (``http.*``, ``url.*``) and its DNS question/answers (``dns.*``). Field names follow
ECS 8.x (https://www.elastic.co/guide/en/ecs/current/); ``tls.client.ja4`` is not an ECS field
yet and is named as Elastic's own integrations name it. Nothing here is redacted because no
prompt or key is written: bodies are reported by size only.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from typing import IO, Any

from auditor.enrich.geo import GeoLookup
from auditor.model import Certificate, Connection, DNSMessage, HTTPRequest, TLSHandshake
from auditor.signatures import Signatures


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _prune(doc: dict[str, Any]) -> dict[str, Any]:
    """Drop None values and empty containers, recursively, so documents stay readable."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            value = _prune(value)
        if value is None or value == {} or value == []:
            continue
        out[key] = value
    return out


def _x509(cert: Certificate) -> dict[str, Any]:
    return {
        "subject": {"distinguished_name": cert.subject, "common_name": cert.subject_cn},
        "issuer": {"distinguished_name": cert.issuer},
        "alternative_names": cert.sans,
        "not_before": _iso(cert.not_before) if cert.not_before else None,
        "not_after": _iso(cert.not_after) if cert.not_after else None,
        "serial_number": cert.serial.upper() if cert.serial else None,
        "public_key_algorithm": cert.key_type,
        "public_key_size": cert.key_bits or None,
        "signature_algorithm": cert.signature_algorithm,
    }


def tls_fields(tls: TLSHandshake, signatures: Signatures) -> dict[str, Any]:
    doc: dict[str, Any] = {"client": {}, "server": {}}
    client, server = tls.client, tls.server
    if client is not None:
        doc["client"] = {
            "server_name": client.server_name,
            "ja4": client.ja4 or None,
            "ja3": client.ja3_hash or None,
            "supported_ciphers": [
                signatures.cipher_name(c) for c in client.cipher_suites if (c & 0x0F0F) != 0x0A0A
            ],
        }
    if server is not None:
        info = signatures.version_info(server.version)
        doc["version"] = info.version if info else None
        doc["version_protocol"] = info.protocol if info else None
        doc["cipher"] = signatures.cipher_name(server.cipher_suite)
        doc["next_protocol"] = server.alpn
        doc["established"] = tls.failure is None and tls.alert is None
    if tls.certificates:
        leaf = tls.certificates[0]
        doc["server"] = {
            "x509": _x509(leaf),
            "hash": {"sha256": leaf.sha256.upper()},
            "subject": leaf.subject,
            "issuer": leaf.issuer,
            "not_before": _iso(leaf.not_before) if leaf.not_before else None,
            "not_after": _iso(leaf.not_after) if leaf.not_after else None,
        }
    return doc


def dns_fields(messages: list[DNSMessage]) -> dict[str, Any]:
    if not messages:
        return {}
    response = next((m for m in messages if m.is_response), None)
    first = response or messages[0]
    doc: dict[str, Any] = {
        "question": {"name": first.query_name, "type": first.query_type},
        "id": str(first.transaction_id),
        "type": "answer" if response else "query",
    }
    if response is not None:
        doc["answers"] = [
            {"name": a.name, "type": a.rtype, "data": a.data, "ttl": a.ttl}
            for a in response.answers
        ]
        doc["resolved_ip"] = [a.data for a in response.answers if a.rtype in ("A", "AAAA")]
        doc["response_code"] = _RCODES.get(response.rcode or 0, str(response.rcode))
    return doc


_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def http_fields(request: HTTPRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    path, _, query = request.path.partition("?")
    http = {
        "version": request.http_version.removeprefix("HTTP/"),
        "request": {"method": request.method, "body": {"bytes": len(request.body)}},
    }
    url = {"domain": request.host, "path": path, "query": query or None}
    return http, url


def connection_document(conn: Connection, signatures: Signatures, geo: GeoLookup) -> dict[str, Any]:
    """The ECS document for one connection."""
    flow = conn.flow
    where = geo.lookup(flow.dst_ip)
    version = ipaddress.ip_address(flow.dst_ip).version
    doc: dict[str, Any] = {
        "@timestamp": _iso(conn.first_seen),
        "event": {
            "kind": "event",
            "category": ["network"],
            "type": ["connection"],
            "start": _iso(conn.first_seen),
            "end": _iso(conn.last_seen),
            "duration": int((conn.last_seen - conn.first_seen) * 1e9),
            "dataset": "auditor.connection",
        },
        "source": {
            "ip": flow.src_ip,
            "port": flow.src_port,
            "bytes": conn.bytes_out,
            "packets": conn.packets_out,
        },
        "destination": {
            "ip": flow.dst_ip,
            "port": flow.dst_port,
            "domain": conn.server_name,
            "bytes": conn.bytes_in,
            "packets": conn.packets_in,
            "geo": {"country_iso_code": where.country},
            "as": {"number": where.asn, "organization": {"name": where.as_org}},
        },
        "network": {
            "transport": flow.transport,
            "type": f"ipv{version}",
            "protocol": conn.app_protocol,
            "bytes": conn.bytes_out + conn.bytes_in,
            "packets": conn.packets_out + conn.packets_in,
        },
    }
    if conn.tls is not None:
        doc["tls"] = tls_fields(conn.tls, signatures)
    if conn.http:
        doc["http"], doc["url"] = http_fields(conn.http[0])
        agent = conn.http[0].header("user-agent")
        doc["user_agent"] = {"original": agent}
        doc["auditor"] = {"http_requests": len(conn.http)}
    if conn.dns:
        doc["dns"] = dns_fields(conn.dns)
    return _prune(doc)


class ConnectionWriter:
    """Writes one ECS JSON line per connection as connections end (streaming, no buffering)."""

    def __init__(self, stream: IO[str], signatures: Signatures, geo: GeoLookup) -> None:
        self.stream = stream
        self.signatures = signatures
        self.geo = geo
        self.count = 0

    def __call__(self, conn: Connection) -> None:
        doc = connection_document(conn, self.signatures, self.geo)
        self.stream.write(json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n")
        self.count += 1
