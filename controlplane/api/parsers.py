"""A JSON parser that refuses what a governance API should never store.

Oversized bodies (413), invalid UTF-8, NUL bytes, duplicate keys, NaN/Infinity and
integers outside the I-JSON range (RFC 7493) are refused with a 4xx before any view runs,
so every body that reaches a service can be stored and canonicalised as it is.
"""

import json
from typing import Any

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser

_MAX_SAFE_INTEGER = 2**53 - 1


# Defined here, not beside the other problems: DRF imports this module while
# `rest_framework.views` loads, and `problems` imports that module.
class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is larger than the configured limit."
    default_code = "payload_too_large"


class StrictJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        limit = settings.MAX_REQUEST_BODY_BYTES
        request = (parser_context or {}).get("request")
        declared_length = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared_length and declared_length.isdigit() and int(declared_length) > limit:
            raise PayloadTooLarge(f"The request body is over the {limit}-byte limit.")
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"The request body is over the {limit}-byte limit.")
        if b"\x00" in raw:
            raise ParseError("The request body contains a NUL byte.")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError(f"The request body is not valid UTF-8 (byte {exc.start}).") from exc
        try:
            data = json.loads(
                text,
                object_pairs_hook=_object_without_duplicates,
                parse_constant=_refuse_constant,
                parse_int=_safe_integer,
            )
        except json.JSONDecodeError as exc:
            raise ParseError(f"Malformed JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from exc
        except RecursionError as exc:
            raise ParseError("Malformed JSON: nested too deeply.") from exc
        except ValueError as exc:
            raise ParseError(f"Malformed JSON: {exc}") from exc
        _refuse_nul_characters(data)
        return data


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}.")
        result[key] = value
    return result


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON.")


def _safe_integer(text: str) -> int:
    value = int(text)
    if abs(value) > _MAX_SAFE_INTEGER:
        raise ValueError(f"integer {text} is outside the interoperable range ±(2^53-1).")
    return value


def _refuse_nul_characters(value: Any) -> None:
    """An escaped \\u0000 decodes to NUL, which PostgreSQL cannot store in text or jsonb."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ParseError("The request body contains a NUL character (\\u0000).")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
