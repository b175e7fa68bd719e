"""The model provider layer: reply normalisation, the OpenAI-compatible adapter against a loopback
server, fallback chains, circuit breakers and the deterministic builtin provider."""

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from runs.providers import (
    MalformedOutput,
    ModelRequest,
    ProviderConfigError,
    ProviderError,
    breaker,
    builtin,
    complete,
    complete_with_fallback,
    repair_request,
)
from runs.providers.normalise import parse_reply
from tests.support.llm_server import FakeLLM, Reply

CORPUS = json.loads((Path(__file__).parent / "fixtures" / "messy_replies.json").read_text())
KEY_ENV = "MODEL_API_KEY_BATON_TEST"
TRIAGE_SCHEMA = {
    "type": "object",
    "required": ["intent", "confidence"],
    "properties": {
        "intent": {"enum": ["refund", "incident", "question"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
}
TRIAGE_JSON = '{"intent": "refund", "confidence": 0.93}'
BUILTIN = {"provider": "builtin", "model": "rules-v1", "price_per_1k_tokens": {"input": 0.0, "output": 0.0}}


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "test-key")
    monkeypatch.delenv(f"{KEY_ENV}_FILE", raising=False)


@pytest.fixture
def llm(api_key):
    with FakeLLM(api_key="test-key") as server:
        yield server


def remote(server: FakeLLM, **overrides) -> dict:
    return {
        "provider": "openai_compatible",
        "model": "qwen2.5-7b-instruct",
        "base_url": server.url,
        "api_key_env": KEY_ENV,
        "parameters": {"temperature": 0.2, "max_tokens": 300},
        "price_per_1k_tokens": {"input": 0.5, "output": 1.5},
        "timeout_s": 5,
    } | overrides


def ask(
    config: dict, *, name: str = "local-vllm", purpose: str = "triage", text: str = "Refund order #4512", **kw
):
    return ModelRequest(
        config_name=name,
        config=config,
        purpose=purpose,
        prompt=f"Classify this customer message into refund, incident or question: {text}",
        variables={"text": text},
        output_schema=kw.pop("output_schema", TRIAGE_SCHEMA),
        **kw,
    )


# --- normalisation -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CORPUS, ids=[case["name"] for case in CORPUS])
def test_messy_reply_corpus(case):
    if "expected" in case:
        assert parse_reply(case["reply"], case.get("schema")) == case["expected"]
    else:
        with pytest.raises(MalformedOutput) as caught:
            parse_reply(case["reply"], case.get("schema"))
        assert case["error"] in caught.value.problem
        assert caught.value.raw_text == case["reply"]


def test_an_invalid_output_schema_is_a_config_error():
    with pytest.raises(ProviderConfigError, match="not a valid JSON Schema"):
        parse_reply("{}", {"type": "no-such-type"})


# --- OpenAI-compatible adapter -------------------------------------------------------------------


def test_a_completion_reports_output_usage_and_cost(llm):
    llm.script(Reply(TRIAGE_JSON, usage={"prompt_tokens": 1000, "completion_tokens": 200}))

    reply = complete(ask(remote(llm)))

    assert reply.output == {"intent": "refund", "confidence": 0.93}
    assert reply.raw_text == TRIAGE_JSON
    assert (reply.prompt_tokens, reply.completion_tokens) == (1000, 200)
    assert reply.cost_usd == pytest.approx(1000 / 1000 * 0.5 + 200 / 1000 * 1.5)
    assert (reply.provider, reply.model, reply.config_name) == (
        "openai_compatible",
        "qwen2.5-7b-instruct",
        "local-vllm",
    )
    assert reply.latency_ms > 0 and reply.fallbacks == ()


def test_the_request_carries_the_schema_parameters_key_and_idempotency_key(llm):
    llm.script(TRIAGE_JSON)

    complete(ask(remote(llm), idempotency_key="run-7:triage"))

    [received] = llm.requests
    assert received.headers["authorization"] == "Bearer test-key"
    assert received.headers["idempotency-key"] == "run-7:triage"
    assert received.body["model"] == "qwen2.5-7b-instruct"
    assert (received.body["temperature"], received.body["max_tokens"]) == (0.2, 300)
    assert received.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "triage", "schema": TRIAGE_SCHEMA, "strict": True},
    }
    assert [m["role"] for m in received.body["messages"]] == ["system", "user"]
    assert received.user_prompt.endswith("Refund order #4512")


