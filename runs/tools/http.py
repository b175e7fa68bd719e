"""The `http` transport: JSON over POST to the tool's URL, with the idempotency key in a header.

The protocol a tool server implements:

- `POST {url}` with `Idempotency-Key: <key>` and `{"args": {...}}` answers 2xx with
  `{"result": {...}, "effect_id": "..."}`. A key seen before gets the stored reply, with
  `Idempotent-Replayed: true` and no new effect.
- `GET {url}/effects/{key}` answers 200 with that same body when the key's effect happened,
  404 when it did not. A reconcile lookup tool with an http URL is asked instead of `url`.

How failures are read: a refused connection was never sent (unavailable); a timeout or a
dropped connection after sending, a 5xx, or a 2xx we cannot parse may hide a committed
effect (outcome unknown); 502/503 with Retry-After and 429 say "not now" (unavailable);
any other status is a refusal (rejected), as is a URL outside the addresses tool calls may reach
(`controlplane.outbound`: nothing is sent).
"""

from urllib.parse import quote

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError

from controlplane import outbound

from . import ToolCall, ToolOutcomeUnknown, ToolRejected, ToolResult, ToolUnavailable


def invoke(call: ToolCall) -> ToolResult:
    url = call.spec["transport"]["url"]
    try:
        response = outbound.post(
            url,
            json={"args": call.args},
            headers={"Idempotency-Key": call.idempotency_key, "Content-Type": "application/json"},
            timeout=call.timeout_s,
        )
    except outbound.OutboundRefused as error:
        raise ToolRejected(f"{call.tool}: {error}") from error
    except requests.ConnectionError as error:
        if _never_connected(error):
            raise ToolUnavailable(f"{call.tool}: could not connect to {url}") from error
        raise ToolOutcomeUnknown(f"{call.tool}: connection to {url} lost after sending") from error
    except requests.RequestException as error:  # a read timeout, or a reply cut short
        raise ToolOutcomeUnknown(f"{call.tool}: no complete reply from {url}: {error}") from error

    detail = f"{call.tool}: HTTP {response.status_code} from {url}: {response.text[:200]}"
    if response.status_code == 429 or (
        response.status_code in (502, 503) and "Retry-After" in response.headers
    ):
        raise ToolUnavailable(detail)
    if response.status_code >= 500:
        raise ToolOutcomeUnknown(detail)
    if not 200 <= response.status_code < 300:
        raise ToolRejected(detail)
    replayed = response.headers.get("Idempotent-Replayed", "").lower() == "true"
    found = _parse(response, replayed=replayed)
    if found is None:
        raise ToolOutcomeUnknown(f"{call.tool}: reply from {url} is not {{result, effect_id}}")
    return found


def reconcile(call: ToolCall, lookup_spec: dict | None) -> ToolResult | None:
    """GET {url}/effects/{key}: 404 is "not done". The GET changes nothing, so a lookup that
    fails for want of the server is ToolUnavailable (ask again), and a refusal ToolRejected."""
    lookup = (lookup_spec or {}).get("transport", {})
    base = (
        lookup["url"] if lookup.get("type") == "http" and lookup.get("url") else call.spec["transport"]["url"]
    )
    url = f"{base.rstrip('/')}/effects/{quote(call.idempotency_key, safe='')}"
    try:
        response = outbound.get(url, timeout=call.timeout_s)
    except outbound.OutboundRefused as error:
        raise ToolRejected(f"{call.tool}: {error}") from error
    except requests.RequestException as error:
        raise ToolUnavailable(f"{call.tool}: could not look up {url}: {error}") from error
    if response.status_code == 404:
        return None
    detail = f"{call.tool}: HTTP {response.status_code} from {url}: {response.text[:200]}"
    if response.status_code == 429 or response.status_code >= 500:
        raise ToolUnavailable(detail)
    if response.status_code != 200:
        raise ToolRejected(detail)
    found = _parse(response, replayed=True)
    if found is None:
        raise ToolUnavailable(f"{call.tool}: reply from {url} is not {{result, effect_id}}")
    return found


def _never_connected(error: requests.ConnectionError) -> bool:
    """True only when the connection was never made (refused, unresolvable, timed out), so
    nothing was sent; any other connection error may have come after the request went out."""
    reason = error.args[0] if error.args else None
    return isinstance(reason, MaxRetryError) and isinstance(reason.reason, ConnectTimeoutError)


def _parse(response: requests.Response, *, replayed: bool) -> ToolResult | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if (
        isinstance(body, dict)
        and isinstance(body.get("result"), dict)
        and isinstance(body.get("effect_id"), str)
    ):
        return ToolResult(body["result"], body["effect_id"], replayed)
    return None
