"""weak-tls: TLS that does not protect what is sent to an AI service.

    TLSHandshake -> this detector -> findings

What it notices, per handshake (kinds and default severities):

- ``weak-tls.protocol``: negotiated version below ``policy.min_tls_version``; severity from
  ``signatures/tls_versions.yaml`` (medium when the table has none). With no ServerHello seen,
  a client whose highest offered version is below the minimum is reported the same way.
- ``weak-tls.cipher``: the negotiated suite has a severity in
  ``signatures/tls_cipher_suites.yaml`` (null/anon/export critical, RC4/DES/3DES/MD5 high,
  CBC with SHA-1 low).
- ``weak-tls.client-offers-only-weak`` (medium): every suite the client offers (GREASE and
  signalling values aside) is weak in that table.
- ``weak-tls.no-sni``: a ClientHello without server_name. Low when a name for the address is
  known from DNS (the client resolved a name, then hid it or forgot it); info when no name is
  known, since a client that connects to an IP literal is forbidden to send one (RFC 6066 §3)
  and the absence then says little. QUIC is treated alike.
- certificates (visible in TLS <= 1.2): ``weak-tls.self-signed`` (high, leaf only),
  ``weak-tls.cert-expired`` (high) / ``weak-tls.cert-not-yet-valid`` (medium) at the time of
  the observation, ``weak-tls.name-mismatch`` (high; RFC 6125 wildcards: ``*`` stands for one
  whole left-most label), ``weak-tls.weak-key`` (medium; RSA/DSA below ``policy.min_rsa_bits``),
  ``weak-tls.weak-signature`` (SHA-1 medium, MD5 high; not on self-signed roots, whose
  signature nobody verifies).

- ``weak-tls.handshake-failed``: the handshake did not complete and the source says why
  (``TLSHandshake.failure``; the proxy's upstream leg refused, e.g. a server that speaks only
  TLS 1.0 while mitmproxy asks for 1.2). High when the reason names a protocol version or no
  shared cipher (the server's TLS is what failed: the ``HANDSHAKE_FAILURE_WEAKNESS`` patterns),
  medium otherwise (a certificate or network problem is still a failure worth knowing).
  Evidence: the failure text, and the alert if one was seen.

A failed handshake (``failure`` / ``alert``) is added to the evidence of every finding from it.
Version and suite names are IANA names from the signature tables; thresholds come from the
policy. No suite names live in this module.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Any, ClassVar

from auditor.detectors.base import DetectionContext, Detector
from auditor.model import (
    Certificate,
    ClientHello,
    Finding,
    Observation,
    ServerHello,
    Severity,
    TLSHandshake,
    finding_for,
)
from auditor.signatures import Signatures, normalise_host

# Severity of negotiating a version that is below the policy minimum but has no severity in
# tls_versions.yaml (a version newer than the table, or a table without one).
DEFAULT_PROTOCOL_SEVERITY = Severity.MEDIUM
# Signature hashes that no longer protect a certificate: MD5 collisions are practical
# (RFC 6151), SHA-1 chosen-prefix collisions too (SHAttered / "SHA-1 is a Shambles", 2020).
WEAK_SIGNATURE_HASH_SEVERITY = {"md5": Severity.HIGH, "sha1": Severity.MEDIUM}
# Key types whose strength is measured in modulus bits against policy.min_rsa_bits.
MODULUS_KEY_TYPES = frozenset({"RSA", "DSA"})
# Cipher-suite code points that signal, not negotiate: TLS_EMPTY_RENEGOTIATION_INFO_SCSV
# (RFC 5746) and TLS_FALLBACK_SCSV (RFC 7507). They say nothing about a client's strength.
SIGNALLING_SUITES = frozenset({0x00FF, 0x5600})
# What a failure text says when the server's protocol version or suites are the reason: the
# wording of OpenSSL's reasons ("unsupported protocol", "wrong version number", "no protocols
# available", "tlsv1 alert protocol version", "no shared cipher", "no cipher match", "sslv3
# alert handshake failure" for a server refusing every offered suite) as mitmproxy passes them on.
HANDSHAKE_FAILURE_WEAKNESS = re.compile(
    r"protocol[ _]version|unsupported[ _]protocol|wrong[ _]version|no[ _]protocols[ _]available"
    r"|version[ _]too[ _]low|no[ _]shared[ _]cipher|no[ _]cipher|cipher[ _]mismatch"
    r"|handshake[ _]failure",
    re.IGNORECASE,
)


# What each check yields: (kind, severity, title, evidence, evidence_key).
Problem = tuple[str, Severity, str, dict[str, Any], str]


def is_grease(code: int) -> bool:
    """RFC 8701 GREASE values: 0x?A?A with both bytes equal."""
    return (code & 0x0F0F) == 0x0A0A and (code >> 8) == (code & 0xFF)


def name_matches(pattern: str, host: str) -> bool:
    """Does a certificate name cover ``host``? RFC 6125 §6.4.3: ``*`` only as the whole
    left-most label, matching exactly one label (``*.example.com`` covers ``a.example.com``,
    not ``example.com`` nor ``a.b.example.com``)."""
    pattern = normalise_host(pattern)
    host = normalise_host(host)
    if pattern == host:
        return True
    if not pattern.startswith("*."):
        return False
    suffix = pattern[1:]  # ".example.com"
    if not host.endswith(suffix):
        return False
    label = host[: -len(suffix)]
    return bool(label) and "." not in label


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def certificate_covers(cert: Certificate, host: str) -> bool:
    """Names from the SANs; the subject CN only when there are no SANs (RFC 6125 §6.4.4)."""
    names = cert.sans or ([cert.subject_cn] if cert.subject_cn else [])
    if _is_ip(host):
        # An address is matched only against address SANs, never against a wildcard.
        return any(_is_ip(n) and ipaddress.ip_address(n) == ipaddress.ip_address(host)
                   for n in names)
    return any(not _is_ip(n) and name_matches(n, host) for n in names)


class WeakTLSDetector(Detector):
    name: ClassVar[str] = "weak-tls"
    description: ClassVar[str] = (
        "Old protocol versions, weak cipher suites, missing SNI and bad certificates"
    )
    observes: ClassVar[tuple[type[Observation], ...]] = (TLSHandshake,)

    def inspect(self, obs: Observation, ctx: DetectionContext) -> list[Finding]:
        # A list, not a generator: asked of every handshake, most of which have no problem.
        assert isinstance(obs, TLSHandshake)
        handshake_outcome: dict[str, Any] = {}
        if obs.failure:
            handshake_outcome["handshake_failure"] = obs.failure
        if obs.alert:
            handshake_outcome["alert"] = obs.alert
        return [
            finding_for(
                obs,
                detector=self.name,
                kind=kind,
                severity=severity,
                title=title,
                evidence={**evidence, **handshake_outcome},
                evidence_key=key,
            )
            for kind, severity, title, evidence, key in self._problems(obs, ctx)
        ]

    def _problems(self, obs: TLSHandshake, ctx: DetectionContext) -> Iterator[Problem]:
        sigs = ctx.signatures
        if obs.failure:
            yield self._failed(obs.failure, obs.alert)
        if obs.server is not None:
            yield from self._negotiated(obs.server, obs.client, ctx)
        elif obs.client is not None:
            yield from self._offered_version(obs.client, ctx)
        if obs.client is not None:
            yield from self._client_suites(obs.client, sigs)
            yield from self._sni(obs, obs.client)
        if obs.certificates:
            yield from self._certificates(obs, ctx)

    def _negotiated(
        self, server: ServerHello, client: ClientHello | None, ctx: DetectionContext
    ) -> Iterator[Problem]:
        sigs, policy = ctx.signatures, ctx.policy
        version = server.version
        if version < policy.min_tls_version:
            info = sigs.version_info(version)
            severity = (
                Severity.parse(info.severity) if info and info.severity
                else DEFAULT_PROTOCOL_SEVERITY
            )
            yield (
                "weak-tls.protocol",
                severity,
                f"{sigs.version_name(version)} negotiated "
                f"(policy minimum {sigs.version_name(policy.min_tls_version)})",
                {
                    "version": sigs.version_name(version),
                    "version_code": f"0x{version:04X}",
                    "minimum": sigs.version_name(policy.min_tls_version),
                    "client_max_version": sigs.version_name(client.max_version) if client else None,
                    "cipher": sigs.cipher_name(server.cipher_suite),
                    "basis": "negotiated",
                },
                sigs.version_name(version),
            )
        suite = sigs.cipher_suites.get(server.cipher_suite)
        if suite is not None and suite.severity:
            yield (
                "weak-tls.cipher",
                Severity.parse(suite.severity),
                f"Weak cipher suite {suite.name} negotiated",
                {
                    "cipher": suite.name,
                    "cipher_code": f"0x{suite.code:04X}",
                    "weaknesses": list(suite.weaknesses),
                    "version": sigs.version_name(version),
                },
                suite.name,
            )

    def _failed(self, failure: str, alert: str | None) -> Problem:
        weakness = HANDSHAKE_FAILURE_WEAKNESS.search(failure) or (
            HANDSHAKE_FAILURE_WEAKNESS.search(alert) if alert else None
        )
        return (
            "weak-tls.handshake-failed",
            Severity.HIGH if weakness else Severity.MEDIUM,
            "TLS handshake failed: " + (
                "the server's protocol version or cipher suites" if weakness else failure[:80]
            ),
            {
                "failure": failure,
                "reason": (
                    "protocol version / cipher suites (" + weakness.group(0) + ")" if weakness
                    else "other (certificate, network or unknown)"
                ),
            },
            "weak" if weakness else "other",
        )

    def _offered_version(self, client: ClientHello, ctx: DetectionContext) -> Iterator[Problem]:
        sigs, policy = ctx.signatures, ctx.policy
        offered = client.max_version
        if offered >= policy.min_tls_version:
            return
        info = sigs.version_info(offered)
        severity = (
            Severity.parse(info.severity) if info and info.severity else DEFAULT_PROTOCOL_SEVERITY
        )
        yield (
            "weak-tls.protocol",
            severity,
            f"Client offers at most {sigs.version_name(offered)} "
            f"(policy minimum {sigs.version_name(policy.min_tls_version)})",
            {
                "version": sigs.version_name(offered),
                "version_code": f"0x{offered:04X}",
                "minimum": sigs.version_name(policy.min_tls_version),
                "basis": "highest version offered by the client (no ServerHello seen)",
            },
            sigs.version_name(offered),
        )

    def _client_suites(self, client: ClientHello, sigs: Signatures) -> Iterator[Problem]:
        real: list[int] = []
        for code in client.cipher_suites:
            if is_grease(code) or code in SIGNALLING_SUITES:
                continue
            suite = sigs.cipher_suites.get(code)
            # Unknown code points are not assumed weak: the table decides. Clients list a
            # strong suite first, so most hellos are judged at their first real suite.
            if suite is None or not suite.severity:
                return
            real.append(code)
        if real:
            yield (
                "weak-tls.client-offers-only-weak",
                Severity.MEDIUM,
                "Client offers only weak cipher suites",
                {
                    "offered": [sigs.cipher_name(c) for c in real],
                    "client_max_version": sigs.version_name(client.max_version),
                    "ja4": client.ja4 or None,
                },
                client.ja4 or ",".join(f"{c:04x}" for c in real),
            )

    def _sni(self, obs: TLSHandshake, client: ClientHello) -> Iterator[Problem]:
        if client.server_name:
            return
        name_known = obs.server_name is not None and not _is_ip(obs.server_name)
        yield (
            "weak-tls.no-sni",
            Severity.LOW if name_known else Severity.INFO,
            "ClientHello without SNI",
            {
                "name_from_dns": obs.server_name if name_known else None,
                "over_quic": client.over_quic,
                "ja4": client.ja4 or None,
                "note": (
                    "the client resolved this name but did not send it"
                    if name_known
                    else "no name known for the address: the client likely connected to an IP "
                    "literal, for which RFC 6066 forbids SNI"
                ),
            },
            "",
        )

    def _certificates(self, obs: TLSHandshake, ctx: DetectionContext) -> Iterator[Problem]:
        policy = ctx.policy
        leaf = obs.certificates[0]
        expected_name = (obs.client.server_name if obs.client else None) or obs.server_name
        if leaf.parse_error is None:
            if leaf.self_signed:
                yield (
                    "weak-tls.self-signed",
                    Severity.HIGH,
                    "Server certificate is self-signed",
                    _cert_evidence(leaf, 0),
                    leaf.sha256,
                )
            if expected_name and not certificate_covers(leaf, expected_name):
                yield (
                    "weak-tls.name-mismatch",
                    Severity.HIGH,
                    f"Certificate does not cover {expected_name}",
                    {**_cert_evidence(leaf, 0), "expected_name": expected_name},
                    leaf.sha256,
                )
        for position, cert in enumerate(obs.certificates):
            if cert.parse_error is not None:
                ctx.notes["weak-tls.unparsable-certificates"] = (
                    ctx.notes.get("weak-tls.unparsable-certificates", 0) + 1
                )
                continue
            evidence = _cert_evidence(cert, position)
            if obs.ts > cert.not_after:
                yield ("weak-tls.cert-expired", Severity.HIGH,
                       f"Certificate {cert.subject} expired", evidence, cert.sha256)
            elif obs.ts < cert.not_before:
                yield ("weak-tls.cert-not-yet-valid", Severity.MEDIUM,
                       f"Certificate {cert.subject} not yet valid", evidence, cert.sha256)
            if cert.key_type.upper() in MODULUS_KEY_TYPES and cert.key_bits < policy.min_rsa_bits:
                yield (
                    "weak-tls.weak-key",
                    Severity.MEDIUM,
                    f"{cert.key_type} key of {cert.key_bits} bits "
                    f"(policy minimum {policy.min_rsa_bits})",
                    {**evidence, "minimum_bits": policy.min_rsa_bits},
                    cert.sha256,
                )
            hash_name = (cert.signature_hash or "").lower()
            if hash_name in WEAK_SIGNATURE_HASH_SEVERITY and not cert.self_signed:
                yield (
                    "weak-tls.weak-signature",
                    WEAK_SIGNATURE_HASH_SEVERITY[hash_name],
                    f"Certificate signed with {hash_name.upper()}",
                    evidence,
                    cert.sha256,
                )


def _cert_evidence(cert: Certificate, position: int) -> dict[str, Any]:
    return {
        "chain_position": position,  # 0 = leaf
        "subject": cert.subject,
        "issuer": cert.issuer,
        "sans": cert.sans[:20],
        "not_before": cert.not_before,
        "not_after": cert.not_after,
        "key": f"{cert.key_type} {cert.key_bits}",
        "signature_algorithm": cert.signature_algorithm,
        "sha256": cert.sha256,
    }
