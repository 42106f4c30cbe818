"""AI Egress Auditor: see, and stop, risky traffic to AI APIs."""

__version__ = "0.1.0"
