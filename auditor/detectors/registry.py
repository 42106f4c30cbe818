"""The list of detectors the pipeline runs. Adding a detector = one module + one line here."""

from __future__ import annotations

from auditor.detectors.base import Detector


def detector_classes() -> list[type[Detector]]:
    # Imported here so that a broken optional detector cannot break importing the package.
    from auditor.detectors.ai_service import AIServiceDetector
    from auditor.detectors.credential_exposure import CredentialExposureDetector
    from auditor.detectors.cross_border import CrossBorderDetector
    from auditor.detectors.model_substitution import ModelSubstitutionDetector
    from auditor.detectors.plaintext_llm import PlaintextLLMDetector
    from auditor.detectors.prompt_sensitive_data import PromptSensitiveDataDetector
    from auditor.detectors.relay_domain import RelayDomainDetector
    from auditor.detectors.relay_fingerprint import RelayFingerprintDetector
    from auditor.detectors.unofficial_llm_endpoint import UnofficialLLMEndpointDetector
    from auditor.detectors.weak_tls import WeakTLSDetector

    return [
        RelayDomainDetector,
        AIServiceDetector,
        WeakTLSDetector,
        PlaintextLLMDetector,
        UnofficialLLMEndpointDetector,
        CrossBorderDetector,
        ModelSubstitutionDetector,
        RelayFingerprintDetector,
        CredentialExposureDetector,
        PromptSensitiveDataDetector,
    ]


def all_detectors(disabled: frozenset[str] | set[str] = frozenset()) -> list[Detector]:
    """A fresh instance of every detector whose name is not in ``disabled``."""
    return [cls() for cls in detector_classes() if cls.name not in disabled]
