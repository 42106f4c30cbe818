"""X.509 reading: names, SANs, validity, key, signature hash, self-signed, and unreadable DER."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from auditor.capture.x509 import parse_certificate

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Throwaway Test Org"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(
    subject_key: object,
    signing_key: object,
    subject: str,
    issuer: str,
    algorithm: hashes.HashAlgorithm | None = None,
    sans: list[x509.GeneralName] | None = None,
    serial: int = 0x1A2B3C,
) -> bytes:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(subject_key.public_key())  # type: ignore[attr-defined]
        .serial_number(serial)
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=30))
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(signing_key, algorithm)  # type: ignore[arg-type]
    return cert.public_bytes(Encoding.DER)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_rsa_self_signed_with_sans(rsa_key: rsa.RSAPrivateKey) -> None:
    der = _certificate(
        rsa_key,
        rsa_key,
        "api.relay.test",
        "api.relay.test",
        hashes.SHA256(),
        sans=[
            x509.DNSName("api.relay.test"),
            x509.DNSName("*.relay.test"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.9")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ],
    )
    cert = parse_certificate(der)
    assert cert.parse_error is None
    assert cert.subject == "CN=api.relay.test,O=Throwaway Test Org"
    assert cert.issuer == cert.subject
    assert cert.subject_cn == "api.relay.test"
    assert cert.sans == ["api.relay.test", "*.relay.test", "127.0.0.9", "::1"]
    assert cert.not_before == NOW.timestamp()
    assert cert.not_after == (NOW + datetime.timedelta(days=30)).timestamp()
    assert cert.serial == "1a2b3c"
    assert (cert.key_type, cert.key_bits) == ("RSA", 2048)
    assert cert.signature_algorithm == "sha256WithRSAEncryption"
    assert cert.signature_hash == "sha256"
    assert cert.self_signed is True
    assert cert.sha256 == hashlib.sha256(der).hexdigest()


def test_ec_leaf_issued_by_another_key_is_not_self_signed(rsa_key: rsa.RSAPrivateKey) -> None:
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    cert = parse_certificate(
        _certificate(leaf_key, rsa_key, "leaf.test", "Throwaway CA", hashes.SHA384())
    )
    assert (cert.key_type, cert.key_bits) == ("EC", 256)
    assert cert.signature_algorithm == "sha384WithRSAEncryption"
    assert cert.self_signed is False
    assert cert.sans == []


def test_same_subject_and_issuer_but_foreign_signature_is_not_self_signed(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    # Looks self-signed by name; the signature is by a different key (an impersonation).
    other_key = ec.generate_private_key(ec.SECP384R1())
    cert = parse_certificate(_certificate(rsa_key, other_key, "same", "same", hashes.SHA256()))
    assert cert.subject == cert.issuer
    assert cert.signature_algorithm == "ecdsa-with-SHA256"
    assert cert.self_signed is False


def test_ed25519_has_no_separate_hash() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    cert = parse_certificate(_certificate(key, key, "ed.test", "ed.test"))
    assert (cert.key_type, cert.key_bits) == ("Ed25519", 256)
    assert cert.signature_algorithm == "ed25519"
    assert cert.signature_hash is None
    assert cert.self_signed is True


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")
def test_sha1_rsa1024_certificate_made_by_openssl(tmp_path: Path) -> None:
    # cryptography refuses to sign with SHA-1, and weak certificates are what we must spot.
    der_path = tmp_path / "weak.der"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-sha1", "-days", "2",
         "-subj", "/CN=weak.test", "-keyout", str(tmp_path / "weak.key"),
         "-outform", "DER", "-out", str(der_path)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    cert = parse_certificate(der_path.read_bytes())
    assert cert.parse_error is None
    assert (cert.key_type, cert.key_bits) == ("RSA", 1024)
    assert cert.signature_algorithm == "sha1WithRSAEncryption"
    assert cert.signature_hash == "sha1"
    assert cert.self_signed is True
    assert cert.subject_cn == "weak.test"


@pytest.mark.parametrize(
    "der",
    [b"", b"\x00", b"not a certificate at all", b"\x30\x82\xff\xff" + b"\x00" * 16],
    ids=["empty", "one-byte", "text", "length-past-end"],
)
def test_unreadable_der_gives_parse_error_not_exception(der: bytes) -> None:
    cert = parse_certificate(der)
    assert cert.parse_error
    assert "\n" not in cert.parse_error
    assert cert.sha256 == hashlib.sha256(der).hexdigest()
    assert cert.self_signed is False


def test_truncated_and_mutated_certificates_never_raise(rsa_key: rsa.RSAPrivateKey) -> None:
    import random

    der = _certificate(rsa_key, rsa_key, "fuzz.test", "fuzz.test", hashes.SHA256())
    for cut in range(0, len(der), 37):
        assert parse_certificate(der[:cut]).parse_error
    rng = random.Random(1234)
    for _ in range(300):
        mutated = bytearray(der)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        cert = parse_certificate(bytes(mutated))  # must not raise
        assert cert.sha256 == hashlib.sha256(mutated).hexdigest()