def test_a_server_without_json_schema_support_gets_a_json_object_request(llm):
    llm.rejected_formats = {"json_schema"}
    llm.script(TRIAGE_JSON)

    reply = complete(ask(remote(llm), idempotency_key="run-7:triage"))

    assert reply.output["intent"] == "refund"
    assert [r.body["response_format"]["type"] for r in llm.requests] == ["json_schema", "json_object"]
    assert [r.headers["idempotency-key"] for r in llm.requests] == [
        "run-7:triage",
        "run-7:triage:json_object",
    ]


def test_the_api_key_can_come_from_a_file(llm, monkeypatch, tmp_path):
    key_file = tmp_path / "llm-key"
    key_file.write_text("test-key\n")
    monkeypatch.delenv(KEY_ENV)
    monkeypatch.setenv(f"{KEY_ENV}_FILE", str(key_file))
    llm.script(TRIAGE_JSON)

    complete(ask(remote(llm)))

    assert llm.requests[0].headers["authorization"] == "Bearer test-key"


def test_a_missing_api_key_is_a_config_error_without_any_call(llm, monkeypatch):
    monkeypatch.delenv(KEY_ENV)

    with pytest.raises(ProviderConfigError, match=KEY_ENV) as caught:
        complete(ask(remote(llm)))

    assert caught.value.retryable is False
    assert llm.requests == []


def test_a_key_variable_outside_the_model_key_prefix_is_never_read_or_sent(llm, monkeypatch):
    # A config published before the prefix was required must not hand a worker's secrets out.
    monkeypatch.setenv("SECRET_KEY", "the-deployment-secret")

    with pytest.raises(ProviderConfigError, match="MODEL_API_KEY_") as caught:
        complete(ask(remote(llm, api_key_env="SECRET_KEY")))

    assert "the-deployment-secret" not in str(caught.value)
    assert llm.requests == []


def test_a_refused_key_is_a_config_error_that_does_not_echo_the_key(llm, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "wrong-key")

    with pytest.raises(ProviderConfigError, match="401") as caught:
        complete(ask(remote(llm)))

    assert "wrong-key" not in str(caught.value)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_overload_and_server_errors_are_retryable_provider_errors(llm, status):
    llm.script(status)

    with pytest.raises(ProviderError, match=str(status)) as caught:
        complete(ask(remote(llm)))

    assert type(caught.value) is ProviderError and caught.value.retryable
    assert caught.value.config_name == "local-vllm"


def test_a_slow_server_times_out_as_a_provider_error(llm):
    llm.script(Reply(TRIAGE_JSON, delay_s=3))
    started = time.monotonic()

    with pytest.raises(ProviderError, match=r"did not answer within 0\.2s"):
        complete(ask(remote(llm, timeout_s=0.2)))

    assert time.monotonic() - started < 2


def test_an_unreachable_server_is_a_provider_error(api_key):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = {"provider": "openai_compatible", "model": "m", "base_url": f"http://127.0.0.1:{port}/v1"}

    with pytest.raises(ProviderError, match="cannot reach"):
        complete(ask(config))


def test_a_malformed_reply_carries_its_text_and_the_repair_request_says_what_was_wrong(llm):
    llm.script("I think this is a refund, with high confidence.", TRIAGE_JSON)
    request = ask(remote(llm), idempotency_key="run-7:triage")

    with pytest.raises(MalformedOutput) as caught:
        complete(request)
    error = caught.value
    assert error.raw_text == "I think this is a refund, with high confidence."
    assert error.problem == "the reply contains no JSON object"
    assert error.retryable and error.config_name == "local-vllm"

    repaired = repair_request(request, error.raw_text, error.problem)
    assert repaired.prompt.startswith(request.prompt)
    assert error.problem in repaired.prompt and error.raw_text in repaired.prompt
    assert repaired.idempotency_key == "run-7:triage:repair"
    assert complete(repaired).output["intent"] == "refund"
    assert error.problem in llm.requests[-1].user_prompt


# --- fallback chain ------------------------------------------------------------------------------


def test_a_failing_config_falls_back_to_the_next(llm):
    llm.script(500)
    with FakeLLM(api_key="test-key") as second:
        second.script(TRIAGE_JSON)

        reply = complete_with_fallback(
            [ask(remote(llm), name="primary"), ask(remote(second), name="secondary")]
        )

    assert reply.config_name == "secondary" and reply.fallbacks == ("primary",)
    assert reply.output["intent"] == "refund"


