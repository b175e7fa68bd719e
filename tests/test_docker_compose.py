"""docker-compose.yml and the Dockerfile agree with what the settings read.

Static checks only: nothing here starts a container or touches the database.
"""

import os
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import environ
import opentelemetry.environment_variables
import opentelemetry.sdk.environment_variables
import pytest
import yaml
from django.urls import resolve

from tests.support.processes import python
from tests.support.settings_names import names_read, settings_names

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
APP_SERVICES = ("migrate", "web", "worker", "beat")
LONG_RUNNING = ("web", "worker", "beat")


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


def _otel_names() -> set[str]:
    modules = (opentelemetry.environment_variables, opentelemetry.sdk.environment_variables)
    return {
        value
        for module in modules
        for value in vars(module).values()
        if isinstance(value, str) and value.startswith("OTEL_")
    }


def _allowed_env_names() -> set[str]:
    policy_names = names_read(sorted((ROOT / "policy").glob("**/*.py")))
    opa_names = {name for name in settings_names() | policy_names if name.startswith("OPA_")}
    return settings_names() | opa_names | _otel_names()


def test_settings_scan_finds_the_core_names():
    """Guards the regexes: if they stop matching, the allow-list check below means nothing."""
    read_plain = {"BATON_ENV", "ALLOWED_HOSTS", "OPA_URL"}
    read_from_files_too = {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "EMAIL_URL"}
    assert (
        read_plain | read_from_files_too | {f"{name}_FILE" for name in read_from_files_too}
        <= settings_names()
    )


def test_services_are_exactly_the_stack():
    assert set(_load_compose()["services"]) == {"postgres", "redis", "opa", "jaeger", *APP_SERVICES}


def test_app_services_share_one_build_and_one_environment():
    services = [_service(name) for name in APP_SERVICES]
    builds = [service.get("build") for service in services]
    assert builds[0] is not None
    assert builds == [builds[0]] * len(builds)
    environments = [_environment(service) for service in services]
    assert environments == [environments[0]] * len(environments)


