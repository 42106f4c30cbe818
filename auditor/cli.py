"""The ``auditor`` command line (click). Thin: parse options, call the pipeline, print."""

from __future__ import annotations

import importlib
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from auditor import __version__
from auditor.model import Severity

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from auditor.hosts import HostTable
    from auditor.sinks import FindingsRecorder

SEVERITY_NAMES = [s.label for s in Severity]


class LazyGroup(click.Group):
    """A command group whose commands from other modules are imported when first asked for, so
    that ``auditor pcap`` does not load the report, SOC and proxy modules."""

    def __init__(self, *args: Any, lazy_commands: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})  # name -> "module:attribute"

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy_commands.get(cmd_name)
        if target is not None and cmd_name not in self.commands:
            module_name, attribute = target.split(":")
            self.add_command(getattr(importlib.import_module(module_name), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    lazy_commands={
        "findings": "auditor.soc_cli:findings_command",
        "hosts": "auditor.soc_cli:hosts_command",
        "sinks": "auditor.soc_cli:sinks_command",
        "report": "auditor.report:report_command",
        "proxy": "auditor.proxy.launcher:proxy_command",
    },
)
@click.version_option(__version__, prog_name="auditor")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML file with defaults for --store, --sink, --policy, --geoip-db, --signatures "
    "[default: $AUDITOR_CONFIG, else $XDG_CONFIG_HOME/ai-egress-auditor/config.yaml if present].",
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """AI Egress Auditor: find risky traffic to AI APIs (relays, weak TLS, plaintext prompts,
    cross-border destinations) in captures and proxied traffic."""
    from auditor.config import ConfigError, default_config_path, default_map, load_config

    path = config_path or default_config_path()
    if path is None:
        return
    try:
        settings = load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    ctx.default_map = default_map(settings)


@cli.command("pcap")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "jsonl", "csv", "parquet"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the output here instead of standard output.",
)
@click.option(
    "--view",
    type=click.Choice(["hosts", "findings"]),
    default="hosts",
    show_default=True,
    help="For csv/parquet: the per-host table or the findings.",
)
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False),
    help="Policy YAML (default: the shipped policies/default.yaml).",
)
@click.option(
    "--geoip-db",
    type=click.Path(dir_okay=False),
    help="A MaxMind .mmdb to use instead of the packaged GeoIP data.",
)
@click.option(
    "--signatures",
    "signatures_dir",
    type=click.Path(file_okay=False),
    help="Signature directory (default: the shipped signatures/).",
)
@click.option(
    "--engine",
    type=click.Choice(["fast", "tshark"]),
    default="fast",
    show_default=True,
    help="fast: own streaming parser; tshark: Wireshark dissection.",
)
@click.option(
    "--connections",
    "connections_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write one ECS JSON line per connection to this file ('-' for stdout).",
)
@click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Findings store (SQLite) to record into [default: $AUDITOR_STORE, else "
    "$XDG_STATE_HOME/ai-egress-auditor/findings.sqlite3].",
)
@click.option("--no-store", is_flag=True, help="Do not record findings in the store.")
@click.option(
    "--sink",
    "sinks",
    multiple=True,
    metavar="URL",
    help="Also deliver findings to a sink (repeatable): jsonl:PATH, syslog+udp://HOST:PORT, "
    "splunk-hec://HOST:PORT?token=..., webhook+https://... (see README).",
)
@click.option(
    "--fail-on",
    type=click.Choice(SEVERITY_NAMES),
    default=None,
    help="Exit with status 3 when a finding is at least this severe.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar (default: on when stderr is a terminal).",
)
def pcap_command(
    files: tuple[Path, ...],
    fmt: str,
    output: Path | None,
    view: str,
    policy_path: str | None,
    geoip_db: str | None,
    signatures_dir: str | None,
    engine: str,
    connections_path: Path | None,
    store_path: Path | None,
    no_store: bool,
    sinks: tuple[str, ...],
    fail_on: str | None,
    progress: bool | None,
) -> None:
    """Analyse pcap/pcapng captures (gzip too) and report findings per destination host."""
    from auditor.analysis import analyse_captures
    from auditor.context import ContextError, load_context
    from auditor.outputs.connections import ConnectionWriter
    from auditor.outputs.findings import write_result

    if fmt == "parquet" and output is None:
        raise click.UsageError("--format parquet writes a binary file: give --output PATH")
    try:
        ctx = load_context(signatures_dir, policy_path, geoip_db)
    except ContextError as exc:
        raise click.ClickException(str(exc)) from None
    # rich only for the progress bar and the table: a json run does not pay for its import.
    show_progress = sys.stderr.isatty() if progress is None else progress

    conn_stream = None
    writer = None
    if connections_path is not None:
        conn_stream = (
            sys.stdout
            if str(connections_path) == "-"
            else connections_path.open("w", encoding="utf-8")
        )
        writer = ConnectionWriter(conn_stream, ctx.signatures, ctx.geo)

    recorder = None if no_store and not sinks else _open_recorder(store_path, sinks)
    try:
        with _progress_bar(files, show_progress) as on_progress:
            offline = analyse_captures(
                files,
                ctx,
                engine=engine,
                on_connection=writer,
                sync_findings=recorder.sync if recorder is not None else None,
                progress=on_progress,
            )
        if recorder is not None:
            _record_host_inventory(recorder, offline.analysis.hosts)
    finally:
        if conn_stream is not None and conn_stream is not sys.stdout:
            conn_stream.close()
        if recorder is not None:
            recorder.close(flush_timeout=10.0)

    for report in offline.unreadable:
        click.echo(f"error: {report.error}", err=True)  # one line, never wrapped
    if offline.unreadable and len(offline.unreadable) == len(offline.captures):
        sys.exit(2)

    summary = _summary(offline, engine, writer.count if writer else None)
    result = offline.analysis
    if fmt == "table":
        from rich.console import Console

        from auditor.outputs.table import render  # rich tables: only for this format

        lines = _summary_lines(summary)
        if output is None:
            render(result, Console(), lines)
        else:
            with output.open("w", encoding="utf-8") as fh:
                render(result, Console(file=fh, width=200, color_system=None), lines)
    else:
        write_result(result, fmt, sys.stdout, output, summary, view=view)
        for line in _summary_lines(summary):
            click.secho(line, err=True, dim=True)  # one line each, never wrapped

    if fail_on is not None:
        threshold = Severity.parse(fail_on)
        if any(f.severity >= threshold for f in result.findings):
            sys.exit(3)


