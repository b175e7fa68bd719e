"""Model and tool calls reach public addresses and OUTBOUND_ALLOWED_NETWORKS only: a platform
user's URL cannot make a worker call cloud metadata, Redis, the database or Baton itself."""

import ipaddress
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings as django_settings

from controlplane.outbound import permitted
from runs import tools
from runs.providers import ModelRequest, ProviderConfigError, complete
from runs.tools import ToolCall, ToolRejected
from tests.support.llm_server import FakeLLM

LOOPBACK_ONLY = ["127.0.0.0/8", "::1/128"]


def tool_call(url: str) -> ToolCall:
    spec = {
        "side_effect": "read",
        "args_schema": {"type": "object"},
        "result_schema": {"type": "object"},
        "transport": {"type": "http", "url": url},
    }
    return ToolCall(tool="probe", spec=spec, args={}, idempotency_key="key-1", timeout_s=5.0)


def model_request(base_url: str) -> ModelRequest:
    config = {"provider": "openai_compatible", "model": "m", "base_url": base_url, "timeout_s": 5}
    return ModelRequest(
        config_name="probe", config=config, purpose="probe", prompt="Say hi", variables={}, output_schema=None
    )


@pytest.fixture
def llm():
    with FakeLLM(api_key=None) as server:
        yield server


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",  # cloud metadata
        "fd00:ec2::254",  # cloud metadata over IPv6
        "100.100.100.200",  # another cloud's metadata (shared address space)
        "127.0.0.1",
        "::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",  # connects to this host
        "10.0.0.5",
        "172.16.0.5",
        "192.168.1.5",
        "fe80::1",
    ],
)
def test_inward_addresses_are_refused_unless_allowed(address, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    assert not permitted(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700::1111"])
def test_public_addresses_are_permitted(address, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    assert permitted(ipaddress.ip_address(address))


def test_an_allowed_network_is_permitted_and_only_it(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["10.20.0.0/16"]
    assert permitted(ipaddress.ip_address("10.20.3.4"))
    assert not permitted(ipaddress.ip_address("10.21.3.4"))
    assert not permitted(ipaddress.ip_address("169.254.169.254"))


def test_a_tool_call_to_a_loopback_service_sends_nothing(tool_server, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    call = tool_call(f"{tool_server.url}/update_case")

    with pytest.raises(ToolRejected, match="OUTBOUND_ALLOWED_NETWORKS") as refused:
        tools.invoke(call)
    with pytest.raises(ToolRejected, match="OUTBOUND_ALLOWED_NETWORKS"):
        tools.reconcile(call, None)

    assert not refused.value.retryable
    assert tool_server.requests == []


def test_a_name_that_resolves_to_loopback_is_refused_too(tool_server, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    port = tool_server.url.rsplit(":", 1)[1]

    with pytest.raises(ToolRejected, match=r"localhost \(127\.0\.0\.1\) is not"):
        tools.invoke(tool_call(f"http://localhost:{port}/update_case"))

    assert tool_server.requests == []


def test_an_allowed_loopback_network_is_called(tool_server, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]

    done = tools.invoke(tool_call(f"{tool_server.url}/update_case"))

    assert done.effect_id == "update_case:1"
    assert len(tool_server.requests) == 1


def test_a_model_call_to_a_loopback_service_sends_nothing(llm, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = []

    with pytest.raises(ProviderConfigError, match="OUTBOUND_ALLOWED_NETWORKS"):
        complete(model_request(llm.url))

    assert llm.requests == []


class _Redirector(BaseHTTPRequestHandler):
    """Answers every request with a redirect to `target` (an allowed endpoint standing for an
    internal service the redirect should not reach)."""

    target = ""

    def do_POST(self) -> None:
        self.send_response(307)
        self.send_header("Location", self.target + self.path.removeprefix("/v1"))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_a_model_endpoint_that_redirects_is_not_followed(llm, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = LOOPBACK_ONLY
    handler = type("Redirector", (_Redirector,), {"target": llm.url})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ProviderConfigError, match="answered 307"):
            complete(model_request(f"http://127.0.0.1:{server.server_address[1]}/v1"))
    finally:
        server.shutdown()
        server.server_close()

    assert llm.requests == []


def _setting_in_a_new_process(**env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in {"BATON_ENV", "OUTBOUND_ALLOWED_NETWORKS"}}
    environment |= {"DJANGO_SETTINGS_MODULE": "controlplane.settings", **env}
    code = "from django.conf import settings; print(settings.OUTBOUND_ALLOWED_NETWORKS)"
    return subprocess.run(
        [sys.executable, "-c", code],
        env=environment,
        cwd=django_settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_loopback_is_allowed_in_development_only_and_a_bad_network_stops_the_start():
    assert _setting_in_a_new_process().stdout.strip() == str(LOOPBACK_ONLY)
    production = _setting_in_a_new_process(
        BATON_ENV="production",
        SECRET_KEY="k" * 50,
        ALLOWED_HOSTS="baton.example.org",
        DATABASE_URL="postgres://baton@db:5432/baton",
        EVIDENCE_SIGNING_KEY="not read by this setting",
    )
    assert production.stdout.strip() == "[]", production.stderr
    refused = _setting_in_a_new_process(OUTBOUND_ALLOWED_NETWORKS="10.0.0.0/8,intranet")
    assert refused.returncode != 0
    assert "OUTBOUND_ALLOWED_NETWORKS must list networks such as" in refused.stderr
    assert "not 'intranet'" in refused.stderr


def test_a_call_through_the_operators_proxy_is_checked_before_it_leaves(tool_server, settings, monkeypatch):
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    asked = []
    handler = type("Proxy", (_Redirector,), {"do_POST": lambda self: asked.append(self.path)})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.setenv("NO_PROXY", "")
    try:
        with pytest.raises(ToolRejected, match="OUTBOUND_ALLOWED_NETWORKS"):
            tools.invoke(tool_call(f"{tool_server.url}/update_case"))
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert asked == [] and tool_server.requests == []
