"""Customer identifiers replaced before a text is stored: card numbers, IBANs, e-mail addresses, phone
numbers and a deployment's own patterns become `[CARD_NUMBER]`, `[IBAN]`, `[EMAIL]`, `[PHONE]`, `[<NAME>]`.
The model has already read the original; the log, the review queue, the drift reports and every training
set exported from the log only ever hold the redacted text. What was found is counted per type, never kept.

A number is only called a card or an IBAN when its check digits say so (python-stdnum: Luhn, ISO 13616
with the country's length), and a phone number when Google's numbering metadata does (phonenumbers, per
region): a pattern alone finds candidates, a library decides. Microsoft Presidio's recognizers were the
first choice; importing them loads spaCy, thinc and, where installed, PyTorch and transformers into the
serving process (5.5 s here), and its e-mail check fetches the public suffix list from the internet.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import phonenumbers
from stdnum import iban, luhn

CARD, IBAN, EMAIL, PHONE = "CARD_NUMBER", "IBAN", "EMAIL", "PHONE"
BUILT_IN = (CARD, IBAN, EMAIL, PHONE)

_CARD = re.compile(r"(?<![\w+-])\d(?:[ -]?\d){11,18}")              # 12-19 digits, spaced or dashed
_IBAN = re.compile(r"(?<!\w)[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]){11,30}")
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")            # the HTML standard's address
_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,39}$")


class RedactionError(ValueError):
    """A configured pattern that is not a valid one."""


def _checked(rx: re.Pattern, valid, shortest: int):
    """Spans of `rx` whose text (or a prefix of it ending at a word's end: a run may take in the words after
    the number) passes `valid`; each span is the longest prefix that does."""
    def find(text: str):
        for m in rx.finditer(text):
            run = m.group()
            for end in range(len(run), shortest - 1, -1):
                if (end == len(run) or not run[end].isalnum()) and run[end - 1].isalnum() and valid(run[:end]):
                    yield m.start(), m.start() + end
                    break
    return find


_cards = _checked(_CARD, lambda s: luhn.is_valid(re.sub(r"[ -]", "", s)), 12)
_ibans = _checked(_IBAN, iban.is_valid, 15)


@dataclass(frozen=True)
class Redactor:
    """Finds and replaces identifiers; `regions`: where a phone number without +country code is read as
    national; `patterns`: a deployment's own, name -> regular expression (e.g. {"CUSTOMER_ID": r"\\bC\\d{8}\\b"})."""
    regions: tuple[str, ...] = ("GB", "US")
    patterns: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [r for r in self.regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise RedactionError(f"phone regions {unknown}: not ISO 3166 regions phonenumbers knows")
        compiled = {}
        for name, pattern in self.patterns.items():
            if not _NAME.match(name) or name in BUILT_IN:
                raise RedactionError(f"redaction pattern name {name!r}: upper case letters, digits and _, "
                                     f"not one of {', '.join(BUILT_IN)}")
            try:
                compiled[name] = re.compile(pattern)
            except re.error as e:
                raise RedactionError(f"redaction pattern {name}: {e}") from None
        object.__setattr__(self, "_compiled", compiled)

    @property
    def kinds(self) -> tuple[str, ...]:
        return (*BUILT_IN, *self.patterns)

    def _phones(self, text: str):
        for region in self.regions:
            for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
                yield m.start, m.end

    def spans(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, type) of what would be replaced, in order, without overlaps (the first finder wins: an
        IBAN's digits are not also a card number, one chance in ten by Luhn alone; a card number is not a phone)."""
        found: list[tuple[int, int, str]] = []
        finders = [(IBAN, _ibans), (CARD, _cards), (EMAIL, lambda t: ((m.start(), m.end()) for m in _EMAIL.finditer(t))),
                   *((name, lambda t, rx=rx: ((m.start(), m.end()) for m in rx.finditer(t) if m.end() > m.start()))
                     for name, rx in self._compiled.items()),
                   (PHONE, self._phones)]
        for kind, find in finders:
            for start, end in find(text):
                if all(end <= s or start >= e for s, e, _ in found):
                    found.append((start, end, kind))
        return sorted(found)

    def redact(self, text: str) -> tuple[str, Counter]:
        """The text with each identifier replaced by its type, and how many of each were replaced."""
        spans = self.spans(text)
        if not spans:
            return text, Counter()
        out, at = [], 0
        for start, end, kind in spans:
            out += [text[at:start], f"[{kind}]"]
            at = end
        out.append(text[at:])
        return "".join(out), Counter(kind for _, _, kind in spans)
