"""A JSON parser that refuses what a governance API should never store.

Oversized bodies (413), invalid UTF-8, NUL bytes and whatever `strict_loads` refuses
(duplicate keys, NaN/Infinity, numbers out of range, lone surrogates, deep nesting) are
refused with a 4xx before any view runs, so every body that reaches a service can be stored
and canonicalised as it is.
"""

from typing import Any

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser

from controlplane.strict_json import StrictJSONError, strict_loads


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
            return strict_loads(text)
        except StrictJSONError as exc:
            raise ParseError(f"Malformed JSON: {exc}.") from exc
