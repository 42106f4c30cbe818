"""destination_names: the names an observation reveals, with what the signatures say they are."""

from __future__ import annotations

import pytest
from sample_signatures import RESOLVER, constructed_signatures, flow

from auditor.detectors import destination_names
from auditor.detectors.destination_names import SeenName, identified_names, identify
from auditor.model import (
    ClientHello,
    Connection,
    DNSAnswer,
    DNSMessage,
    FlowTuple,
    HTTPRequest,
    TLSHandshake,
)

RELAY_IP = "104.21.48.17"


def hello(sni: str | None, server_name: str | None = None) -> TLSHandshake:
    return TLSHandshake(
        flow=flow(RELAY_IP), ts=1.0, server_name=server_name,
        client=ClientHello(0x0301, 0x0303, [0x1301], [0], [0x0304], sni),
    )  # fmt: skip


def request(host: str | None) -> HTTPRequest:
    return HTTPRequest(
        flow=flow(RELAY_IP, 80), ts=1.0, method="GET", host=host, path="/",
        http_version="HTTP/1.1", headers=[],
    )  # fmt: skip


def names(obs: object, signatures: object = None) -> list[tuple[str, str, str | None]]:
    found = identified_names(obs, signatures or constructed_signatures())  # type: ignore[arg-type]
    return [(seen.name, seen.where, seen.address) for seen, _ in found]


def test_dns_names_stand_for_the_first_resolved_address_not_the_resolver() -> None:
    message = DNSMessage(
        flow=FlowTuple("udp", "10.1.2.3", 53000, RESOLVER, 53), ts=1.0, query_name="AI.Corp.",
        query_type="A", transaction_id=1, is_response=True,
        answers=[
            DNSAnswer("ai.corp", "CNAME", "api.chatanywhere.tech.", 60),
            DNSAnswer("api.chatanywhere.tech", "A", RELAY_IP, 60),
            DNSAnswer("api.chatanywhere.tech", "A", "104.21.48.18", 60),
            DNSAnswer("ai.corp", "CNAME", "AI.corp", 60),  # same name again: listed once
        ],
    )  # fmt: skip
    assert names(message) == [
        ("ai.corp", "dns", RELAY_IP),
        ("api.chatanywhere.tech", "dns-cname", RELAY_IP),
    ]


def test_names_in_order_of_evidence_each_once() -> None:
    assert names(hello("API.ChatAnywhere.tech:443", server_name="api.chatanywhere.tech")) == [
        ("api.chatanywhere.tech", "sni", RELAY_IP),
        (RELAY_IP, "address", RELAY_IP),
    ]
    assert names(request(None)) == [(RELAY_IP, "address", RELAY_IP)]
    connection = Connection(
        flow=flow(RELAY_IP), ts=2.0, first_seen=1.0, last_seen=2.0, server_name="from.dns",
        tls=hello(None), http=[request("a.example"), request("b.example"), request("")],
    )  # fmt: skip
    assert names(connection) == [
        ("a.example", "http-host", RELAY_IP),
        ("b.example", "http-host", RELAY_IP),
        ("from.dns", "dns", RELAY_IP),
        (RELAY_IP, "address", RELAY_IP),
    ]


def test_identities_are_those_of_the_signature_set_asked() -> None:
    obs = hello("api.chatanywhere.tech")
    listed, empty = constructed_signatures(), constructed_signatures()
    empty.relays.clear()
    [(seen, identity), _] = identified_names(obs, listed)
    assert seen == SeenName("api.chatanywhere.tech", "sni", RELAY_IP)
    assert identity.relay is not None and identity.relay.domain == "chatanywhere.tech"
    # The same observation asked with another set: not the remembered answer of the first.
    [(_, identity), _] = identified_names(obs, empty)
    assert identity.relay is None
    assert identify(listed, "api.chatanywhere.tech").relay is not None


def test_the_memos_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(destination_names, "NAME_CACHE_SIZE", 8)
    signatures = constructed_signatures()
    for index in range(50):
        assert names(hello(f"host{index}.example"), signatures)[0][0] == f"host{index}.example"
    assert len(destination_names._answers) <= 8
    assert len(destination_names._identities) <= 8


def test_answers_are_remembered_per_kind_of_evidence() -> None:
    signatures = constructed_signatures()
    assert names(hello("api.chatanywhere.tech"), signatures)[0][1] == "sni"
    # The same name and address in an HTTP request: seen in its Host header, not in SNI.
    assert names(request("api.chatanywhere.tech"), signatures)[0][1] == "http-host"
    assert names(hello("api.chatanywhere.tech"), signatures)[0][1] == "sni"
