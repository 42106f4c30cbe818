"""Tests of `auditor report` (auditor.report, auditor.outputs.html_report) and the host inventory.

The sample capture is recorded into a temporary store through the CLI, the report is written
from it, and its content is checked as text; then headless Chromium opens it (screenshot, DOM
after the sorting script ran, console) when the Debian ``chromium`` package is installed.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditor.cli import cli
from auditor.hosts import HostRow
from auditor.model import Finding, Severity
from auditor.outputs.html_report import timeline_buckets
from auditor.store import FindingsStore

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "egress-demo.pcap"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not installed (Debian package 'chromium', see scripts/setup.sh)",
)
# A value the escaping must keep inert: if it ran, the page's root would carry data-pwned.
PWN = "document.documentElement.setAttribute('data-pwned','1')"
INJECTED_HOST = f"<script>{PWN}</script>.example"
INJECTED_EVIDENCE = f'<img src=x onerror="{PWN}">'


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample capture recorded into a fresh store by `auditor pcap`."""
    store = tmp_path_factory.mktemp("report") / "findings.sqlite3"
    result = CliRunner().invoke(
        cli,
        ["pcap", str(SAMPLE), "--store", str(store), "--format", "json", "-o", os.devnull],
    )
    assert result.exit_code == 0, result.output
    return store


@pytest.fixture(scope="module")
def sample_report(sample_store: Path) -> Path:
    output = sample_store.parent / "report.html"
    result = CliRunner().invoke(
        cli, ["report", "--store", str(sample_store), "--output", str(output)]
    )
    assert result.exit_code == 0, result.output
    return output


def test_report_shows_hosts_severities_countries_and_tls(
    sample_store: Path, sample_report: Path
) -> None:
    page = sample_report.read_text(encoding="utf-8")
    with FindingsStore(sample_store) as store:
        findings = store.findings()
        inventory = store.stored_hosts()
    assert findings and inventory
    for host in {f.host for f in findings}:
        assert f'<td class="mono strong host">{host}</td>' in page
    by_severity = Counter(f.severity for f in findings)
    for severity in Severity:
        assert f'id="count-{severity.label}">{by_severity[severity]}<' in page
    assert by_severity[Severity.CRITICAL] > 0
    # Countries come from the inventory (GeoIP of the run); the sample has CN and US.
    countries = _section(page, "countries")
    assert "CN" in countries and "US" in countries
    # Providers and relays, weak TLS, client JA4s.
    services = _section(page, "services")
    assert "ChatAnywhere" in services and "OpenAI API" in services
    weak = _section(page, "weak-tls")
    assert "TLS_RSA_WITH_RC4_128_SHA" in weak and "TLS 1.0" in weak and "cert-expired" in weak
    clients = _section(page, "clients")
    ja4s = {ja4 for stored in inventory for (_, ja4) in stored.clients}
    assert ja4s and all(ja4.replace("_", "_<wbr>") in clients for ja4 in ja4s)
    assert "10.42.0.10" in clients
    # The timeline has one bar segment per (bucket, severity) with findings.
    _, _, buckets = timeline_buckets(findings)
    segments = sum(1 for bucket in buckets for n in bucket.values() if n)
    assert _section(page, "timeline").count("<rect ") == segments


def test_report_holds_no_raw_key(sample_report: Path) -> None:
    capture = SAMPLE.read_bytes()
    keys = {
        match.group(1).decode()
        for match in re.finditer(rb"(?i)(?:bearer |x-api-key: )([A-Za-z0-9_-]{20,})", capture)
    }
    assert keys, "the sample capture should carry API keys in cleartext"
    page = sample_report.read_text(encoding="utf-8")
    for key in keys:
        assert key not in page
        assert key[:24] not in page  # nor a usable part of it
    assert "chars, sha256:" in page  # the masked form is what is shown


def test_report_is_self_contained(sample_report: Path) -> None:
    page = sample_report.read_text(encoding="utf-8")
    loads = re.findall(r"""(?i)\b(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:\w+:)?//""", page)
    assert loads == []
    assert "<link" not in page.lower() and "@import" not in page and "url(" not in page
    assert page.count("<script") == 1  # the sorting script, inline
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert policy is not None
    assert "default-src 'none'" in html.unescape(policy.group(1))


def test_traffic_values_are_escaped(tmp_path: Path) -> None:
    store_path = tmp_path / "findings.sqlite3"
    with FindingsStore(store_path) as store:
        store.record(
            _finding(
                INJECTED_HOST,
                title="</summary><script>alert(1)</script>",
                evidence={"note": INJECTED_EVIDENCE, "ja4": "t13d</td><b>x"},
            )
        )
    output = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", "--store", str(store_path), "-o", str(output)])
    assert result.exit_code == 0, result.output
    page = output.read_text(encoding="utf-8")
    assert page.count("<script") == 1
    assert "<img" not in page and "</td><b>" not in page
    assert "&lt;script&gt;document.documentElement" in page
    assert "&lt;img src=x onerror=" in page


