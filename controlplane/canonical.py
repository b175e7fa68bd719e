"""Canonical JSON (RFC 8785) and the digests built on it.

Every digest in Baton (audit chain, request bodies, artifacts, releases) hashes the
canonical form, so that the same content always gives the same digest whatever the key
order or number formatting of the JSON it arrived as.
"""

import hashlib
import json
import math
from typing import Any

import rfc8785

CanonicalizationError = rfc8785.CanonicalizationError

# RFC 8785 writes numbers as IEEE doubles do; integers within this bound print as their digits.
_SAFE_INTEGER = 2**53 - 1
_PLAIN_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of `value`. Most documents hold only strings, safe integers, plain floats,
    booleans, null, lists and objects with ASCII keys: for those the standard library's encoder,
    keys sorted and no spaces, writes the same bytes (its string escapes are the ones RFC 8785
    takes from JavaScript) many times faster. Anything else (integral or exponent-notation
    floats, non-ASCII keys, other types) is written by the full implementation, which also
    refuses what RFC 8785 cannot represent."""
    if _plain(value):
        try:
            return _PLAIN_ENCODER.encode(value).encode()
        except UnicodeEncodeError:  # a lone surrogate: RFC 8785 escapes it, UTF-8 cannot hold it
            pass
    return rfc8785.dumps(value)


def _plain(value: Any) -> bool:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -_SAFE_INTEGER <= value <= _SAFE_INTEGER
    if kind is float:
        # Python and JavaScript both write a float's shortest round-trip digits; they differ
        # only in when they switch to exponents and in integral values (1.0 against 1).
        text = repr(value)
        return math.isfinite(value) and "e" not in text and not text.endswith(".0")
    if kind is dict:
        return all(type(key) is str and key.isascii() and _plain(item) for key, item in value.items())
    if kind is list:
        return all(_plain(item) for item in value)
    return False


def digest(value: Any) -> str:
    """sha256 of the canonical JSON of `value`, as 64 hex digits."""
    return hashlib.sha256(canonical_json(value)).hexdigest()
