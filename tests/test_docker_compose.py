"""docker-compose.yml and the Dockerfile agree with what the settings read.

Static checks only: nothing here starts a container or touches the database.
"""

import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import environ
import opentelemetry.environment_variables
import opentelemetry.sdk.environment_variables
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
APP_SERVICES = ("web", "worker", "beat")

# Names read through django-environ (env("X"), env.str("X"), env.db("X"), ...), through
# the settings' secret("X") helper (which also reads X_FILE), or straight from os.environ.
_ENV_CALL = re.compile(r"""\benv(?:\.[a-z_]+)?\(\s*["']([A-Z][A-Z0-9_]*)["']""")
_SECRET_CALL = re.compile(r"""\bsecret\(\s*["']([A-Z][A-Z0-9_]*)["']""")
_OS_ENVIRON = re.compile(r"""\bos\.(?:environ\.get\(|environ\[|getenv\()\s*["']([A-Z][A-Z0-9_]*)["']""")


def _load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _service(name: str) -> dict:
    return _load_compose()["services"][name]


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return env


def _argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def _shell_steps(command: str | list[str]) -> list[list[str]]:
    """The `&&`-separated steps of a `sh -c "..."` command, each as argv."""
    argv = _argv(command)
    assert argv[:2] == ["sh", "-c"], f"expected sh -c, got {argv}"
    steps = [shlex.split(step) for step in argv[2].split("&&")]
    return [step[1:] if step[:1] == ["exec"] else step for step in steps]


def _names_read(sources: list[Path]) -> set[str]:
    names = set()
    for source in sources:
        text = source.read_text()
        names.update(_ENV_CALL.findall(text))
        names.update(_OS_ENVIRON.findall(text))
        for name in _SECRET_CALL.findall(text):
            names.update({name, f"{name}_FILE"})
    return names


def _otel_names() -> set[str]:
    modules = (opentelemetry.environment_variables, opentelemetry.sdk.environment_variables)
    return {
        value
        for module in modules
        for value in vars(module).values()
        if isinstance(value, str) and value.startswith("OTEL_")
    }


def _allowed_env_names() -> set[str]:
    settings_names = _names_read(sorted((ROOT / "controlplane" / "settings").glob("*.py")))
    policy_names = _names_read(sorted((ROOT / "policy").glob("**/*.py")))
    opa_names = {name for name in settings_names | policy_names if name.startswith("OPA_")}
    return settings_names | opa_names | _otel_names()


def test_settings_scan_finds_the_core_names():
    """Guards the regexes: if they stop matching, the allow-list check below means nothing."""
    names = _names_read(sorted((ROOT / "controlplane" / "settings").glob("*.py")))
    expected = {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "SECRET_KEY_FILE", "BATON_ENV", "ALLOWED_HOSTS"}
    assert expected <= names


def test_services_are_exactly_the_stack():
    assert set(_load_compose()["services"]) == {"postgres", "redis", "opa", "jaeger", "web", "worker", "beat"}


def test_app_services_share_one_build_and_one_environment():
    services = [_service(name) for name in APP_SERVICES]
    builds = [service.get("build") for service in services]
    assert builds[0] is not None
    assert builds == [builds[0]] * len(builds)
    environments = [_environment(service) for service in services]
    assert environments == [environments[0]] * len(environments)


def test_web_migrates_then_runs_gunicorn():
    steps = _shell_steps(_service("web")["command"])
    migrate = steps[0]
    assert migrate[:3] == ["python", "manage.py", "migrate"]
    assert "--noinput" in migrate
    server = steps[-1]
    assert server[0] == "gunicorn"
    assert "controlplane.wsgi:application" in server
    assert "0.0.0.0:8000" in server


@pytest.mark.parametrize(
    ("service", "prefix"),
    [
        ("worker", ["celery", "-A", "controlplane", "worker"]),
        ("beat", ["celery", "-A", "controlplane", "beat"]),
    ],
)
def test_celery_commands(service, prefix):
    argv = _argv(_service(service)["command"])
    assert argv[: len(prefix)] == prefix


