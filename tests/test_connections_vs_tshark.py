"""The ECS connection records of ``auditor pcap --connections`` against Wireshark and JA4.

On captures nobody here made (the FoxIO JA4 corpus), each fact the records carry — TLS version,
cipher, SNI, DNS names, HTTP host and path — must agree with what tshark dissects from the same
file, and every JA4 must equal the reference implementation's output.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditor.cli import cli
from auditor.signatures import load_signatures

pytestmark = pytest.mark.tshark

TSHARK = shutil.which("tshark")
SIGNATURES = load_signatures()


def _ip(text: str) -> str:
    return str(ipaddress.ip_address(text))


def connection_records(capture: Path, tmp_path: Path) -> list[dict]:
    out = tmp_path / (capture.name + ".ecs.jsonl")
    result = CliRunner().invoke(
        cli,
        [
            "pcap",
            str(capture),
            "--format",
            "json",
            "-o",
            str(tmp_path / "f.json"),
            "--connections",
            str(out),
            "--no-progress",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text().splitlines()]


def tshark_rows(capture: Path, display_filter: str, fields: list[str]) -> list[list[str]]:
    command = [
        TSHARK,
        "-r",
        str(capture),
        "-n",
        "-Y",
        display_filter,
        "-T",
        "fields",
        "-E",
        "separator=\t",
        "-E",
        "occurrence=l",
    ]  # last occurrence: innermost tunnel
    for field in fields:
        command += ["-e", field]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    return [line.split("\t") for line in done.stdout.splitlines() if line.strip()]


def _dst(row: list[str]) -> str:
    return _ip(row[0] or row[1])


def tshark_facts(capture: Path) -> dict[str, set]:
    addr = ["ip.dst", "ipv6.dst"]
    hellos = tshark_rows(
        capture,
        "tls.handshake.type == 1 && tcp",
        [*addr, "tcp.dstport", "tls.handshake.extensions_server_name"],
    )
    servers = tshark_rows(
        capture,
        "tls.handshake.type == 2 && tcp",
        [
            "ip.src",
            "ipv6.src",
            "tcp.srcport",
            "tls.handshake.ciphersuite",
            "tls.handshake.extensions.supported_version",
            "tls.handshake.version",
        ],
    )
    dns = tshark_rows(capture, "dns", ["dns.qry.name"])
    http = tshark_rows(capture, "http.request", ["http.host", "http.request.uri"])
    negotiated = set()
    for row in servers:
        code = int(row[4] or row[5], 16)
        info = SIGNATURES.version_info(code)
        assert info is not None, f"unknown TLS version 0x{code:04x}"
        negotiated.add(
            (_dst(row), int(row[2]), info.version, SIGNATURES.cipher_name(int(row[3], 16)))
        )
    return {
        "sni": {(_dst(r), int(r[2]), r[3].lower()) for r in hellos if r[3]},
        "server": negotiated,
        "dns": {r[0].lower().rstrip(".") for r in dns if r[0]},
        # url.path carries no query string; http.request.uri does
        "http": {(r[0].split(":")[0].lower(), r[1].split("?")[0]) for r in http if r[0]},
    }


def record_facts(records: list[dict]) -> dict[str, set]:
    facts: dict[str, set] = {"sni": set(), "server": set(), "dns": set(), "http": set()}
    for doc in records:
        dst = (doc["destination"]["ip"], doc["destination"]["port"])
        tls = doc.get("tls", {})
        if doc["network"]["transport"] == "tcp" and tls.get("client", {}).get("server_name"):
            facts["sni"].add((*dst, tls["client"]["server_name"].lower()))
        if doc["network"]["transport"] == "tcp" and "cipher" in tls:
            facts["server"].add((*dst, tls["version"], tls["cipher"]))
        if "dns" in doc:
            facts["dns"].add(doc["dns"]["question"]["name"].lower().rstrip("."))
        if "url" in doc and doc["url"].get("domain"):
            facts["http"].add((doc["url"]["domain"], doc["url"]["path"]))
    return facts


CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "ja4"
CAPTURES = sorted((CORPUS / "pcap").glob("*")) if (CORPUS / "pcap").is_dir() else []


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed (scripts/setup.sh installs it)")
@pytest.mark.parametrize("capture", CAPTURES, ids=[c.name for c in CAPTURES])
def test_connection_records_agree_with_tshark(capture: Path, tmp_path: Path) -> None:
    records = connection_records(capture, tmp_path)
    ours, theirs = record_facts(records), tshark_facts(capture)
    # DNS: every name tshark saw, we saw; HTTP only the first request per connection is in the
    # record, so ours must be a subset of tshark's and cover every connection's first request.
    assert ours["sni"] == theirs["sni"]
    assert ours["server"] == theirs["server"]
    assert ours["dns"] == theirs["dns"]
    assert ours["http"] <= theirs["http"]
    if theirs["http"]:
        assert ours["http"]


@pytest.mark.parametrize("capture", CAPTURES, ids=[c.name for c in CAPTURES])
def test_ja4_in_connection_records_equals_reference(capture: Path, tmp_path: Path) -> None:
    expected_path = CORPUS / "expected" / (capture.name + ".json")
    if not expected_path.exists():
        pytest.skip(f"no reference output for {capture.name}")
    expected = json.loads(expected_path.read_text())
    records = connection_records(capture, tmp_path)
    by_flow: dict[tuple, set[str]] = {}
    for doc in records:
        ja4 = doc.get("tls", {}).get("client", {}).get("ja4")
        if ja4:
            key = (
                doc["source"]["ip"],
                doc["source"]["port"],
                doc["destination"]["ip"],
                doc["destination"]["port"],
            )
            by_flow.setdefault(key, set()).add(ja4)
    checked = 0
    for stream in expected:
        if "JA4.1" not in stream:
            continue
        key = (
            _ip(stream["src"]),
            int(stream["srcport"]),
            _ip(stream["dst"]),
            int(stream["dstport"]),
        )
        assert key in by_flow, f"no connection record with a ClientHello for {key}"
        assert (
            stream["JA4.1"] in by_flow[key] or _spec_alpn_override(stream["JA4.1"]) in by_flow[key]
        )
        checked += 1
    if checked == 0:
        pytest.skip(f"{capture.name}: reference lists no TLS ClientHello")


def _spec_alpn_override(reference: str) -> str:
    # tls-non-ascii-alpn: FoxIO's Python tool still prints '99' for a non-alphanumeric ALPN; the
    # JA4 spec (and FoxIO issue #178) says to use the first and last hex digit: 0xBAAD -> 'bd'.
    return reference.replace("t13d151699_", "t13d1516bd_")
