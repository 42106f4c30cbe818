"""Test-only mitmproxy addon: send connections for test host names to local upstreams.

    mitmdump -s addons/egress_audit.py -s tests/proxy_upstream_map_addon.py \\
        --set test_upstream_map='{"api.openai.com:443": 40123}'

The client (an SDK, curl) asks for the real name (``https://api.openai.com``); mitmproxy in
regular mode would resolve it itself. This addon only changes the address mitmproxy connects to,
to 127.0.0.1:PORT, leaving SNI and the Host header as the client sent them, so the auditor sees
exactly what it would see in front of the real service. It is loaded by the tests only, never
by ``auditor proxy``.
"""

from __future__ import annotations

import json

from mitmproxy import ctx
from mitmproxy.addonmanager import Loader
from mitmproxy.exceptions import OptionsError
from mitmproxy.proxy.server_hooks import ServerConnectionHookData


class UpstreamMap:
    def __init__(self) -> None:
        self.ports: dict[str, int] = {}

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "test_upstream_map", str, "{}", 'JSON {"name:port": local port} for test upstreams.'
        )

    def configure(self, updated: set[str]) -> None:
        if "test_upstream_map" in updated:
            try:
                mapping = json.loads(ctx.options.test_upstream_map)
                self.ports = {str(name): int(port) for name, port in mapping.items()}
            except (ValueError, AttributeError) as exc:
                raise OptionsError(f"test_upstream_map: {exc}") from None

    def server_connect(self, data: ServerConnectionHookData) -> None:
        address = data.server.address
        if address is None:
            return
        port = self.ports.get(f"{address[0]}:{address[1]}")
        if port is not None:
            if data.server.sni is None:
                data.server.sni = str(address[0])  # keep the name for TLS, as a real client would
            data.server.address = ("127.0.0.1", port)


addons = [UpstreamMap()]
