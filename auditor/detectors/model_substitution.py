"""model-substitution: the answer came from another model than the one the client asked for.

    LLMCall (request model + the reply's model, from auditor.llm.parse_response) -> findings

Relays and resellers are known to serve a cheaper model under the name of the one paid for
(shared/knowledge/04_official_response_fingerprints.md, "Model-substitution detection", signal
1: requested vs served model id). The reply names the model that answered: OpenAI's ``model``,
Anthropic's ``message.model`` / ``message_start``, Gemini's ``modelVersion``. A provider that
resolves an alias to a dated snapshot (``gpt-4o`` -> ``gpt-4o-2024-08-06``, ``claude-haiku-4-5``
-> ``claude-haiku-4-5-20251001``) is not substituting; anything else is reported:

- ``model-substitution.other-family`` (high): the served model is of another family than the
  requested one (``claude-*`` answered by ``glm-*``): the prompt went to another vendor.
- ``model-substitution.other-model`` (high off an official endpoint, medium on one): same family,
  another model (``gpt-4o`` answered by ``gpt-3.5-turbo``), the classic silent downgrade.

- ``model-substitution.shape-mismatch``: the reply claims a provider's model (the served model,
  else the requested one, matches an entry of ``signatures/response_shapes.yaml`` for the
  call's API) but is not shaped like that provider's replies (04_official_response_fingerprints.md,
  signals 2 and 3): its id breaks the provider's grammar (``chatcmpl-<29 base62>``, ``msg_…``),
  a header the official API always sends is missing (``x-request-id``, ``request-id``,
  ``anthropic-organization-id``), or its usage has other fields. High on the provider's own
  official endpoint (something between the client and the provider answered); low elsewhere,
  where it only says the reply did not come straight from that provider, as expected of a relay
  (the finding still records what the reply claimed). Only successful (2xx) replies are judged.

A relay that rewrites the reply's model field hides a swap from the first two kinds; the shape
check and the relay-fingerprint detector see what such a rewrite leaves behind.
"""

from __future__ import annotations

import functools
import re
from typing import ClassVar

from auditor.detectors.base import DetectionContext, Detector
from auditor.detectors.destination_names import identify
from auditor.model import Finding, LLMCall, Observation, Severity, finding_for
from auditor.signatures import ResponseShape, Signatures, compiled, normalise_host

# The suffixes providers add when they resolve an alias to a snapshot: a date (2024-08-06,
# 20251001), a four-digit MMDD (OpenAI's gpt-3.5-turbo-0125) or a three-digit revision
# (Gemini's -001/-002); Vertex AI writes Claude snapshots with "@" (claude-sonnet-4-5@20250929).
# Aliases ending in "-latest" stand for such a snapshot.
SNAPSHOT_SUFFIX = re.compile(r"[-@](?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|\d{3})$")
ALIAS_SUFFIX = re.compile(r"-latest$")
# A model's family is its leading name ("gpt", "claude", "gemini", "glm", "deepseek", ...),
# after any "vendor/" prefix an aggregator adds ("openai/gpt-4o").
FAMILY_STEM = re.compile(r"^(?:[a-z0-9_.-]+/)?([a-z]+)")


def normalise_model(model: str) -> str:
    return model.strip().lower()


def base_model(model: str) -> str:
    """The model without a snapshot or "-latest" suffix."""
    model = normalise_model(model)
    return SNAPSHOT_SUFFIX.sub("", ALIAS_SUFFIX.sub("", model))


def model_family(model: str) -> str:
    found = FAMILY_STEM.match(normalise_model(model))
    return found.group(1) if found else normalise_model(model)


def same_model(requested: str, served: str) -> bool:
    """True when ``served`` is ``requested`` or a snapshot of it (or it of ``served``)."""
    requested, served = normalise_model(requested), normalise_model(served)
    if requested == served:
        return True
    # Aggregators answer "gpt-4o" for "openai/gpt-4o" (or the other way round).
    requested, served = requested.rsplit("/", 1)[-1], served.rsplit("/", 1)[-1]
    return base_model(requested) == base_model(served)


OTHER_FAMILY = "model-substitution.other-family"
OTHER_MODEL = "model-substitution.other-model"


# Remembered per pair: a capture asks about the same few model names for every call.
@functools.lru_cache(maxsize=4096)
def substitution_kind(requested: str, served: str) -> str | None:
    """The finding kind when ``served`` is not ``requested`` (None: it is, or a snapshot of it)."""
    if same_model(requested, served):
        return None
    return OTHER_FAMILY if model_family(requested) != model_family(served) else OTHER_MODEL


