"""HTTP/1.x request parsing: keep-alive, Content-Length and chunked bodies, content codings."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest
import zstandard

from auditor.capture import http
from auditor.capture.http import (
    HTTPParseError,
    decode_body,
    host_without_port,
    looks_like_http_request,
    may_become_http_request,
    parse_request,
    parse_response,
)

BODY = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}'


def post(body: bytes, *headers: str) -> bytes:
    head = ["POST /v1/chat/completions HTTP/1.1", "Host: api.example.com:8080", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def chunked(body: bytes, size: int = 7) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def test_content_length_request():
    data = post(BODY, f"Content-Length: {len(BODY)}", "Authorization: Bearer sk-test")
    parsed = parse_request(data, final=False)
    assert parsed is not None
    request = parsed.request
    assert (request.method, request.target, request.version) == (
        "POST",
        "/v1/chat/completions",
        "HTTP/1.1",
    )
    assert request.host == "api.example.com"
    assert ("Authorization", "Bearer sk-test") in request.headers
    assert request.body == BODY and not request.body_truncated
    assert parsed.consumed == len(data) and parsed.skip == 0


def test_keep_alive_requests_follow_each_other():
    first = post(BODY, f"Content-Length: {len(BODY)}")
    second = b"GET /v1/models HTTP/1.1\r\nHost: api.example.com\r\n\r\n"
    stream = first + second
    parsed = parse_request(stream, final=False)
    assert parsed is not None and parsed.consumed == len(first)
    following = parse_request(stream[parsed.consumed :], final=False)
    assert following is not None and following.request.target == "/v1/models"
    assert following.consumed == len(second)


def test_incomplete_request_waits_unless_final():
    data = post(BODY, f"Content-Length: {len(BODY)}")
    assert parse_request(data[:30], final=False) is None
    assert parse_request(data[:-5], final=False) is None
    parsed = parse_request(data[:-5], final=True)
    assert parsed is not None
    assert parsed.request.body == BODY[:-5] and parsed.request.body_truncated
    assert parsed.skip == 5  # the rest of the body is still to come on the stream


def test_chunked_gzip_body():
    data = post(
        chunked(gzip.compress(BODY)), "Transfer-Encoding: chunked", "Content-Encoding: gzip"
    )
    parsed = parse_request(data, final=False)
    assert parsed is not None
    assert parsed.request.body == BODY and parsed.request.body_error is None
    assert parsed.consumed == len(data)


def test_chunked_body_cut_short_loses_sync():
    data = post(chunked(BODY), "Transfer-Encoding: chunked")
    assert parse_request(data[:-10], final=False) is None
    parsed = parse_request(data[:-10], final=True)
    assert parsed is not None and parsed.request.body_truncated and not parsed.in_sync


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b, wbits=-15)),  # raw deflate, as some servers send
        ("br", brotli.compress),
        ("zstd", lambda b: zstandard.ZstdCompressor().compress(b)),
        ("gzip, br", lambda b: brotli.compress(gzip.compress(b))),
    ],
)
def test_content_codings(coding: str, encode):
    body, truncated, error = decode_body(encode(BODY), coding)
    assert (body, truncated, error) == (BODY, False, None)


def test_undecodable_body_keeps_raw_bytes_and_says_why():
    raw = b"this is not gzip at all"
    body, _, error = decode_body(raw, "gzip")
    assert body == raw and error is not None and error.startswith("gzip:")
    body, _, error = decode_body(raw, "compress")
    assert body == raw and error == "compress: unsupported content encoding"


def test_truncated_gzip_decodes_its_prefix():
    packed = gzip.compress(BODY * 50)
    body, _, error = decode_body(packed[: len(packed) // 2], "gzip")
    assert error is None and body and (BODY * 50).startswith(body)


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_decompression_bomb_stops_at_the_bound(monkeypatch: pytest.MonkeyPatch, coding: str):
    monkeypatch.setattr(http, "MAX_DECODED_BODY", 100_000)
    zeros = b"\0" * 5_000_000
    packed = {
        "gzip": gzip.compress,
        "br": brotli.compress,
        "zstd": zstandard.ZstdCompressor().compress,
    }[coding](zeros)
    body, truncated, error = decode_body(packed, coding)
    assert error is None and truncated and len(body) == 100_000


@pytest.mark.parametrize(
    "data",
    [
        b"HELLO THERE\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: ten\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello\r\n\r\n",
    ],
)
def test_malformed_requests_raise(data: bytes):
    with pytest.raises(HTTPParseError):
        parse_request(data, final=True)


def test_overlong_head_raises():
    data = b"GET / HTTP/1.1\r\n" + b"X-Filler: " + b"a" * (http.MAX_HEAD + 10)
    with pytest.raises(HTTPParseError):
        parse_request(data, final=False)


def test_absolute_form_target_gives_the_host():
    parsed = parse_request(b"GET http://relay.example.net:3000/v1/models HTTP/1.1\r\n\r\n", False)
    assert parsed is not None and parsed.request.host == "relay.example.net"


def test_request_start_detection():
    assert looks_like_http_request(b"POST /v1 HTTP/1.1\r\nHost: x\r\n")
    assert not looks_like_http_request(b"POST /v1 HTT")  # not yet: the line is incomplete
    assert not looks_like_http_request(b"EHLO mail.example.com\r\n")  # SMTP
    assert not looks_like_http_request(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # h2c
    assert not looks_like_http_request(b"\x16\x03\x01")
    assert may_become_http_request(b"POS") and may_become_http_request(b"POST /v1 HTT")
    assert not may_become_http_request(b"\x16\x03")
    assert not may_become_http_request(b"EHLO mail.example.com\r\n")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("API.Example.com:443", "api.example.com"),
        ("[2001:db8::1]:8080", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("", None),
        (None, None),
    ],
)
def test_host_without_port(value, expected):
    assert host_without_port(value) == expected


def test_response_with_content_length_and_gzip():
    body = gzip.compress(b'{"model": "gpt-4o-mini"}')
    data = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
    parsed = parse_response(data + body + b"HTTP/1.1 204 No Content\r\n\r\n", False, "POST")
    assert parsed is not None
    assert (parsed.response.status, parsed.response.body) == (200, b'{"model": "gpt-4o-mini"}')
    assert parsed.consumed == len(data) + len(body) and parsed.in_sync


def test_response_bodies_that_are_not_there():
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"
    parsed = parse_response(head, False, "HEAD")
    assert parsed is not None and parsed.response.body == b"" and parsed.consumed == len(head)
    parsed = parse_response(b"HTTP/1.1 304 Not Modified\r\n\r\n", False, "GET")
    assert parsed is not None and parsed.response.status == 304


def test_response_until_the_connection_closes():
    data = b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n"
    assert parse_response(data, final=False, request_method="GET") is None
    parsed = parse_response(data, final=True, request_method="GET")
    assert parsed is not None and parsed.response.body == b"data: 1\n\n"
    assert not parsed.in_sync


def test_garbage_response_raises():
    with pytest.raises(HTTPParseError):
        parse_response(b"\x17\x03\x03 not http\r\n\r\n", True, "GET")
