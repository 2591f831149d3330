"""Customer identifiers planted inside real banking77 texts: the redaction's recall and false-positive rate
are measured on these (tests/traffic, benchmarks/faults.py), never assumed. Every planted number is valid by
its own rules (Luhn, ISO 13616 check digits, the numbering plan), written the ways customers write them."""
from __future__ import annotations

import random

import phonenumbers
from stdnum import iban, luhn

CARD_PREFIXES = [("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16)]
BBANS = {"GB": lambda r: "".join(r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4)) + _digits(r, 14),
         "DE": lambda r: _digits(r, 18), "NL": lambda r: "".join(r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4)) + _digits(r, 10),
         "IE": lambda r: "".join(r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4)) + _digits(r, 14),
         "AT": lambda r: _digits(r, 16), "CH": lambda r: _digits(r, 17)}
DOMAINS = ["example.com", "mail.co.uk", "bank-customer.org", "post.de", "outlook.ie"]
TEMPLATES = {
    "CARD_NUMBER": ["{text} My card number is {value}.", "{value} is the card, {text}", "{text} (card {value})"],
    "IBAN": ["{text} Please send it to {value}.", "{text} My IBAN: {value}", "IBAN {value} - {text}"],
    "EMAIL": ["{text} Reach me at {value}", "{text} my email is {value}.", "{value} wrote: {text}"],
    "PHONE": ["{text} Call me on {value}.", "{text} my number is {value}", "{value} here, {text}"],
}


def _digits(r: random.Random, n: int) -> str:
    return "".join(r.choice("0123456789") for _ in range(n))


def card(r: random.Random) -> str:
    prefix, length = r.choice(CARD_PREFIXES)
    body = prefix + _digits(r, length - len(prefix) - 1)
    number = body + luhn.calc_check_digit(body)
    style = r.randrange(3)
    if style == 0:
        return number
    groups = [number[i:i + 4] for i in range(0, len(number), 4)] if length == 16 else [number[:4], number[4:10], number[10:]]
    return (" " if style == 1 else "-").join(groups)


def an_iban(r: random.Random) -> str:
    while True:
        country = r.choice(sorted(BBANS))
        bban = BBANS[country](r)
        number = country + iban.calc_check_digits(country + "00" + bban) + bban
        if iban.is_valid(number):
            return iban.format(number) if r.random() < 0.5 else number


def email(r: random.Random) -> str:
    first, last = r.choice(["anna", "li.wei", "j", "mohammed", "o'brien"]), r.choice(["smith", "zhang", "k", "x2"])
    return f"{first}.{last}{r.randrange(100)}@{r.choice(DOMAINS)}"


def phone(r: random.Random) -> str:
    while True:
        region = r.choice(["GB", "US"])
        kind = r.choice([phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE])
        example = phonenumbers.example_number_for_type(region, kind)
        national = str(example.national_number)
        candidate = phonenumbers.parse(national[:-4] + _digits(r, 4), region)
        if phonenumbers.is_valid_number(candidate):
            fmt = r.choice([phonenumbers.PhoneNumberFormat.NATIONAL, phonenumbers.PhoneNumberFormat.INTERNATIONAL,
                            phonenumbers.PhoneNumberFormat.E164])
            return phonenumbers.format_number(candidate, fmt)


MAKERS = {"CARD_NUMBER": card, "IBAN": an_iban, "EMAIL": email, "PHONE": phone}


def planted_set(texts: list[str], per_type: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(text with one identifier planted, its type, the identifier as written), `per_type` of each type."""
    r = random.Random(seed)
    out = []
    for kind, make in MAKERS.items():
        for _ in range(per_type):
            value = make(r)
            out.append((r.choice(TEMPLATES[kind]).format(text=r.choice(texts).rstrip(), value=value), kind, value))
    return out


def measure(redactor, texts: list[str], per_type: int = 250, seed: int = 0) -> dict:
    """Recall over the planted identifiers (each must be gone, replaced by its own type) and the false-positive
    rate over the clean texts (a text changed at all)."""
    planted = planted_set(texts, per_type, seed)
    found = {}
    for text, kind, value in planted:
        redacted, counts = redactor.redact(text)
        hit = value not in redacted and counts.get(kind, 0) >= 1
        found.setdefault(kind, []).append(hit)
    changed = sum(bool(redactor.redact(t)[1]) for t in texts)
    return {"planted": len(planted), "redaction_recall": sum(sum(v) for v in found.values()) / len(planted),
            "recall_by_type": {k: sum(v) / len(v) for k, v in found.items()},
            "clean_texts": len(texts), "redaction_false_positive_rate": changed / len(texts),
            "missed": [(t, k) for (t, k, _), hit in zip(planted, [h for v in found.values() for h in v]) if not hit][:10]}
