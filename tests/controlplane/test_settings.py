"""Settings read from the environment: documented, strict, and safe behind a TLS terminator.

Each case starts a fresh process, as the settings are read once, when Django starts."""

import os
import re
import subprocess

import pytest
from django.conf import settings

from tests.support.keys import ed25519_pem
from tests.support.processes import python
from tests.support.settings_names import settings_names

# Variables a developer's shell or the test run may set, which would change what is checked.
_OVERRIDDEN = {"BATON_ENV", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "LOG_LEVEL", "DATABASE_URL"}


def production(tmp_path, **env: str) -> dict[str, str]:
    """What a production start needs, with `env` over it."""
    return {
        "BATON_ENV": "production",
        "SECRET_KEY": "a-long-production-secret-key-" + "k" * 40,
        "ALLOWED_HOSTS": "baton.example.org",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'baton.sqlite3'}",
        "EVIDENCE_SIGNING_KEY": ed25519_pem(),
        **env,
    }


def _python(code: str, tmp_path, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in _OVERRIDDEN}
    environment |= {"DJANGO_SETTINGS_MODULE": "controlplane.settings", "BATON_VAR_DIR": str(tmp_path)}
    return python("-c", code, env=environment | env)


def _setting(name: str, tmp_path, **env: str) -> str:
    result = _python(f"from django.conf import settings; print(settings.{name})", tmp_path, **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _refusal(tmp_path, **env: str) -> str:
    """The last line of what a process starting with `env` printed as it refused to."""
    result = _python("from django.conf import settings; settings.INSTALLED_APPS", tmp_path, **env)
    assert result.returncode != 0, f"started with {env}"
    return result.stderr.strip().splitlines()[-1]


def test_every_variable_the_settings_read_is_in_the_readme():
    readme = (settings.BASE_DIR / "README.md").read_text()
    configuration = readme[readme.index("## Configuration") : readme.index("### With PostgreSQL and Redis")]
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)`", configuration, re.MULTILINE))
    file_variants = set(re.findall(r"`([A-Z][A-Z0-9_]*)`", configuration.split("|", 1)[0]))
    read = {name for name in settings_names() if not name.endswith("_FILE")}
    assert read - documented == set(), "read but not documented"
    assert documented - read == set(), "documented but never read"
    takes_file = {name.removesuffix("_FILE") for name in settings_names() if name.endswith("_FILE")}
    assert takes_file == file_variants, "the names listed as also read from a file"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RUN_LEASE_SECONDS", "sixty", "RUN_LEASE_SECONDS must be a whole number, not 'sixty'"),
        ("POLICY_TIMEOUT_MS", "1.5", "POLICY_TIMEOUT_MS must be a whole number, not '1.5'"),
        ("RUN_TIME_SLICE_SECONDS", "5s", "RUN_TIME_SLICE_SECONDS must be a number, not '5s'"),
        ("DEBUG", "ture", "DEBUG must be true or false, not 'ture'"),
        ("RUN_SWEEP_INTERVAL_SECONDS", "0", "RUN_SWEEP_INTERVAL_SECONDS must be at least 1, not 0"),
        ("LOGIN_LOCKOUT_MINUTES", "-5", "LOGIN_LOCKOUT_MINUTES must be at least 1, not -5"),
        ("LOG_LEVEL", "VERBOSE", "LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not 'VERBOSE'"),
        ("OPA_URL", "opa:8181", "OPA_URL must be a URL with a host, starting with http:// or https://"),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "jaeger:4318",
            "OTEL_EXPORTER_OTLP_ENDPOINT must be a URL with a host",
        ),
        (
            "REDIS_URL",
            "127.0.0.1:6379",
            "REDIS_URL must be a URL with a host, starting with redis:// or rediss://",
        ),
        ("DATABASE_URL", "postgres//baton@db/baton", "DATABASE_URL must be postgres://user:password@host"),
        ("DATABASE_URL", "mysql://baton@db/baton", "DATABASE_URL must be postgres://user:password@host"),
        ("EMAIL_URL", "mail.example.org", "EMAIL_URL must be a mail URL"),
    ],
)
def test_a_value_that_cannot_be_used_stops_the_start_naming_its_variable(tmp_path, variable, value, message):
    assert _refusal(tmp_path, **{variable: value}).startswith(
        f"django.core.exceptions.ImproperlyConfigured: {message}"
    )


def test_a_url_that_cannot_be_used_is_described_not_quoted(tmp_path):
    refusal = _refusal(tmp_path, DATABASE_URL="postgres//baton:hunter2-db-password@db/baton")
    assert "DATABASE_URL" in refusal
    assert "hunter2" not in refusal


@pytest.mark.parametrize(
    ("value", "debug"), [("true", "True"), ("1", "True"), ("off", "False"), ("", "False")]
)
def test_booleans_take_the_usual_words(tmp_path, value, debug):
    assert _setting("DEBUG", tmp_path, DEBUG=value) == debug


def test_the_log_level_may_be_written_in_lower_case(tmp_path):
    assert _setting("LOGGING['root']['level']", tmp_path, LOG_LEVEL="debug") == "DEBUG"


def test_urls_that_hold_passwords_can_come_from_files(tmp_path):
    (tmp_path / "database_url").write_text("postgres://baton:db-password@db.internal:5432/baton\n")
    (tmp_path / "redis_url").write_text("rediss://:redis-password@redis.internal:6380/0\n")
    printed = _setting(
        "DATABASES['default']['HOST'], settings.DATABASES['default']['PASSWORD'], settings.CELERY_BROKER_URL",
        tmp_path,
        DATABASE_URL_FILE=str(tmp_path / "database_url"),
        REDIS_URL_FILE=str(tmp_path / "redis_url"),
    )
    assert printed == "db.internal db-password rediss://:redis-password@redis.internal:6380/0"


_PROBE = """
import django
django.setup()
from django.test import Client
client = Client()
for path in ("/healthz", "/readyz", "/login/"):
    print(path, client.get(path, HTTP_HOST="baton.example.org").status_code)
"""


def test_production_answers_health_probes_over_plain_http_and_redirects_everything_else(tmp_path):
    result = _python(_PROBE, tmp_path, **production(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["/healthz 200", "/readyz 200", "/login/ 301"]


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("DATABASE_URL", "DATABASE_URL (or DATABASE_URL_FILE) is required when BATON_ENV=production"),
        (
            "EVIDENCE_SIGNING_KEY",
            "EVIDENCE_SIGNING_KEY (or EVIDENCE_SIGNING_KEY_FILE) is required when BATON_ENV=production",
        ),
    ],
)
def test_production_will_not_start_without_its_database_or_its_signing_key(tmp_path, missing, message):
    assert _refusal(tmp_path, **production(tmp_path, **{missing: ""})).startswith(
        f"django.core.exceptions.ImproperlyConfigured: {message}"
    )


def test_a_signing_key_that_cannot_sign_stops_the_deployment_checks(tmp_path):
    environment = {k: v for k, v in os.environ.items() if k not in _OVERRIDDEN}
    production_env = production(tmp_path, EVIDENCE_SIGNING_KEY="not a key")
    checked = python(
        "manage.py", "check", env=environment | {"BATON_VAR_DIR": str(tmp_path)} | production_env
    )
    assert checked.returncode != 0
    assert "evidence.E001" in checked.stderr and "EVIDENCE_SIGNING_KEY must be" in checked.stderr