@pytest.mark.parametrize("service", APP_SERVICES)
def test_every_environment_name_is_read_by_the_settings(service):
    unknown = set(_environment(_service(service))) - _allowed_env_names()
    assert not unknown, f"{service} sets variables nothing reads: {sorted(unknown)}"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_required_environment_is_set(service):
    env = _environment(_service(service))
    required = {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "BATON_ENV", "ALLOWED_HOSTS"}
    assert required <= set(env)
    assert all(isinstance(value, str) for value in env.values()), "quote every value"
    assert env["BATON_ENV"] in {"development", "production"}


def test_secret_key_must_come_from_the_caller():
    secret_key = _environment(_service("web"))["SECRET_KEY"]
    assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", secret_key), secret_key


def test_database_url_points_at_the_postgres_service():
    postgres = _environment(_service("postgres"))
    url = _environment(_service("web"))["DATABASE_URL"]
    config = environ.Env.db_url_config(url)
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert config["HOST"] == "postgres"
    assert int(config["PORT"] or 5432) == 5432
    assert config["USER"] == postgres["POSTGRES_USER"]
    assert config["PASSWORD"] == postgres["POSTGRES_PASSWORD"]
    assert config["NAME"] == postgres["POSTGRES_DB"]


def test_redis_url_points_at_the_redis_service():
    url = urlsplit(_environment(_service("web"))["REDIS_URL"])
    assert url.scheme == "redis"
    assert url.hostname == "redis"
    assert (url.port or 6379) == 6379
    assert "redis-server" in _argv(_service("redis")["command"])


def test_redis_never_evicts_broker_messages():
    argv = _argv(_service("redis")["command"])
    assert argv[argv.index("--maxmemory-policy") + 1] == "noeviction"


def test_otel_endpoint_points_at_jaeger_otlp_http():
    url = urlsplit(_environment(_service("web"))["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert url.hostname == "jaeger"
    assert url.port == 4318
    jaeger_ports = [str(port) for port in _service("jaeger").get("ports", [])]
    assert any(port.endswith(":4318") for port in jaeger_ports)
    assert any(port.startswith("16686:") for port in jaeger_ports)


def test_opa_serves_a_policy_directory_from_the_repo():
    opa = _service("opa")
    argv = _argv(opa["command"])
    assert argv[:2] == ["run", "--server"]
    policy_path = argv[-1]
    mounts = [volume.split(":") for volume in opa["volumes"]]
    sources = [source for source, target, *_ in mounts if target == policy_path]
    assert sources, f"nothing is mounted at {policy_path}"
    source = (ROOT / sources[0]).resolve()
    assert source.is_dir(), f"{sources[0]} does not exist in the repo"
    assert source == (ROOT / "policy" / "bundles").resolve()


def test_app_services_wait_for_healthy_backends():
    compose = _load_compose()
    for name in APP_SERVICES:
        depends_on = compose["services"][name]["depends_on"]
        for backend in ("postgres", "redis"):
            assert depends_on[backend]["condition"] == "service_healthy"
            assert "healthcheck" in compose["services"][backend]


def test_dockerfile_installs_the_lock_and_runs_unprivileged():
    assert DOCKERFILE.is_file()
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert re.search(r"^COPY\s+requirements\.lock\b", text, re.MULTILINE)
    assert re.search(r"^RUN\s+pip install\b.*--no-cache-dir.*-r requirements\.lock", text, re.MULTILINE)
    assert re.search(r"collectstatic --noinput", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r"^EXPOSE\s+8000\b", text, re.MULTILINE)
    assert re.search(r"^CMD\s.*gunicorn.*controlplane\.wsgi:application", text, re.MULTILINE)


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", "var", ".git", "test-artifacts"} <= ignored
    assert ignored & {"__pycache__", "**/__pycache__"}


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_read_the_evidence_signing_key_from_a_secret(service):
    definition = _service(service)
    assert "evidence_signing_key" in definition["secrets"]
    assert _environment(definition)["EVIDENCE_SIGNING_KEY_FILE"] == "/run/secrets/evidence_signing_key"
    assert _load_compose()["secrets"]["evidence_signing_key"]["file"] == "./evidence_signing_key.pem"


def test_web_and_worker_share_the_evidence_export_volume():
    export_dir = _environment(_service("web"))["EVIDENCE_EXPORT_DIR"]
    for service in ("web", "worker"):
        assert f"evidence-exports:{export_dir}" in _service(service)["volumes"]