def test_since_keeps_recent_findings_and_hosts(tmp_path: Path) -> None:
    store_path = tmp_path / "findings.sqlite3"
    with FindingsStore(store_path) as store:
        store.record(_finding("old.example", ts=1_700_000_000.0))
        store.record(_finding("new.example", ts=1_800_000_000.0))
        store.record_hosts([_host_row("old-inventory.example", ts=1_700_000_000.0)])
    output = tmp_path / "report.html"
    result = CliRunner().invoke(
        cli,
        ["report", "--store", str(store_path), "-o", str(output), "--since", "1750000000",
         "--title", "Weekly <AI> egress"],
    )
    assert result.exit_code == 0, result.output
    page = output.read_text(encoding="utf-8")
    assert "new.example" in page
    assert "old.example" not in page and "old-inventory.example" not in page
    assert "<title>Weekly &lt;AI&gt; egress</title>" in page


def test_missing_store_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.sqlite3"
    result = CliRunner().invoke(cli, ["report", "--store", str(missing), "-o", "x.html"])
    assert result.exit_code == 1
    assert str(missing) in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not missing.exists()


def test_report_file_is_owner_only(sample_report: Path) -> None:
    assert sample_report.stat().st_mode & 0o777 == 0o600  # like the store: internal names


def test_damaged_rows(tmp_path: Path) -> None:
    """A damaged inventory row is skipped; a damaged finding row is a one-line error."""
    store_path = tmp_path / "findings.sqlite3"
    with FindingsStore(store_path) as store:
        store.record(_finding("ok.example"))
        store.record_hosts([_host_row("good.example", ts=1.0), _host_row("bad.example", ts=1.0)])
    db = sqlite3.connect(store_path)
    db.execute("UPDATE host_inventory SET countries = '{not json' WHERE host = 'bad.example'")
    db.commit()
    with FindingsStore(store_path) as store:
        assert [h.host for h in store.stored_hosts()] == ["good.example"]
    result = CliRunner().invoke(cli, ["report", "--store", str(store_path), "-o", "-"])
    assert result.exit_code == 0 and "good.example" in result.output
    db.execute("UPDATE findings SET evidence = '{not json'")
    db.commit()
    db.close()
    result = CliRunner().invoke(cli, ["report", "--store", str(store_path), "-o", "-"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: ") and str(store_path) in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_empty_store_gives_a_report(tmp_path: Path) -> None:
    store_path = tmp_path / "findings.sqlite3"
    FindingsStore(store_path).close()
    result = CliRunner().invoke(cli, ["report", "--store", str(store_path), "-o", "-"])
    assert result.exit_code == 0, result.output
    assert "No findings in this period." in result.output
    assert result.output.rstrip().endswith("</html>")


def test_host_inventory_adds_up_runs(tmp_path: Path) -> None:
    with FindingsStore(tmp_path / "findings.sqlite3") as store:
        store.record_hosts([_host_row("api.relay.example", ts=100.0, client="10.0.0.5")])
        store.record_hosts([_host_row("api.relay.example", ts=200.0, client="10.0.0.6")])
        (stored,) = store.stored_hosts()
    assert stored.connections == 4 and stored.bytes_out == 200
    assert stored.clients == {("10.0.0.5", "t13d_a_b"): 2, ("10.0.0.6", "t13d_a_b"): 2}
    assert (stored.first_seen, stored.last_seen) == (100.0, 201.0)
    assert stored.countries == {"DE"} and stored.ports == {443}
    assert stored.service == "Relay"


def test_timeline_buckets_count_findings_by_severity() -> None:
    start = 1_800_000_000.0
    findings = [
        _finding("a.example", ts=start, severity=Severity.HIGH),
        _finding("b.example", ts=start + 5, severity=Severity.LOW),
        _finding("c.example", ts=start + 600, severity=Severity.HIGH),
    ]
    first, width, buckets = timeline_buckets(findings)
    assert width == 15  # 600 s in fewer than 48 bars
    assert first <= start < first + width
    assert buckets[0] == Counter({Severity.HIGH: 1, Severity.LOW: 1})
    assert buckets[-1] == Counter({Severity.HIGH: 1})
    assert sum(sum(b.values()) for b in buckets) == 3


# -- in a real browser -------------------------------------------------------------------------


@needs_chromium
def test_report_renders_in_chromium(sample_report: Path, tmp_path: Path) -> None:
    screenshot = tmp_path / "report.png"
    result = _chromium(
        tmp_path / "profile",
        f"--screenshot={screenshot}",
        "--window-size=1400,2000",
        "--hide-scrollbars",
        sample_report.as_uri(),
    )
    assert screenshot.exists(), result.stderr[-2000:]
    width, height, distinct = _png_summary(screenshot.read_bytes())
    assert (width, height) == (1400, 2000)
    assert distinct > 64, "the screenshot looks blank"
    assert _console_lines(result.stderr) == []


@needs_chromium
def test_sorting_script_runs_without_console_errors(sample_report: Path, tmp_path: Path) -> None:
    result = _chromium(
        tmp_path / "profile", "--dump-dom", sample_report.as_uri() + "#sort=hosts:host:asc"
    )
    dom = result.stdout
    assert 'data-report-ready="1"' in dom
    assert dom.count('data-sortable="ready"') == 2  # hosts and findings tables
    hosts = re.findall(r'<td class="mono strong host">([^<]*)</td>', dom)
    assert len(hosts) > 5 and hosts == sorted(hosts)
    written = re.findall(
        r'<td class="mono strong host">([^<]*)</td>', sample_report.read_text(encoding="utf-8")
    )
    assert written != hosts  # the page is written most severe first: the script did sort
    assert 'aria-sort="ascending"' in dom
    assert _console_lines(result.stderr) == []  # no error, no CSP refusal


@needs_chromium
def test_injected_markup_stays_inert_in_chromium(tmp_path: Path) -> None:
    """Escaping (checked as text above) and the page's CSP together: nothing injected runs."""
    store_path = tmp_path / "findings.sqlite3"
    with FindingsStore(store_path) as store:
        store.record(_finding(INJECTED_HOST, evidence={"note": INJECTED_EVIDENCE}))
    output = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", "--store", str(store_path), "-o", str(output)])
    assert result.exit_code == 0, result.output
    browser = _chromium(tmp_path / "profile", "--dump-dom", output.as_uri())
    assert 'data-report-ready="1"' in browser.stdout
    assert "data-pwned=" not in browser.stdout
    assert _console_lines(browser.stderr) == []


@needs_chromium
def test_csp_refuses_a_script_that_slipped_in(sample_report: Path, tmp_path: Path) -> None:
    """Defence in depth: a script that escaped escaping would still not run."""
    tampered = tmp_path / "tampered.html"
    page = sample_report.read_text(encoding="utf-8")
    tampered.write_text(page.replace("</main>", f"<script>{PWN}</script></main>"), "utf-8")
    result = _chromium(tmp_path / "profile", "--dump-dom", tampered.as_uri())
    assert 'data-report-ready="1"' in result.stdout  # the report's own script still runs
    assert "data-pwned=" not in result.stdout
    assert any("Content Security Policy" in line for line in _console_lines(result.stderr))


# -- helpers -----------------------------------------------------------------------------------


def _section(page: str, section_id: str) -> str:
    start = page.index(f'id="{section_id}"')
    return page[start : page.index("</section>", start)]


def _finding(
    host: str,
    *,
    ts: float = 1_800_000_000.0,
    severity: Severity = Severity.HIGH,
    title: str = "Traffic to a relay",
    evidence: dict[str, object] | None = None,
) -> Finding:
    return Finding(
        detector="relay-domain",
        kind="relay-domain.known",
        severity=severity,
        host=host,
        title=title,
        evidence=dict(evidence or {"relay_domain": host}),
        first_seen=ts,
        last_seen=ts,
        evidence_key=host,
        dst_ip="203.0.113.7",
        dst_port=443,
        src_ip="10.0.0.5",
    )


def _host_row(host: str, *, ts: float, client: str = "10.0.0.5") -> HostRow:
    row = HostRow(host=host, service="Relay", category="relay_reseller")
    row.addresses.add("203.0.113.7")
    row.countries.add("DE")
    row.ports.add(443)
    row.ja4.add("t13d_a_b")
    row.clients[(client, "t13d_a_b")] = 2
    row.connections = 2
    row.bytes_out = 100
    row.seen(ts, ts + 1)
    return row


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium, no network services, console on stderr; all its processes ended."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
        *args,
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:
        # Chromium's helpers (zygote, renderers) share its new session: end them with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _console_lines(stderr: str) -> list[str]:
    """What the page wrote to the console (errors, uncaught exceptions, CSP refusals)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def _png_summary(png: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values of the image data) of a PNG."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    position, width, height, data = 8, 0, 0, b""
    while position < len(png):
        length = int.from_bytes(png[position : position + 4], "big")
        chunk_type = png[position + 4 : position + 8]
        body = png[position + 8 : position + 8 + length]
        if chunk_type == b"IHDR":
            width, height = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
        elif chunk_type == b"IDAT":
            data += body
        position += 12 + length
    return width, height, len(set(zlib.decompress(data)))
