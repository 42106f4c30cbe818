"""DNS message parsing (RFC 1035): one query or response from its wire bytes.

A parser of the capture source (``reader -> packets -> flows -> parsers -> engine``). The engine
hands it UDP payloads on port 53/5353 and length-prefixed messages from TCP port 53 streams;
it returns the question and the answers, or raises ``DNSParseError`` (the engine counts
``skipped["malformed-dns"]``). Compressed names are followed with loop protection: a pointer
must point before the labels that led to it, and a name takes at most ``MAX_POINTERS`` jumps.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from auditor.model import DNSAnswer

# A name may follow at most this many compression pointers (loop and bomb protection).
MAX_POINTERS = 32
# RFC 1035 2.3.4: a name is at most 255 octets on the wire.
MAX_NAME_LENGTH = 255
# Answers kept per message; more is unusual and only costs memory.
MAX_ANSWERS = 64

# Record type numbers to mnemonics (IANA DNS parameters); unknown types print as TYPE<n>.
RECORD_TYPES = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    12: "PTR",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
    41: "OPT",
    64: "SVCB",
    65: "HTTPS",
    255: "ANY",
}

_header = struct.Struct("!HHHHHH").unpack_from
_question_tail = struct.Struct("!HH").unpack_from
_record_tail = struct.Struct("!HHIH").unpack_from


class DNSParseError(ValueError):
    """The bytes are not a well-formed DNS message."""


@dataclass(slots=True)
class ParsedDNS:
    transaction_id: int
    is_response: bool
    rcode: int
    query_name: str
    query_type: str
    answers: list[DNSAnswer] = field(default_factory=list)


def type_name(code: int) -> str:
    return RECORD_TYPES.get(code) or f"TYPE{code}"


def read_name(
    message: bytes, offset: int, plain_names: dict[int, str] | None = None
) -> tuple[str, int]:
    """(dotted name, offset just past it in the record), following compression pointers.

    ``plain_names``: names read before from the same message without a pointer, by offset;
    filled here. A name that is just a pointer to one of them (an answer naming the question,
    the usual case) is not read again: it reads the same.
    """
    size = len(message)
    if plain_names and offset + 1 < size and message[offset] & 0xC0 == 0xC0:
        target = ((message[offset] & 0x3F) << 8) | message[offset + 1]
        known = plain_names.get(target) if target < offset else None
        if known is not None:
            return known, offset + 2
    # Label bytes, decoded once joined: byte for byte the same text as decoding each label.
    labels: list[bytes] = []
    length_total = 0
    pointers = 0
    end_offset: int | None = None
    position = offset
    segment_start = offset  # where the labels being read began (the name, or the last target)
    while True:
        if position >= size:
            raise DNSParseError("name runs past the end of the message")
        length = message[position]
        if length == 0:
            if end_offset is None:
                end_offset = position + 1
            break
        if length & 0xC0 == 0xC0:
            if position + 1 >= size:
                raise DNSParseError("truncated compression pointer")
            target = ((length & 0x3F) << 8) | message[position + 1]
            pointers += 1
            # A pointer must point before the labels that led to it: targets then strictly
            # decrease, so no chain of pointers can loop.
            if pointers > MAX_POINTERS or target >= segment_start:
                raise DNSParseError("compression pointer loop")
            if end_offset is None:
                end_offset = position + 2
            position = segment_start = target
            continue
        if length & 0xC0:
            raise DNSParseError(f"unsupported label type 0x{length & 0xC0:02x}")
        position += 1 + length
        if position > size:
            raise DNSParseError("label runs past the end of the message")
        length_total += length + 1
        if length_total > MAX_NAME_LENGTH:
            raise DNSParseError("name longer than 255 octets")
        labels.append(message[position - length : position])
    name = b".".join(labels).decode("ascii", "backslashreplace")
    if plain_names is not None and not pointers:
        plain_names[offset] = name
    return name, end_offset


def _rdata_text(
    message: bytes, rtype: int, start: int, length: int, plain_names: dict[int, str]
) -> str:
    rdata = message[start : start + length]
    if rtype == 1 and length == 4:
        return socket.inet_ntop(socket.AF_INET, rdata)
    if rtype == 28 and length == 16:
        return socket.inet_ntop(socket.AF_INET6, rdata)
    if rtype in (2, 5, 12):  # NS, CNAME, PTR: a (possibly compressed) name
        return read_name(message, start, plain_names)[0]
    if rtype == 15 and length >= 3:  # MX: preference, exchange
        exchange = read_name(message, start + 2, plain_names)[0]
        return f"{struct.unpack_from('!H', rdata)[0]} {exchange}"
    if rtype == 16:  # TXT: character strings
        parts: list[str] = []
        position = 0
        while position < len(rdata):
            size = rdata[position]
            parts.append(rdata[position + 1 : position + 1 + size].decode("utf-8", "replace"))
            position += 1 + size
        return " ".join(parts)
    return rdata.hex()


def parse_dns(message: bytes) -> ParsedDNS:
    """Parse one DNS message (without the TCP length prefix)."""
    if len(message) < 12:
        raise DNSParseError(f"message of {len(message)} bytes is shorter than a DNS header")
    transaction_id, flags, qdcount, ancount, _nscount, _arcount = _header(message)
    if flags & 0x7800 not in (0, 0x0800, 0x1000, 0x2000, 0x2800):  # QUERY/IQUERY/STATUS/...
        raise DNSParseError(f"unknown opcode {(flags >> 11) & 0x0F}")
    offset = 12
    query_name = ""
    query_type = ""
    plain_names: dict[int, str] = {}
    for index in range(qdcount):
        name, offset = read_name(message, offset, plain_names)
        if offset + 4 > len(message):
            raise DNSParseError("truncated question")
        qtype, _qclass = _question_tail(message, offset)
        offset += 4
        if index == 0:
            query_name, query_type = name, type_name(qtype)
    answers: list[DNSAnswer] = []
    for _ in range(min(ancount, MAX_ANSWERS)):
        name, offset = read_name(message, offset, plain_names)
        if offset + 10 > len(message):
            raise DNSParseError("truncated resource record")
        rtype, _rclass, ttl, rdlength = _record_tail(message, offset)
        offset += 10
        if offset + rdlength > len(message):
            raise DNSParseError("resource record data runs past the end of the message")
        answers.append(
            DNSAnswer(
                name=name,
                rtype=type_name(rtype),
                data=_rdata_text(message, rtype, offset, rdlength, plain_names),
                ttl=ttl,
            )
        )
        offset += rdlength
    return ParsedDNS(
        transaction_id=transaction_id,
        is_response=bool(flags & 0x8000),
        rcode=flags & 0x000F,
        query_name=query_name,
        query_type=query_type,
        answers=answers,
    )
