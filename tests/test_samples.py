"""The shipped sample captures (``samples/``): what is on the wire, and what the analyser finds.

``samples/make_samples.py`` recorded them (as root, in network namespaces); this suite never
runs it. It checks three things:

1. the capture itself, read by tshark: names, addresses, TLS versions and cipher suites are
   what the script staged (so a regenerated sample still shows every case);
2. the full offline analysis (capture engine -> pipeline -> every registered detector)
   produces exactly the findings in ``samples/expected_findings.json``, with each engine
   that is available;
3. no raw API key from the capture reaches any finding.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
DEMO = SAMPLES / "egress-demo.pcap"
EXPECTED = json.loads((SAMPLES / "expected_findings.json").read_text(encoding="utf-8"))

FindingKey = tuple[str, str, str, str]  # detector, kind, severity, host


@cache
def staging_script() -> ModuleType:
    """``samples/make_samples.py`` as a module (importing it starts nothing)."""
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


# --- the capture, as tshark reads it ---------------------------------------------------------

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


@cache
def tshark_fields(display_filter: str, *fields: str) -> list[list[str]]:
    """One row per matching packet, one column per field (multiple values comma-joined)."""
    command = ["tshark", "-r", str(DEMO), "-Y", display_filter, "-T", "fields"]
    for name in fields:
        command += ["-e", name]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in output.splitlines()]


def test_samples_are_small() -> None:
    total = sum(p.stat().st_size for p in SAMPLES.glob("*.pcap*"))
    assert DEMO.exists()
    assert total < 1_000_000


@needs_tshark
@pytest.mark.tshark
def test_dns_answers_map_every_staged_name_to_its_address() -> None:
    rows = tshark_fields("dns.flags.response == 1 && dns.a", "dns.qry.name", "dns.a")
    answered = {name: address for name, address in rows}
    staged = {host.name: host.address for host in staging_script().STAGED_HOSTS}
    assert answered == staged


@needs_tshark
@pytest.mark.tshark
def test_clients_are_private_and_real_services_public() -> None:
    script = staging_script()
    sources = {
        row[0] for row in tshark_fields("tcp.flags.syn == 1 && tcp.flags.ack == 0", "ip.src")
    }
    assert sources == {script.CLIENT_ADDRESS}
    assert ipaddress.ip_address(script.CLIENT_ADDRESS).is_private
    for host in (script.OPENAI, script.ANTHROPIC, script.DEEPSEEK, script.RELAY):
        assert ipaddress.ip_address(host.address).is_global, host


@needs_tshark
@pytest.mark.tshark
def test_client_hellos_carry_the_staged_names() -> None:
    rows = tshark_fields(
        "tls.handshake.type == 1", "ip.dst", "tls.handshake.extensions_server_name"
    )
    sni_by_address = dict((address, sni) for address, sni in rows)
    script = staging_script()
    for host in script.STAGED_HOSTS:
        if host.port != 443:
            continue
        expected_sni = "" if host is script.NO_SNI_HOST else host.name
        assert sni_by_address[host.address] == expected_sni, host.name


@needs_tshark
@pytest.mark.tshark
def test_server_hellos_negotiate_the_weak_versions_and_suites() -> None:
    rows = tshark_fields(
        "tls.handshake.type == 2",
        "ip.src",
        "tls.handshake.version",
        "tls.handshake.extensions.supported_version",
        "tls.handshake.ciphersuite",
    )
    negotiated = {src: (selected or legacy, suite) for src, legacy, selected, suite in rows}
    script = staging_script()
    assert negotiated[script.TLS10_HOST.address][0] == "0x0301"  # TLS 1.0
    assert negotiated[script.RC4_HOST.address][1] == "0x0005"  # TLS_RSA_WITH_RC4_128_SHA
    assert negotiated[script.TRIPLE_DES_HOST.address][1] == "0x000a"  # ..._3DES_EDE_CBC_SHA
    assert negotiated[script.NULL_HOST.address][1] == "0x003b"  # TLS_RSA_WITH_NULL_SHA256
    for official in (script.OPENAI, script.ANTHROPIC, script.DEEPSEEK):
        assert negotiated[official.address][0] == "0x0304", official.name  # TLS 1.3
    for legacy in (script.EXPIRED_HOST, script.NOT_YET_VALID_HOST, script.TRIPLE_DES_HOST):
        assert negotiated[legacy.address][0] == "0x0303", legacy.name  # certificate visible


@needs_tshark
@pytest.mark.tshark
def test_cleartext_llm_requests_include_a_gzip_body() -> None:
    rows = tshark_fields("http.request", "http.host", "http.request.uri", "http.content_encoding")
    gateway = [row for row in rows if row[0].startswith("llm-gateway.example")]
    assert {uri for _, uri, _ in gateway} == {"/v1/chat/completions", "/v1/messages"}
    assert [encoding for _, _, encoding in gateway].count("gzip") == 1


# --- the fake keys -----------------------------------------------------------------------------


def cleartext_keys() -> set[bytes]:
    """The API keys that crossed the network in cleartext (read from the capture's bytes)."""
    return set(re.findall(rb"sk-[A-Za-z0-9_-]{20,}", DEMO.read_bytes()))


def test_capture_holds_only_obviously_fake_keys() -> None:
    keys = cleartext_keys()
    assert keys, "the sample should carry cleartext keys for plaintext-llm"
    for key in keys:
        assert b"FAKE" in key or b"fake" in key


def test_generated_keys_match_the_shipped_key_formats() -> None:
    """The script's fake keys must stay recognisable as OpenAI / Anthropic keys."""
    from auditor.signatures import load_signatures

    keys = staging_script().FakeKeys.generate()
    formats = load_signatures().key_formats
    for provider, key in (("openai", keys.openai), ("anthropic", keys.anthropic)):
        matching = [f.id for f in formats if f.pattern.search(key + " ")]
        assert matching, f"no key format in signatures/key_formats.yaml matches the {provider} key"


# --- the full analysis -------------------------------------------------------------------------


def engine_or_skip(engine: str) -> None:
    if engine == "fast":
        pytest.importorskip(
            "auditor.capture.engine", reason="auditor.capture.engine (fast engine) not written yet"
        )
    else:
        pytest.importorskip("auditor.capture.tshark_engine", reason="tshark engine missing")
        if shutil.which("tshark") is None:
            pytest.skip("tshark not installed")


@cache
def analyse_with_notes(
    engine: str, policy_overrides: str = "{}"
) -> tuple[list[Any], dict[str, int]]:
    """Findings and detector notes of the demo capture, default policy + ``policy_overrides``."""
    from auditor.analysis import analyse_captures
    from auditor.context import load_context

    context = load_context()
    # Overrides replace fields of the shipped default policy; lists become the policy's sets.
    overrides = {
        name: set(value) if isinstance(value, list) else value
        for name, value in json.loads(policy_overrides).items()
    }
    context.policy = dataclasses.replace(context.policy, **overrides)
    result = analyse_captures([DEMO], context, engine=engine)
    assert not result.unreadable, [c.error for c in result.unreadable]
    assert not result.analysis.errors, result.analysis.errors
    return result.analysis.findings, dict(context.notes)


def analyse(engine: str, policy_overrides: str = "{}") -> list[Any]:
    return analyse_with_notes(engine, policy_overrides)[0]


def expected_counter(entries: list[dict[str, Any]]) -> Counter[FindingKey]:
    counter: Counter[FindingKey] = Counter()
    for entry in entries:
        key = (entry["detector"], entry["kind"], entry["severity"], entry["host"])
        counter[key] += int(entry.get("findings", 1))
    return counter


def found_counter(findings: list[Any]) -> Counter[FindingKey]:
    return Counter((f.detector, f.kind, f.severity.label, f.host) for f in findings)


def assert_same_findings(found: Counter[FindingKey], expected: Counter[FindingKey]) -> None:
    missing = sorted((expected - found).elements())
    unexpected = sorted((found - expected).elements())
    assert not missing and not unexpected, (
        f"missing (expected, not found): {missing}\nunexpected (found, not expected): {unexpected}"
    )


ENGINES = ["fast", "tshark"]


@pytest.mark.parametrize("engine", ENGINES)
def test_demo_capture_produces_exactly_the_expected_findings(engine: str) -> None:
    engine_or_skip(engine)
    expected = expected_counter(EXPECTED["samples"][DEMO.name]["findings"])
    assert_same_findings(found_counter(analyse(engine)), expected)


@pytest.mark.parametrize("engine", ENGINES)
def test_demo_capture_covers_every_detector(engine: str) -> None:
    engine_or_skip(engine)
    from auditor.detectors.registry import detector_classes

    detectors = {f.detector for f in analyse(engine)}
    assert detectors == {cls.name for cls in detector_classes()}


@pytest.mark.parametrize("engine", ENGINES)
def test_policy_variants_add_the_expected_findings(engine: str) -> None:
    engine_or_skip(engine)
    base = expected_counter(EXPECTED["samples"][DEMO.name]["findings"])
    for variant in EXPECTED["samples"][DEMO.name]["with_policy"]:
        found = found_counter(analyse(engine, json.dumps(variant["policy"], sort_keys=True)))
        assert_same_findings(found, base + expected_counter(variant["adds"]))


@pytest.mark.parametrize("engine", ENGINES)
def test_no_raw_key_reaches_any_finding(engine: str) -> None:
    engine_or_skip(engine)
    findings = analyse(engine)
    assert any(f.kind == "plaintext-llm.api-key" for f in findings)
    written = json.dumps([f.to_dict() for f in findings], ensure_ascii=False, default=str)
    for key in (k.decode() for k in cleartext_keys()):
        assert key not in written
        # Not even a long piece of it: masking keeps a short prefix and a hash, nothing more.
        for start in range(0, len(key) - 16, 8):
            assert key[start : start + 16] not in written, f"part of a key leaked: {key[:8]}…"


def test_truncated_certificate_is_counted_not_fatal() -> None:
    """badcert.legacy-llm.example sends a cut-off certificate: no finding, one counted note.

    Only the fast engine hands the broken DER on; tshark drops it as a malformed packet.
    """
    engine_or_skip("fast")
    findings, notes = analyse_with_notes("fast")
    assert notes.get("weak-tls.unparsable-certificates") == 1
    assert not [f for f in findings if f.host == staging_script().BAD_CERT_HOST.name]