@functools.lru_cache(maxsize=4096)
def shapes_claimed(
    signatures: Signatures, api: str, model: str
) -> tuple[str | None, tuple[ResponseShape, ...]]:
    """(provider, its response shapes) for a reply of ``api`` claiming ``model``, from the
    entries of response_shapes.yaml that apply (the last one's provider); (None, ()) if none."""
    shapes = tuple(
        shape
        for shape in signatures.response_shapes
        if api in shape.apis and compiled(shape.model_regex).search(model)
    )
    return (shapes[-1].provider if shapes else None), shapes


class ModelSubstitutionDetector(Detector):
    name: ClassVar[str] = "model-substitution"
    description: ClassVar[str] = "LLM replies that name another model than the one requested"
    observes: ClassVar[tuple[type[Observation], ...]] = (LLMCall,)

    def inspect(self, obs: Observation, ctx: DetectionContext) -> list[Finding]:
        # A list, not a generator: asked of every call, and most calls yield nothing or one.
        assert isinstance(obs, LLMCall)
        host = normalise_host(obs.request.host or obs.host)
        endpoint = identify(ctx.signatures, host).provider
        official = endpoint is not None and obs.family in endpoint.api_shapes
        swap = self._model_swap(obs, host, official)
        mismatch = self._shape_mismatch(obs, ctx, host, endpoint.provider if endpoint else None)
        return [finding for finding in (swap, mismatch) if finding is not None]

    def _model_swap(self, obs: LLMCall, host: str, official: bool) -> Finding | None:
        requested, served = obs.model_requested, obs.model_served
        if not requested or not served:
            return None
        kind = substitution_kind(requested, served)
        if kind is None:
            return None
        if kind == OTHER_FAMILY:
            severity = Severity.HIGH
            title = f"Asked for {requested}, answered by {served} (another model family)"
        else:
            severity = Severity.MEDIUM if official else Severity.HIGH
            title = f"Asked for {requested}, answered by {served}"
        return finding_for(
            obs,
            detector=self.name,
            kind=kind,
            severity=severity,
            title=title,
            evidence={
                "model_requested": requested,
                "model_served": served,
                "api": obs.api,
                "family": obs.family,
                "host": host,
                "official_endpoint": official,
                "response_id": obs.response_id,
                "basis": "the model named in the reply differs from the one requested",
            },
            evidence_key=f"{normalise_model(requested)}->{normalise_model(served)}",
        )

    def _shape_mismatch(
        self, obs: LLMCall, ctx: DetectionContext, host: str, host_provider: str | None
    ) -> Finding | None:
        response = obs.request.response
        claimed_model = obs.model_served or obs.model_requested
        if response is None or not 200 <= response.status < 300 or not claimed_model:
            return None
        provider, shapes = shapes_claimed(ctx.signatures, obs.api, claimed_model)
        broken: list[dict[str, object]] = []
        for shape in shapes:
            problem = shape_problem(shape, obs)
            if problem:
                broken.append({"check": shape.id, "problem": problem, "source": shape.source})
        if not broken or provider is None:
            return None
        on_official = host_provider == provider
        return finding_for(
            obs,
            detector=self.name,
            kind="model-substitution.shape-mismatch",
            severity=Severity.HIGH if on_official else Severity.LOW,
            title=(
                f"Reply claiming {claimed_model} is not shaped like {provider}'s"
                + (" on its own endpoint" if on_official else "")
            ),
            evidence={
                "claimed_model": claimed_model,
                "claimed_provider": provider,
                "api": obs.api,
                "host": host,
                "official_endpoint_of_claimed_provider": on_official,
                "response_id": obs.response_id,
                "mismatches": broken,
            },
            evidence_key=f"{provider}:{normalise_model(claimed_model)}",
        )


def shape_problem(shape: ResponseShape, call: LLMCall) -> str | None:
    """What in ``call``'s reply breaks ``shape``, or None when it fits (or cannot be told)."""
    response = call.request.response
    if response is None:
        return None
    if shape.check == "response_id":
        if call.response_id is None or shape.regex is None:
            return None  # no id to judge (e.g. a reply cut before it)
        if compiled(shape.regex).search(call.response_id) is None:
            return f"id {call.response_id[:40]!r} does not match {shape.regex}"
    elif shape.check == "response_headers":
        missing = [h for h in shape.headers if response.header(h) is None]
        if missing:
            return "missing headers: " + ", ".join(missing)
    elif shape.check == "usage_keys" and call.usage:
        missing = [k for k in shape.keys if k not in call.usage]
        if missing:
            return "usage lacks: " + ", ".join(missing)
    return None