def _open_recorder(store_path: Path | None, sinks: tuple[str, ...]) -> FindingsRecorder:
    """The findings store (and sink delivery) an offline run records into, or a one-line error.

    The analysis syncs its merged findings into it every few seconds and at the end
    (``FindingsRecorder.sync``): nobody waits on offline alerts, and a call per occurrence
    would cost more than the rest of the store.
    """
    from auditor.sinks import SinkURLError, open_recorder
    from auditor.store import StoreError, default_store_path

    try:
        return open_recorder(store_path or default_store_path(), sinks)
    except (SinkURLError, StoreError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


def _record_host_inventory(recorder: FindingsRecorder, hosts: HostTable) -> None:
    """The run's per-host table into the store, for `auditor report`; a failure only warns."""
    from auditor.store import StoreError

    try:
        recorder.store.record_hosts(hosts.rows.values())
    except StoreError as exc:
        click.echo(f"warning: {exc}", err=True)


@contextmanager
def _progress_bar(
    files: tuple[Path, ...], show: bool
) -> Iterator[Callable[[Path, int], None] | None]:
    """A progress bar on stderr while the block runs, and the callback that advances it (for
    ``analyse_captures(progress=...)``); nothing and ``None`` when not ``show``."""
    if not show:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    sizes = {p: (p.stat().st_size if p.exists() else 0) for p in files}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        tasks = {p: bar.add_task(p.name, total=sizes[p] or None) for p in files}

        def on_progress(path: Path, done: int) -> None:
            bar.update(tasks[path], completed=done)

        yield on_progress


def _summary(offline, engine: str, connections_written: int | None) -> dict:  # type: ignore[no-untyped-def]
    captures = []
    for report in offline.captures:
        stats = report.stats
        captures.append(
            {
                "file": str(report.path),
                "error": report.error,
                "packets": stats.packets,
                "skipped": dict(stats.skipped),
            }
        )
    # In the order each severity first occurs, as the JSON summary has always listed them.
    by_severity = dict(Counter(f.severity.label for f in offline.analysis.findings))
    return {
        "engine": engine,
        "captures": captures,
        "hosts": len(offline.analysis.hosts.rows),
        "findings": len(offline.analysis.findings),
        "findings_by_severity": by_severity,
        "connections_written": connections_written,
        "detector_errors": offline.analysis.errors,
    }


def _summary_lines(summary: dict) -> list[str]:  # type: ignore[type-arg]
    lines = []
    for cap in summary["captures"]:
        if cap["error"]:
            continue
        skipped = sum(cap["skipped"].values())
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(cap["skipped"].items()))
        lines.append(
            f"{cap['file']}: {cap['packets']} packets read, {skipped} skipped"
            + (f" ({detail})" if detail else "")
        )
    sev = ", ".join(f"{k}: {v}" for k, v in summary["findings_by_severity"].items())
    lines.append(f"{summary['findings']} findings on {summary['hosts']} hosts ({sev or 'none'})")
    for error in summary["detector_errors"]:
        lines.append(f"detector error: {error}")
    return lines


