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


def _evidence_line(finding: Finding, limit: int = 110) -> str:
    parts = []
    for key, value in finding.evidence.items():
        if isinstance(value, list | tuple | set):
            value = ", ".join(str(v) for v in value)
        parts.append(f"{key}={value}")
    text = "; ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(result: AnalysisResult, console: Console, summary_lines: list[str]) -> None:
    frame = result.hosts.to_frame()
    hosts = Table(title="Per-host findings", show_lines=False, expand=False)
    for column, style in [
        ("host", "bold"),
        ("max_severity", ""),
        ("findings", "right"),
        ("kinds", ""),
        ("service", ""),
        ("countries", ""),
        ("connections", "right"),
        ("tls_versions", ""),
        ("ja4", "dim"),
    ]:
        hosts.add_column(
            column.replace("_", " "),
            justify="right" if style == "right" else "left",
            style=style if style not in ("right",) else None,
            overflow="fold",
        )
    for row in frame.itertuples(index=False):
        sev = row.max_severity
        sev_cell = f"[{SEVERITY_STYLE[Severity.parse(sev)]}]{sev}[/]" if sev else ""
        hosts.add_row(
            row.host,
            sev_cell,
            str(row.findings),
            row.kinds,
            row.service,
            row.countries,
            str(row.connections),
            row.tls_versions,
            row.ja4,
        )
    console.print(hosts)

    findings = Table(title="Findings", show_lines=False)
    for column in ("severity", "host", "kind", "count", "what", "evidence"):
        findings.add_column(column, overflow="fold")
    for f in result.findings:
        findings.add_row(
            f"[{SEVERITY_STYLE[f.severity]}]{f.severity.label}[/]",
            f.host,
            f.kind,
            str(f.count),
            f.title,
            _evidence_line(f),
        )
    console.print(findings)
    for line in summary_lines:
        console.print(line, style="dim")
