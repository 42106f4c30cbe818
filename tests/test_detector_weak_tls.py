"""weak-tls: protocol versions, cipher suites, SNI and certificates of a handshake."""

from __future__ import annotations

import dataclasses

import pytest
from sample_signatures import flow, make_context, shipped_signatures

from auditor.detectors.weak_tls import WeakTLSDetector, name_matches
from auditor.model import Certificate, ClientHello, ServerHello, Severity, TLSHandshake
from auditor.policy import Policy

NOW = 1_760_000_000.0  # 2025-10-09
DAY = 86_400.0
GOOD_CLIENT_SUITES = [0x3A3A, 0x1301, 0xC02F, 0x002F, 0x00FF]


def cert(**changes: object) -> Certificate:
    base = Certificate(
        subject="CN=api.example-ai.com", issuer="CN=Example CA R3,O=Example CA",
        subject_cn="api.example-ai.com", sans=["api.example-ai.com", "*.example-ai.com"],
        not_before=NOW - 30 * DAY, not_after=NOW + 60 * DAY, serial="0a1b",
        key_type="EC", key_bits=256, signature_algorithm="sha256WithRSAEncryption",
        signature_hash="sha256", self_signed=False, sha256="ab" * 32,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def handshake(
    *, sni: str | None = "api.example-ai.com", version: int = 0x0303, suite: int = 0xC02F,
    client_suites: list[int] | None = None, certs: list[Certificate] | None = None,
    server: bool = True, server_name: str | None = None, alert: str | None = None,
) -> TLSHandshake:
    client = ClientHello(0x0301, 0x0303, client_suites or GOOD_CLIENT_SUITES, [0, 10, 13],
                         [], sni)
    return TLSHandshake(
        flow=flow("203.0.113.9"), ts=NOW, server_name=sni or server_name, client=client,
        server=ServerHello(version, suite) if server else None,
        certificates=certs if certs is not None else [cert()], alert=alert,
    )


def kinds(obs: TLSHandshake, policy: Policy | None = None) -> dict[str, Severity]:
    return {f.kind: f.severity for f in WeakTLSDetector().inspect(obs, make_context(policy))}


def test_modern_handshake_has_no_findings() -> None:
    assert kinds(handshake()) == {}


def test_tls10_with_rc4_reports_protocol_and_cipher_with_iana_names() -> None:
    findings = {f.kind: f for f in WeakTLSDetector().inspect(
        handshake(version=0x0301, suite=0x0005), make_context())}
    assert findings["weak-tls.protocol"].severity == Severity.HIGH
    assert findings["weak-tls.protocol"].evidence["version"] == "TLS 1.0"
    assert findings["weak-tls.protocol"].evidence["minimum"] == "TLS 1.2"
    assert findings["weak-tls.cipher"].severity == Severity.HIGH
    assert findings["weak-tls.cipher"].evidence["cipher"] == "TLS_RSA_WITH_RC4_128_SHA"
    assert findings["weak-tls.cipher"].evidence["weaknesses"] == ["rc4"]


def test_policy_minimum_decides_the_protocol_finding() -> None:
    assert "weak-tls.protocol" not in kinds(handshake(version=0x0301),
                                            Policy(min_tls_version=0x0301))
    assert kinds(handshake(version=0x0303), Policy(min_tls_version=0x0304)) == {
        "weak-tls.protocol": Severity.MEDIUM  # TLS 1.2 has no severity in the table
    }


@pytest.mark.parametrize(("suite", "severity"), [(0x0001, Severity.CRITICAL),
                                                 (0x000A, Severity.HIGH),
                                                 (0x002F, Severity.LOW)])
def test_cipher_severity_comes_from_the_table(suite: int, severity: Severity) -> None:
    assert kinds(handshake(suite=suite))["weak-tls.cipher"] == severity


def test_client_offering_only_weak_suites() -> None:
    weak_only = handshake(client_suites=[0x2A2A, 0x0005, 0x000A, 0x00FF], server=False)
    assert kinds(weak_only) == {"weak-tls.client-offers-only-weak": Severity.MEDIUM}
    # One strong suite among them is enough; unknown code points are not assumed weak.
    assert kinds(handshake(client_suites=[0x0005, 0x1301], server=False)) == {}
    assert kinds(handshake(client_suites=[0x0005, 0xFEFE], server=False)) == {}


def test_no_sni_is_low_when_a_name_is_known_and_info_for_an_address() -> None:
    named = handshake(sni=None, server_name="api.example-ai.com", certs=[])
    assert kinds(named) == {"weak-tls.no-sni": Severity.LOW}
    by_address = handshake(sni=None, certs=[])
    assert kinds(by_address) == {"weak-tls.no-sni": Severity.INFO}


def test_self_signed_leaf() -> None:
    leaf = cert(self_signed=True, issuer="CN=api.example-ai.com", signature_hash="sha1")
    # A self-signed certificate's own SHA-1 signature is not separately a finding.
    assert kinds(handshake(certs=[leaf])) == {"weak-tls.self-signed": Severity.HIGH}


def test_expired_and_not_yet_valid() -> None:
    assert kinds(handshake(certs=[cert(not_after=NOW - DAY)])) == {
        "weak-tls.cert-expired": Severity.HIGH}
    assert kinds(handshake(certs=[cert(not_before=NOW + DAY)])) == {
        "weak-tls.cert-not-yet-valid": Severity.MEDIUM}


def test_name_mismatch_uses_sans_and_one_label_wildcards() -> None:
    assert kinds(handshake(sni="eu.example-ai.com")) == {}  # covered by *.example-ai.com
    assert kinds(handshake(sni="a.b.example-ai.com")) == {"weak-tls.name-mismatch": Severity.HIGH}
    assert kinds(handshake(sni="api.relay.example")) == {"weak-tls.name-mismatch": Severity.HIGH}


def test_name_matches_rfc6125() -> None:
    assert name_matches("*.example.com", "api.example.com")
    assert not name_matches("*.example.com", "example.com")
    assert not name_matches("*.example.com", "a.b.example.com")
    assert name_matches("API.Example.com.", "api.example.com")


def test_weak_key_and_weak_signatures_in_the_chain() -> None:
    chain = [cert(key_type="RSA", key_bits=1024),
             cert(subject="CN=Old Intermediate", signature_hash="md5", sha256="cd" * 32),
             cert(subject="CN=Root", self_signed=True, signature_hash="sha1", sha256="ef" * 32)]
    findings = list(WeakTLSDetector().inspect(handshake(certs=chain), make_context()))
    assert sorted((f.kind, f.severity, f.evidence["chain_position"]) for f in findings) == [
        ("weak-tls.weak-key", Severity.MEDIUM, 0),
        ("weak-tls.weak-signature", Severity.HIGH, 1),
    ]
    sha1 = cert(signature_hash="sha1")
    assert kinds(handshake(certs=[sha1])) == {"weak-tls.weak-signature": Severity.MEDIUM}
    assert kinds(handshake(certs=[cert(key_type="RSA", key_bits=4096)])) == {}


def test_unparsable_certificate_is_skipped_and_counted() -> None:
    ctx = make_context()
    broken = cert(parse_error="ASN.1: truncated", not_after=0.0, self_signed=True)
    assert list(WeakTLSDetector().inspect(handshake(certs=[broken]), ctx)) == []
    assert ctx.notes["weak-tls.unparsable-certificates"] == 1


def test_failed_handshake_is_in_the_evidence() -> None:
    [finding] = WeakTLSDetector().inspect(
        handshake(certs=[cert(not_after=NOW - DAY)], alert="certificate_expired"), make_context())
    assert finding.evidence["alert"] == "certificate_expired"


def test_old_client_without_server_hello_reports_its_highest_version() -> None:
    obs = handshake(server=False, certs=[])
    obs.client.legacy_version = 0x0301  # type: ignore[union-attr]
    findings = list(WeakTLSDetector().inspect(obs, make_context()))
    assert [(f.kind, f.severity, f.evidence["version"]) for f in findings] == [
        ("weak-tls.protocol", Severity.HIGH, "TLS 1.0")]


def test_shipped_tables_name_rc4_and_rate_tls10() -> None:
    ctx = make_context(signatures=shipped_signatures())
    findings = {f.kind: f for f in WeakTLSDetector().inspect(
        handshake(version=0x0301, suite=0x0005), ctx)}
    assert findings["weak-tls.cipher"].evidence["cipher"] == "TLS_RSA_WITH_RC4_128_SHA"
    assert findings["weak-tls.cipher"].severity == Severity.HIGH
    assert findings["weak-tls.protocol"].evidence["version"] == "TLS 1.0"


# --- a handshake that failed (the proxy's upstream leg) --------------------------------------


def failed_handshake(failure: str | None, alert: str | None = None) -> TLSHandshake:
    hello = ClientHello(0x0301, 0x0303, [0x1301, 0xC02F], [0, 43], supported_versions=[0x0304],
                        server_name="tls10.example-ai.com")
    return TLSHandshake(flow=flow(), ts=NOW, server_name="tls10.example-ai.com", client=hello,
                        failure=failure, alert=alert)


def findings_of(handshake: TLSHandshake) -> list:
    return list(WeakTLSDetector().inspect(handshake, make_context()))


@pytest.mark.parametrize(
    "failure",
    [
        "[SSL: UNSUPPORTED_PROTOCOL] unsupported protocol (_ssl.c:1000)",
        "[SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 alert protocol version",
        "[SSL: NO_SHARED_CIPHER] no shared cipher",
    ],
)
def test_failure_naming_version_or_cipher_is_high(failure: str) -> None:
    [finding] = [f for f in findings_of(failed_handshake(failure))
                 if f.kind == "weak-tls.handshake-failed"]
    assert finding.severity == Severity.HIGH
    assert finding.evidence["failure"] == failure


def test_other_failure_is_medium() -> None:
    failure = "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get issuer"
    [finding] = [f for f in findings_of(failed_handshake(failure))
                 if f.kind == "weak-tls.handshake-failed"]
    assert finding.severity == Severity.MEDIUM
    assert finding.evidence["failure"] == failure


def test_completed_handshake_is_not_a_failure() -> None:
    assert not [f for f in findings_of(failed_handshake(None))
                if f.kind == "weak-tls.handshake-failed"]
