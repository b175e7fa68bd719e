"""Personas, API clients and a real Celery worker process for the test suite."""

import copy
import gc
import socket
import time
import uuid
import warnings
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from controlplane.celery import app as celery_app
from controlplane.identity import ADMIN, AUDITOR, PLATFORM, REVIEWER, Actor, actor_for, api_key_issue
from registry.services.bundles import bundle_apply, load_bundle_file
from runs.models import Run
from runs.services import task_submit

from .factories import UserFactory
from .support.tool_server import ToolServer
from .support.worker import WorkerProcess
from .support.workflows import TEXT, TOOL_AGENT

PASSWORD = "correct-horse-battery"
SUPPORT_BUNDLE = Path(settings.BASE_DIR) / "demo" / "bundles" / "support_case_resolution.yaml"


@pytest.fixture(scope="session", autouse=True)
def isolated_celery_queue():
    """A queue of our own, so no message from another run (or a dev instance) reaches our workers."""
    queue = f"baton-test-{uuid.uuid4().hex[:8]}"
    celery_app.conf.task_default_queue = queue
    yield queue
    with celery_app.connection_for_write() as broker:
        broker.default_channel.queue_purge(queue)


@pytest.fixture
def broker_down():
    """The Celery app sends to a broker nobody listens on (a closed local port) for one test."""

    def use(url: str) -> None:
        celery_app.conf.broker_url = url
        celery_app._pool = None  # the connection and producer pools are made anew from the URL
        celery_app.amqp._producer_pool = None

    working = celery_app.conf.broker_url
    with socket.socket() as probe:  # a port just freed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    use(f"redis://127.0.0.1:{closed_port}/0")
    yield
    celery_app.pool.force_close_all()
    use(working)


@pytest.fixture(scope="session", autouse=True)
def test_database_left_alone(django_db_setup, django_db_blocker):
    """Before the test database is dropped: the backends of worker processes stopped moments ago
    may still be exiting, and PostgreSQL refuses to drop a database in use. Wait for them (a
    few seconds at most), and name any session that stays, so that a leak shows where it is."""
    yield
    if connection.vendor != "postgresql":
        return
    # A test's caught exception (pytest.raises) and its frame make a reference cycle that can hold
    # an HTTP client's socket open until the collector runs, and with it a live server thread
    # waiting for the next request on that connection, and that thread's database session.
    gc.collect()
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        deadline = time.monotonic() + 10
        while True:
            cursor.execute(
                "SELECT pid, application_name, state, left(query, 80) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            others = cursor.fetchall()
            if not others or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    for session in others:
        warnings.warn(f"a session outlived the tests: {session}", stacklevel=1)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def requester(db):
    return UserFactory(username="requester")


@pytest.fixture
def reviewer(db):
    return UserFactory(username="reviewer", roles=[REVIEWER])


@pytest.fixture
def platform_user(db):
    return UserFactory(username="platform", roles=[PLATFORM])


@pytest.fixture
def auditor(db):
    return UserFactory(username="auditor", roles=[AUDITOR])


@pytest.fixture
def admin_user(db):
    return UserFactory(username="admin", roles=[ADMIN])


@pytest.fixture
def outsider(db):
    return UserFactory(username="outsider")


@pytest.fixture
def signed_in(client):
    """The test client, signed in as the given user (a browser session)."""

    def sign_in(user):
        client.force_login(user)
        return client

    return sign_in


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def client_for():
    """An API client authenticated with a fresh API key of `user` carrying `scopes`."""

    def make(user, scopes=("tasks:write", "runs:read")) -> APIClient:
        issued = api_key_issue(user=user, name="test", scopes=scopes, issued_by=Actor("tests", kind="system"))
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
        return client

    return make


@pytest.fixture
def committed_db(transactional_db):
    """Data committed for real, visible to other processes (a worker) and other connections."""


@pytest.fixture
def worker(committed_db, isolated_celery_queue, tmp_path):
    """A real Celery worker process on the test database and our queue."""
    process = WorkerProcess(connection.settings_dict, queue=isolated_celery_queue, log_dir=tmp_path)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def support_bundle() -> dict:
    return load_bundle_file(SUPPORT_BUNDLE)


@pytest.fixture
def demo_registry(platform_user, support_bundle):
    """The support workflow's teams, agents, artifacts and first release (on staging), by platform."""
    return bundle_apply(bundle=support_bundle, author=platform_user, actor=actor_for(platform_user))


@pytest.fixture
def tool_server():
    """The loopback HTTP tool server: counts effects, honours idempotency keys, injects faults."""
    server = ToolServer().start()
    yield server
    server.stop()


@pytest.fixture
def publish(platform_user, support_bundle):
    """Apply one workflow (plus the tools, prompts and model configs it needs) onto the demo
    bundle and promote its release to staging; the tools are granted to `ops_agent`."""

    def apply(definition: dict, *, bindings=None, tools=None, prompts=None, model_configs=None) -> str:
        bundle = copy.deepcopy(support_bundle)
        artifacts = bundle["artifacts"]
        artifacts["tool"].update(tools or {})
        artifacts["prompt"].update(prompts or {})
        artifacts["model_config"].update(model_configs or {})
        if tools:
            granted = [{"tool": name, "scope": spec["side_effect"]} for name, spec in tools.items()]
            bundle["agents"].append({**TOOL_AGENT, "allowed_tools": granted})
        bundle["workflows"] = {definition["workflow"]: definition}
        bundle["releases"] = [
            {
                "workflow": definition["workflow"],
                "policy_bundle": "default",
                "agents": bindings or {},
                "channels": ["staging"],
            }
        ]
        report = bundle_apply(bundle=bundle, author=platform_user, actor=actor_for(platform_user))
        return report.releases[0]

    return apply


@pytest.fixture
def submit(requester):
    """Submit a task to a workflow's staging channel as the requester."""

    def submit_task(workflow: str, task_input: dict = TEXT, case_id: str = "CASE-42", **extra) -> Run:
        return task_submit(
            requester=requester,
            actor=actor_for(requester),
            workflow=workflow,
            case_id=case_id,
            input=task_input,
            channel="staging",
            **extra,
        ).run

    return submit_task
