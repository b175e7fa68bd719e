"""Workers killed with SIGKILL at random points lose no run, repeat no effect, strand nothing.

CI size: 8 runs of a 4-step workflow (two HTTP write effects each; for about a quarter of
them the charge is refused and the run compensates its reservation) on two real Celery
workers, 3 of which are SIGKILLed mid-run (parent and prefork child) and replaced; the test
process sweeps expired leases every second, as beat would. The full size (200 runs, at
least 50 kills and a Redis restart) is `bench/chaos.py`. Set CHAOS_SEED to replay a run.
"""

import os
import random

import pytest
from django.conf import settings as django_settings
from django.db import connection

from tests.support.worker import database_url

from .support import Chaos, ChaosPlan, SlowToolServer, apply_chaos_bundle, forget_unacked, worker_env

pytestmark = [
    pytest.mark.worker,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="SIGKILL chaos is only meaningful on PostgreSQL"
    ),
]

LEASE_S = 2
SWEEP_INTERVAL_S = 1


@pytest.fixture
def tool_server():
    server = SlowToolServer(max_delay_s=0.5).start()
    yield server
    server.stop()


@pytest.mark.timeout(150)
def test_sigkilled_workers_lose_no_run_repeat_no_effect_and_strand_nothing(
    committed_db, isolated_celery_queue, tmp_path, platform_user, requester, tool_server, settings
):
    settings.RUN_LEASE_SECONDS = LEASE_S
    settings.RUN_SWEEP_INTERVAL_SECONDS = SWEEP_INTERVAL_S
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(1 << 32))
    plan = ChaosPlan(
        runs=16,
        kills=3,
        workers=2,
        max_active=4,
        refused_share=0.25,
        lease_s=LEASE_S,
        sweep_interval_s=SWEEP_INTERVAL_S,
        kill_gap_s=(0.3, 1.0),
        drain_timeout_s=30,
        timeout_s=80,
        seed=seed,
    )
    apply_chaos_bundle(tool_server.url, author=platform_user)
    env = worker_env(
        database_url=database_url(connection.settings_dict), queue=isolated_celery_queue, lease_s=LEASE_S
    )
    chaos = Chaos(
        plan,
        requester=requester,
        tool_server=tool_server,
        env=env,
        queue=isolated_celery_queue,
        log_dir=tmp_path,
        log=print,
    )
    try:
        report = chaos.run()
    finally:
        if django_settings.REDIS_URL:
            forget_unacked(django_settings.REDIS_URL, isolated_celery_queue)

    print(f"\nCHAOS_SEED={seed}", *report.lines(), report.headline(), sep="\n")
    logs = f"seed {seed}; worker logs: {', '.join(map(str, report.worker_logs))}"
    assert report.kills >= 2, logs
    assert report.submitted == plan.runs, logs
    assert report.lost == 0, logs
    assert report.duplicate_effects == 0, logs
    assert report.stuck == 0, logs
    assert (report.missing_effects, report.unplanned_effects, report.ledger_mismatches) == (0, 0, 0), logs
    assert report.succeeded + report.compensated == plan.runs, logs
    assert report.audit_ok, logs
