"""X.509 certificate parsing: DER bytes to the ``Certificate`` observation type.

    traffic -> source -> [observations] -> detectors -> ...

Called by the TLS parser (``auditor.capture.tls``) for each certificate of a TLS <= 1.2
Certificate message, and by the mitmproxy adapter for the upstream server's certificates.
Detectors (weak TLS, relay recognition) read the result: key size, signature hash, validity,
self-signed, names.

Never raises: a certificate that cannot be read still yields a ``Certificate`` (with its
SHA-256, so it can be recognised) whose ``parse_error`` says what was wrong.
"""

from __future__ import annotations

import datetime
import hashlib
import warnings

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import (
    dsa,
    ec,
    ed448,
    ed25519,
    padding,
    rsa,
    x448,
    x25519,
)
from cryptography.x509.oid import NameOID

from auditor.model import Certificate

# Key sizes of the fixed-size curves (bits of the public key's field), as tools report them.
_FIXED_KEY_BITS: dict[type, tuple[str, int]] = {
    ed25519.Ed25519PublicKey: ("Ed25519", 256),
    ed448.Ed448PublicKey: ("Ed448", 456),
    x25519.X25519PublicKey: ("X25519", 256),
    x448.X448PublicKey: ("X448", 448),
}


def _epoch(cert: x509.Certificate, which: str) -> float:
    """not_before / not_after as epoch seconds (``*_utc`` exists from cryptography 42)."""
    value = getattr(cert, f"not_valid_{which}_utc", None)
    if value is None:
        value = getattr(cert, f"not_valid_{which}").replace(tzinfo=datetime.UTC)
    return value.timestamp()


def _key_type_and_bits(cert: x509.Certificate) -> tuple[str, int]:
    try:
        key = cert.public_key()
    except Exception as exc:  # unsupported algorithm (GOST, ...) or a broken key
        return f"unknown ({exc.__class__.__name__})", 0
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    for key_class, (name, bits) in _FIXED_KEY_BITS.items():
        if isinstance(key, key_class):
            return name, bits
    return type(key).__name__, 0


def _signature_algorithm(cert: x509.Certificate) -> tuple[str, str | None]:
    """(algorithm name, hash name); the hash is None for EdDSA or when unknown."""
    oid = cert.signature_algorithm_oid
    # cryptography names known OIDs like OpenSSL does ("sha256WithRSAEncryption").
    name = getattr(oid, "_name", None) or oid.dotted_string
    if name == "Unknown OID":
        name = oid.dotted_string
    try:
        algorithm = cert.signature_hash_algorithm
    except Exception:  # an unsupported hash (md2, ...): take it from the name when visible
        lowered = name.lower()
        return name, next((h for h in ("md2", "md4", "md5") if h in lowered), None)
    return name, algorithm.name if algorithm is not None else None


def _sans(cert: x509.Certificate) -> list[str]:
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    names: list[str] = list(extension.value.get_values_for_type(x509.DNSName))
    names.extend(str(ip) for ip in extension.value.get_values_for_type(x509.IPAddress))
    return names


def _is_self_signed(cert: x509.Certificate) -> bool:
    """Subject equals issuer and the signature verifies with the certificate's own key."""
    if cert.subject != cert.issuer:
        return False
    try:
        key = cert.public_key()
        hash_algorithm = cert.signature_hash_algorithm
        # Verify by hand rather than with verify_directly_issued_by, which refuses SHA-1: old
        # self-signed SHA-1 certificates are exactly what the weak-TLS checks must recognise.
        if isinstance(key, rsa.RSAPublicKey):
            parameters = cert.signature_algorithm_parameters
            rsa_padding = parameters if parameters is not None else padding.PKCS1v15()
            key.verify(
                cert.signature,
                cert.tbs_certificate_bytes,
                rsa_padding,  # type: ignore[arg-type]
                hash_algorithm,  # type: ignore[arg-type]
            )
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(
                cert.signature,
                cert.tbs_certificate_bytes,
                ec.ECDSA(hash_algorithm),  # type: ignore[arg-type]
            )
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, hash_algorithm)  # type: ignore[arg-type]
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes)
        else:
            return False
    except Exception:  # bad signature, unsupported key or padding: not provably self-signed
        return False
    return True


def _common_name(cert: x509.Certificate) -> str | None:
    attributes = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attributes:
        return None
    value = attributes[0].value
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")


def parse_certificate(der: bytes) -> Certificate:
    """Read one DER certificate; never raises (see ``Certificate.parse_error``)."""
    sha256 = hashlib.sha256(der).hexdigest()
    try:
        with warnings.catch_warnings():
            # Negative serials and similar quirks warn; they are real-world certs all the same.
            warnings.simplefilter("ignore")
            cert = x509.load_der_x509_certificate(der)
            serial_number = cert.serial_number
            signature_algorithm, signature_hash = _signature_algorithm(cert)
            key_type, key_bits = _key_type_and_bits(cert)
            return Certificate(
                subject=cert.subject.rfc4514_string(),
                issuer=cert.issuer.rfc4514_string(),
                subject_cn=_common_name(cert),
                sans=_sans(cert),
                not_before=_epoch(cert, "before"),
                not_after=_epoch(cert, "after"),
                serial=format(serial_number, "x") if serial_number >= 0 else f"-{-serial_number:x}",
                key_type=key_type,
                key_bits=key_bits,
                signature_algorithm=signature_algorithm,
                signature_hash=signature_hash,
                self_signed=_is_self_signed(cert),
                sha256=sha256,
            )
    except Exception as exc:  # any field cryptography refuses: report it, never crash
        return Certificate(
            subject="",
            issuer="",
            subject_cn=None,
            sans=[],
            not_before=0.0,
            not_after=0.0,
            serial="",
            key_type="",
            key_bits=0,
            signature_algorithm="",
            signature_hash=None,
            self_signed=False,
            sha256=sha256,
            parse_error=f"{exc.__class__.__name__}: {exc}".splitlines()[0][:200],
        )
