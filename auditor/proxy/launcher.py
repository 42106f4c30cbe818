"""``auditor proxy``: start mitmdump with the egress-audit addon and the auditor's options.

    auditor proxy --mode regular --listen-port 8080 --findings-jsonl findings.jsonl

This is the live counterpart of ``auditor pcap``: traffic goes through mitmproxy, the addon
(``addons/egress_audit.py`` -> ``auditor.proxy.adapter``) feeds the shared pipeline, findings
print as they happen and per-host totals print when the proxy stops. The command only builds
mitmdump's command line and replaces itself with it (``exec``), so signals and the exit status
are mitmdump's own. ``auditor.cli`` adds it as ``auditor proxy``. Audit only unless one of
``--block-severity``, ``--block-kinds`` or ``--redact-keys`` is given, which also loads the
enforcement addon (``addons/egress_enforce.py``).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from auditor.model import Severity

# The modes this command offers; mitmproxy's parser has the last word on each spec.
MODE_HELP = "regular | transparent | wireguard | socks5 | reverse:URL | upstream:URL"


def addon_script(name: str = "egress_audit.py") -> Path:
    """``addons/NAME`` of the source tree this package belongs to."""
    script = Path(__file__).resolve().parents[2] / "addons" / name
    if not script.is_file():
        raise click.ClickException(
            f"{script}: the auditor's mitmproxy addon was not found; run from a source "
            "checkout (pip install -e '.[proxy]')"
        )
    return script


def mitmdump_executable() -> list[str]:
    """How to start mitmdump: the script on PATH, else this Python's mitmproxy."""
    found = shutil.which("mitmdump")
    if found:
        return [found]
    try:
        import mitmproxy.tools.main  # noqa: F401 - only checking it is installed
    except ImportError:
        raise click.ClickException(
            "mitmproxy is not installed: pip install -e '.[proxy]' (mitmproxy 11.0.2)"
        ) from None
    return [sys.executable, "-c", "from mitmproxy.tools.main import mitmdump; mitmdump()"]


def check_mode(mode: str) -> str:
    """The mode spec, or a one-line error naming what mitmproxy accepts."""
    try:
        from mitmproxy.proxy.mode_specs import ProxyMode
    except ImportError:
        return mode  # mitmdump will say it; the executable check reports the missing package
    try:
        ProxyMode.parse(mode)
    except ValueError as exc:
        raise click.BadParameter(
            f"{mode!r}: {exc} (use {MODE_HELP})", param_hint="--mode"
        ) from None
    return mode


def mitmdump_command(
    *,
    mode: str,
    listen_host: str,
    listen_port: int,
    confdir: str | None = None,
    policy: str | None = None,
    signatures: str | None = None,
    geoip_db: str | None = None,
    findings_jsonl: str | None = None,
    reveal_evidence: bool = False,
    max_body_scan: int | None = None,
    scripts: tuple[str, ...] = (),
    settings: tuple[str, ...] = (),
    quiet: bool = False,
    block_severity: str | None = None,
    block_kinds: str | None = None,
    redact_keys: bool = False,
    store: str | None = None,
    sinks: tuple[str, ...] = (),
    connections_jsonl: str | None = None,
) -> list[str]:
    """mitmdump's argument vector for these choices (what ``auditor proxy`` executes)."""
    command = [
        *mitmdump_executable(),
        "--mode",
        check_mode(mode),
        "--listen-host",
        listen_host,
        "--listen-port",
        str(listen_port),
        "-s",
        str(addon_script()),
    ]
    enforcing = bool(block_severity or block_kinds or redact_keys)
    if enforcing:
        # Enforcement is its own addon: the audit addon never changes traffic.
        command += ["-s", str(addon_script("egress_enforce.py"))]
    for script in scripts:
        command += ["-s", str(Path(script).resolve())]
    options: dict[str, str | None] = {
        # Paths are made absolute: mitmproxy resolves them lazily, possibly elsewhere.
        "confdir": str(Path(confdir).expanduser().resolve()) if confdir else None,
        "auditor_policy": str(Path(policy).resolve()) if policy else None,
        "auditor_signatures": str(Path(signatures).resolve()) if signatures else None,
        "auditor_geoip_db": str(Path(geoip_db).resolve()) if geoip_db else None,
        "auditor_findings_jsonl": str(Path(findings_jsonl).resolve()) if findings_jsonl else None,
        "auditor_reveal_evidence": "true" if reveal_evidence else None,
        "auditor_max_body_scan": str(max_body_scan) if max_body_scan else None,
        "enforce_block_severity": block_severity or None,
        "enforce_block_kinds": block_kinds or None,
        "enforce_redact_keys": "true" if redact_keys else None,
        "auditor_store": str(Path(store).expanduser().resolve()) if store else None,
        "auditor_connections_jsonl": (
            str(Path(connections_jsonl).resolve()) if connections_jsonl else None
        ),
    }
    for name, value in options.items():
        if value is not None:
            command += ["--set", f"{name}={value}"]
    for sink in sinks:  # a list option: mitmproxy collects repeated --set
        command += ["--set", f"auditor_sinks={sink}"]
    for setting in settings:
        if "=" not in setting:
            raise click.BadParameter(f"{setting!r}: expected NAME=VALUE", param_hint="--set")
        command += ["--set", setting]
    if quiet:
        # Flows are not printed; the auditor's findings and totals still are.
        command += ["--flow-detail", "0"]
    return command


