"""Hand-built signatures, policy and GeoIP for detector and LLM unit tests.

Small on purpose: a few real provider and relay entries (domains as in
/work/shared/knowledge/domains.json) and the real shapes of the four API families, so a unit
test does not depend on the shipped YAML; ``shipped_context()`` gives the shipped data for the
tests that check it.
"""

from __future__ import annotations

import secrets
import string

import pytest

from auditor.detectors.base import DetectionContext
from auditor.enrich.geo import GeoInfo, GeoLookup
from auditor.model import FlowTuple
from auditor.policy import Policy
from auditor.signatures import (
    ApiShape,
    CipherSuite,
    DomainRule,
    KeyFormat,
    ProviderEndpoint,
    RelayDomain,
    SignatureError,
    Signatures,
    TLSVersion,
    load_signatures,
)

CLIENT = "10.1.2.3"
RESOLVER = "10.1.2.53"


def flow(dst_ip: str = "162.159.140.245", dst_port: int = 443, src: str = CLIENT) -> FlowTuple:
    return FlowTuple("tcp", src, 51515, dst_ip, dst_port)


def _provider(domain: str, provider: str, jurisdiction: str, shapes: tuple[str, ...],
              kind: str = "api", match: str = "exact", **extra: object) -> ProviderEndpoint:
    return ProviderEndpoint(
        rule=DomainRule(domain, match), provider=provider, name=provider.title(),
        operator=f"{provider.title()} Inc.", jurisdiction=jurisdiction, kind=kind,
        api_shapes=shapes, source="test fixture", **extra,  # type: ignore[arg-type]
    )


def _relay(domain: str, category: str, confidence: str, platform: str | None = None,
           match: str = "suffix") -> RelayDomain:
    return RelayDomain(rule=DomainRule(domain, match), category=category, confidence=confidence,
                       operator="", source=f"test fixture for {domain}", platform=platform)


def _shape(id_: str, family: str, path_regex: str, body_keys: tuple[str, ...],
           headers: tuple[str, ...], query: tuple[str, ...] = (),
           streaming_key: str | None = "stream") -> ApiShape:
    return ApiShape(id=id_, family=family, method="POST", path_regex=path_regex,
                    body_keys=body_keys, credential_headers=headers, credential_query=query,
                    source="test fixture", streaming_key=streaming_key)


API_SHAPES = [
    _shape("openai.azure_deployment_chat_completions", "openai",
           r"^(/[^/]+)*/openai/deployments/[^/]+/chat/completions$", ("messages",),
           ("api-key", "authorization")),
    _shape("openai.chat_completions", "openai", r"^(?!.*/deployments/)(/[^/]+)*/chat/completions$",
           ("model", "messages"), ("authorization",)),
    _shape("openai.responses", "openai", r"^(/[^/]+)*/responses$", ("model", "input"),
           ("authorization",)),
    _shape("anthropic.messages", "anthropic", r"^(/[^/]+)*/v1/messages$",
           ("model", "messages", "max_tokens"), ("x-api-key", "authorization")),
    _shape("gemini.generate_content", "gemini",
           r"^(/[^/]+)*/v1(alpha|beta)?/models/[^/:]+:generateContent$", ("contents",),
           ("x-goog-api-key", "authorization"), ("key",), None),
    _shape("gemini.stream_generate_content", "gemini",
           r"^(/[^/]+)*/v1(alpha|beta)?/models/[^/:]+:streamGenerateContent$", ("contents",),
           ("x-goog-api-key", "authorization"), ("key",), None),
    _shape("ollama.chat", "ollama", r"^/api/chat$", ("model", "messages"), ("authorization",)),
    _shape("ollama.generate", "ollama", r"^/api/generate$", ("model", "prompt"),
           ("authorization",)),
]


