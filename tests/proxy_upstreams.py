"""LLM API imitations (and port helpers) for the proxy tests: official-like, relay, SSE.

Used in-process by ``test_proxy_mitmdump.py`` (a thread per upstream) and as a process inside a
test-made network namespace by ``test_proxy_transparent.py``:

    python tests/proxy_upstreams.py --host 10.0.0.2 --port 443 --cert C --key K [--serve-model M]

It answers ``/v1/chat/completions`` (JSON, or SSE when ``stream`` is true) as OpenAI does and
``/v1/messages`` as Anthropic does. A streamed answer sends its first chunk, then waits for
``release_stream`` (set by the test once its client has seen that chunk) before the rest.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FIRST_CHUNK_WAIT = 15.0  # seconds a streaming upstream waits for the client to see chunk 1
# Replies shaped like the official APIs' (signatures/response_shapes.yaml): ids from the SDKs'
# own fixtures, and the headers OpenAI and Anthropic always send.
OPENAI_REPLY_ID = "chatcmpl-ABfwCjPMi0ubw56UyMIIeNfJzyogq"
OPENAI_HEADERS = {"openai-version": "2020-10-01", "openai-processing-ms": "5",
                  "x-request-id": "req_test01"}
ANTHROPIC_REPLY_ID = "msg_013Zva2CMHLNnXjNJJKqJ2EF"
ANTHROPIC_HEADERS = {"request-id": "req_011CSLsW7mFqvHHnzrKdKjAE",
                     "anthropic-organization-id": "00000000-0000-4000-8000-000000000000"}


class Upstream(ThreadingHTTPServer):
    """An LLM API imitation. ``model_for`` decides which model is served for the one asked."""

    daemon_threads = True

    def __init__(
        self,
        model_for: Callable[[str], str],
        tls: ssl.SSLContext | None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__((host, port), UpstreamHandler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.model_for = model_for
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.release_stream = threading.Event()
        self.stream_released_by_client: bool | None = None
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def stop(self) -> None:
        self.release_stream.set()
        self.shutdown()
        self.server_close()


class UpstreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # each SSE chunk leaves at once
    server: Upstream

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append((self.path, body))
        served = self.server.model_for(str(body.get("model")))
        if self.path.endswith("/chat/completions") and body.get("stream"):
            self.stream_chat(served)
        elif self.path.endswith("/chat/completions"):
            self.send_json(chat_completion(served), OPENAI_HEADERS)
        elif self.path.endswith("/messages"):
            self.send_json(anthropic_message(served), ANTHROPIC_HEADERS)
        else:
            self.send_json({"error": {"message": "not found"}}, {}, status=404)

    def send_json(
        self, document: dict[str, Any], headers: dict[str, str], status: int = 200
    ) -> None:
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def stream_chat(self, served: str) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        for name, value in OPENAI_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        pieces = ["Hel", "lo", " there"]
        self.send_chunk(sse_chunk(served, pieces[0]))
        # Hold the rest until the test has seen the first chunk at the client: if anything on
        # the way buffered the stream, the client could not see it and this wait times out.
        self.server.stream_released_by_client = self.server.release_stream.wait(FIRST_CHUNK_WAIT)
        for piece in pieces[1:]:
            self.send_chunk(sse_chunk(served, piece))
        self.send_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def send_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def chat_completion(model: str) -> dict[str, Any]:
    return {
        "id": OPENAI_REPLY_ID,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_test",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris.", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
    }


def sse_chunk(model: str, text: str) -> bytes:
    chunk = {
        "id": OPENAI_REPLY_ID,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def anthropic_message(model: str) -> dict[str, Any]:
    return {
        "id": ANTHROPIC_REPLY_ID,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "Paris."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 2},
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert", help="PEM certificate (TLS when given)")
    parser.add_argument("--key", help="PEM private key")
    parser.add_argument("--serve-model", help="answer with this model whatever was asked (relay)")
    args = parser.parse_args()
    tls = None
    if args.cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.cert, args.key)
    served = args.serve_model
    upstream = Upstream(lambda asked: served or asked, tls, args.host, args.port)
    upstream.release_stream.set()  # no test hand on the stream in a separate process
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening {upstream.port}", flush=True)
    try:
        upstream.thread.join()
    finally:
        upstream.stop()


if __name__ == "__main__":
    main()
