"""Benchmark: ``auditor pcap`` against tshark on the same large capture, and memory at 2x size.

    make_capture.py -> N.pcap, 2N.pcap -> [auditor pcap --format json | tshark -T fields] -> table

Each run is its own child process, so its peak RSS (``os.wait4`` rusage of that child alone)
and its wall time are its own:
- ``auditor``: ``auditor pcap FILE --format json`` exactly as a user runs it (the fast engine,
  the whole pipeline with every detector, JSON written to /dev/null), process start included;
- ``tshark``: ``tshark -r FILE -n -T fields -e ...`` with the TLS/DNS/HTTP/flow fields the
  tshark engine reads (the same facts), output to /dev/null;
- ``auditor --engine tshark`` (``--with-tshark-engine``): the same CLI on Wireshark's dissection.

Each tool runs ``--repeat`` times per capture (3 by default), the tools taking turns so that a
slow spell of a shared machine does not fall on one of them only. Then it prints, per tool and
capture, the median wall and CPU seconds (user + system of the child and its children: steadier
than wall time on a shared machine) with the fastest and slowest CPU, packets/s and MB/s
(capture file bytes) at the median, peak RSS, the time and CPU ratios to tshark's medians, and
how peak RSS changed when the capture doubled (flat: about 1.0x).

    python bench/bench_pcap.py                      # 1,000,000 and 2,000,000 packets
    python bench/bench_pcap.py --packets 200000     # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import make_capture  # noqa: E402  (a script beside this one)

from auditor.capture.tshark_engine import TSHARK_FIELDS, find_tshark  # noqa: E402

# Runs the installed CLI's entry point, whether or not the ``auditor`` script is on PATH.
AUDITOR_MAIN = "import sys; from auditor.cli import main; sys.argv[0] = 'auditor'; main()"


@dataclass
class Run:
    """One timed child process on one capture."""

    tool: str
    capture: str
    packets: int
    file_bytes: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    exit_code: int

    @property
    def packets_per_second(self) -> float:
        return self.packets / self.seconds if self.seconds else 0.0

    @property
    def mb_per_second(self) -> float:
        return self.file_bytes / 1e6 / self.seconds if self.seconds else 0.0


def timed_child(tool: str, command: list[str], capture: Path, packets: int) -> Run:
    """Run ``command`` with stdout to /dev/null; wall time and the child's own peak RSS."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # auditor pcap records into its findings store by default: a fresh one per run, as a first
    # run would, and never the user's own store.
    store_dir = tempfile.mkdtemp(prefix="auditor-bench-store-")
    env["AUDITOR_STORE"] = os.path.join(store_dir, "findings.sqlite3")
    started = time.perf_counter()
    with open(os.devnull, "wb") as devnull:
        process = subprocess.Popen(command, stdout=devnull, stderr=subprocess.PIPE, env=env)
        assert process.stderr is not None
        errors = process.stderr.read()  # small: summaries and warnings only
        # wait4 reaps this child and returns its rusage alone (RUSAGE_CHILDREN would mix runs).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    shutil.rmtree(store_dir, ignore_errors=True)
    if process.returncode not in (0, 3):  # 3: auditor's "findings at --fail-on" (not used)
        message = errors.decode("utf-8", "replace").strip().splitlines()
        print(f"  {tool} failed ({process.returncode}): {message[-1] if message else ''}")
    return Run(
        tool=tool,
        capture=capture.name,
        packets=packets,
        file_bytes=capture.stat().st_size,
        seconds=seconds,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,  # Linux reports KiB
        exit_code=process.returncode,
    )


def ensure_capture(workdir: Path, packets: int, seed: int) -> tuple[Path, int]:
    """The capture for (packets, seed, generator version), generated once and reused (a sidecar
    holds its packet count)."""
    capture = workdir / f"bench-{packets}-seed{seed}-v{make_capture.GENERATOR_VERSION}.pcap"
    sidecar = capture.with_suffix(".json")
    if capture.is_file() and sidecar.is_file():
        return capture, int(json.loads(sidecar.read_text())["packets"])
    started = time.perf_counter()
    written, _ = make_capture.write_capture(capture, packets, seed, ROOT / "signatures")
    sidecar.write_text(json.dumps({"packets": written, "seed": seed}))
    print(f"  generated {capture} ({written} packets) in {time.perf_counter() - started:.1f}s")
    return capture, written


def commands(capture: Path, tshark: str, with_tshark_engine: bool) -> dict[str, list[str]]:
    auditor = [sys.executable, "-c", AUDITOR_MAIN, "pcap", str(capture), "--format", "json"]
    found = {
        "auditor": [*auditor, "--no-progress"],
        "tshark": [tshark, "-r", str(capture), "-n", "-T", "fields"]
        + [arg for name in TSHARK_FIELDS for arg in ("-e", name)],
    }
    if with_tshark_engine:
        found["auditor --engine tshark"] = [*auditor, "--no-progress", "--engine", "tshark"]
    return found


