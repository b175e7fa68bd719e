"""Chat completions over HTTP, for any server speaking OpenAI's protocol (OpenAI, vLLM, llama.cpp...).

Failures are sorted by what retrying can fix: an unreachable, overloaded or slow endpoint is a
ProviderError (retry, fall back, count towards the circuit), any other refusal is a
ProviderConfigError, as is an endpoint outside the addresses model calls may reach
(`controlplane.outbound`) or one that redirects. Neither the API key nor the prompt is ever logged.
"""

import json
import logging
import re

import requests
from django.core.exceptions import ImproperlyConfigured

from controlplane import outbound
from controlplane.settings.env import secret
from registry.artifact_kinds import MODEL_API_KEY_PREFIX

from . import (
    MalformedOutput,
    ModelReply,
    ModelRequest,
    ProviderConfigError,
    ProviderError,
    cost_usd,
    estimate_tokens,
)
from .normalise import parse_reply

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
_TRANSIENT_STATUSES = {408, 425, 429}
_OWN_FIELDS = {"model", "messages", "response_format", "stream", "n"}  # parameters cannot override these
_DETAIL_CHARS = 300


def complete(request: ModelRequest) -> ModelReply:
    config = request.config
    if not config.get("base_url"):
        raise ProviderConfigError(f"model config {request.config_name} has no base_url")
    url = f"{config['base_url'].rstrip('/')}/chat/completions"
    api_key = _api_key(request)
    timeout = float(config.get("timeout_s", DEFAULT_TIMEOUT_S))
    messages = _messages(request)
    body = {
        **{k: v for k, v in (config.get("parameters") or {}).items() if k not in _OWN_FIELDS},
        "model": config["model"],
        "messages": messages,
    }
    # Degrade to what the server supports: strict schema, then any JSON object, then plain text.
    formats = _response_formats(request)
    for attempt, response_format in enumerate(formats):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        if request.idempotency_key:  # a new body under the same key would be refused as a conflict
            suffix = f":{(response_format or {}).get('type', 'text')}" if attempt else ""
            headers["Idempotency-Key"] = request.idempotency_key + suffix
        attempt_body = body | ({"response_format": response_format} if response_format else {})
        response = _post(url, attempt_body, headers, timeout)
        if response.status_code != 400 or "response_format" not in response.text:
            break
        logger.info("%s refused response_format %s", url, (response_format or {}).get("type"))
    payload = _json(response)
    _raise_for_status(response.status_code, payload.get("error") or response.text, url, api_key)
    content = _content(payload, url)
    output = parse_reply(content, request.output_schema)
    usage = payload.get("usage") or {}
    prompt_tokens = _tokens(usage.get("prompt_tokens"), sum(estimate_tokens(m["content"]) for m in messages))
    completion_tokens = _tokens(usage.get("completion_tokens"), estimate_tokens(content))
    logger.info(
        "model config %s (%s) answered: %d prompt + %d completion tokens",
        request.config_name,
        config["model"],
        prompt_tokens,
        completion_tokens,
    )
    return ModelReply(
        output=output,
        raw_text=content,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=cost_usd(config, prompt_tokens, completion_tokens),
        provider="openai_compatible",
        model=config["model"],
        config_name=request.config_name,
        latency_ms=0.0,
    )


def _api_key(request: ModelRequest) -> str:
    """The key from the variable named by api_key_env (or its _FILE twin); none if not configured."""
    name = request.config.get("api_key_env")
    if not name:
        return ""
    if not name.startswith(MODEL_API_KEY_PREFIX):
        # Published before the prefix was required: refused here too, never read.
        raise ProviderConfigError(
            f"model config {request.config_name}: api_key_env must name a {MODEL_API_KEY_PREFIX}* "
            f"variable, not {name}"
        )
    try:
        key = secret(name)
    except ImproperlyConfigured as exc:
        raise ProviderConfigError(str(exc)) from exc
    if not key:
        raise ProviderConfigError(
            f"model config {request.config_name} needs an API key in {name} or {name}_FILE"
        )
    return key


def _messages(request: ModelRequest) -> list[dict]:
    system = f"You are the {request.purpose} step of an automated workflow. Answer with one JSON object only."
    if request.output_schema is not None:
        system += f" It must satisfy this JSON Schema: {json.dumps(request.output_schema, sort_keys=True)}"
    return [{"role": "system", "content": system}, {"role": "user", "content": request.prompt}]


def _response_formats(request: ModelRequest) -> list[dict | None]:
    json_object = {"type": "json_object"}
    if request.output_schema is None:
        return [json_object, None]
    name = re.sub(r"[^A-Za-z0-9_-]", "_", request.purpose)[:64] or "reply"
    strict = {"name": name, "schema": request.output_schema, "strict": True}
    return [{"type": "json_schema", "json_schema": strict}, json_object, None]


def _post(url: str, body: dict, headers: dict, timeout: float) -> requests.Response:
    try:
        return outbound.post(url, json=body, headers=headers, timeout=timeout)
    except outbound.OutboundRefused as exc:
        raise ProviderConfigError(f"{url}: {exc}") from exc
    except requests.Timeout as exc:
        raise ProviderError(f"{url} did not answer within {timeout:g}s") from exc
    except requests.RequestException as exc:
        raise ProviderError(f"cannot reach {url}: {type(exc).__name__}") from exc


def _raise_for_status(status: int, detail: object, url: str, api_key: str) -> None:
    if status < 300:
        return
    if isinstance(detail, dict):
        detail = detail.get("message", "")
    detail = str(detail)[:_DETAIL_CHARS]
    if api_key:  # some servers echo the key they refused
        detail = detail.replace(api_key, "***")
    message = f"{url} answered {status}: {detail}"
    if status in _TRANSIENT_STATUSES or status >= 500:
        raise ProviderError(message)
    raise ProviderConfigError(message)


def _content(payload: dict, url: str) -> str:
    try:
        message = payload["choices"][0]["message"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ProviderError(f"{url} answered without a chat completion") from exc
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        refusal = message.get("refusal") if isinstance(message, dict) else None
        raise MalformedOutput(problem="the reply has no text content", raw_text=str(refusal or ""))
    return content


def _json(response: requests.Response) -> dict:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _tokens(reported: object, estimate: int) -> int:
    return reported if isinstance(reported, int) and reported >= 0 else estimate
