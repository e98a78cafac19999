"""What Redis Software accepts in the objects the `redis-software` provider writes, checked at
validate so a file the service would refuse fails before any write (pure; no I/O, no requests).

Sources (redis.io/docs/latest/operate/rs/, 7.4 through 7.22):
  objects/user            name: "pattern does not allow non-ASCII and special characters &,<,>,\"" --
                          within the schema's username pattern already, so not repeated here
  redis-acl-overview      a Redis ACL holds permissions: no passwords (`>` `<` `#` `!`), no
                          `resetpass`; selectors `(...)` are not nested and key/channel patterns
                          hold no parentheses
  password-complexity-rules  at least 8 characters (configurable from 7.8), an upper-case and a
                          lower-case letter, a digit and a special character; must not contain
                          the user's email or its reverse; no character four times in a row
  certificate-based-authentication / objects/user certificate_subject_line: an RFC 2253 subject
                          whose first attribute is CN, with at most one OU
"""

from __future__ import annotations

import re

from ...config.core import missing_service_classes

MIN_LENGTH = 8


def email_of(user: str) -> str:
    """The email the provider gives the users it creates (objects/user: unique, ASCII)."""
    return f"{user}@reconciler.invalid"


def rules_problems(rules: str) -> list[str]:
    """Problems Redis Software's Redis ACL objects would refuse in a resolved rule string. A
    selector is a run of words from one starting with `(` to one ending with `)`."""
    out: list[str] = []
    depth = 0
    for word in rules.split():
        core = word.lstrip("(")
        depth += len(word) - len(core)
        if depth > 1:
            out.append("Redis Software refuses nested selectors in a Redis ACL (redis-acl-overview)")
        closing = len(core) - len(core.rstrip(")")) if depth else 0
        closing = min(closing, depth)  # only open selectors close; a stray `)` stays in the word
        core = core[: len(core) - closing] if closing else core
        depth -= closing
        out.extend(_word_problems(core))
    return list(dict.fromkeys(out))


def _word_problems(word: str) -> list[str]:
    if word[:1] in "<>#!" or word.lower() == "resetpass":
        return [f"'{word[:1] if word[:1] in '<>#!' else word}' is not allowed in a Redis Software Redis ACL (redis-acl-overview)"]
    if word[:1] in "~%&" and ("(" in word or ")" in word):
        return [f"pattern '{word}': Redis Software refuses parentheses in key and channel patterns (redis-acl-overview)"]
    return []


def password_problem(value: str, user: str, min_length: int | None = None) -> str | None:
    """password-complexity-rules; None when the password passes."""
    need = max(MIN_LENGTH, min_length or 0)
    missing = ([] if len(value) >= need else [f"{need}+ characters"]) + missing_service_classes(value)
    if missing:
        return "Redis Software's password complexity rules need " + ", ".join(missing)
    email = email_of(user).lower()
    if email in value.lower() or email[::-1] in value.lower():
        return "Redis Software refuses a password that contains the user's email or its reverse"
    if re.search(r"(.)\1\1\1", value):
        return "Redis Software refuses a password with a character four times in a row"
    return None


def subject_problem(parsed: list[tuple[str, str]]) -> str | None:
    """certificate_subject_line constraints on an already parsed subject ([(TYPE, value)])."""
    if not parsed or parsed[0][0] != "CN":
        return "a Redis Software certificate_subject_line starts with CN (e.g. CN=app,OU=payments,O=Acme,C=US)"
    if sum(1 for k, _ in parsed if k == "OU") > 1:
        return "a Redis Software certificate_subject_line has at most one OU"
    return None
