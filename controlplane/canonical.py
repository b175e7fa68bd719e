"""Canonical JSON (RFC 8785) and the digests built on it.

Every digest in Baton (audit chain, request bodies, artifacts, releases) hashes the
canonical form, so that the same content always gives the same digest whatever the key
order or number formatting of the JSON it arrived as.
"""

import hashlib
from typing import Any

import rfc8785

CanonicalizationError = rfc8785.CanonicalizationError


def canonical_json(value: Any) -> bytes:
    return rfc8785.dumps(value)


def digest(value: Any) -> str:
    """sha256 of the canonical JSON of `value`, as 64 hex digits."""
    return hashlib.sha256(canonical_json(value)).hexdigest()
