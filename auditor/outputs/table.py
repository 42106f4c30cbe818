"""The terminal view of ``auditor pcap``: per-host table, findings, and a capture summary."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from auditor.model import Finding, Severity
from auditor.pipeline import AnalysisResult

SEVERITY_STYLE = {
    Severity.CRITICAL: "bold white on red",
    Severity.HIGH: "bold red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}

# Columns of the per-host table in the terminal: (frame column, header, shown from this width).
HOST_TABLE_COLUMNS = [
    ("host", "host", 0),
    ("max_severity", "severity", 0),
    ("findings", "#", 0),
    ("kinds", "kinds", 0),
    ("service", "service", 100),
    ("countries", "country", 100),
    ("connections", "conns", 120),
    ("tls_versions", "TLS", 140),
    ("ja4", "JA4", 170),
]


def _evidence_line(finding: Finding, limit: int = 110) -> str:
    parts = []
    for key, value in finding.evidence.items():
        if isinstance(value, list | tuple | set):
            value = ", ".join(str(v) for v in value)
        parts.append(f"{key}={value}")
    text = "; ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _severity_cell(label: str) -> str:
    return f"[{SEVERITY_STYLE[Severity.parse(label)]}]{label}[/]" if label else ""


def render(result: AnalysisResult, console: Console, summary_lines: list[str]) -> None:
    records = result.hosts.records()
    with_findings = [row for row in records if row["findings"] > 0]
    columns = [c for c in HOST_TABLE_COLUMNS if console.width >= c[2]]
    hosts = Table(title="Per-host findings")
    for name, header, _ in columns:
        numeric = name in ("findings", "connections")
        hosts.add_column(
            header, justify="right" if numeric else "left", overflow="fold",
            no_wrap=name in ("host", "max_severity"),
        )
    for row in with_findings:
        cells = []
        for name, _, _ in columns:
            value = row[name]
            if name == "max_severity":
                cells.append(_severity_cell(value))
            elif name in ("kinds", "ja4"):  # one per line reads better than a long run
                cells.append(value.replace(", ", "\n"))
            else:
                cells.append(str(value))
        hosts.add_row(*cells)
    console.print(hosts)
    quiet = len(records) - len(with_findings)
    if quiet:
        console.print(
            f"{quiet} other destination host(s) without findings "
            "(all hosts: --format json, csv or parquet)",
            style="dim",
        )

    findings = Table(title="Findings")
    findings.add_column("severity", no_wrap=True)
    findings.add_column("host", overflow="fold")
    findings.add_column("kind", overflow="fold")
    findings.add_column("seen", justify="right")
    findings.add_column("what", overflow="fold")
    if console.width >= 140:
        findings.add_column("evidence", overflow="fold")
    for f in result.findings:
        cells = [
            _severity_cell(f.severity.label), f.host, f.kind, str(f.count), f.title,
        ]
        if console.width >= 140:
            cells.append(_evidence_line(f))
        findings.add_row(*cells)
    console.print(findings)
    for line in summary_lines:
        console.print(line, style="dim", highlight=False)