@click.command(
    "proxy",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Clients trust mitmproxy's CA from CONFDIR/mitmproxy-ca-cert.pem. Transparent mode "
    "needs the traffic redirected to the proxy (iptables REDIRECT or a gateway).",
)
@click.option("--mode", default="regular", show_default=True, help=MODE_HELP)
@click.option("--listen-host", default="127.0.0.1", show_default=True)
@click.option("--listen-port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option(
    "--confdir",
    type=click.Path(file_okay=False),
    default=None,
    help="mitmproxy's configuration directory (CA certificate and key). Default: ~/.mitmproxy",
)
@click.option("--policy", "policy_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--signatures", "signatures_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--geoip-db", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--findings-jsonl",
    type=click.Path(dir_okay=False),
    help="Append every new finding as a JSON line to this file.",
)
@click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False),
    help="Findings store (SQLite) to record into, for 'auditor findings' and sinks "
    "[default: $AUDITOR_STORE, else $XDG_STATE_HOME/ai-egress-auditor/findings.sqlite3].",
)
@click.option("--no-store", is_flag=True, help="Do not record findings in the store.")
@click.option(
    "--sink",
    "sinks",
    multiple=True,
    metavar="URL",
    help="Deliver findings to a sink (repeatable; from the store): jsonl:PATH, "
    "syslog+udp://HOST:PORT, ...",
)
@click.option(
    "--connections-jsonl",
    type=click.Path(dir_okay=False),
    help="Write one ECS JSON line per upstream connection to this file.",
)
@click.option("--reveal-evidence", is_flag=True, help="Write full prompts and keys into findings.")
@click.option(
    "--max-body-scan",
    type=click.IntRange(min=1),
    default=None,
    help="Bytes of each decoded body or streamed answer kept and scanned (default 1 MiB).",
)
@click.option(
    "-s",
    "--script",
    "scripts",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Another mitmproxy addon to load beside the auditor (repeatable).",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="Any other mitmproxy option, e.g. --set ssl_verify_upstream_trusted_ca=ca.pem.",
)
@click.option(
    "--block-severity",
    type=click.Choice([s.label for s in Severity]),
    help="Enforce: answer 403 to requests with a finding at or above this severity.",
)
@click.option(
    "--block-kinds",
    metavar="KIND,...",
    help="Enforce: answer 403 to requests with these finding kinds or detectors "
    "(e.g. plaintext-llm.prompt,relay-domain).",
)
@click.option(
    "--redact-keys", is_flag=True, help="Enforce: mask API keys found in prompts before sending."
)
@click.option("--quiet", is_flag=True, help="Do not print flows, only the auditor's lines.")
@click.option("--print-command", is_flag=True, help="Print the mitmdump command; do not run it.")
def proxy_command(
    mode: str,
    listen_host: str,
    listen_port: int,
    confdir: str | None,
    policy_path: str | None,
    signatures_dir: str | None,
    geoip_db: str | None,
    findings_jsonl: str | None,
    store_path: str | None,
    no_store: bool,
    sinks: tuple[str, ...],
    connections_jsonl: str | None,
    reveal_evidence: bool,
    max_body_scan: int | None,
    scripts: tuple[str, ...],
    settings: tuple[str, ...],
    block_severity: str | None,
    block_kinds: str | None,
    redact_keys: bool,
    quiet: bool,
    print_command: bool,
) -> None:
    """Audit AI egress live through mitmproxy (audit only: traffic passes unchanged)."""
    if sinks and no_store:
        raise click.UsageError("--sink delivers from the findings store: drop --no-store")
    if not no_store and not store_path:
        from auditor.store import default_store_path

        store_path = str(default_store_path())
    command = mitmdump_command(
        mode=mode,
        listen_host=listen_host,
        listen_port=listen_port,
        confdir=confdir,
        policy=policy_path,
        signatures=signatures_dir,
        geoip_db=geoip_db,
        findings_jsonl=findings_jsonl,
        reveal_evidence=reveal_evidence,
        max_body_scan=max_body_scan,
        scripts=scripts,
        settings=settings,
        quiet=quiet,
        block_severity=block_severity,
        block_kinds=block_kinds,
        redact_keys=redact_keys,
        store=store_path,
        sinks=sinks,
        connections_jsonl=connections_jsonl,
    )
    if print_command:
        import shlex

        click.echo(shlex.join(command))
        return
    sys.stdout.flush()
    sys.stderr.flush()
    # exec: mitmdump becomes this process, so Ctrl-C and SIGTERM reach it and done() runs.
    os.execv(command[0], command)
