"""Operator endpoints, configuration and the project's own consistency checks."""

import os
import subprocess

import pytest
from django.conf import settings
from django.core.management import call_command

from tests.support.keys import ed25519_pem
from tests.support.processes import python

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_auth(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_database_and_broker(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


def test_readyz_reports_an_unreachable_broker(client, settings):
    from controlplane.celery import app

    original = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"
    try:
        response = client.get("/readyz")
    finally:
        app.conf.broker_url = original
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "broker": "down"}


def test_openapi_schema_and_docs_are_served_to_users_without_a_cdn(client, requester, client_for):
    assert client.get("/api/schema/", HTTP_ACCEPT="application/json").status_code in (401, 403)
    assert client.get("/api/docs/").url == "/login/?next=/api/docs/"  # a page for people: sign in first
    assert client_for(requester).get("/api/schema/", HTTP_ACCEPT="application/json").status_code == 200
    client.force_login(requester)
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/api/v1/tasks", "/api/v1/runs/{id}", "/api/v1/runs/{id}/events", "/api/v1/audit/verify"} <= set(
        paths
    )
    docs = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in docs
    assert "cdn." not in docs and "unpkg" not in docs and "jsdelivr" not in docs


def test_migrations_match_the_models():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_system_checks_pass():
    call_command("check", fail_level="WARNING")


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "ALLOWED_HOSTS"}}
    return python("manage.py", *args, env=environment | env)


@pytest.mark.parametrize(
    "dotted_path",
    [
        "CSRF_FAILURE_VIEW",
        "REST_FRAMEWORK.EXCEPTION_HANDLER",
        "ROOT_URLCONF",
    ],
)
def test_modules_the_settings_name_import_first_in_a_fresh_process(dotted_path):
    # Django imports these by name in whatever order its checks and handlers run; a cycle
    # through DRF's settings fails only when one of them happens to be imported first.
    value = settings
    for part in dotted_path.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    module = value if dotted_path == "ROOT_URLCONF" else value.rpartition(".")[0]
    result = python(
        "-c",
        f"import django; django.setup(); import {module}",
        env=os.environ | {"DJANGO_SETTINGS_MODULE": "controlplane.settings"},
    )
    assert result.returncode == 0, result.stderr


def test_production_settings_pass_the_deploy_checks(tmp_path):
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        BATON_ENV="production",
        SECRET_KEY="x" * 20 + "-a-long-production-secret-key-with-variety-1234567890",
        ALLOWED_HOSTS="baton.example.org",
        DATABASE_URL=f"sqlite:///{tmp_path / 'baton.sqlite3'}",
        EVIDENCE_SIGNING_KEY=ed25519_pem(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key_or_hosts():
    no_key = _manage("check", BATON_ENV="production", ALLOWED_HOSTS="baton.example.org")
    assert no_key.returncode != 0
    assert "SECRET_KEY" in no_key.stderr
    no_hosts = _manage("check", BATON_ENV="production", SECRET_KEY="k" * 60)
    assert no_hosts.returncode != 0
    assert "ALLOWED_HOSTS" in no_hosts.stderr


def test_secret_key_can_come_from_a_file(tmp_path):
    key_file = tmp_path / "secret"
    key_file.write_text("from-a-file-" + "s" * 50)
    result = _manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.SECRET_KEY)",
        SECRET_KEY_FILE=str(key_file),
    )
    assert result.stdout.strip().endswith("from-a-file-" + "s" * 50)


def test_debug_is_off_unless_asked():
    assert settings.DEBUG is False


def test_the_sign_in_lifetime_is_configurable():
    result = _manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.SESSION_COOKIE_AGE)",
        SESSION_COOKIE_AGE="1800",
    )
    assert result.stdout.strip().endswith("1800")