def median_runs(runs: list[Run]) -> list[tuple[Run, float, float]]:
    """Per (capture, tool), in first-run order: a Run holding the median wall and CPU seconds
    and the largest peak RSS of its repeats, with the fastest and slowest CPU seconds."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.capture, run.tool), []).append(run)
    summary = []
    for group in groups.values():
        cpu = [r.cpu_seconds for r in group]
        median = replace(
            group[0],
            seconds=statistics.median(r.seconds for r in group),
            cpu_seconds=statistics.median(cpu),
            peak_rss_mb=max(r.peak_rss_mb for r in group),
            exit_code=max(r.exit_code for r in group),
        )
        summary.append((median, min(cpu), max(cpu)))
    return summary


def print_table(runs: list[Run]) -> None:
    summary = median_runs(runs)
    repeats = len(runs) // len(summary)
    tshark_runs = {r.capture: r for r, _, _ in summary if r.tool == "tshark"}
    header = (
        f"{'capture':<30} {'tool':<24} {'packets':>9} {'seconds':>8} {'CPU s':>6} "
        f"{'CPU range':>11} {'packets/s':>10} {'MB/s':>6} {'peak RSS MB':>11} "
        f"{'time/tshark':>11} {'CPU/tshark':>10}"
    )
    print(f"medians of {repeats} run(s) per tool and capture")
    print(header)
    print("-" * len(header))
    for run, fastest, slowest in summary:
        base = tshark_runs.get(run.capture)
        time_ratio = run.seconds / base.seconds if base and base.seconds else 0.0
        cpu_ratio = run.cpu_seconds / base.cpu_seconds if base and base.cpu_seconds else 0.0
        cpu_range = f"{fastest:.1f}-{slowest:.1f}"
        print(
            f"{run.capture:<30} {run.tool:<24} {run.packets:>9} {run.seconds:>8.1f} "
            f"{run.cpu_seconds:>6.1f} {cpu_range:>11} {run.packets_per_second:>10.0f} "
            f"{run.mb_per_second:>6.1f} {run.peak_rss_mb:>11.0f} {time_ratio:>10.2f}x "
            f"{cpu_ratio:>9.2f}x"
        )


def print_memory_growth(runs: list[Run], small: str, large: str) -> None:
    print("\nPeak RSS when the capture doubles (largest of the repeats):")
    summary = [run for run, _, _ in median_runs(runs)]
    for tool in dict.fromkeys(r.tool for r in summary):
        by_capture = {r.capture: r for r in summary if r.tool == tool}
        if small in by_capture and large in by_capture:
            before, after = by_capture[small].peak_rss_mb, by_capture[large].peak_rss_mb
            print(f"  {tool:<24} {before:7.0f} MB -> {after:7.0f} MB  ({after / before:.2f}x)")


def compile_bytecode() -> None:
    """Byte-compile the checkout once, as installing a package does: with
    PYTHONDONTWRITEBYTECODE set (some CI images set it) an editable checkout would otherwise
    be recompiled from source by every timed run (~0.1 s each)."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "auditor")],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packets", type=int, default=1_000_000, help="N (2N is run too)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "auditor-bench",
        help="where the captures are written and kept for the next run",
    )
    parser.add_argument("--no-double", action="store_true", help="skip the 2N capture")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool and capture")
    parser.add_argument(
        "--with-tshark-engine", action="store_true", help="also time auditor --engine tshark"
    )
    parser.add_argument("--json", type=Path, help="also write the runs as JSON here")
    args = parser.parse_args(argv)

    tshark = find_tshark()
    if tshark is None:
        print("tshark not found: install it (Debian: apt-get install tshark)", file=sys.stderr)
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    sizes = [args.packets] if args.no_double else [args.packets, 2 * args.packets]
    tshark_version = subprocess.run([tshark, "--version"], capture_output=True, text=True)
    print(
        f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{tshark_version.stdout.splitlines()[0]}"
    )
    compile_bytecode()
    runs: list[Run] = []
    captures: list[str] = []
    for size in sizes:
        capture, packets = ensure_capture(args.workdir, size, args.seed)
        captures.append(capture.name)
        tools = list(commands(capture, tshark, args.with_tshark_engine).items())
        for round_number in range(args.repeat):
            # Each round starts with a different tool.
            turn = round_number % len(tools)
            for tool, command in tools[turn:] + tools[:turn]:
                print(f"  round {round_number + 1}: {tool} on {capture.name} ...", flush=True)
                runs.append(timed_child(tool, command, capture, packets))
    print()
    print_table(runs)
    if len(captures) == 2:
        print_memory_growth(runs, captures[0], captures[1])
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2))
    return 0 if all(r.exit_code in (0, 3) for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
