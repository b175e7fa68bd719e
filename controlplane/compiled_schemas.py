"""JSON Schemas compiled to checks, for documents checked on every step or decision.

jsonschema walks a schema anew for every document (100-250 µs for a decision input or a task
envelope); a hot path cannot afford that. fastjsonschema compiles each schema once into Python
code that answers in a few µs. Refused documents are explained by the reference validator, and
tests hold the two to the same answers.
"""

from collections.abc import Callable
from typing import Any

import fastjsonschema

Check = Callable[[Any], bool]


def compile_schema(schema: dict) -> Check:
    """The schema as one compiled check: True when a document is valid."""
    validate = fastjsonschema.compile({"$schema": "http://json-schema.org/draft-07/schema#", **schema})

    def check(value: Any) -> bool:
        try:
            validate(value)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    return check