def test_the_chain_can_end_on_the_builtin_provider(llm):
    llm.script(503)

    reply = complete_with_fallback([ask(remote(llm), name="local-vllm"), ask(BUILTIN, name="builtin-small")])

    assert (reply.provider, reply.fallbacks) == ("builtin", ("local-vllm",))


def test_a_malformed_reply_is_not_fallen_back_from(llm):
    llm.script("no idea")

    with pytest.raises(MalformedOutput):
        complete_with_fallback([ask(remote(llm), name="primary"), ask(BUILTIN, name="builtin-small")])


def test_when_every_config_fails_the_last_error_is_raised(llm):
    llm.script(500, 502)
    chain = [ask(remote(llm), name="primary"), ask(remote(llm, model="other"), name="secondary")]

    with pytest.raises(ProviderError, match="502") as caught:
        complete_with_fallback(chain)

    assert caught.value.config_name == "secondary"


# --- circuit breaker -----------------------------------------------------------------------------


@pytest.fixture
def fast_circuit(settings):
    settings.REDIS_URL = ""
    settings.MODEL_CIRCUIT_FAILURES = 3
    settings.MODEL_CIRCUIT_RESET_SECONDS = 0.2
    return settings


def test_the_circuit_opens_after_consecutive_failures_and_closes_after_a_good_probe(llm, fast_circuit):
    config = remote(llm)
    key = breaker.endpoint_key(config)
    llm.script(500, 500, 500)
    for _ in range(3):
        with pytest.raises(ProviderError, match="500"):
            complete(ask(config))
    assert breaker.circuit_state(key) == "open"

    with pytest.raises(ProviderError, match="circuit open"):
        complete(ask(config))
    assert len(llm.requests) == 3  # failed fast

    time.sleep(0.3)
    llm.script(TRIAGE_JSON)
    assert complete(ask(config)).output["intent"] == "refund"
    assert len(llm.requests) == 4
    assert breaker.circuit_state(key) == "closed"


def test_a_failed_probe_opens_the_circuit_again(llm, fast_circuit):
    config = remote(llm)
    llm.script(500, 500, 500, 500)
    for _ in range(3):
        with pytest.raises(ProviderError):
            complete(ask(config))
    time.sleep(0.3)

    with pytest.raises(ProviderError, match="500"):
        complete(ask(config))
    with pytest.raises(ProviderError, match="circuit open"):
        complete(ask(config))

    assert len(llm.requests) == 4
    assert breaker.circuit_state(breaker.endpoint_key(config)) == "open"


def test_malformed_replies_and_config_errors_do_not_open_the_circuit(llm, fast_circuit, monkeypatch):
    config = remote(llm)
    llm.script("nope", "still nope", "never JSON")
    for _ in range(3):
        with pytest.raises(MalformedOutput):
            complete(ask(config))
    monkeypatch.setenv(KEY_ENV, "wrong-key")
    for _ in range(3):
        with pytest.raises(ProviderConfigError):
            complete(ask(config))

    assert breaker.circuit_state(breaker.endpoint_key(config)) == "closed"


@pytest.fixture
def redis_url(tmp_path):
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_circuit_state_is_shared_through_redis(llm, settings, redis_url):
    settings.REDIS_URL = redis_url
    settings.MODEL_CIRCUIT_FAILURES = 2
    config = remote(llm)
    key = breaker.endpoint_key(config)
    llm.script(500, 500)
    for _ in range(2):
        with pytest.raises(ProviderError):
            complete(ask(config))

    breaker._breakers.pop(key)  # what another worker process starts from
    assert breaker.circuit_state(key) == "open"
    with pytest.raises(ProviderError, match="circuit open"):
        complete(ask(config))
    assert len(llm.requests) == 2


# --- builtin provider ----------------------------------------------------------------------------


def test_the_builtin_provider_is_deterministic():
    request = ask(BUILTIN, text="Please refund order #4512, I was charged twice: $600.")

    assert builtin.complete(request) == builtin.complete(request)
    first, second = complete(request), complete(request)
    assert (first.output, first.raw_text, first.prompt_tokens) == (
        second.output,
        second.raw_text,
        second.prompt_tokens,
    )
    assert first.prompt_tokens == len(request.prompt) // 4
    assert first.cost_usd == 0.0


