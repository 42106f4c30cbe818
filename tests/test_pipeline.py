"""The core's own behaviour: naming from DNS, repeat merging, isolation of failing detectors."""

from __future__ import annotations

from collections.abc import Iterable

from auditor.detectors.base import DetectionContext, Detector
from auditor.enrich.geo import GeoLookup
from auditor.model import (
    Connection,
    DNSAnswer,
    DNSMessage,
    Finding,
    FlowTuple,
    Observation,
    Severity,
    finding_for,
)
from auditor.pipeline import Pipeline
from auditor.policy import Policy
from auditor.signatures import Signatures

CLIENT = "10.0.0.5"
RESOLVER = "10.0.0.53"
SERVER = "203.0.113.7"


class HostSeen(Detector):
    """Reports every connection's host, so tests can see what name the pipeline gave it."""

    name = "host-seen"
    description = "test detector"
    observes = (Connection,)

    def inspect(self, obs: Observation, ctx: DetectionContext) -> Iterable[Finding]:
        yield finding_for(
            obs, detector=self.name, kind="host-seen", severity=Severity.LOW, title="seen",
            evidence={"name": obs.server_name},
        )


class Broken(Detector):
    name = "broken"
    description = "always fails"
    observes = (Observation,)

    def inspect(self, obs: Observation, ctx: DetectionContext) -> Iterable[Finding]:
        raise RuntimeError("boom")


def context(policy: Policy | None = None) -> DetectionContext:
    return DetectionContext(signatures=Signatures(), policy=policy or Policy(), geo=GeoLookup())


def dns_answer(name: str, address: str, ts: float) -> DNSMessage:
    return DNSMessage(
        flow=FlowTuple("udp", CLIENT, 53000, RESOLVER, 53), ts=ts, server_name=name,
        query_name=name, query_type="A", transaction_id=1, is_response=True, rcode=0,
        answers=[DNSAnswer(name=name, rtype="A", data=address, ttl=60)],
    )


def connection(ts: float, sport: int = 40000) -> Connection:
    return Connection(
        flow=FlowTuple("tcp", CLIENT, sport, SERVER, 443), ts=ts, first_seen=ts, last_seen=ts + 1,
        packets_out=3, packets_in=2, bytes_out=300, bytes_in=200,
    )


def test_connection_without_sni_is_named_from_an_earlier_dns_answer() -> None:
    pipe = Pipeline(context(), detectors=[HostSeen()])
    pipe.feed(dns_answer("api.example-relay.tld", SERVER, 1.0))
    pipe.feed(connection(2.0))
    result = pipe.result()
    assert [f.host for f in result.findings] == ["api.example-relay.tld"]
    row = result.hosts.rows["api.example-relay.tld"]
    assert row.connections == 1 and row.bytes_out == 300 and SERVER in row.addresses


def test_unnamed_connection_is_filed_under_its_address() -> None:
    pipe = Pipeline(context(), detectors=[HostSeen()])
    pipe.feed(connection(2.0))
    assert [f.host for f in pipe.result().findings] == [SERVER]


def test_repeats_merge_into_one_finding_with_count_and_times() -> None:
    seen: list[bool] = []
    pipe = Pipeline(context(), detectors=[HostSeen()], on_finding=lambda f, new: seen.append(new))
    for i in range(3):
        pipe.feed(connection(10.0 + i, sport=40000 + i))
    (finding,) = pipe.result().findings
    assert finding.count == 3 and finding.first_seen == 10.0 and finding.last_seen == 12.0
    assert seen == [True, False, False]


def test_failing_detector_is_counted_and_others_still_run() -> None:
    pipe = Pipeline(context(), detectors=[Broken(), HostSeen()])
    pipe.feed(connection(1.0))
    result = pipe.result()
    assert len(result.findings) == 1
    assert result.stats["errors.broken"] == 1
    assert "RuntimeError: boom" in result.errors[0] and SERVER in result.errors[0]


def test_policy_overrides_severity_and_ignores_hosts() -> None:
    policy = Policy(severity_overrides={"host-seen": Severity.HIGH}, ignore_hosts={".internal.tld"})
    pipe = Pipeline(context(policy), detectors=[HostSeen()])
    pipe.feed(connection(1.0))
    pipe.feed(dns_answer("llm.internal.tld", "198.51.100.1", 2.0))
    conn = connection(3.0)
    conn.flow = FlowTuple("tcp", CLIENT, 40001, "198.51.100.1", 443)
    pipe.feed(conn)
    result = pipe.result()
    assert [(f.host, f.severity) for f in result.findings] == [(SERVER, Severity.HIGH)]
    assert result.stats["findings.ignored_by_policy"] == 1


class FailsHalfway(Detector):
    """Yields a finding, then fails: what it yielded before failing is not kept."""

    name = "fails-halfway"
    description = "test detector"
    observes = (Connection,)

    def inspect(self, obs: Observation, ctx: DetectionContext) -> Iterable[Finding]:
        yield finding_for(
            obs, detector=self.name, kind="partial", severity=Severity.LOW, title="partial",
            evidence={},
        )
        raise RuntimeError("halfway")


class ReturnsList(HostSeen):
    """Returns a list rather than yielding (the name-based detectors do, for speed)."""

    name = "returns-list"

    def inspect(self, obs: Observation, ctx: DetectionContext) -> list[Finding]:
        return list(super().inspect(obs, ctx))


def test_detector_results_are_all_or_nothing_whether_yielded_or_returned() -> None:
    pipe = Pipeline(context(), detectors=[FailsHalfway(), ReturnsList()])
    pipe.feed(connection(1.0))
    pipe.feed(connection(2.0, sport=40001))
    result = pipe.result()
    assert [(f.kind, f.count) for f in result.findings] == [("host-seen", 2)]
    assert result.stats["errors.fails-halfway"] == 2
