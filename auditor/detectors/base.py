"""The detector interface: a name, the observation types it reads, and one function.

A detector turns one observation (plus the shared ``DetectionContext``: signatures, policy,
GeoIP) into zero or more findings. It never knows whether the observation came from a capture
or from the proxy. Repeats are merged by the pipeline (``Finding.key``), so a detector may
return the same finding for every packet it applies to.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from auditor.model import Finding, Observation

if TYPE_CHECKING:
    from auditor.enrich.geo import GeoLookup
    from auditor.policy import Policy
    from auditor.signatures import Signatures


@dataclass
class DetectionContext:
    """What every detector may read besides the observation."""

    signatures: Signatures
    policy: Policy
    geo: GeoLookup
    # Free-form notes detectors may leave for the summary (e.g. unparsable bodies).
    notes: dict[str, int] = field(default_factory=dict)


class Detector(ABC):
    """Base class: set ``name`` and ``observes``, implement ``inspect``."""

    name: ClassVar[str]
    description: ClassVar[str]
    observes: ClassVar[tuple[type[Observation], ...]]

    @abstractmethod
    def inspect(self, obs: Observation, ctx: DetectionContext) -> Iterable[Finding]:
        """Findings about ``obs`` (an instance of one of ``observes``)."""
