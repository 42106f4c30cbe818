"""Check digits and ranges that tell real identifiers from look-alike digit strings.

    prompt text -> sensitive_data.yaml regex match -> a validator named by the entry -> counted

Used by ``auditor.detectors.prompt_sensitive_data``: a regex alone would call every 16-digit
order number a payment card. Each validator takes the matched text (separators included) and
answers whether it is a well-formed identifier of its kind. ``VALIDATORS`` maps the names used
in ``signatures/sensitive_data.yaml`` to them.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_NOT_DIGIT = re.compile(r"\D")
_NOT_ALNUM = re.compile(r"[^0-9A-Za-z]")

# ISO 7064 MOD 11-2 weights of the 17 leading digits of a GB 11643-1999 resident ID (2^(17-i)
# mod 11), and the check character for each remainder.
CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CN_ID_CHECK = "10X98765432"


def luhn(text: str) -> bool:
    """ISO/IEC 7812-1 Annex B: a 13-19 digit number whose Luhn sum is a multiple of 10."""
    digits = _NOT_DIGIT.sub("", text)
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:  # every second digit from the right is doubled
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban(text: str) -> bool:
    """ISO 13616: country, two check digits, BBAN; moved to the end, letters as 10..35, the
    number is 1 mod 97 (ISO 7064 MOD 97-10)."""
    compact = _NOT_ALNUM.sub("", text).upper()
    if not 15 <= len(compact) <= 34 or not compact[:2].isalpha() or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def us_ssn(text: str) -> bool:
    """AAA-GG-SSSS outside the ranges the SSA never issues: area 000, 666 and 900-999,
    group 00, serial 0000 (https://www.ssa.gov/employer/randomization.html)."""
    digits = _NOT_DIGIT.sub("", text)
    if len(digits) != 9:
        return False
    area, group, serial = int(digits[:3]), int(digits[3:5]), int(digits[5:])
    return area not in (0, 666) and area < 900 and group != 0 and serial != 0


def cn_resident_id(text: str) -> bool:
    """GB 11643-1999: 17 digits and a check character by ISO 7064 MOD 11-2."""
    compact = text.strip().upper()
    if len(compact) != 18 or not compact[:17].isdigit():
        return False
    remainder = sum(int(d) * w for d, w in zip(compact[:17], CN_ID_WEIGHTS, strict=True)) % 11
    return CN_ID_CHECK[remainder] == compact[17]


def no_check(text: str) -> bool:
    """For entries whose regex is the whole test."""
    return True


VALIDATORS: dict[str, Callable[[str], bool]] = {
    "luhn": luhn,
    "iban": iban,
    "us_ssn": us_ssn,
    "cn_resident_id": cn_resident_id,
    "none": no_check,
}
