"""The live source: mitmproxy events turned into observations for the shared pipeline.

    client -> mitmproxy (addons/egress_audit.py -> auditor.proxy.adapter) -> Pipeline.feed

``adapter`` holds the addon logic (importable and unit-testable without a running proxy);
``launcher`` is the ``auditor proxy`` command that starts ``mitmdump`` with the addon.
"""
