"""Benchmark: what the egress-audit mitmproxy addon costs a proxied LLM call, on loopback.

    8 httpx clients (keep-alive) --> [direct | mitmdump | +no-op addon | +egress_audit.py]
        --> LLM API imitation (``tests/proxy_upstreams.py``, its own process, TLS from trustme)

One run measures, for OpenAI-style chat completions with a ~2 KB prompt:
- requests/s with 8 concurrent clients, and the latency each proxy adds (p50, p99) over direct
  requests to the same upstream;
- time to the first chunk of a streamed (SSE) completion, direct and through the auditor proxy:
  the upstream sends one chunk, sleeps ``--stream-pause``, then sends the rest, so a proxy that
  buffered the stream would show a first chunk no earlier than the pause.

All three mitmdumps also load ``tests/proxy_upstream_map_addon.py``: clients ask for
``https://api.openai.com`` (so the auditor sees the real name in SNI and Host) and that addon only
points mitmproxy's upstream connection at the local port (one hook call per connection). Flows
are not printed (``flow_detail=0``) in any of them. Everything is bounded (``--requests`` per
phase and ``--phase-seconds``) and every process started here is stopped before it returns.

    python bench/bench_proxy.py                    # 3 rounds x 3000 requests per configuration
    python bench/bench_proxy.py --requests 500 --rounds 1          # quicker
    python bench/bench_proxy.py --profile-auditor auditor.prof     # cProfile the auditor proxy
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))

from proxy_upstreams import (  # noqa: E402  (the proxy tests' LLM API imitation, reused)
    Upstream,
    free_port,
    wait_for_port,
)

API_NAME = "api.openai.com"  # the name clients ask for; the map addon sends it to the upstream
CHAT_PATH = "/v1/chat/completions"
DIRECT = "direct"
NO_ADDON = "mitmdump"
NOOP_ADDON = "mitmdump + no-op addon"
AUDITOR_ADDON = "mitmdump + egress_audit.py"
CONFIGURATIONS = (DIRECT, NO_ADDON, NOOP_ADDON, AUDITOR_ADDON)
TARGET_COST = 0.10  # the auditor addon should cost under 10% of the no-op addon's throughput
WARMUP_REQUESTS = 3  # per client, before timing: connection, TLS, mitmproxy's upstream cert

# A no-op addon with the hooks the auditor uses: what remains between it and the auditor is the
# auditor's own work, not mitmproxy's cost of calling a script.
NOOP_ADDON_SOURCE = '''"""Benchmark no-op addon: the auditor's hooks, doing nothing."""


class NoOp:
    def tls_clienthello(self, data): pass
    def tls_established_server(self, data): pass
    def responseheaders(self, flow): pass
    def response(self, flow): pass
    def error(self, flow): pass
    def server_disconnected(self, data): pass
    def client_disconnected(self, client): pass


