"""DNS message parsing: questions, answers of several types, compression and its abuse."""

from __future__ import annotations

import struct

import pytest
from capture_helpers import dns_query_bytes, dns_response_bytes

from auditor.capture.dns import DNSParseError, parse_dns, read_name


def test_query():
    parsed = parse_dns(dns_query_bytes("api.openai.com", 0xBEEF, qtype=28))
    assert (parsed.query_name, parsed.query_type) == ("api.openai.com", "AAAA")
    assert parsed.transaction_id == 0xBEEF
    assert not parsed.is_response and parsed.answers == []


def test_response_with_compressed_answer():
    parsed = parse_dns(dns_response_bytes("api.example.com", "203.0.113.7"))
    assert parsed.is_response and parsed.rcode == 0
    (answer,) = parsed.answers
    assert (answer.name, answer.rtype, answer.data, answer.ttl) == (
        "api.example.com",
        "A",
        "203.0.113.7",
        300,
    )


def test_cname_chain_with_pointers_into_earlier_names():
    header = struct.pack("!HHHHHH", 1, 0x8180, 1, 2, 0, 0)
    question = b"\x03api\x07example\x03com\x00" + struct.pack("!HH", 1, 1)
    # CNAME api.example.com -> edge.<pointer to "example.com" at offset 16>
    cname_rdata = b"\x04edge\xc0\x10"
    cname = b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 60, len(cname_rdata)) + cname_rdata
    edge_offset = 12 + len(question) + 12  # where "edge..." starts in the message
    a_record = struct.pack("!H", 0xC000 | edge_offset) + struct.pack("!HHIH", 1, 1, 60, 4)
    a_record += bytes([198, 51, 100, 9])
    parsed = parse_dns(header + question + cname + a_record)
    assert [(a.name, a.rtype, a.data) for a in parsed.answers] == [
        ("api.example.com", "CNAME", "edge.example.com"),
        ("edge.example.com", "A", "198.51.100.9"),
    ]


def test_compression_loop_is_an_error_not_a_hang():
    header = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0)
    looping = header + b"\x01a\xc0\x0c"  # label "a" then a pointer back to itself
    with pytest.raises(DNSParseError, match="loop"):
        parse_dns(looping + struct.pack("!HH", 1, 1))
    self_pointer = header + b"\xc0\x0c"
    with pytest.raises(DNSParseError, match="loop"):
        read_name(self_pointer, 12)
    forward = header + b"\xc0\x10\x00\x00\x01a\x00"
    with pytest.raises(DNSParseError, match="loop"):
        read_name(forward, 12)
    with pytest.raises(DNSParseError, match="loop"):  # a name read before, but further on
        read_name(forward, 12, {16: "a"})


def test_a_pointer_to_a_name_read_before_reads_the_same():
    message = dns_response_bytes("api.example.com", "203.0.113.7")
    answer = 12 + len(b"\x03api\x07example\x03com\x00") + 4
    plain_names: dict[int, str] = {}
    assert read_name(message, 12, plain_names) == ("api.example.com", answer - 4)
    assert plain_names == {12: "api.example.com"}
    assert read_name(message, answer, plain_names) == read_name(message, answer)
    assert read_name(message, answer) == ("api.example.com", answer + 2)
    assert plain_names == {12: "api.example.com"}  # names read through a pointer are not kept


def test_name_longer_than_255_octets_is_rejected():
    header = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0)
    name = (b"\x3f" + b"a" * 63) * 5 + b"\x00"
    with pytest.raises(DNSParseError, match="255"):
        parse_dns(header + name + struct.pack("!HH", 1, 1))


@pytest.mark.parametrize("cut", [0, 5, 11, 14, 25, 35])
def test_truncated_messages_raise_parse_errors(cut: int):
    message = dns_response_bytes("api.example.com", "203.0.113.7")
    with pytest.raises(DNSParseError):
        parse_dns(message[:cut])


def test_other_record_types_are_readable():
    header = struct.pack("!HHHHHH", 2, 0x8180, 1, 3, 0, 0)
    question = b"\x07example\x03com\x00" + struct.pack("!HH", 255, 1)
    txt = b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 5, 6) + b"\x05hello"
    mx = b"\xc0\x0c" + struct.pack("!HHIH", 15, 1, 5, 4) + b"\x00\x0a\xc0\x0c"
    aaaa = (
        b"\xc0\x0c"
        + struct.pack("!HHIH", 28, 1, 5, 16)
        + bytes.fromhex("20010db8" + "0" * 23 + "1")
    )
    parsed = parse_dns(header + question + txt + mx + aaaa)
    assert parsed.query_type == "ANY"
    assert [(a.rtype, a.data) for a in parsed.answers] == [
        ("TXT", "hello"),
        ("MX", "10 example.com"),
        ("AAAA", "2001:db8::1"),
    ]


def test_non_ascii_label_bytes_are_escaped_label_by_label():
    # Labels "caf\xe9" and "a.b" (a dot inside a label), then a pointer back to the second.
    message = b"\x04caf\xe9\x03a.b\x00" + b"\x01x\xc0\x05"
    assert read_name(message, 0) == ("caf\\xe9.a.b", 10)
    assert read_name(message, 10) == ("x.a.b", 14)
