"""``auditor pcap`` and ``auditor signatures`` as a user runs them."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from auditor.cli import cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "egress-demo.pcap"


def pcap_records(path: Path) -> int:
    """Packets in a classic pcap file (the sample's count changes when it is regenerated)."""
    data = path.read_bytes()
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    count, offset = 0, 24
    while offset + 16 <= len(data):
        (captured,) = struct.unpack_from(order + "I", data, offset + 8)
        offset += 16 + captured
        count += 1
    return count


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_table_output_lists_hosts_and_findings() -> None:
    code, out, _ = run("pcap", str(SAMPLE), "--no-progress")
    assert code == 0
    assert "Per-host findings" in out and "llm-gateway.example" in out
    assert "critical" in out
    assert f"{pcap_records(SAMPLE)} packets read, 0 skipped" in out


def test_json_output_has_summary_hosts_and_findings() -> None:
    code, out, _ = run("pcap", str(SAMPLE), "--format", "json", "--no-progress")
    assert code == 0
    doc = json.loads(out)
    assert doc["summary"]["captures"][0]["packets"] == pcap_records(SAMPLE)
    hosts = {h["host"]: h for h in doc["hosts"]}
    assert hosts["api.deepseek.com"]["countries"] == "CN"
    assert hosts["api.openai.com"]["service"]
    assert hosts["tls10.legacy-llm.example"]["tls_versions"] == "TLS 1.0"
    kinds = {(f["host"], f["kind"], f["severity"]) for f in doc["findings"]}
    assert ("llm-gateway.example", "plaintext-llm.prompt", "critical") in kinds
    assert ("api.chatanywhere.tech", "relay-domain.known", "high") in kinds


def test_json_output_is_indented_with_a_line_per_host_and_finding() -> None:
    code, out, _ = run("pcap", str(SAMPLE), "--format", "json", "--no-progress")
    assert code == 0
    doc = json.loads(out)
    lines = out.splitlines()
    assert lines[:3] == ["{", '  "summary": {', '    "engine": "fast",']
    for name in ("hosts", "findings"):
        start = lines.index(f'  "{name}": [') + 1
        items = [line.removesuffix(",") for line in lines[start : start + len(doc[name])]]
        assert all(line.startswith("    {") for line in items)
        assert [json.loads(line) for line in items] == doc[name]
    assert lines[-2:] == ["  ]", "}"] and out.endswith("}\n")


def test_json_layout_keeps_empty_lists_and_text_exact() -> None:
    from auditor.outputs.findings import write_json_document

    document = {
        "summary": {"errors": ["line one\nline two", 'é \u2028 "q"'], "none": None},
        "hosts": [],
        "findings": [{"title": "naïve\n{x}", "evidence": {"k": [1, 2.5]}}],
        "streamed": iter([{"a": 1}, {"b": [2]}]),
        "empty_stream": iter([]),
    }
    out = io.StringIO()
    write_json_document(document.items(), out)
    text = out.getvalue()
    expected = {**document, "streamed": [{"a": 1}, {"b": [2]}], "empty_stream": []}
    assert json.loads(text) == expected
    assert '"hosts": [],' in text and "naïve" in text  # readable, not \u-escaped
    assert '    {"a": 1},\n    {"b": [2]}\n  ],' in text  # an iterator: a line per item
    assert text.endswith('"empty_stream": []\n}\n')


def test_jsonl_csv_and_parquet(tmp_path: Path) -> None:
    code, out, _ = run("pcap", str(SAMPLE), "--format", "jsonl", "--no-progress")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines and all(
        {"detector", "kind", "severity", "host", "evidence"} <= set(x) for x in lines
    )

    csv_path = tmp_path / "hosts.csv"
    assert run("pcap", str(SAMPLE), "--format", "csv", "-o", str(csv_path), "--no-progress")[0] == 0
    hosts = pd.read_csv(csv_path)
    assert "api.anthropic.com" in set(hosts["host"]) and "ja4" in hosts.columns

    parquet = tmp_path / "findings.parquet"
    code, _, _ = run(
        "pcap",
        str(SAMPLE),
        "--format",
        "parquet",
        "--view",
        "findings",
        "-o",
        str(parquet),
        "--no-progress",
    )
    assert code == 0
    frame = pd.read_parquet(parquet)
    assert len(frame) == len(lines) and set(frame["severity"]) >= {"critical", "high", "info"}


def test_findings_csv_keeps_ports_whole_and_evidence_json() -> None:
    """Written by the csv module: a port stays 443 even when other rows have none (pandas made
    the column float, 443.0)."""
    import csv
    import io

    code, out, _ = run("pcap", str(SAMPLE), "--format=csv", "--view=findings", "--no-progress")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    ports = {row["dst_port"] for row in rows}
    assert "" in ports and "443" in ports and all(p == "" or p.isdigit() for p in ports)
    assert all(isinstance(json.loads(row["evidence"]), dict) for row in rows)


def test_parquet_needs_an_output_file() -> None:
    result = CliRunner().invoke(cli, ["pcap", str(SAMPLE), "--format", "parquet"])
    assert result.exit_code == 2 and "give --output PATH" in result.output


def test_fail_on_sets_exit_status() -> None:
    assert run("pcap", str(SAMPLE), "--format", "jsonl", "--fail-on", "critical")[0] == 3
    assert (
        run(
            "pcap",
            str(SAMPLE),
            "--format",
            "jsonl",
            "--fail-on",
            "critical",
            "--policy",
            str(ROOT / "policies" / "default.yaml"),
        )[0]
        == 3
    )


def test_gzip_capture_gives_the_same_findings(tmp_path: Path) -> None:
    packed = tmp_path / "egress-demo.pcap.gz"
    with SAMPLE.open("rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    plain = run("pcap", str(SAMPLE), "--format", "jsonl")[1]
    zipped = run("pcap", str(packed), "--format", "jsonl")[1]
    strip = lambda text: sorted(  # noqa: E731
        (d["kind"], d["host"], d["severity"], d["count"])
        for d in map(json.loads, text.splitlines())
    )
    assert strip(plain) == strip(zipped)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"hello, this is a text file\n" * 4, "not a pcap"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated"),
    ],
)
def test_unreadable_capture_is_one_clear_line(tmp_path: Path, content: bytes, message: str) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(content)
    code, out, err = run("pcap", str(bad), "--format", "json")
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "bad.pcap" in lines[0] and message in lines[0].lower()
    assert "Traceback" not in err + out