# -- signatures --------------------------------------------------------------------------------


@cli.group(
    "signatures",
    cls=LazyGroup,
    lazy_commands={"export": "auditor.soc_cli:export_command"},
)
def signatures_group() -> None:
    """Inspect and check the signature data."""


@signatures_group.command("validate")
@click.option("--signatures", "signatures_dir", type=click.Path(file_okay=False))
def signatures_validate(signatures_dir: str | None) -> None:
    """Check every signature file against its schema; exit 1 on any problem."""
    from auditor.signatures import default_signatures_dir, validate_signatures

    directory = Path(signatures_dir) if signatures_dir else default_signatures_dir()
    problems = validate_signatures(directory)
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        raise SystemExit(1)
    click.echo(f"{directory}: all signature files valid")


@signatures_group.command("list")
@click.argument(
    "kind",
    type=click.Choice(["providers", "relays", "api-shapes", "key-formats", "ciphers", "versions"]),
    default="relays",
)
@click.option("--signatures", "signatures_dir", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def signatures_list(kind: str, signatures_dir: str | None, fmt: str) -> None:
    """List one kind of signature entries with their sources."""
    import json

    from rich.console import Console
    from rich.table import Table

    from auditor.signatures import SignatureError, load_signatures

    try:
        sigs = load_signatures(Path(signatures_dir) if signatures_dir else None)
    except SignatureError as exc:
        raise click.ClickException(str(exc)) from None
    rows: list[dict[str, object]]
    if kind == "providers":
        rows = [
            {
                "domain": p.domain,
                "match": p.rule.match,
                "provider": p.provider,
                "operator": p.operator,
                "jurisdiction": p.jurisdiction,
                "kind": p.kind,
                "api_shapes": ",".join(p.api_shapes),
                "source": p.source,
            }
            for p in sigs.providers
        ]
    elif kind == "relays":
        rows = [
            {
                "domain": r.domain,
                "match": r.rule.match,
                "category": r.category,
                "confidence": r.confidence,
                "operator": r.operator,
                "source": r.source,
            }
            for r in sigs.relays
        ]
    elif kind == "api-shapes":
        rows = [
            {
                "id": a.id,
                "family": a.family,
                "method": a.method,
                "path": a.path_regex,
                "source": a.source,
            }
            for a in sigs.api_shapes
        ]
    elif kind == "key-formats":
        rows = [{"id": k.id, "provider": k.provider, "source": k.source} for k in sigs.key_formats]
    elif kind == "ciphers":
        rows = [
            {
                "code": f"0x{c.code:04X}",
                "name": c.name,
                "weaknesses": ",".join(c.weaknesses),
                "severity": c.severity or "",
            }
            for c in sigs.cipher_suites.values()
        ]
    else:
        rows = [
            {
                "code": f"0x{v.code:04X}",
                "name": v.name,
                "weak": v.weak,
                "severity": v.severity or "",
                "source": v.source,
            }
            for v in sigs.tls_versions.values()
        ]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table(title=f"{kind} ({len(rows)})")
    for column in rows[0] if rows else []:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console().print(table)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
