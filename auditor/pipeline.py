"""The detector core: observations in, findings and the per-host table out.

Both sources feed the same ``Pipeline``: the capture analyser (``auditor.capture``) and the
mitmproxy addons (``addons/``). The pipeline

1. fills a missing destination name from DNS answers seen earlier (``NameBook``),
2. recognises LLM API calls in HTTP requests (``auditor.llm``) and feeds them on as ``LLMCall``,
3. runs every detector that reads the observation's type; a detector that raises is counted
   and logged, never allowed to stop the others or the source,
4. merges repeated findings by key, applies policy severity overrides and ignored hosts,
5. keeps the per-host roll-up (``auditor.hosts.HostTable``) up to date.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from auditor.detectors.base import DetectionContext, Detector
from auditor.hosts import HostTable
from auditor.model import Connection, DNSMessage, Finding, HTTPRequest, Observation

log = logging.getLogger(__name__)


class NameBook:
    """Address -> the name a client last resolved it from (bounded, least recently used out)."""

    def __init__(self, capacity: int = 65536) -> None:
        self._names: OrderedDict[str, str] = OrderedDict()
        self._capacity = capacity

    def learn(self, message: DNSMessage) -> None:
        if not message.is_response:
            return
        for address, name in message.resolved_addresses():
            self._names[address] = name.rstrip(".").lower()
            self._names.move_to_end(address)
            if len(self._names) > self._capacity:
                self._names.popitem(last=False)

    def name_for(self, address: str) -> str | None:
        return self._names.get(address)


@dataclass
class AnalysisResult:
    findings: list[Finding]
    hosts: HostTable
    stats: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # per-detector failures, one line each


FindingCallback = Callable[[Finding, bool], None]  # (finding, is_new)


class Pipeline:
    def __init__(
        self,
        ctx: DetectionContext,
        detectors: Iterable[Detector] | None = None,
        on_finding: FindingCallback | None = None,
        on_connection: Callable[[Connection], None] | None = None,
    ) -> None:
        from auditor.detectors.registry import all_detectors
        from auditor.llm import recognise

        self.ctx = ctx
        self.detectors = list(
            detectors if detectors is not None else all_detectors(ctx.policy.disabled_detectors)
        )
        self._recognise = recognise
        # Observation type -> (its stats key, the detectors that read it): worked out once.
        self._routes: dict[type, tuple[str, list[Detector]]] = {}
        self.names = NameBook()
        self.hosts = HostTable(ctx.signatures.version_name)
        self.findings: dict[tuple[str, str, str, str], Finding] = {}
        self.stats: Counter[str] = Counter()
        self.errors: list[str] = []
        self.on_finding = on_finding
        self.on_connection = on_connection

    def _route(self, obs_type: type) -> tuple[str, list[Detector]]:
        detectors = [d for d in self.detectors if issubclass(obs_type, d.observes)]
        route = self._routes[obs_type] = (f"observations.{obs_type.__name__}", detectors)
        return route

    def feed(self, obs: Observation) -> None:
        """Run one observation through naming, LLM recognition and every detector for it."""
        stats_key, detectors = self._routes.get(type(obs)) or self._route(type(obs))
        self.stats[stats_key] += 1
        if obs.server_name is None:
            obs.server_name = self.names.name_for(obs.flow.dst_ip)
        if isinstance(obs, DNSMessage):
            self.names.learn(obs)
        if isinstance(obs, Connection):
            self.hosts.add_connection(obs, self.ctx.geo.lookup(obs.flow.dst_ip))
            if self.on_connection is not None:
                self.on_connection(obs)
        self._detect(obs, detectors)
        if isinstance(obs, HTTPRequest):
            try:
                call = self._recognise(obs, self.ctx.signatures.api_shapes)
            except Exception as exc:  # a malformed body must not stop the analysis
                self._record_error("llm-recognition", obs, exc)
                call = None
            if call is not None:
                self.feed(call)

    def feed_all(self, observations: Iterable[Observation]) -> None:
        for obs in observations:
            self.feed(obs)

    def _detect(self, obs: Observation, detectors: list[Detector]) -> None:
        ctx = self.ctx
        for detector in detectors:
            try:
                produced = detector.inspect(obs, ctx)
                if type(produced) is not list:  # a generator runs here, inside the try
                    produced = list(produced)
            except Exception as exc:
                self._record_error(detector.name, obs, exc)
                continue
            for finding in produced:
                self._add(finding)

    def _record_error(self, where: str, obs: Observation, exc: Exception) -> None:
        self.stats[f"errors.{where}"] += 1
        if len(self.errors) < 100:
            flow = obs.flow
            self.errors.append(
                f"{where}: {type(exc).__name__}: {exc} "
                f"(flow {flow.src_ip}:{flow.src_port} -> {flow.dst_ip}:{flow.dst_port})"
            )
        log.warning("%s failed on %s: %s", where, type(obs).__name__, exc, exc_info=True)

    def _add(self, finding: Finding) -> None:
        policy = self.ctx.policy
        if policy.is_ignored(finding.host):
            self.stats["findings.ignored_by_policy"] += 1
            return
        finding.severity = policy.severity_for(finding.kind, finding.severity)
        key = finding.key  # a tuple built per access: once here
        existing = self.findings.get(key)
        if existing is None:
            self.findings[key] = finding
            self.hosts.add_finding(finding)
        else:
            existing.merge(finding)
            self.hosts.update_finding(existing)
        if self.on_finding is not None:
            self.on_finding(existing or finding, existing is None)

    def result(self) -> AnalysisResult:
        ordered = sorted(
            self.findings.values(), key=lambda f: (-f.severity, f.host, f.detector, f.kind)
        )
        return AnalysisResult(
            findings=ordered, hosts=self.hosts, stats=dict(self.stats), errors=list(self.errors)
        )
