"""New tokens: strong random values that every service a user lives on accepts.

`token new` and `rotate` make tokens here. A value is url-safe random with an upper-case
letter, a lower-case letter, a digit and a special character (complexity by construction),
at least policies.min_token_length long, and meets the rules of each provider the user is on:
Redis Software's password complexity rules (no character four times in a row, not the user's
email), Redis Cloud's 8 to 128 characters (a database password: under 50). Pure but for the
random source.
"""

from __future__ import annotations

import math
import secrets
import string

from .config.cloud import MAX_PASSWORD
from .config.core import DEFAULT_MIN_TOKEN_LENGTH
from .errors import ReconcilerError
from .model import Policies

SPECIAL = set("-_")
DEFAULT_BYTES = 32  # 43 characters
CLOUD_DATABASE_PASSWORD = 49  # default-user: "Database passwords must be less than 50 characters long"


def strong_token(nbytes: int) -> str:
    """URL-safe random token that also has upper, lower, digit and special (complexity by construction)."""
    while True:
        token = secrets.token_urlsafe(nbytes)
        chars = set(token)
        if (
            chars & set(string.ascii_uppercase)
            and chars & set(string.ascii_lowercase)
            and chars & set(string.digits)
            and chars & SPECIAL
        ):
            return token


def limits(user: str, providers: list[str], policies: Policies) -> tuple[int, int | None]:
    """(shortest, longest) length a new token of `user` may have on these providers."""
    shortest = max(DEFAULT_MIN_TOKEN_LENGTH, policies.min_token_length or 0)
    longest: int | None = None
    if "redis-cloud" in providers:
        longest = CLOUD_DATABASE_PASSWORD if user == "default" else MAX_PASSWORD
    return shortest, longest


def new_token(user: str, providers: list[str], policies: Policies) -> str:
    """A token for `user` that the file's policies and every provider in `providers` accept."""
    software = "redis-software" in providers and user != "default"
    shortest, longest = limits(user, providers, policies)
    chars = max(shortest, math.ceil(DEFAULT_BYTES * 4 / 3))
    if longest is not None:
        chars = min(chars, longest)
    if chars < shortest:
        raise ReconcilerError(
            f"user {user}: policies.min_token_length {shortest} is longer than provider redis-cloud takes ({longest} characters)"
        )
    nbytes = math.ceil(chars * 3 / 4)
    for _ in range(1000):
        token = strong_token(nbytes)[:chars]
        if len(token) < shortest or not (set(token) & SPECIAL and any(c.isdigit() for c in token)
                                         and any(c.isupper() for c in token) and any(c.islower() for c in token)):
            continue
        if software and _software_refuses(token, user, policies):
            continue
        return token
    raise ReconcilerError(f"user {user}: could not make a token that every provider accepts")


def _software_refuses(token: str, user: str, policies: Policies) -> bool:
    # imports the provider (and requests) only for files that have a redis-software instance
    from .providers.redis_software import rules as software_rules

    return software_rules.password_problem(token, user, policies.min_token_length) is not None
