"""``auditor proxy``: the mitmdump command it builds and the errors it gives.

The command is run for real (exec into mitmdump) by ``test_proxy_mitmdump.py``; here only the
command line it would run (``--print-command``) and its refusals are checked.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from auditor.proxy.launcher import proxy_command

REPO = Path(__file__).resolve().parent.parent


def printed_command(*args: str) -> list[str]:
    result = CliRunner().invoke(proxy_command, [*args, "--print-command"])
    assert result.exit_code == 0, result.output
    return shlex.split(result.output)


def settings_of(command: list[str]) -> dict[str, str]:
    values = [command[i + 1] for i, arg in enumerate(command) if arg == "--set"]
    return dict(value.split("=", 1) for value in values)


def test_command_loads_the_addon_and_passes_the_auditor_options(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("min_tls_version: tls1.2\n")
    command = printed_command(
        "--mode", "transparent", "--listen-host", "0.0.0.0", "--listen-port", "8081",
        "--confdir", str(tmp_path / "conf"), "--policy", str(policy),
        "--findings-jsonl", str(tmp_path / "f.jsonl"), "--reveal-evidence",
        "--max-body-scan", "4096", "--set", "ssl_insecure=true",
    )  # fmt: skip
    assert Path(command[0]).name == "mitmdump" or "mitmdump()" in command[-1]
    assert command[command.index("--mode") + 1] == "transparent"
    assert command[command.index("--listen-host") + 1] == "0.0.0.0"
    assert command[command.index("--listen-port") + 1] == "8081"
    assert command[command.index("-s") + 1] == str(REPO / "addons" / "egress_audit.py")
    settings = settings_of(command)
    assert settings["confdir"] == str((tmp_path / "conf").resolve())
    assert settings["auditor_policy"] == str(policy.resolve())
    assert settings["auditor_findings_jsonl"] == str((tmp_path / "f.jsonl").resolve())
    assert settings["auditor_reveal_evidence"] == "true"
    assert settings["auditor_max_body_scan"] == "4096"
    assert settings["ssl_insecure"] == "true"


def test_defaults_record_into_the_default_store_only(isolated_findings_store: Path) -> None:
    command = printed_command()
    assert command[command.index("--mode") + 1] == "regular"
    settings = settings_of(command)
    assert settings.pop("auditor_store") == str(isolated_findings_store.resolve())
    assert not any(key.startswith("auditor_") for key in settings)


def test_no_store_sets_no_auditor_option() -> None:
    command = printed_command("--no-store")
    assert not any(key.startswith("auditor_") for key in settings_of(command))


@pytest.mark.parametrize("mode", ["reverse:https://api.openai.com", "wireguard", "regular"])
def test_modes_mitmproxy_accepts_pass(mode: str) -> None:
    command = printed_command("--mode", mode)
    assert command[command.index("--mode") + 1] == mode


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "sideways"], "Invalid value for --mode"),
        (["--set", "ssl_insecure"], "expected NAME=VALUE"),
        (["--policy", "/nonexistent/policy.yaml"], "does not exist"),
        (["--listen-port", "70000"], "--listen-port"),
    ],
)
def test_bad_arguments_are_one_line_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(proxy_command, [*args, "--print-command"])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_the_cli_offers_the_proxy_command() -> None:
    cli_module = pytest.importorskip("auditor.cli")
    context = click.Context(cli_module.cli)
    assert "proxy" in cli_module.cli.list_commands(context)
    assert cli_module.cli.get_command(context, "proxy") is proxy_command


def test_enforcement_flags_load_the_enforcement_addon() -> None:
    assert str(REPO / "addons" / "egress_enforce.py") not in printed_command()
    command = printed_command(
        "--block-kinds", "relay-domain,plaintext-llm.prompt", "--block-severity", "critical",
        "--redact-keys",
    )  # fmt: skip
    scripts = [command[i + 1] for i, arg in enumerate(command) if arg == "-s"]
    assert scripts == [
        str(REPO / "addons" / "egress_audit.py"),
        str(REPO / "addons" / "egress_enforce.py"),
    ]
    settings = settings_of(command)
    assert settings["enforce_block_kinds"] == "relay-domain,plaintext-llm.prompt"
    assert settings["enforce_block_severity"] == "critical"
    assert settings["enforce_redact_keys"] == "true"


def test_store_sinks_and_connection_records_are_passed_on(tmp_path: Path) -> None:
    command = printed_command(
        "--store", str(tmp_path / "f.db"), "--sink", "jsonl:/tmp/a.jsonl",
        "--sink", "syslog+udp://127.0.0.1:5514", "--connections-jsonl", str(tmp_path / "c.jsonl"),
    )  # fmt: skip
    sinks = [command[i + 1] for i, arg in enumerate(command) if arg == "--set"]
    assert "auditor_sinks=jsonl:/tmp/a.jsonl" in sinks
    assert "auditor_sinks=syslog+udp://127.0.0.1:5514" in sinks  # repeated: a list option
    settings = settings_of(command)
    assert settings["auditor_store"] == str((tmp_path / "f.db").resolve())
    assert settings["auditor_connections_jsonl"] == str((tmp_path / "c.jsonl").resolve())


def test_a_sink_needs_the_store() -> None:
    result = CliRunner().invoke(
        proxy_command, ["--sink", "jsonl:/tmp/a.jsonl", "--no-store", "--print-command"]
    )
    assert result.exit_code == 2 and "drop --no-store" in result.output
