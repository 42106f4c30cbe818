"""Generate ``signatures/tls_cipher_suites.yaml``: TLS cipher suite code -> IANA name + weaknesses.

Run once by a maintainer (not by the auditor):  ``python signatures/tools/make_cipher_suites.py``

The IANA "TLS Cipher Suites" registry cannot be downloaded from this workplace, so the table is
rebuilt from the copies of it that ship with tools installed here, all of which use IANA's
``TLS_...`` names:

* ``openssl ciphers -V -stdname ALL:COMPLEMENTOFALL:@SECLEVEL=0`` (the standard/IANA names of every
  suite the local OpenSSL implements) -- preferred name when sources disagree;
* Wireshark's value table for ``tls.handshake.ciphersuite`` (``tshark -G values``), when tshark
  is installed: it adds ARIA, GOST, ECCPWD, SM4 and signalling values the others lack, and
  keeps IANA's spelling where scapy differs (0x0026 ``..._DES_CBC_40_SHA``);
* scapy's ``scapy.layers.tls.crypto.suites`` table (the test extra pins scapy), which also holds
  the seven SSL 2.0 cipher kinds as 3-byte codes.

Code points IANA lists as unassigned, reserved or private (drafts that never got a code,
vendor-private values, the pre-RFC ChaCha20 codes) are dropped even when a tool names them.
Weaknesses are classified from the IANA name (see ``classify``); the severity is the worst one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

OUTPUT = Path(__file__).resolve().parent.parent / "tls_cipher_suites.yaml"
SOURCE = "IANA TLS Cipher Suites registry (via {tools})"

# Code ranges that are not IANA assignments although some tool names them (why in comments).
NOT_IANA_RANGES: tuple[tuple[int, int], ...] = (
    (0x0060, 0x0066),  # 1024-bit export drafts (draft-ietf-tls-56-bit-ciphersuites): unassigned
    (0x0080, 0x0083),  # GOST drafts: unassigned in the IANA registry
    (0xCC13, 0xCC15),  # pre-RFC 7905 ChaCha20 drafts: unassigned
    (0xCCA1, 0xCCA3),  # tlslite's ChaCha20 draft-00 codes: unassigned
    (0xE410, 0xE41F),  # Salsa20 drafts (draft-josefsson-salsa20-tls): unassigned
    (0xFE00, 0xFFFF),  # reserved for private use / widely deployed non-standard (Netscape FIPS)
)

SEVERITY_BY_WEAKNESS = {
    "null": "critical",
    "anon": "critical",
    "export": "critical",
    "rc4": "high",
    "des": "high",
    "3des": "high",
    "md5": "high",
    "cbc-sha1": "low",
}
SEVERITY_ORDER = ("low", "medium", "high", "critical")


def is_iana_code(code: int) -> bool:
    """False for GREASE (RFC 8701, reserved) and the ranges above; SSL 2.0 3-byte codes pass."""
    if code > 0xFFFF:
        return True  # SSL 2.0 cipher kinds, kept on purpose
    if (code & 0x0F0F) == 0x0A0A and (code >> 8) == (code & 0xFF):
        return False
    return not any(low <= code <= high for low, high in NOT_IANA_RANGES)


def classify(name: str) -> list[str]:
    """Weaknesses of a suite, read from its IANA name."""
    upper = name.upper()
    if upper.endswith("_SCSV"):
        return []  # signalling value, not a cipher suite that can be negotiated
    key_exchange, _, rest = upper.partition("_WITH_")
    if not rest:  # TLS 1.3 style (TLS_AES_128_GCM_SHA256) and SSL 2.0 (SSL_CK_..._WITH_MD5)
        rest = upper
    weaknesses: list[str] = []
    cipher = rest.removeprefix("TLS_")
    # RFC 9150 integrity-only suites (TLS_SHA256_SHA256) encrypt nothing either
    if cipher.startswith("NULL") or re.fullmatch(r"TLS_SHA\d+_SHA\d+", upper):
        weaknesses.append("null")
    if "_ANON_" in upper + "_" or key_exchange in ("TLS_NULL",):
        weaknesses.append("anon")
    if "EXPORT" in upper:
        weaknesses.append("export")
    if "RC4" in upper:
        weaknesses.append("rc4")
    if "3DES" in upper or "DES_192_EDE3" in upper:
        weaknesses.append("3des")
    elif re.search(r"(^|_)DES(40)?_", upper) or "DES_64" in upper:
        weaknesses.append("des")
    if upper.endswith("_MD5"):
        weaknesses.append("md5")
    if "_CBC" in upper and upper.endswith("_SHA"):
        weaknesses.append("cbc-sha1")
    return weaknesses


def severity(weaknesses: list[str]) -> str | None:
    levels = [SEVERITY_BY_WEAKNESS[w] for w in weaknesses]
    return max(levels, key=SEVERITY_ORDER.index) if levels else None


def from_openssl() -> dict[int, str]:
    if not shutil.which("openssl"):
        return {}
    out = subprocess.run(
        ["openssl", "ciphers", "-V", "-stdname", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    table: dict[int, str] = {}
    for line in out.splitlines():
        match = re.match(r"\s*0x([0-9A-F]{2}),0x([0-9A-F]{2})\s+-\s+(\S+)", line)
        if match and match.group(3).startswith("TLS_"):
            table[int(match.group(1) + match.group(2), 16)] = match.group(3)
    return table


def from_scapy() -> dict[int, str]:
    try:
        from scapy.layers.tls.crypto.suites import _tls_cipher_suites
    except ImportError:
        return {}
    return {int(code): str(name) for code, name in _tls_cipher_suites.items()}


def from_wireshark() -> dict[int, str]:
    if not shutil.which("tshark"):
        return {}
    out = subprocess.run(
        ["tshark", "-G", "values"], capture_output=True, text=True, check=True
    ).stdout
    table: dict[int, str] = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[0] == "V" and parts[1] == "tls.handshake.ciphersuite":
            table[int(parts[2])] = parts[3]
    return table


def main() -> int:
    sources = {
        "openssl ciphers -stdname": from_openssl(),
        "Wireshark tls.handshake.ciphersuite values": from_wireshark(),
        "scapy.layers.tls.crypto.suites": from_scapy(),
    }
    used = [label for label, table in sources.items() if table]
    if not used:
        print("no source table available (need openssl, scapy or tshark)", file=sys.stderr)
        return 1
    merged: dict[int, tuple[str, list[str]]] = {}
    disagreements: list[str] = []
    for label, table in sources.items():  # first source wins the name; later ones only add
        for code, name in table.items():
            if not is_iana_code(code):
                continue
            if not (name.startswith("TLS_") or name.startswith("SSL_CK_")):
                continue  # not an IANA-style name (e.g. a tool's description)
            if code in merged:
                if merged[code][0].upper() != name.upper():
                    disagreements.append(f"0x{code:04X}: {merged[code][0]} vs {name} ({label})")
                merged[code][1].append(label)
            else:
                merged[code] = (name, [label])
    for line in disagreements:
        print("name differs:", line, file=sys.stderr)

    lines = [
        "# TLS cipher suites by code: IANA name, weaknesses and the severity of negotiating it.",
        "# GENERATED by signatures/tools/make_cipher_suites.py -- edit the tool, not this file.",
        "# weaknesses: null (no encryption), anon (no authentication), export, rc4, des (single",
        "# DES), 3des, md5 (MD5 MAC), cbc-sha1 (CBC with a SHA-1 MAC). severity: null/anon/export",
        "# critical; rc4/des/3des/md5 high; cbc-sha1 low; others null (fine).",
        "# SSL 2.0 cipher kinds are 3-byte codes (0x010080 ...).",
        "version: 1",
        f"description: {SOURCE.format(tools=', '.join(used))}",
        f"source: {SOURCE.format(tools=', '.join(used))}",
        "entries:",
    ]
    for code in sorted(merged):
        name, seen_in = merged[code]
        weaknesses = classify(name)
        width = 6 if code > 0xFFFF else 4
        quoted = [f'"{w}"' for w in weaknesses]  # quoted: a bare null would read as None
        lines += [
            f"- code: 0x{code:0{width}X}",
            f"  name: {name}",
            f"  weaknesses: [{', '.join(quoted)}]",
            f"  severity: {severity(weaknesses) or 'null'}",
            f"  source: {SOURCE.format(tools=', '.join(seen_in))}",
        ]
    OUTPUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{OUTPUT}: {len(merged)} suites from {', '.join(used)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
