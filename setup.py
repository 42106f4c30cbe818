"""Build hook for the one optional C helper; everything else is declared in pyproject.toml.

``auditor/capture/_fastpath.c`` is the capture engine's per-packet fast path for classic pcap
(bulk packets of known flows only bump counters). It is optional: without a C compiler the
build goes on without it and the engine runs the same loop in Python (``engine._pcap_loop``),
which gives the same results, slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "auditor.capture._fastpath",
            ["auditor/capture/_fastpath.c"],
            # Timestamps must be computed exactly as Python computes them: no fused multiply-add.
            extra_compile_args=["-O2", "-ffp-contract=off"],
            optional=True,  # a failed compile is a warning, not a failed install
        )
    ]
)
