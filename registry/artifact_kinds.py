"""What each kind of artifact must contain, as JSON Schema, plus the checks a schema cannot say.

Validation returns every problem with the JSON path where it is, so a publisher can fix
them all at once; nothing is saved while any remains.
"""

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

SIDE_EFFECTS = ("read", "write", "irreversible")
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.\-]{0,99}$"
NAME_RE = re.compile(NAME_PATTERN)
_NAME = {"type": "string", "pattern": NAME_PATTERN}
_SCHEMA_OBJECT = {"type": "object"}
MAX_REGO_MODULE_BYTES = 256 * 1024
# A model config names the variable holding its API key; only variables under this prefix may
# be named, so that a config cannot have a worker send one of Baton's own secrets to its URL.
MODEL_API_KEY_PREFIX = "MODEL_API_KEY_"

_SCHEMAS: dict[str, dict] = {
    "prompt": {
        "type": "object",
        "required": ["template", "variables_schema"],
        "additionalProperties": False,
        "properties": {
            "template": {"type": "string", "minLength": 1, "maxLength": 100_000},
            "variables_schema": _SCHEMA_OBJECT,
            "description": {"type": "string", "maxLength": 2000},
        },
    },
    "model_config": {
        "type": "object",
        "required": ["provider", "model"],
        "additionalProperties": False,
        "properties": {
            "provider": {"enum": ["builtin", "openai_compatible"]},
            "model": {"type": "string", "minLength": 1, "maxLength": 200},
            "base_url": {"type": "string", "pattern": "^https?://", "maxLength": 500},
            "api_key_env": {"type": "string", "pattern": f"^{MODEL_API_KEY_PREFIX}[A-Z0-9_]+$"},
            "parameters": {"type": "object"},
            "fallback": {"type": "array", "items": _NAME, "uniqueItems": True, "maxItems": 5},
            "price_per_1k_tokens": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "input": {"type": "number", "minimum": 0},
                    "output": {"type": "number", "minimum": 0},
                },
            },
            "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
        },
    },
    "tool": {
        "type": "object",
        "required": ["args_schema", "result_schema", "side_effect", "transport"],
        "additionalProperties": False,
        "properties": {
            "description": {"type": "string", "maxLength": 2000},
            "args_schema": _SCHEMA_OBJECT,
            "result_schema": _SCHEMA_OBJECT,
            "side_effect": {"enum": list(SIDE_EFFECTS)},
            "compensation_tool": _NAME,
            "reconcile_lookup": _NAME,
            "external": {"type": "boolean"},
            "transport": {
                "type": "object",
                "required": ["type"],
                "additionalProperties": False,
                "properties": {
                    "type": {"enum": ["sandbox", "http"]},
                    "url": {"type": "string", "pattern": "^https?://", "maxLength": 500},
                    "operation": {"type": "string", "maxLength": 100},
                },
            },
        },
    },
    "corpus": {
        "type": "object",
        "required": ["corpus_id", "version", "digest"],
        "additionalProperties": False,
        "properties": {
            "corpus_id": {"type": "string", "minLength": 1, "maxLength": 200},
            "version": {"type": "string", "minLength": 1, "maxLength": 100},
            "digest": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "description": {"type": "string", "maxLength": 2000},
        },
    },
    "policy_bundle": {
        "type": "object",
        "required": ["modules"],
        "additionalProperties": False,
        "properties": {
            "modules": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": r"^[A-Za-z0-9_./\-]+\.rego$"},
                "additionalProperties": {"type": "string", "minLength": 1},
            },
            "data": {"type": "object"},
        },
    },
}
_VALIDATORS = {kind: Draft202012Validator(schema) for kind, schema in _SCHEMAS.items()}


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


def json_path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def content_problems(kind: str, content: Any) -> list[Problem]:
    """Schema problems of a non-workflow artifact (workflows have their own validator)."""
    problems = [
        Problem(json_path(error.absolute_path), error.message)
        for error in sorted(_VALIDATORS[kind].iter_errors(content), key=lambda e: list(e.absolute_path))
    ]
    if problems:
        return problems
    if kind == "prompt":
        problems += schema_problems(content["variables_schema"], "$.variables_schema")
    elif kind == "model_config":
        problems += _credential_problems(content.get("base_url", ""), "$.base_url")
    elif kind == "tool":
        problems += schema_problems(content["args_schema"], "$.args_schema")
        problems += schema_problems(content["result_schema"], "$.result_schema")
        if content["transport"]["type"] == "http" and "url" not in content["transport"]:
            problems.append(Problem("$.transport.url", "an http tool needs a url"))
        problems += _credential_problems(content["transport"].get("url", ""), "$.transport.url")
    elif kind == "policy_bundle":
        for name, source in content["modules"].items():
            if len(source.encode()) > MAX_REGO_MODULE_BYTES:
                problems.append(Problem(f"$.modules.{name}", f"module is over {MAX_REGO_MODULE_BYTES} bytes"))
    return problems


def _credential_problems(url: str, path: str) -> list[Problem]:
    # Every signed-in user reads artifacts, and a published version is never deleted.
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return []
    return [
        Problem(
            path,
            "a URL must not carry a user or password: every signed-in user can read artifacts "
            "(a model config names its key's variable in api_key_env)",
        )
    ]


def schema_problems(schema: Any, path: str) -> list[Problem]:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        return [
            Problem(path + json_path(error.absolute_path)[1:], f"not a valid JSON Schema: {error.message}")
        ]
    except RecursionError:  # the meta-schema check recurses once per level of the schema
        return [Problem(path, "not a valid JSON Schema: nested too deeply")]
    return []
