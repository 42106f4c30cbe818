"""SOC commands of the ``auditor`` CLI: query the findings store, sink status, signature exports.

    store (auditor.store) -> **findings / hosts / sinks status** -> terminal, JSON, CSV
    signatures (auditor.signatures) -> **signatures export** (auditor.exports) -> blocklists

Thin click commands; ``auditor.cli`` registers them:

    cli.add_command(findings_command, "findings")
    cli.add_command(hosts_command, "hosts")
    cli.add_command(sinks_command, "sinks")
    signatures_group.add_command(export_command, "export")
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from auditor.model import Severity
from auditor.store import FindingsStore, StoreError, default_store_path

SEVERITY_NAMES = [s.label for s in Severity]
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """'30m', '24h', '7d' (ago), an ISO 8601 date/time (UTC unless it says), or epoch seconds."""
    now = time.time() if now is None else now
    text = text.strip()
    match = _DURATION.match(text.lower())
    if match:
        return now - float(match.group(1)) * _DURATION_SECONDS[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: use a duration (30m, 24h, 7d), an ISO date/time or epoch seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _open_existing_store(path: Path | None) -> FindingsStore:
    path = path or default_store_path()
    if not path.exists():
        raise click.ClickException(
            f"{path}: no findings store here (record into one with --store, or set $AUDITOR_STORE)"
        )
    try:
        return FindingsStore(path)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


def _iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


store_option = click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Findings store (default: $AUDITOR_STORE or ~/.local/state/ai-egress-auditor/).",
)


def _filters(
    since: str | None, severity: str | None, host: str | None, detector: str | None
) -> dict[str, Any]:
    return {
        "since": parse_since(since) if since else None,
        "min_severity": Severity.parse(severity) if severity else None,
        "host": host,
        "detector": detector,
    }


def filter_options(func: Any) -> Any:
    for option in reversed(
        [
            click.option("--since", help="Last seen since: 30m, 24h, 7d, ISO time or epoch."),
            click.option(
                "--severity", type=click.Choice(SEVERITY_NAMES), help="This severity and above."
            ),
            click.option("--host", help="This host or any subdomain of it."),
            click.option("--detector", help="Only this detector's findings."),
        ]
    ):
        func = option(func)
    return func


@click.command("findings")
@store_option
@filter_options
@click.option("--limit", type=click.IntRange(min=1), help="At most this many findings.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "jsonl"]), default="table",
    show_default=True,
)
def findings_command(
    store_path: Path | None,
    since: str | None,
    severity: str | None,
    host: str | None,
    detector: str | None,
    limit: int | None,
    fmt: str,
) -> None:
    """Findings recorded in the store, most severe and most recent first."""
    with _open_existing_store(store_path) as store:
        found = store.findings(**_filters(since, severity, host, detector), limit=limit)
    records = []
    for finding in found:
        record = finding.to_dict()
        record["evidence_key"] = finding.evidence_key
        records.append(record)
    if fmt == "json":
        click.echo(json.dumps(records, indent=2, ensure_ascii=False, default=str))
        return
    if fmt == "jsonl":
        for record in records:
            click.echo(json.dumps(record, ensure_ascii=False, sort_keys=True, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"findings ({len(records)})")
    for column in ("severity", "host", "kind", "title", "count", "first seen", "last seen"):
        table.add_column(column, overflow="fold")
    for finding in found:
        table.add_row(
            finding.severity.label, finding.host, finding.kind, finding.title,
            str(finding.count), _iso(finding.first_seen), _iso(finding.last_seen),
        )
    Console().print(table)


@click.command("hosts")
@store_option
@filter_options
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
    show_default=True,
)
def hosts_command(
    store_path: Path | None,
    since: str | None,
    severity: str | None,
    host: str | None,
    detector: str | None,
    fmt: str,
) -> None:
    """The per-host roll-up of the findings in the store."""
    with _open_existing_store(store_path) as store:
        frame = store.hosts(**_filters(since, severity, host, detector))
    if fmt == "json":
        click.echo(frame.to_json(orient="records", indent=2, force_ascii=False))
        return
    if fmt == "csv":
        click.echo(frame.to_csv(index=False), nl=False)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"hosts ({len(frame)})")
    for column in frame.columns:
        table.add_column(str(column), overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*(str(value) for value in row))
    Console().print(table)


@click.group("sinks")
def sinks_command() -> None:
    """Alert sinks: delivery backlog and errors."""


@sinks_command.command("status")
@store_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def sinks_status(store_path: Path | None, fmt: str) -> None:
    """Backlog, deliveries and last error of every sink the store has queued alerts for.

    Exits 1 when some sink has alerts waiting and its last attempt failed, so monitoring can
    run this command as a check.
    """
    with _open_existing_store(store_path) as store:
        statuses = store.sink_status()
    rows = [
        {
            "sink": s.name,
            "backlog": s.backlog,
            "delivered": s.delivered,
            "oldest_pending": _iso(s.oldest_pending_at),
            "last_delivered": _iso(s.last_delivered_at),
            "last_error": s.last_error or "",
            "last_error_at": _iso(s.last_error_at),
        }
        for s in statuses
    ]
    failing = any(
        s.backlog
        and s.last_error_at is not None
        and (s.last_delivered_at is None or s.last_error_at > s.last_delivered_at)
        for s in statuses
    )
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    elif not rows:
        click.echo("no sinks have been used with this store")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="sinks")
        for column in rows[0]:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(str(v) for v in row.values()))
        Console().print(table)
    if failing:
        raise SystemExit(1)


@sinks_command.command("test")
@click.argument("url")
def sinks_test(url: str) -> None:
    """Send one synthetic INFO alert straight to URL (no store) to check a sink's settings."""
    from auditor.model import Finding
    from auditor.outputs.alert import Alert
    from auditor.sinks import DeliveryError, SinkURLError, parse_sink_url

    try:
        sink = parse_sink_url(url)
    except SinkURLError as exc:
        raise click.ClickException(str(exc)) from None
    now = time.time()
    probe = Finding(
        detector="sink-test",
        kind="sink-test.probe",
        severity=Severity.INFO,
        host="sink-test.invalid",
        title="AI Egress Auditor sink test: if you see this, alerts reach you",
        evidence={"sink": sink.name},
        first_seen=now,
        last_seen=now,
    )
    try:
        sink.deliver([Alert(probe)])
    except DeliveryError as exc:
        raise click.ClickException(f"{sink.name}: delivery failed: {exc}") from None
    finally:
        sink.close()
    click.echo(f"{sink.name}: test alert delivered")


@click.command("export")
@click.option(
    "--format", "fmt", required=True,
    type=click.Choice(["zeek-intel", "suricata", "rpz", "hosts", "stix2"]),
    help="Blocklist / intel format.",
)
@click.option(
    "--what", type=click.Choice(["relays", "providers", "all"]), default="relays",
    show_default=True, help="Which signature entries to export.",
)
@click.option("--signatures", "signatures_dir", type=click.Path(file_okay=False))
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
    help="Write here instead of standard output.",
)
def export_command(fmt: str, what: str, signatures_dir: str | None, output: Path | None) -> None:
    """Export relay/provider domains for Zeek, Suricata, DNS RPZ, /etc/hosts or STIX 2.1."""
    from auditor.exports import export_signatures
    from auditor.signatures import SignatureError, load_signatures

    try:
        sigs = load_signatures(Path(signatures_dir) if signatures_dir else None)
    except SignatureError as exc:
        raise click.ClickException(str(exc)) from None
    text = export_signatures(sigs, fmt, what)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"{output}: cannot write: {exc.strerror}") from None
