"""Shared fixtures: paths of shipped data and of the third-party JA4 corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
JA4_CORPUS = ROOT.parent / "shared" / "corpus" / "ja4"


@pytest.fixture
def ja4_corpus() -> Path:
    if not (JA4_CORPUS / "pcap").is_dir():
        pytest.skip(f"JA4 reference corpus not found at {JA4_CORPUS} (shared/ is beside the repo)")
    return JA4_CORPUS


@pytest.fixture(autouse=True)
def isolated_findings_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Path:  # type: ignore[no-untyped-def]
    """Runs of the CLI record into a store of their own, never the user's ..."""
    path = tmp_path_factory.mktemp("store") / "findings.sqlite3"
    monkeypatch.setenv("AUDITOR_STORE", str(path))
    # ... and never read the user's configuration file.
    monkeypatch.delenv("AUDITOR_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
    # Parsed YAML is cached for the session, not in the user's cache directory.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
    return path
