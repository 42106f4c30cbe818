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