def test_migrations_run_once_before_any_process_of_the_new_code_starts():
    migrate = _service("migrate")
    assert _argv(migrate["command"]) == ["python", "manage.py", "migrate", "--noinput"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate.get("restart", "no") == "no"
    for name in LONG_RUNNING:
        assert _service(name)["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert "migrate" not in _argv(_service(name)["command"]), f"{name} migrates on its own"


def test_web_runs_gunicorn_on_the_published_port():
    server = _argv(_service("web")["command"])
    assert server[0] == "gunicorn"
    assert "controlplane.wsgi:application" in server
    assert server[server.index("--bind") + 1] == "0.0.0.0:8000"
    assert "8000:8000" in _service("web")["ports"]


def test_web_is_healthy_when_readyz_answers_through_an_allowed_host():
    check = _service("web")["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"]
    probed = urlsplit(re.search(r"urlopen\('([^']+)'", check[3]).group(1))
    assert resolve(probed.path).url_name == "readyz"
    assert probed.port == 8000
    # Django answers 400 to a host it does not serve, and the probe sends the URL's host.
    assert probed.hostname in _environment(_service("web"))["ALLOWED_HOSTS"].split(",")


def test_worker_is_healthy_when_it_answers_a_ping_by_its_own_name():
    check = _service("worker")["healthcheck"]["test"]
    assert check[0] == "CMD-SHELL"
    argv = shlex.split(check[1])
    assert argv[:5] == ["celery", "-A", "controlplane", "inspect", "ping"]
    # Celery names a worker celery@<host name> unless told otherwise; $$ is compose's escape for $.
    assert argv[argv.index("--destination") + 1] == "celery@$$HOSTNAME"
    worker = _argv(_service("worker")["command"])
    assert not {"-n", "--hostname"} & set(worker)


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
def test_every_file_variable_names_a_secret_mounted_in_that_service(service):
    definition = _service(service)
    for name, path in _environment(definition).items():
        if name.endswith("_FILE"):
            secret = path.removeprefix("/run/secrets/")
            assert path == f"/run/secrets/{secret}", f"{name} reads {path}, not a compose secret"
            assert secret in definition.get("secrets", []), f"{service} reads {path} without mounting it"
            assert secret in _load_compose()["secrets"]


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
    for name in LONG_RUNNING:
        depends_on = compose["services"][name]["depends_on"]
        for backend in ("postgres", "redis"):
            assert depends_on[backend]["condition"] == "service_healthy"
            assert "healthcheck" in compose["services"][backend]


@pytest.mark.parametrize("service", ["postgres", "redis", "opa", "jaeger"])
def test_backing_images_are_pinned_below_the_major_version(service):
    name, _, tag = _service(service)["image"].partition(":")
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", tag), f"{name}:{tag} moves with every release"


def test_dockerfile_installs_the_lock_and_runs_unprivileged():
    assert DOCKERFILE.is_file()
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim-[a-z]+$", text, re.MULTILINE)
    assert re.search(r"^COPY\s+requirements\.lock\b", text, re.MULTILINE)
    assert re.search(r"^RUN\s+pip install\b.*--no-cache-dir.*-r requirements\.lock", text, re.MULTILINE)
    assert re.search(r"collectstatic --noinput", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r"^EXPOSE\s+8000\b", text, re.MULTILINE)
    assert re.search(r"^CMD\s.*gunicorn.*controlplane\.wsgi:application", text, re.MULTILINE)


def _dockerfile_instructions(keyword: str) -> list[str]:
    """The arguments of every `keyword` instruction, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.split(None, 1)[:1] == [keyword]]


def test_the_image_keeps_no_secret_in_its_environment():
    assignments = " ".join(_dockerfile_instructions("ENV"))
    baked = set(re.findall(r"([A-Z][A-Z0-9_]*)=", assignments))
    secrets = {name for name in settings_names() if f"{name}_FILE" in settings_names()}
    assert {"BATON_VAR_DIR", "STATIC_ROOT"} <= baked, "the ENV scan stopped matching"
    assert not baked & secrets, f"the image's environment sets {sorted(baked & secrets)}"


def test_volumes_of_the_app_are_directories_the_image_gives_its_user():
    """A named volume starts with the owner of the image's directory it is mounted on."""
    text = DOCKERFILE.read_text()
    user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)[-1]
    owned = {
        path for paths in re.findall(rf"chown\s+{user}:{user}\s+([^\n&]+)", text) for path in paths.split()
    }
    for name in LONG_RUNNING:
        for volume in _service(name).get("volumes", []):
            target = volume.split(":")[1]
            assert target in owned, f"{name} mounts {target}, which the image does not give to {user}"


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", "var", ".git", "test-artifacts", ".env", "*.pem"} <= ignored  # and secrets
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


def test_the_images_build_step_satisfies_the_production_settings(tmp_path):
    """collectstatic runs under production settings while the image is built: the variables the
    Dockerfile gives that step must be enough for them (as `docker build` would find out)."""
    step = re.search(
        r"^RUN (BATON_ENV=production.*?collectstatic --noinput)", DOCKERFILE.read_text(), re.M | re.S
    )
    build_args = dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE))
    given = {
        name: re.sub(r"\$\{(\w+)\}", lambda arg: build_args[arg[1]], value.strip('"'))
        for name, value in re.findall(r"(\w+)=(\S+)", step[1])
    }
    environment = {k: v for k, v in os.environ.items() if k not in settings_names()} | given
    environment["BATON_VAR_DIR"] = str(tmp_path)  # where the step's own files go
    collected = python("manage.py", "collectstatic", "--noinput", "--dry-run", env=environment, timeout=120)
    assert collected.returncode == 0, collected.stderr[-2000:]
