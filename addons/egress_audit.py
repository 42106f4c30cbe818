"""mitmproxy addon: audit AI egress live, through the same detectors as the offline analyser.

    mitmdump -s addons/egress_audit.py [--set auditor_findings_jsonl=findings.jsonl] ...

A thin file on purpose: the logic is ``auditor.proxy.adapter.EgressAudit`` (flow ->
observations -> ``Pipeline.feed``). Audit only: requests and responses pass unchanged.
Options: auditor_policy, auditor_signatures, auditor_geoip_db, auditor_findings_jsonl,
auditor_reveal_evidence, auditor_max_body_scan (see ``mitmdump --options``).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from auditor.proxy.adapter import EgressAudit
except ImportError:
    # Run from a source checkout without installing: the package is beside addons/.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from auditor.proxy.adapter import EgressAudit

addons = [EgressAudit()]