def test_one_bad_file_does_not_stop_the_others(tmp_path: Path) -> None:
    bad = tmp_path / "empty.pcap"
    bad.write_bytes(b"")
    code, out, err = run("pcap", str(bad), str(SAMPLE), "--format", "json")
    assert code == 0
    assert "empty.pcap" in err
    assert json.loads(out)["findings"]


def test_truncated_capture_keeps_what_was_read(tmp_path: Path) -> None:
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(SAMPLE.read_bytes()[: SAMPLE.stat().st_size // 2 + 7])
    code, out, _ = run("pcap", str(cut), "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["summary"]["captures"][0]["skipped"].get("truncated-file") == 1
    assert doc["findings"]


def test_bad_policy_is_a_usage_error(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("home_jurisdictoin: DE\n")
    result = CliRunner().invoke(cli, ["pcap", str(SAMPLE), "--policy", str(policy)])
    assert result.exit_code == 1
    assert "unknown policy keys: home_jurisdictoin" in result.output
    assert "Traceback" not in result.output


def test_an_unreadable_input_is_named_with_its_path(tmp_path: Path) -> None:
    geoip_db = tmp_path / "countries.mmdb"
    result = CliRunner().invoke(cli, ["pcap", str(SAMPLE), "--geoip-db", str(geoip_db)])
    assert result.exit_code == 1
    assert f"GeoIP database: {geoip_db}: GeoIP database not found" in result.output
    result = CliRunner().invoke(cli, ["pcap", str(SAMPLE), "--signatures", str(tmp_path / "no")])
    assert result.exit_code == 1
    assert f"signatures: {tmp_path / 'no'}: no such directory" in result.output


def test_policy_changes_what_is_cross_border(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "home_jurisdiction: US\nallowed_countries: [CN]\nallowed_jurisdictions: [CN]\n"
    )
    out = run("pcap", str(SAMPLE), "--format", "jsonl", "--policy", str(policy))[1]
    kinds = {json.loads(line)["kind"] for line in out.splitlines()}
    assert not any(k.startswith("cross-border") for k in kinds)
    default = run("pcap", str(SAMPLE), "--format", "jsonl")[1]
    assert "cross-border.jurisdiction" in default


def test_signatures_validate_and_list() -> None:
    code, out, _ = run("signatures", "validate")
    assert code == 0 and "valid" in out
    code, out, _ = run("signatures", "list", "providers", "--format", "json")
    providers = json.loads(out)
    assert any(p["domain"] == "api.openai.com" and p["source"] for p in providers)
    code, out, _ = run("signatures", "list", "relays", "--format", "json")
    assert all(r["confidence"] in ("confirmed", "suspected") for r in json.loads(out))


def test_signatures_validate_reports_a_broken_file(tmp_path: Path) -> None:
    copy = tmp_path / "signatures"
    shutil.copytree(ROOT / "signatures", copy)
    relays = copy / "relays.yaml"
    relays.write_text(relays.read_text().replace("confidence: confirmed", "confidence: maybe", 1))
    result = CliRunner().invoke(cli, ["signatures", "validate", "--signatures", str(copy)])
    assert result.exit_code == 1
    assert "relays.yaml" in result.output and "maybe" in result.output


def test_findings_are_recorded_in_the_store_and_delivered_to_sinks(tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite3"
    sink = tmp_path / "alerts.jsonl"
    code, out, _ = run(
        "pcap", str(SAMPLE), "--format", "jsonl", "--store", str(store), "--sink", f"jsonl:{sink}"
    )
    assert code == 0
    reported = {(d["kind"], d["host"]) for d in map(json.loads, out.splitlines())}
    alerts = [json.loads(line) for line in sink.read_text().splitlines()]
    assert {(a["kind"], a["host"]) for a in alerts} == reported
    assert store.stat().st_mode & 0o077 == 0  # owner-only
    code, out, _ = run("findings", "--store", str(store), "--format", "json")
    assert code == 0 and {(f["kind"], f["host"]) for f in json.loads(out)} == reported

    # A second run of the same capture updates counts instead of raising new alerts.
    run("pcap", str(SAMPLE), "--format", "jsonl", "--store", str(store), "--sink", f"jsonl:{sink}")
    assert len(sink.read_text().splitlines()) == len(alerts)


def test_progress_bar_run_records_findings_too(tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite3"
    assert run("pcap", str(SAMPLE), "--progress", "--store", str(store))[0] == 0
    code, out, _ = run("findings", "--store", str(store), "--format", "json")
    assert code == 0 and any(f["kind"] == "plaintext-llm.prompt" for f in json.loads(out))


def test_no_store_writes_nothing(tmp_path: Path, isolated_findings_store: Path) -> None:
    assert run("pcap", str(SAMPLE), "--format", "jsonl", "--no-store")[0] == 0
    assert not isolated_findings_store.exists()


def test_pcap_does_not_import_the_report_soc_or_proxy_modules() -> None:
    # Those commands are registered lazily: a pcap run should not pay for their imports
    # (nor for rich's, which only the table and the progress bar use).
    code = (
        "import sys; from auditor.cli import cli; "
        "print(sorted(m for m in ('auditor.report', 'auditor.soc_cli', 'auditor.proxy.launcher',"
        " 'auditor.outputs.html_report', 'rich.console') if m in sys.modules))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"
