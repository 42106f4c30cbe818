"""``auditor report``: the findings store as one self-contained HTML page.

    store (auditor.store: findings + host inventory) -> **report** -> outputs.html_report -> .html

Thin click command: read the stored findings and the per-host inventory (both filtered by
``--since``), hand them to ``auditor.outputs.html_report.render_report`` and write the page.
``auditor.cli`` registers it:

    cli.add_command(report_command, "report")
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path

import click

from auditor.outputs.html_report import ReportInput, render_report
from auditor.soc_cli import parse_since, store_option
from auditor.store import FindingsStore, StoreError, default_store_path

DEFAULT_TITLE = "AI egress report"


def load_report_input(
    store_path: Path, *, since: float | None, title: str, now: float | None = None
) -> ReportInput:
    """Findings and host inventory from the store at ``store_path``; StoreError if unreadable."""
    with FindingsStore(store_path) as store:
        try:
            findings = store.findings(since=since)
            hosts = store.stored_hosts(since=since)
        except (ValueError, sqlite3.Error) as exc:  # a damaged row or file
            raise StoreError(f"{store_path}: cannot read the findings: {exc}") from None
    return ReportInput(
        title=title,
        findings=findings,
        hosts=hosts,
        generated_at=time.time() if now is None else now,
        source=str(store_path),
        since=since,
    )


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, created owner-only like the store: it names internal hosts."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


@click.command("report")
@store_option
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="Where to write the HTML file ('-' for standard output).",
)
@click.option("--since", help="Findings last seen since: 30m, 24h, 7d, ISO time or epoch.")
@click.option("--title", default=DEFAULT_TITLE, show_default=True, help="Title of the page.")
def report_command(store_path: Path | None, output: Path, since: str | None, title: str) -> None:
    """Write one self-contained HTML report of the findings store (opens offline).

    Severity summary, findings over time, destinations by country, providers and relays,
    weak TLS, client JA4s, the sortable per-host table and the findings with their (redacted)
    evidence.
    """
    path = store_path or default_store_path()
    if not path.exists():
        raise click.ClickException(
            f"{path}: no findings store here (record into one with 'auditor pcap --store', "
            "or set $AUDITOR_STORE)"
        )
    threshold = parse_since(since) if since else None
    try:
        data = load_report_input(path, since=threshold, title=title)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    page = render_report(data)
    if str(output) == "-":
        sys.stdout.write(page)
        return
    try:
        write_private(output, page)
    except OSError as exc:
        raise click.ClickException(f"{output}: cannot write the report: {exc.strerror}") from None
    click.echo(
        f"{output}: {len(data.findings)} findings on "
        f"{len({f.host for f in data.findings})} hosts",
        err=True,
    )
