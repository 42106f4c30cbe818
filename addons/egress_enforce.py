"""mitmproxy addon (opt-in): block, or mask keys in, LLM calls the auditor's detectors flag.

    mitmdump -s addons/egress_audit.py -s addons/egress_enforce.py \\
        --set enforce_block_kinds=plaintext-llm.prompt,relay-domain --set enforce_redact_keys=true

Thin on purpose: the logic is ``auditor.proxy.enforce.EgressEnforce``. Unlike the audit addon,
this one changes traffic: a blocked request gets a 403 from the proxy and is not sent on.
Options: enforce_block_severity, enforce_block_kinds, enforce_redact_keys (and the auditor_*
options it shares with the audit addon).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from auditor.proxy.enforce import EgressEnforce
except ImportError:
    # Run from a source checkout without installing: the package is beside addons/.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from auditor.proxy.enforce import EgressEnforce

addons = [EgressEnforce()]