addons = [NoOp()]
'''

# cProfile inside mitmdump: the addon hooks run on mitmproxy's event loop, in the main thread.
PROFILED_MITMDUMP = "from mitmproxy.tools.main import mitmdump; mitmdump()\n"


# --- the request ---------------------------------------------------------------------------


def chat_request(prompt_bytes: int, stream: bool = False) -> dict[str, Any]:
    """An OpenAI chat completion request whose prompt is ``prompt_bytes`` of ordinary text."""
    sentence = "Summarise the quarterly egress report for the security team, briefly. "
    prompt = (sentence * (prompt_bytes // len(sentence) + 1))[:prompt_bytes]
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": prompt},
        ],
        "temperature": 0.2,
    }
    if stream:
        body["stream"] = True
    return body


def fake_api_key() -> str:
    return "sk-proj-" + "BENCHfake0" * 5  # obviously fake, made here


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of ``values``; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))  # ceil
    return ordered[rank - 1]


# --- the upstream, in its own process --------------------------------------------------------


class FixedPause:
    """Stands in for the upstream's ``release_stream`` event: a fixed pause after chunk 1.

    The tests' upstream sends the first chunk of a streamed answer, waits on that event, then
    sends the rest; with this in its place every stream pauses ``seconds`` and goes on, so the
    benchmark reuses the imitation's answer (headers, chunks) unchanged.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def wait(self, timeout: float | None = None) -> bool:
        time.sleep(self.seconds)  # the first chunk is out; a buffering proxy would hold it
        return True

    def set(self) -> None:  # Upstream.stop() releases waiting streams; nothing waits here
        pass

    def clear(self) -> None:
        pass


def serve_upstream(cert: str, key: str, stream_pause: float) -> None:
    """Child process: the LLM API imitation on 127.0.0.1, until SIGTERM."""
    from collections import deque

    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    upstream = Upstream(lambda asked: asked, tls)
    upstream.release_stream = FixedPause(stream_pause)  # type: ignore[assignment]
    upstream.requests = deque(maxlen=16)  # type: ignore[assignment]  # bounded memory
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening {upstream.port}", flush=True)
    try:
        upstream.thread.join()
    finally:
        upstream.stop()


# --- processes -------------------------------------------------------------------------------


@dataclass
class Started:
    """A child process this benchmark started, and how to stop it."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            # SIGINT, as Ctrl-C: mitmdump shuts down cleanly (and cProfile writes its file).
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (Linux ``/proc``)."""
        return process_cpu_seconds(self.process.pid)


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from ``/proc/PID/stat``; 0.0 where there is no ``/proc``.

    On a shared machine wall-clock throughput moves with the neighbours' load; the proxy's own
    CPU time per request does not, and mitmdump (one event loop) is bound by it.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        env.pop(variable, None)  # nothing here may leave loopback through a configured proxy
    return env


def start_upstream(workdir: Path, stream_pause: float) -> tuple[Started, int, Path]:
    """The upstream process with a trustme certificate for API_NAME; (it, port, CA file)."""
    import trustme

    ca = trustme.CA()
    ca_pem, cert_pem, key_pem = workdir / "ca.pem", workdir / "cert.pem", workdir / "key.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    issued = ca.issue_cert(API_NAME)
    issued.cert_chain_pems[0].write_to_path(str(cert_pem))
    issued.private_key_pem.write_to_path(str(key_pem))
    log = workdir / "upstream.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-upstream",
             "--cert", str(cert_pem), "--key", str(key_pem),
             "--stream-pause", str(stream_pause)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_file, env=child_env(),
        )  # fmt: skip
    started = Started("upstream", process, log)
    assert process.stdout is not None
    line = process.stdout.readline().decode().split()  # "listening PORT"
    if len(line) != 2 or line[0] != "listening":
        started.stop()
        raise RuntimeError(f"upstream did not start: {started.log_text().strip()[-500:]}")
    return started, int(line[1]), ca_pem


def start_mitmdump(
    name: str,
    workdir: Path,
    upstream_port: int,
    upstream_ca: Path,
    scripts: Sequence[Path],
    settings: Sequence[str] = (),
    profile_to: Path | None = None,
) -> tuple[Started, int]:
    """mitmdump in regular mode on 127.0.0.1 with these addons; (it, its port)."""
    port = free_port()
    slug = "".join(c if c.isalnum() else "-" for c in name)
    confdir = workdir / "confdir"  # shared: one CA for all proxies, trusted by the clients
    upstream_map = {f"{API_NAME}:443": upstream_port}
    if profile_to is not None:
        wrapper = workdir / "profiled_mitmdump.py"
        wrapper.write_text(PROFILED_MITMDUMP, encoding="utf-8")
        command = [sys.executable, "-m", "cProfile", "-o", str(profile_to), str(wrapper)]
    else:
        command = [sys.executable, "-c", PROFILED_MITMDUMP]
    command += ["--mode", "regular", "--listen-host", "127.0.0.1", "--listen-port", str(port),
                "--set", f"confdir={confdir}", "--set", "flow_detail=0",
                "--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}",
                "-s", str(TESTS / "proxy_upstream_map_addon.py"),
                "--set", f"test_upstream_map={json.dumps(upstream_map)}"]  # fmt: skip
    for script in scripts:
        command += ["-s", str(script)]
    for setting in settings:
        command += ["--set", setting]
    log = workdir / f"{slug}.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            env=child_env(),
        )  # fmt: skip
    started = Started(name, process, log)
    try:
        wait_for_port(port, process)
    except RuntimeError as exc:
        started.stop()
        raise RuntimeError(f"{name}: {exc}\n{started.log_text()[-2000:]}") from None
    return started, port


# --- clients ---------------------------------------------------------------------------------


@dataclass
class Target:
    """How a client reaches the upstream: directly, or through one of the proxies."""

    name: str
    url: str
    ca_file: Path
    proxy: str | None = None
    # Direct requests go to 127.0.0.1 but name API_NAME in SNI and Host, as through the proxy.
    sni_hostname: str | None = None

    def client(self, timeout: float = 30.0) -> Any:
        import httpx

        verify = ssl.create_default_context(cafile=str(self.ca_file))
        headers = {"authorization": f"Bearer {fake_api_key()}"}
        if self.sni_hostname:
            headers["host"] = self.sni_hostname
        return httpx.Client(
            proxy=self.proxy, verify=verify, trust_env=False, timeout=timeout, headers=headers
        )

    @property
    def extensions(self) -> dict[str, Any]:
        return {"sni_hostname": self.sni_hostname} if self.sni_hostname else {}


@dataclass
class Phase:
    """One timed load phase on one target."""

    target: str
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    first_error: str | None = None
    proxy_cpu_seconds: float | None = None  # the proxy process's CPU time during the phase

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def load_phase(
    target: Target,
    requests: int,
    clients: int,
    prompt_bytes: int,
    max_seconds: float,
    proxy_cpu: Callable[[], float] | None = None,
) -> Phase:
    """``requests`` POSTs shared by ``clients`` threads (one keep-alive client each).

    ``proxy_cpu`` reads the proxy's CPU time, taken when timing starts and when it ends.
    """
    body = json.dumps(chat_request(prompt_bytes)).encode()
    headers = {"content-type": "application/json"}
    lock = threading.Lock()
    remaining = [requests]
    latencies: list[float] = []
    errors: list[str] = []
    start_together = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def take_one() -> bool:
        with lock:
            if remaining[0] <= 0 or time.perf_counter() > stop_at[0]:
                return False
            remaining[0] -= 1
            return True

    def run_client() -> None:
        with target.client() as client:

            def post() -> None:
                answer = client.post(
                    target.url, content=body, headers=headers, extensions=target.extensions
                )
                answer.read()
                if answer.status_code != 200:
                    raise RuntimeError(f"HTTP {answer.status_code}: {answer.text[:200]}")

            try:
                for _ in range(WARMUP_REQUESTS):
                    post()
            except Exception as exc:
                with lock:
                    errors.append(f"warm-up: {type(exc).__name__}: {exc}")
            with contextlib.suppress(threading.BrokenBarrierError):
                start_together.wait(timeout=60)
            while take_one():
                started = time.perf_counter()
                try:
                    post()
                except Exception as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=run_client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + max_seconds + 60  # until the barrier opens
    start_together.wait(timeout=60)
    cpu_before = proxy_cpu() if proxy_cpu is not None else 0.0
    began = time.perf_counter()
    stop_at[0] = began + max_seconds
    for thread in threads:
        thread.join(timeout=max_seconds + 60)
    seconds = time.perf_counter() - began
    cpu_used = proxy_cpu() - cpu_before if proxy_cpu is not None else None
    first_error = errors[0] if errors else None
    return Phase(
        target.name, len(latencies), len(errors), seconds, latencies, first_error, cpu_used
    )


@dataclass
class StreamTiming:
    """Streamed completions on one target: time to the first chunk and to the end."""

    target: str
    first_chunk_ms: list[float]
    complete_ms: list[float]
    errors: int
    first_error: str | None = None


def stream_phase(target: Target, streams: int, prompt_bytes: int) -> StreamTiming:
    """``streams`` streamed completions one after another on one keep-alive client."""
    body = json.dumps(chat_request(prompt_bytes, stream=True)).encode()
    headers = {"content-type": "application/json", "accept": "text/event-stream"}
    first_chunks: list[float] = []
    completes: list[float] = []
    errors: list[str] = []
    with target.client() as client:
        for index in range(streams + 1):  # the first one warms the connection up
            started = time.perf_counter()
            try:
                with client.stream(
                    "POST", target.url, content=body, headers=headers,
                    extensions=target.extensions,
                ) as answer:  # fmt: skip
                    chunks = answer.iter_bytes()
                    first = next(chunks, b"")
                    first_at = time.perf_counter()
                    rest = b"".join(chunks)
                    done_at = time.perf_counter()
                if b"Hel" not in first or b"[DONE]" not in first + rest:
                    raise RuntimeError(f"unexpected stream: {(first + rest)[:200]!r}")
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if index:
                first_chunks.append((first_at - started) * 1000)
                completes.append((done_at - started) * 1000)
    return StreamTiming(target.name, first_chunks, completes, len(errors), next(iter(errors), None))


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Summary:
    """One configuration over all rounds."""

    configuration: str
    requests: int
    errors: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    added_p50_ms: float = 0.0
    added_p99_ms: float = 0.0
    proxy_cpu_ms_per_request: float | None = None
    first_error: str | None = None


def summarise(phases: Sequence[Phase], direct: Summary | None) -> Summary:
    latencies = [value for phase in phases for value in phase.latencies_ms]
    requests = sum(p.requests for p in phases)
    seconds = sum(p.seconds for p in phases)
    summary = Summary(
        configuration=phases[0].target,
        requests=requests,
        errors=sum(p.errors for p in phases),
        seconds=seconds,
        requests_per_second=requests / seconds if seconds else 0.0,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        first_error=next((p.first_error for p in phases if p.first_error), None),
    )
    cpu = [p.proxy_cpu_seconds for p in phases if p.proxy_cpu_seconds is not None]
    if cpu and requests:
        summary.proxy_cpu_ms_per_request = sum(cpu) * 1000 / requests
    if direct is not None:
        summary.added_p50_ms = summary.p50_ms - direct.p50_ms
        summary.added_p99_ms = summary.p99_ms - direct.p99_ms
    return summary


@dataclass
class Result:
    """Everything one run measured (``--json`` writes it)."""

    date: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    summaries: list[Summary]
    rounds: list[dict[str, float]]  # requests/s per configuration, per round
    streams: list[dict[str, Any]]
    auditor_saw: list[str]  # finding kinds the auditor reported for API_NAME (sanity check)
    auditor_problems: list[str]

    def summary(self, configuration: str) -> Summary:
        return next(s for s in self.summaries if s.configuration == configuration)

    @property
    def auditor_vs_noop(self) -> float:
        """Throughput with the auditor over throughput with the no-op addon."""
        noop = self.summary(NOOP_ADDON).requests_per_second
        return self.summary(AUDITOR_ADDON).requests_per_second / noop if noop else 0.0

    @property
    def auditor_vs_noop_cpu(self) -> float | None:
        """The proxy's CPU time per request with the auditor over that with the no-op addon."""
        noop = self.summary(NOOP_ADDON).proxy_cpu_ms_per_request
        auditor = self.summary(AUDITOR_ADDON).proxy_cpu_ms_per_request
        return auditor / noop if noop and auditor is not None else None


def machine_description() -> dict[str, Any]:
    import mitmproxy.version

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "mitmproxy": mitmproxy.version.VERSION,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


@contextlib.contextmanager
def running(started: list[Started]) -> Iterator[list[Started]]:
    """Stop every started process at the end, whatever happened."""
    try:
        yield started
    finally:
        for process in reversed(started):
            with contextlib.suppress(Exception):  # one failed stop must not skip the others
                process.stop()


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> Result:
    """Start the upstream and the three proxies, measure, stop them all."""
    machine = machine_description()
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp, running([]) as started:
        workdir = Path(tmp)
        upstream, upstream_port, upstream_ca = start_upstream(workdir, args.stream_pause)
        started.append(upstream)
        noop_script = workdir / "noop_addon.py"
        noop_script.write_text(NOOP_ADDON_SOURCE, encoding="utf-8")
        findings = workdir / "findings.jsonl"
        proxies: dict[str, int] = {}
        processes: dict[str, Started] = {}
        # --auditor-set: e.g. a policy that disables one detector, to see what it costs.
        auditor_settings = [f"auditor_findings_jsonl={findings}", *args.auditor_settings]
        for name, scripts, settings in (
            (NO_ADDON, [], []),
            (NOOP_ADDON, [noop_script], []),
            (AUDITOR_ADDON, [ROOT / "addons" / "egress_audit.py"], auditor_settings),
        ):
            profile_to = Path(args.profile_auditor).resolve() if (
                args.profile_auditor and name == AUDITOR_ADDON
            ) else None  # fmt: skip
            proxy, port = start_mitmdump(
                name, workdir, upstream_port, upstream_ca, scripts, settings, profile_to
            )
            started.append(proxy)
            proxies[name] = port
            processes[name] = proxy
        mitm_ca = workdir / "confdir" / "mitmproxy-ca-cert.pem"
        targets = {
            DIRECT: Target(
                DIRECT, f"https://127.0.0.1:{upstream_port}{CHAT_PATH}", upstream_ca,
                sni_hostname=API_NAME,
            ),
            **{
                name: Target(name, f"https://{API_NAME}{CHAT_PATH}", mitm_ca,
                             proxy=f"http://127.0.0.1:{port}")
                for name, port in proxies.items()
            },
        }  # fmt: skip
        phases: dict[str, list[Phase]] = {name: [] for name in CONFIGURATIONS}
        rounds: list[dict[str, float]] = []
        for round_number in range(args.rounds):
            # Each round starts with a different configuration, so a slow spell on the shared
            # machine does not always fall on the same one.
            order = CONFIGURATIONS[round_number % 4 :] + CONFIGURATIONS[: round_number % 4]
            this_round: dict[str, float] = {}
            for name in order:
                proxy_cpu = processes[name].cpu_seconds if name in processes else None
                phase = load_phase(
                    targets[name], args.requests, args.clients, args.prompt_bytes,
                    args.phase_seconds, proxy_cpu,
                )  # fmt: skip
                phases[name].append(phase)
                this_round[name] = round(phase.requests_per_second, 1)
                rate = f"{phase.requests_per_second:,.0f} req/s"
                if phase.proxy_cpu_seconds is not None and phase.requests:
                    rate += (
                        f", proxy CPU {phase.proxy_cpu_seconds * 1000 / phase.requests:.2f} ms/req"
                    )
                errors = f" ({phase.errors} errors: {phase.first_error})" if phase.errors else ""
                log(f"round {round_number + 1}: {name}: {rate}{errors}")
            rounds.append(this_round)
        direct = summarise(phases[DIRECT], None)
        summaries = [direct] + [summarise(phases[n], direct) for n in CONFIGURATIONS[1:]]
        streams = []
        for name in (DIRECT, AUDITOR_ADDON):
            timing = stream_phase(targets[name], args.streams, args.prompt_bytes)
            streams.append(
                {
                    "configuration": name,
                    "streams": len(timing.first_chunk_ms),
                    "errors": timing.errors,
                    "first_error": timing.first_error,
                    "first_chunk_p50_ms": percentile(timing.first_chunk_ms, 0.5),
                    "first_chunk_max_ms": max(timing.first_chunk_ms, default=0.0),
                    "complete_p50_ms": percentile(timing.complete_ms, 0.5),
                }
            )
        for proxy in started[1:]:
            proxy.stop()  # the auditor prints its totals (and cProfile writes) on the way out
        auditor_log = next(p for p in started if p.name == AUDITOR_ADDON).log_text()
        saw = sorted(
            {
                record["kind"]
                for record in (json.loads(line) for line in _lines(findings))
                if record.get("host") == API_NAME
            }
        )
        problems = [line.strip() for line in auditor_log.splitlines()
                    if "failed (flow passes unchanged)" in line or "problems" in line]  # fmt: skip
    return Result(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        machine=machine,
        settings={k: v for k, v in vars(args).items() if k not in ("serve_upstream",)},
        summaries=summaries,
        rounds=rounds,
        streams=streams,
        auditor_saw=saw,
        auditor_problems=problems,
    )


def _lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def report(result: Result) -> str:
    """The table, the auditor-vs-no-op ratio and the streaming timings, as printed."""
    lines = [
        f"{result.date}; {result.machine['cpus']} CPUs; {result.machine['platform']}; "
        f"Python {result.machine['python']}; mitmproxy {result.machine['mitmproxy']}; "
        f"load average at start {result.machine['load_average_at_start']}",
        f"{result.settings['clients']} concurrent keep-alive clients, "
        f"{result.settings['prompt_bytes']}-byte prompt, {result.settings['rounds']} round(s) of "
        f"up to {result.settings['requests']} requests per configuration"
        + (
            f"; auditor with {' '.join(result.settings['auditor_settings'])}"
            if result.settings["auditor_settings"]
            else ""
        ),
        "",
        "| configuration | requests | errors | req/s | vs direct | p50 ms | p99 ms "
        "| added p50 ms | added p99 ms | proxy CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    direct_rate = result.summary(DIRECT).requests_per_second
    for s in result.summaries:
        versus = s.requests_per_second / direct_rate if direct_rate else 0.0
        added = (
            ("-", "-") if s.configuration == DIRECT
            else (f"{s.added_p50_ms:+.1f}", f"{s.added_p99_ms:+.1f}")
        )  # fmt: skip
        cpu = s.proxy_cpu_ms_per_request
        lines.append(
            f"| {s.configuration} | {s.requests:,} | {s.errors} | {s.requests_per_second:,.0f} "
            f"| {versus:.2f}x | {s.p50_ms:.1f} | {s.p99_ms:.1f} | {added[0]} | {added[1]} "
            f"| {'-' if cpu is None else f'{cpu:.2f}'} |"
        )
    ratio = result.auditor_vs_noop
    cost = 1 - ratio
    verdict = "within" if cost < TARGET_COST else "OVER"
    lines += [
        "",
        f"auditor addon / no-op addon throughput: {ratio:.3f} (cost {cost:.1%}; "
        f"target < {TARGET_COST:.0%}: {verdict})",
        cpu_line(result.auditor_vs_noop_cpu),
        "per round (req/s): "
        + "; ".join(
            ", ".join(f"{name} {rate:,.0f}" for name, rate in r.items()) for r in result.rounds
        ),
        "",
        f"streamed completion, upstream pauses {result.settings['stream_pause'] * 1000:.0f} ms "
        "after the first chunk:",
        "| configuration | streams | errors | first chunk p50 ms | first chunk max ms "
        "| complete p50 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for timing in result.streams:
        lines.append(
            f"| {timing['configuration']} | {timing['streams']} | {timing['errors']} "
            f"| {timing['first_chunk_p50_ms']:.1f} | {timing['first_chunk_max_ms']:.1f} "
            f"| {timing['complete_p50_ms']:.1f} |"
        )
    pause_ms = result.settings["stream_pause"] * 1000
    buffered = [t["configuration"] for t in result.streams if t["first_chunk_max_ms"] >= pause_ms]
    lines.append(
        "first chunk arrived before the upstream's pause ended in every stream"
        if not buffered
        else f"BUFFERED? first chunk not before the pause through: {', '.join(buffered)}"
    )
    lines.append(
        f"auditor saw {API_NAME}: {', '.join(result.auditor_saw) or 'NOTHING (check the setup)'}"
    )
    if result.auditor_problems:
        lines.append("auditor problems: " + " | ".join(result.auditor_problems))
    errors = [s for s in result.summaries if s.errors]
    for s in errors:
        lines.append(f"{s.configuration}: {s.errors} error(s), first: {s.first_error}")
    return "\n".join(lines)


def cpu_line(ratio: float | None) -> str:
    if ratio is None:
        return "proxy CPU per request: not measured (no /proc)"
    return (
        f"proxy CPU per request, auditor addon / no-op addon: {ratio:.3f} "
        f"(+{ratio - 1:.1%}; the throughput cost on an idle machine is about 1 - 1/ratio "
        f"= {1 - 1 / ratio:.1%})"
    )


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000,
                        help="requests per configuration per round (default 3000)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--prompt-bytes", type=int, default=2048, help="prompt size (2048)")
    parser.add_argument("--phase-seconds", type=float, default=30.0,
                        help="time bound of one load phase (default 30 s)")  # fmt: skip
    parser.add_argument("--streams", type=int, default=20,
                        help="streamed completions per configuration (default 20)")  # fmt: skip
    parser.add_argument("--stream-pause", type=float, default=0.25,
                        help="upstream pause after the first SSE chunk (0.25 s)")  # fmt: skip
    parser.add_argument("--json", dest="json_path", help="also write the raw numbers here")
    parser.add_argument("--profile-auditor", metavar="FILE",
                        help="run the auditor's mitmdump under cProfile, to FILE")  # fmt: skip
    parser.add_argument("--auditor-set", dest="auditor_settings", action="append", default=[],
                        metavar="NAME=VALUE",
                        help="another option for the auditor's mitmdump (repeatable), e.g. "
                        "auditor_policy=FILE")  # fmt: skip
    # Internal: this script is also the upstream's child process.
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("requests", "rounds", "clients", "prompt_bytes", "streams"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.phase_seconds <= 0 or args.stream_pause <= 0:
        parser.error("--phase-seconds and --stream-pause must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.serve_upstream:
        serve_upstream(args.cert, args.key, args.stream_pause)
        return 0
    try:
        result = run(args, log=lambda line: print(line, file=sys.stderr, flush=True))
    except (RuntimeError, OSError, ImportError) as exc:
        print(f"bench_proxy: {exc}", file=sys.stderr)
        return 1
    print(report(result))
    if args.json_path:
        document = asdict(result) | {
            "auditor_vs_noop": result.auditor_vs_noop,
            "auditor_vs_noop_cpu": result.auditor_vs_noop_cpu,
        }
        Path(args.json_path).write_text(json.dumps(document, indent=2), encoding="utf-8")
    if args.profile_auditor:
        print(f"\ncProfile of the auditor's mitmdump: {args.profile_auditor} "
              f"(python -m pstats {args.profile_auditor})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
