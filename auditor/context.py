"""The one way to build a ``DetectionContext`` (signatures, policy, GeoIP) from where they are.

The CLI and the proxy addons both call ``load_context``, so an input fails the same way in
both; only the wording of a ``ContextError`` is theirs: the CLI prints it as it is ("policy:
PATH: ..."), the proxy names its option instead ("auditor_policy: PATH: ...").
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from auditor.detectors.base import DetectionContext
from auditor.enrich.geo import open_geo
from auditor.policy import load_policy
from auditor.signatures import load_signatures

ContextInput = Literal["signatures", "policy", "GeoIP database"]

# What the three loaders raise: their own errors (SignatureError, PolicyError and
# GeoDatabaseError are ValueErrors) and OSError for files they cannot read.
LOAD_ERRORS = (ValueError, OSError)


class ContextError(Exception):
    """One input of the detection context cannot be loaded.

    ``which`` input it is, the ``path`` given for it (``None``: the shipped default) and the
    one-line reason, ``detail``, which names the file that failed.
    """

    def __init__(self, which: ContextInput, path: str | None, detail: str) -> None:
        super().__init__(f"{which}: {detail}")
        self.which: ContextInput = which
        self.path = path
        self.detail = detail


def load_context(
    signatures_dir: str | None = None,
    policy_path: str | None = None,
    geoip_db: str | None = None,
    reveal_evidence: bool = False,
) -> DetectionContext:
    """Signatures, policy and GeoIP from the given paths (empty or ``None``: the shipped ones).

    ``reveal_evidence`` switches the policy's ``reveal_evidence`` on whatever the file says
    (off leaves the policy as it is). Raises ``ContextError`` for the first input that fails.
    """
    try:
        signatures = load_signatures(Path(signatures_dir) if signatures_dir else None)
    except LOAD_ERRORS as exc:
        raise ContextError("signatures", signatures_dir or None, str(exc)) from None
    try:
        policy = load_policy(policy_path)
    except LOAD_ERRORS as exc:
        raise ContextError("policy", policy_path or None, str(exc)) from None
    if reveal_evidence:
        policy.reveal_evidence = True
    try:
        geo = open_geo(geoip_db, signatures)
    except LOAD_ERRORS as exc:
        raise ContextError("GeoIP database", geoip_db or None, str(exc)) from None
    return DetectionContext(signatures=signatures, policy=policy, geo=geo)
