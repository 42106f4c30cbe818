"""The configuration file gives defaults to every command's options; the command line wins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditor.cli import cli
from auditor.config import ConfigError, default_map, load_config

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "egress-demo.pcap"


def test_config_sets_store_and_sinks_of_pcap_and_findings(tmp_path: Path) -> None:
    store, sink = tmp_path / "site.sqlite3", tmp_path / "alerts.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(f"store: {store}\nsinks: ['jsonl:{sink}']\n")
    runner = CliRunner()
    result = runner.invoke(cli, ["--config", str(config), "pcap", str(SAMPLE), "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    reported = {json.loads(line)["kind"] for line in result.stdout.splitlines()}
    assert {json.loads(line)["kind"] for line in sink.read_text().splitlines()} == reported
    listed = runner.invoke(cli, ["--config", str(config), "findings", "--format", "json"])
    assert {f["kind"] for f in json.loads(listed.stdout)} == reported


def test_command_line_beats_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"store: {tmp_path / 'from-config.sqlite3'}\n")
    chosen = tmp_path / "from-cli.sqlite3"
    result = CliRunner().invoke(
        cli,
        ["--config", str(config), "pcap", str(SAMPLE), "--format", "jsonl", "--store", str(chosen)],
    )
    assert result.exit_code == 0
    assert chosen.exists() and not (tmp_path / "from-config.sqlite3").exists()


def test_config_found_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"store: {tmp_path / 'env.sqlite3'}\n")
    monkeypatch.setenv("AUDITOR_CONFIG", str(config))
    assert CliRunner().invoke(cli, ["pcap", str(SAMPLE), "--format", "jsonl"]).exit_code == 0
    assert (tmp_path / "env.sqlite3").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stores: x\n", "unknown settings: stores"),
        ("sinks: jsonl:/tmp/x\n", "sinks must be a list"),
        ("[1, 2]\n", "a configuration is a mapping"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(config)
    result = CliRunner().invoke(cli, ["--config", str(config), "pcap", str(SAMPLE)])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_default_map_reaches_subcommands() -> None:
    mapping = default_map({"store": "/s", "signatures": "/sig"})
    assert mapping["sinks"]["status"] == {"store_path": "/s"}
    assert mapping["signatures"]["export"] == {"signatures_dir": "/sig"}
    assert mapping["pcap"] == {"store_path": "/s", "signatures_dir": "/sig"}