def test_different_texts_get_different_classifications():
    intents = {
        text: complete(ask(BUILTIN, text=text)).output["intent"]
        for text in ("I want my money back", "The app is down since noon", "How do I export my invoices?")
    }

    assert list(intents.values()) == ["refund", "incident", "question"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Please refund order #4512, I was charged twice: $600.",
            {"intent": "refund", "refund_amount": 600, "order_id": "4512", "next": "retrieve"},
        ),
        ("I want a refund of 750 for my subscription", {"intent": "refund", "refund_amount": 750}),
        ("The dashboard is down and shows an error", {"intent": "incident", "refund_amount": 0}),
        ("Hi, something seems off with my account", {"intent": "question", "next": "retrieve"}),
        ("Let me speak to a person about a refund, 300 EUR", {"refund_amount": 300, "next": "human"}),
        (
            "Order 88123: I want 1,299.50 USD back, reimburse me",
            {"refund_amount": 1299.5, "order_id": "88123"},
        ),
    ],
)
def test_triage_extracts_intent_amount_order_and_route(text, expected):
    output = complete(ask(BUILTIN, text=text, output_schema=None)).output

    assert {key: output[key] for key in expected} == expected


def test_triage_confidence_is_high_for_explicit_requests_and_low_for_vague_ones():
    def confidence(text: str) -> float:
        return complete(ask(BUILTIN, text=text)).output["confidence"]

    assert confidence("Please refund order #4512") >= 0.9
    assert confidence("Refund order 4512, I was charged twice") >= 0.9
    assert confidence("Hi, something seems off with my account") < 0.85
    assert confidence("I want a refund, also the app crashes") < 0.85


def test_draft_reply_cites_the_articles_and_passes_the_policy_check():
    draft = complete(
        ModelRequest(
            config_name="builtin-small",
            config=BUILTIN,
            purpose="draft_reply",
            prompt="Write a reply to the customer about refund",
            variables={"intent": "refund", "articles": [{"title": "Refund policy"}, "Billing cycles"]},
            output_schema={
                "type": "object",
                "required": ["reply"],
                "properties": {"reply": {"type": "string"}},
            },
        )
    ).output
    assert "refund" in draft["reply"] and "Refund policy; Billing cycles" in draft["reply"]
    assert draft["cited_articles"] == ["Refund policy", "Billing cycles"]

    check = complete(
        ModelRequest("builtin-small", BUILTIN, "policy_check", "Score", {"reply": draft["reply"]}, None)
    ).output
    assert check == {"score": 0.95, "issues": []}


def test_policy_check_penalises_promises():
    reply = "We guarantee you will always get your money back."

    check = complete(ModelRequest("builtin-small", BUILTIN, "policy_check", reply, {}, None)).output

    assert check["score"] == pytest.approx(0.6)
    assert check["issues"] == ['promises an outcome ("guarantee")', 'makes an absolute claim ("always")']


def test_unknown_purposes_get_typed_defaults_for_the_required_properties():
    schema = {
        "type": "object",
        "required": ["summary", "count", "tags", "urgent", "level", "meta"],
        "properties": {
            "summary": {"type": "string"},
            "count": {"type": "integer", "minimum": 1},
            "tags": {"type": "array"},
            "urgent": {"type": "boolean"},
            "level": {"enum": ["low", "high"]},
            "meta": {"type": "object", "required": ["source"], "properties": {"source": {"type": "string"}}},
        },
    }

    output = complete(ModelRequest("builtin-small", BUILTIN, "summarise", "Summarise", {}, schema)).output

    assert output == {
        "summary": "",
        "count": 1,
        "tags": [],
        "urgent": False,
        "level": "low",
        "meta": {"source": ""},
    }


def test_builtin_output_is_fitted_to_a_closed_schema_or_refused():
    closed = TRIAGE_SCHEMA | {"additionalProperties": False}
    assert set(complete(ask(BUILTIN, output_schema=closed)).output) == {"intent", "confidence"}

    impossible = {"type": "object", "required": ["intent"], "properties": {"intent": {"const": "billing"}}}
    with pytest.raises(ProviderConfigError, match="cannot satisfy"):
        complete(ask(BUILTIN, output_schema=impossible))


def test_an_unknown_provider_is_a_config_error():
    with pytest.raises(ProviderConfigError, match="unknown model provider"):
        complete(ask({"provider": "carrier-pigeon", "model": "m"}))
