"""The optional configuration file: defaults for the command-line options of every command.

A site keeps its store, sinks, policy and GeoIP database in one YAML file instead of repeating
them on each command line; an option given on the command line still wins. The file is
``--config FILE``, else ``$AUDITOR_CONFIG``, else ``$XDG_CONFIG_HOME/ai-egress-auditor/config.yaml``
when it exists::

    store: /var/lib/ai-egress-auditor/findings.sqlite3
    sinks:
      - syslog+tcp://siem.example:6514
      - jsonl:/var/log/ai-egress-auditor/findings.jsonl
    policy: /etc/ai-egress-auditor/policy.yaml
    geoip_db: /usr/share/GeoIP/GeoLite2-Country.mmdb
    signatures: /etc/ai-egress-auditor/signatures

It becomes click's ``default_map``: each key is the default of the same option of every
command that has it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from auditor.yaml_files import YAMLSyntaxError, load_yaml

CONFIG_ENV = "AUDITOR_CONFIG"

# config key -> (parameter name in the commands, expected type)
CONFIG_KEYS: dict[str, tuple[str, type]] = {
    "store": ("store_path", str),
    "sinks": ("sinks", list),
    "policy": ("policy_path", str),
    "geoip_db": ("geoip_db", str),
    "signatures": ("signatures_dir", str),
}

# Commands (as "group subcommand" paths) and the parameters each one takes.
COMMAND_PARAMETERS: dict[tuple[str, ...], set[str]] = {
    ("pcap",): {"store_path", "sinks", "policy_path", "geoip_db", "signatures_dir"},
    ("proxy",): {"store_path", "sinks", "policy_path", "geoip_db", "signatures_dir"},
    ("findings",): {"store_path"},
    ("hosts",): {"store_path"},
    ("report",): {"store_path"},
    ("sinks", "status"): {"store_path"},
    ("signatures", "list"): {"signatures_dir"},
    ("signatures", "validate"): {"signatures_dir"},
    ("signatures", "export"): {"signatures_dir"},
}


class ConfigError(ValueError):
    """The configuration file cannot be read or holds something unknown."""


def default_config_path() -> Path | None:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    candidate = Path(base) / "ai-egress-auditor" / "config.yaml"
    return candidate if candidate.is_file() else None


def load_config(path: Path) -> dict[str, Any]:
    """The settings in ``path``, checked: unknown keys and wrong types are errors."""
    try:
        data = load_yaml(path) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from None
    except YAMLSyntaxError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a configuration is a mapping of settings")
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        known = ", ".join(CONFIG_KEYS)
        raise ConfigError(f"{path}: unknown settings: {', '.join(unknown)} (known: {known})")
    for key, value in data.items():
        expected = CONFIG_KEYS[key][1]
        if not isinstance(value, expected):
            raise ConfigError(f"{path}: {key} must be a {expected.__name__}")
    return data


def default_map(settings: dict[str, Any]) -> dict[str, Any]:
    """click's nested ``default_map`` for every command that takes one of the settings."""
    result: dict[str, Any] = {}
    for command, parameters in COMMAND_PARAMETERS.items():
        defaults = {
            CONFIG_KEYS[key][0]: value
            for key, value in settings.items()
            if CONFIG_KEYS[key][0] in parameters
        }
        if not defaults:
            continue
        node = result
        for part in command[:-1]:
            node = node.setdefault(part, {})
        node[command[-1]] = defaults
    return result
