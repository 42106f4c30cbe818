"""Capture source: pcap/pcapng files in, observations out (the first stage of the flow).

    capture file -> reader -> packets (link/IP/TCP/UDP, tunnels) -> flows (first-KB reassembly)
                 -> TLS / DNS / HTTP parsing -> observations -> pipeline

``read_observations(path, stats, progress=None)`` (``auditor.capture.engine``) is the fast
offline engine; ``CaptureStats`` and ``CaptureError`` are shared with the tshark engine so the
CLI summarises either the same way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


class CaptureError(Exception):
    """A capture file cannot be read at all (one line, naming the file)."""


@dataclass
class CaptureStats:
    """What one capture file held and what was skipped, for the CLI summary."""

    packets: int = 0  # packet records read
    bytes: int = 0  # captured bytes of those records
    flows: int = 0  # TCP/UDP flows created
    observations: Counter[str] = field(default_factory=Counter)  # by observation type name
    # Records/packets/streams not analysed, by reason ("truncated-packet", "malformed-dns", ...).
    skipped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        """One line for a person."""
        observed = ", ".join(f"{k}: {v}" for k, v in sorted(self.observations.items()))
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items()))
        return (
            f"{self.packets} packets, {self.bytes} bytes, {self.flows} flows"
            f"; observations: {observed or 'none'}; skipped: {skipped or 'none'}"
        )


def __getattr__(name: str) -> Any:
    # Lazy so that ``from auditor.capture import CaptureStats`` does not load the whole engine
    # (and the engine's modules can import this package without a cycle).
    if name == "read_observations":
        from auditor.capture.engine import read_observations

        return read_observations
    raise AttributeError(name)


__all__ = ["CaptureError", "CaptureStats", "read_observations"]