def constructed_signatures() -> Signatures:
    return Signatures(
        providers=[
            _provider("api.openai.com", "openai", "US", ("openai",)),
            _provider("chatgpt.com", "openai", "US", (), kind="web", match="suffix"),
            _provider("api.anthropic.com", "anthropic", "US", ("anthropic",)),
            _provider("generativelanguage.googleapis.com", "google", "US", ("gemini", "openai")),
            _provider("api.deepseek.com", "deepseek", "CN", ("openai", "anthropic"),
                      jurisdiction_basis="privacy policy: servers in the PRC"),
            _provider("openai.azure.com", "azure-openai", "unknown", ("openai",), kind="cloud",
                      match="suffix", region_scoped=True),
            _provider("openrouter.ai", "openrouter", "US", ("openai",), match="suffix"),
        ],
        relays=[
            _relay("chatanywhere.tech", "relay_reseller", "confirmed"),
            _relay("anyrouter.top", "relay_charity", "confirmed"),
            _relay("openrouter.ai", "aggregator", "confirmed"),
            _relay("4nim0sity99.dpdns.org", "relay_candidate", "suspected", platform="new-api"),
        ],
        api_shapes=list(API_SHAPES),
        tls_versions={
            0x0300: TLSVersion(0x0300, "SSL 3.0", "ssl", "3.0", True, "critical", "RFC 7568"),
            0x0301: TLSVersion(0x0301, "TLS 1.0", "tls", "1.0", True, "high", "RFC 8996"),
            0x0302: TLSVersion(0x0302, "TLS 1.1", "tls", "1.1", True, "high", "RFC 8996"),
            0x0303: TLSVersion(0x0303, "TLS 1.2", "tls", "1.2", False, None, "RFC 5246"),
            0x0304: TLSVersion(0x0304, "TLS 1.3", "tls", "1.3", False, None, "RFC 8446"),
        },
        cipher_suites={
            0x0001: CipherSuite(0x0001, "TLS_RSA_WITH_NULL_MD5", ("null", "md5"), "critical"),
            0x0005: CipherSuite(0x0005, "TLS_RSA_WITH_RC4_128_SHA", ("rc4",), "high"),
            0x000A: CipherSuite(0x000A, "TLS_RSA_WITH_3DES_EDE_CBC_SHA", ("3des",), "high"),
            0x002F: CipherSuite(0x002F, "TLS_RSA_WITH_AES_128_CBC_SHA", ("cbc-sha1",), "low"),
            0x00FF: CipherSuite(0x00FF, "TLS_EMPTY_RENEGOTIATION_INFO_SCSV", (), None),
            0x1301: CipherSuite(0x1301, "TLS_AES_128_GCM_SHA256", (), None),
            0xC02F: CipherSuite(0xC02F, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", (), None),
        },
        key_formats=[
            KeyFormat("openai-trufflehog", "openai",
                      r"\b(sk-(?:(?:proj|svcacct|service)-[A-Za-z0-9_-]+|[a-zA-Z0-9]+)"
                      r"T3BlbkFJ[A-Za-z0-9_-]+)\b", ("T3BlbkFJ",), "trufflehog openai.go"),
            KeyFormat("anthropic-trufflehog", "anthropic",
                      r"\b(sk-ant-(?:admin01|api03)-[\w\-]{93}AA)\b", ("sk-ant-",),
                      "trufflehog anthropic.go"),
        ],
    )


class FixedGeo(GeoLookup):
    """GeoIP stand-in: a fixed answer per address, no country for anything else."""

    name = "fixed-test-geo"

    def __init__(self, answers: dict[str, GeoInfo] | None = None) -> None:
        self.answers = answers or {}

    def lookup(self, ip: str) -> GeoInfo:
        return self.answers.get(ip, GeoInfo(country=None, source=self.name))


def make_context(policy: Policy | None = None, geo: GeoLookup | None = None,
                 signatures: Signatures | None = None) -> DetectionContext:
    return DetectionContext(
        signatures=signatures or constructed_signatures(),
        policy=policy or Policy(),
        geo=geo or FixedGeo(),
    )


def shipped_signatures() -> Signatures:
    """The signatures in signatures/; the test is skipped while they do not load yet."""
    try:
        return load_signatures()
    except (SignatureError, FileNotFoundError) as exc:
        pytest.skip(f"shipped signatures not loadable yet: {exc}")


def fake_openai_key() -> str:
    """A made-up key in OpenAI's project-key shape (random each run, never a real key)."""
    alphabet = string.ascii_letters + string.digits
    body = "".join(secrets.choice(alphabet) for _ in range(20))
    return f"sk-proj-FAKE{body}T3BlbkFJTEST{body}"


def fake_anthropic_key() -> str:
    alphabet = string.ascii_letters + string.digits
    return "sk-ant-api03-" + "".join(secrets.choice(alphabet) for _ in range(93)) + "AA"
