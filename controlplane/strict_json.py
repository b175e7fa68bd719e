"""Strict JSON reading, shared by the API's parser, the forms that take JSON text and (for
the nesting and the characters) the YAML loaders.

Duplicate keys, NaN/Infinity, numbers a double cannot hold (1e400), integers outside the
I-JSON range (RFC 7493), NUL characters, lone surrogates and nesting deeper than MAX_DEPTH
are refused as the text is read, so every value that passes can be stored (PostgreSQL jsonb)
and canonicalised (RFC 8785) as it is.
"""

import json
import math
import re
from typing import Any

# Baton's own documents (workflow definitions, bundles, Rego data) nest fewer than 10 levels;
# canonicalisation and schema checks recurse, and run out of stack a few hundred levels down.
MAX_DEPTH = 64
MAX_SAFE_INTEGER = 2**53 - 1
_MAX_SAFE_DIGITS = len(str(MAX_SAFE_INTEGER))
# NUL cannot be stored in PostgreSQL text or jsonb; a lone surrogate cannot be written as UTF-8.
_UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")
TOO_DEEP = f"nested too deeply (more than {MAX_DEPTH} levels)"


class StrictJSONError(ValueError):
    """Why the text was refused, in words for the person or client who sent it."""


def strict_loads(text: str) -> Any:
    """The value JSON `text` holds, or StrictJSONError saying what is wrong with it."""
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_refuse_constant,
            parse_int=_safe_integer,
            parse_float=_finite_float,
        )
    except json.JSONDecodeError as exc:
        raise StrictJSONError(f"{exc.msg} (line {exc.lineno}, column {exc.colno})") from exc
    except RecursionError as exc:
        raise StrictJSONError(TOO_DEEP) from exc
    refuse_unstorable(value)
    return value


def refuse_unstorable(value: Any) -> None:
    """Refuse NUL characters, lone surrogates (in keys too) and nesting deeper than MAX_DEPTH in
    parsed data (walked without recursion, so any depth is safe to check)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _refuse_unstorable_text(item)
        elif isinstance(item, dict | list | tuple):  # tuples come from YAML (!!pairs), never from JSON
            if depth > MAX_DEPTH:
                raise StrictJSONError(TOO_DEEP)
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                item = item.values()
            stack.extend((child, depth + 1) for child in item)


def _refuse_unstorable_text(text: str) -> None:
    found = _UNSTORABLE_CHARACTER.search(text)
    if found is None:
        return
    if found.group() == "\x00":
        raise StrictJSONError("a string holds a NUL character (\\u0000)")
    raise StrictJSONError(
        f"a string holds a lone surrogate (\\u{ord(found.group()):04x}), which is not a character"
    )


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    result = {}
    for key, value in pairs:
        if key in result:
            raise StrictJSONError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _refuse_constant(name: str) -> None:
    raise StrictJSONError(f"{name} is not a JSON value")


def _safe_integer(text: str) -> int:
    # Digits are counted first: int() of thousands of digits is slow, and refused past 4300.
    value = int(text) if len(text.lstrip("-")) <= _MAX_SAFE_DIGITS else None
    if value is None or abs(value) > MAX_SAFE_INTEGER:
        raise StrictJSONError(f"integer {text[:30]} is outside the interoperable range ±(2^53-1)")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJSONError(f"number {text[:30]} is too large to store")
    return value
