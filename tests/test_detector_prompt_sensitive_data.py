"""prompt-sensitive-data: secrets and personal data inside prompts, masked in the evidence."""

from __future__ import annotations

import base64
import json
import secrets
import string

import pytest
from sample_signatures import API_SHAPES, FixedGeo, fake_openai_key, flow, make_context

from auditor.detectors.prompt_sensitive_data import PromptSensitiveDataDetector, scan_prompt
from auditor.enrich.geo import GeoInfo
from auditor.llm import recognise
from auditor.llm.validators import cn_resident_id, iban, luhn, us_ssn
from auditor.model import HTTPRequest, LLMCall, Severity
from auditor.signatures import load_signatures

TEST_CARD = "4111 1111 1111 1111"  # the well-known Visa test number (Luhn-valid)
IBAN_EXAMPLE = "GB82 WEST 1234 5698 7654 32"  # the ECBS / ISO 13616 documentation example
CN_ID_EXAMPLE = "11010519491231002X"  # the example of GB 11643-1999 itself


def fake_aws_key() -> str:
    return "AKIAFAKE" + "".join(secrets.choice(string.ascii_uppercase + "234567")
                                for _ in range(12))


def fake_jwt() -> str:
    def part(document: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'sub': 'fake-user'})}." + (
        secrets.token_urlsafe(24))


def call_with(prompt: str, host: str = "api.openai.com",
              dst_ip: str = "162.159.140.245") -> LLMCall:
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]})
    request = HTTPRequest(
        flow=flow(dst_ip), ts=1_700_000_000.0, method="POST", host=host,
        path="/v1/chat/completions", http_version="HTTP/1.1",
        headers=[("authorization", "Bearer test")], body=body.encode(), encrypted=True,
    )  # fmt: skip
    call = recognise(request, API_SHAPES)
    assert call is not None
    return call


def inspect(call: LLMCall, geo: FixedGeo | None = None) -> dict[str, object]:
    context = make_context(signatures=load_signatures(), geo=geo)
    return {f.kind: f for f in PromptSensitiveDataDetector().inspect(call, context)}


def test_pii_to_an_official_endpoint_keeps_its_base_severity_and_is_masked() -> None:
    email = f"jane.{secrets.token_hex(3)}@example.com"
    prompt = f"Refund card {TEST_CARD} for {email}, call +1 415 555 0100."
    findings = inspect(call_with(prompt))
    finding = findings["prompt-sensitive-data.pii"]
    assert finding.severity == Severity.HIGH  # payment card: high, official and in policy
    assert finding.evidence["counts"] == {"email-address": 1, "payment-card": 1,
                                          "phone-international": 1}
    assert finding.evidence["samples"]["payment-card"] == ["4111…1111"]
    assert finding.evidence["samples"]["email-address"] == ["…@example.com"]
    written = json.dumps(finding.to_dict())
    assert "4111111111111111" not in written and TEST_CARD not in written and email not in written
    assert "prompt-sensitive-data.secret" not in findings


def test_secrets_to_a_relay_are_raised_one_step() -> None:
    aws, jwt, openai_key = fake_aws_key(), fake_jwt(), fake_openai_key()
    password = secrets.token_hex(6)
    prompt = (f"Why does boto fail with {aws}? token {jwt} db "
              f"postgres://app:{password}@db.internal:5432/x key {openai_key}")
    finding = inspect(call_with(prompt, host="api.chatanywhere.tech"))[
        "prompt-sensitive-data.secret"]
    assert finding.severity == Severity.CRITICAL  # high, raised: relay, unofficial
    counts = finding.evidence["counts"]
    assert {"api-key:aws-access-token", "jwt", "connection-string-password"} <= set(counts)
    assert [t for t in counts if t.startswith("api-key:openai")], counts
    assert sum(counts.values()) == 4  # each item counted once, however many formats match it
    assert any("relay" in r for r in finding.evidence["destination_risks"])
    written = json.dumps(finding.to_dict())
    for value in (aws, jwt, password, openai_key):
        assert value not in written


def test_cross_border_destination_raises_severity() -> None:
    geo = FixedGeo({"47.97.128.10": GeoInfo(country="CN", source="test")})
    call = call_with(f"My email is a.{secrets.token_hex(2)}@example.com", dst_ip="47.97.128.10")
    finding = inspect(call, geo)["prompt-sensitive-data.pii"]
    assert finding.severity == Severity.MEDIUM  # email low, raised for the CN address
    assert "cross-border (address in CN)" in finding.evidence["destination_risks"]


def test_look_alikes_fail_their_check_and_are_not_reported() -> None:
    prompt = ("Order 4111 1111 1111 1112, ref GB82 WEST 1234 5698 7654 33, "
              "SSN 666-12-3456 and 900-12-3456, ID 110105194912310021, nothing else.")
    assert inspect(call_with(prompt)) == {}


def test_prompt_without_sensitive_data_says_nothing() -> None:
    assert inspect(call_with("Summarise the attached quarterly incident report.")) == {}


def test_iban_ssn_and_resident_id_are_found() -> None:
    scan = scan_prompt(f"IBAN {IBAN_EXAMPLE}, SSN 123-45-6789, ID {CN_ID_EXAMPLE}",
                       load_signatures())
    assert set(scan["pii"].counts) == {"iban", "us-ssn", "cn-resident-id"}


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        (luhn, "4111111111111111", "4111111111111112"),
        (luhn, "378282246310005", "378282246310006"),  # the Amex test number
        (iban, IBAN_EXAMPLE, "GB82 WEST 1234 5698 7654 23"),
        (iban, "DE89370400440532013000", "DE89370400440532013001"),
        (us_ssn, "123-45-6789", "000-45-6789"),
        (us_ssn, "772-01-0001", "123-00-6789"),
        (cn_resident_id, CN_ID_EXAMPLE, "110105194912310020"),
    ],
)
def test_validators(check: object, good: str, bad: str) -> None:
    assert check(good) and not check(bad)  # type: ignore[operator]


def test_unreadable_prompt_is_no_error() -> None:
    call = call_with("")
    call.prompt_text = "\udcff\x00" * 10
    assert inspect(call) == {}
