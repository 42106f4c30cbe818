"""JA4 and JA3 TLS client fingerprints, computed from a parsed ``ClientHello``.

    traffic -> source -> observations -> [enrichment] -> detectors -> ...

The TLS and QUIC parsers (``auditor.capture.tls`` / ``auditor.capture.quic``) call these when
they build a ``ClientHello``, so every observation carries its fingerprints; detectors match them
against relay-software fingerprints from ``signatures/``.

JA4 follows FoxIO's specification (technical_details/JA4.md in github.com/FoxIO-LLC/ja4, JA4
is BSD-3-Clause): GREASE ignored everywhere (ciphers, extensions, versions, signature
algorithms), version from the highest ``supported_versions`` entry, 'd'/'i' for the presence of
the SNI extension, counts capped at 99, ALPN first/last character with the hex rule for
non-alphanumeric bytes, sorted cipher list, sorted extension list without SNI and ALPN followed
by the signature algorithms in wire order, and ``000000000000`` for an empty list. JA3 follows
Salesforce's definition (github.com/salesforce/ja3): decimal fields, GREASE removed.

Clients repeat the same hello shape thousands of times in a capture, so both fingerprints are
computed from a tuple of exactly the fields they depend on and cached per distinct tuple: the
string building and hashing run once per client shape, not once per handshake.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from auditor.model import ClientHello

EXT_SERVER_NAME = 0x0000
EXT_ALPN = 0x0010
EXT_SUPPORTED_VERSIONS = 0x002B

# JA4's two-character version codes (JA4.md, "TLS and DTLS Version"); anything else is "00".
JA4_VERSION_CODES = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0002: "s2",
    0xFEFF: "d1",
    0xFEFD: "d2",
    0xFEFC: "d3",
}

# JA4 writes this instead of hashing an empty list, so "nothing there" is visible.
EMPTY_HASH = "000000000000"


def is_grease(value: int) -> bool:
    """GREASE code points (RFC 8701): 0x0A0A, 0x1A1A, ..., 0xFAFA."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


def _hash12(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12] if text else EMPTY_HASH


def _ja4_version(hello: ClientHello) -> str:
    version = hello.legacy_version
    if EXT_SUPPORTED_VERSIONS in hello.extensions:
        offered = [v for v in hello.supported_versions if not is_grease(v)]
        if offered:
            version = max(offered)
    return JA4_VERSION_CODES.get(version, "00")


def _is_alphanumeric(byte: int) -> bool:
    return 0x30 <= byte <= 0x39 or 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A


def ja4_alpn(hello: ClientHello) -> str:
    """First and last character of the first ALPN value ("00" when there is none).

    When either end byte is not alphanumeric, the first and last characters of the value's hex
    representation are used instead (JA4.md, "ALPN Extension Value").
    """
    if EXT_ALPN not in hello.extensions or not hello.alpn or not hello.alpn[0]:
        return "00"
    # The TLS parser decodes ALPN as latin-1, which gives back the exact wire bytes.
    raw = hello.alpn[0].encode("latin-1", errors="replace")
    if _is_alphanumeric(raw[0]) and _is_alphanumeric(raw[-1]):
        return chr(raw[0]) + chr(raw[-1])
    hex_text = raw.hex()
    return hex_text[0] + hex_text[-1]


# Distinct hello shapes in one capture are few (one per client build); the bound only stops a
# capture full of random hellos from growing the caches without limit.
FINGERPRINT_CACHE_SIZE = 4096


def ja4(hello: ClientHello, transport: str = "t") -> tuple[str, str]:
    """(JA4, JA4_r) of a ClientHello; ``transport`` is "t" (TCP), "q" (QUIC) or "d" (DTLS)."""
    extensions = hello.extensions
    # Only the fields JA4 reads go into the cache key: the first ALPN value (when the ALPN
    # extension is there) and the versions list (when supported_versions is there).
    first_alpn = hello.alpn[0] if hello.alpn and EXT_ALPN in extensions else ""
    versions = tuple(hello.supported_versions) if EXT_SUPPORTED_VERSIONS in extensions else ()
    return _ja4_cached(
        transport,
        hello.legacy_version,
        tuple(hello.cipher_suites),
        tuple(extensions),
        versions,
        tuple(hello.signature_algorithms),
        first_alpn,
    )


@lru_cache(maxsize=FINGERPRINT_CACHE_SIZE)
def _ja4_cached(
    transport: str,
    legacy_version: int,
    cipher_suites: tuple[int, ...],
    all_extensions: tuple[int, ...],
    supported_versions: tuple[int, ...],
    all_signature_algorithms: tuple[int, ...],
    first_alpn: str,
) -> tuple[str, str]:
    """JA4 from the hello fields it depends on (see ``ja4``); cached per distinct shape."""
    hello = ClientHello(
        record_version=0,
        legacy_version=legacy_version,
        cipher_suites=list(cipher_suites),
        extensions=list(all_extensions),
        supported_versions=list(supported_versions),
        alpn=[first_alpn] if first_alpn else [],
    )
    ciphers = [c for c in cipher_suites if not is_grease(c)]
    extensions = [e for e in all_extensions if not is_grease(e)]
    signature_algorithms = [s for s in all_signature_algorithms if not is_grease(s)]

    sni = "d" if EXT_SERVER_NAME in extensions else "i"
    prefix = (
        f"{transport}{_ja4_version(hello)}{sni}"
        f"{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}{ja4_alpn(hello)}"
    )
    cipher_text = ",".join(f"{c:04x}" for c in sorted(ciphers))
    hashed_extensions = sorted(e for e in extensions if e not in (EXT_SERVER_NAME, EXT_ALPN))
    extension_text = ",".join(f"{e:04x}" for e in hashed_extensions)
    if signature_algorithms:
        # No underscore when there are no signature algorithms (JA4.md, "Extension hash").
        extension_text += "_" + ",".join(f"{s:04x}" for s in signature_algorithms)
    extension_hash = _hash12(extension_text) if hashed_extensions else EMPTY_HASH
    fingerprint = f"{prefix}_{_hash12(cipher_text)}_{extension_hash}"
    raw = f"{prefix}_{cipher_text}_{extension_text}"
    return fingerprint, raw


def ja3(hello: ClientHello) -> tuple[str, str]:
    """(JA3 string, its MD5 hex): version,ciphers,extensions,groups,point formats in decimal."""
    return _ja3_cached(
        hello.legacy_version,
        tuple(hello.cipher_suites),
        tuple(hello.extensions),
        tuple(hello.supported_groups),
        tuple(hello.ec_point_formats),
    )


@lru_cache(maxsize=FINGERPRINT_CACHE_SIZE)
def _ja3_cached(
    legacy_version: int,
    cipher_suites: tuple[int, ...],
    extensions: tuple[int, ...],
    supported_groups: tuple[int, ...],
    ec_point_formats: tuple[int, ...],
) -> tuple[str, str]:
    """JA3 from the hello fields it depends on; cached per distinct shape."""
    fields = [
        str(legacy_version),
        "-".join(str(c) for c in cipher_suites if not is_grease(c)),
        "-".join(str(e) for e in extensions if not is_grease(e)),
        "-".join(str(g) for g in supported_groups if not is_grease(g)),
        "-".join(str(f) for f in ec_point_formats),
    ]
    text = ",".join(fields)
    # MD5 is what JA3 is defined with; it names a fingerprint, it protects nothing.
    return text, hashlib.md5(text.encode("ascii"), usedforsecurity=False).hexdigest()
