"""Build hook for the one optional C helper; everything else is declared in pyproject.toml.

``auditor/capture/_record_walk.c`` speeds up the capture engine's bulk path (finding where each
pcap record starts). It is optional: without a C compiler the build goes on without it and
``auditor.capture.bulk`` uses its Python walk, which gives the same results.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "auditor.capture._record_walk",
            ["auditor/capture/_record_walk.c"],
            optional=True,  # a failed compile is a warning, not a failed install
        )
    ]
)
