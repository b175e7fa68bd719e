"""Chaos at full size: 200 runs, at least 50 workers killed with SIGKILL, one Redis restart.

Runs of a 4-step released workflow (two HTTP write effects each, against a loopback tool
server that counts real effects; for a fifth of them the charge is refused and the run
compensates its reservation) execute on two real Celery workers; a busy worker is
SIGKILLed (parent and prefork child) at a random point every 0.5-2 s and replaced, and the
broker is killed and restarted halfway through. This process sweeps expired leases every
second, as beat would. The harness is `tests/chaos/support.py`; `tests/chaos` runs it small.

Targets (issue "Run engine"): runs lost 0, duplicate effects 0, runs stuck after the sweeper
interval 0. Prints the figures, throughput and elapsed time, the headline last; exits 1 when
a target is missed.

Needs PostgreSQL (a throwaway database `baton_chaos_<pid>` is created on the server of
CHAOS_POSTGRES_URL, else DATABASE_URL if it is PostgreSQL, else postgres://postgres@127.0.0.1:5432,
migrated, and dropped at the end) and `redis-server` on PATH (a private instance on a free
port: the shared Redis is never touched).

    .venv/bin/python bench/chaos.py [--runs 200] [--kills 50] [--workers 2] [--seed N]
"""

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from _databases import create_database, drop_database, postgres_url

ROOT = Path(__file__).resolve().parent.parent
LEASE_S = 2
SWEEP_INTERVAL_S = 1
SERVER = os.environ.get("CHAOS_POSTGRES_URL")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-active", type=int, default=8, help="runs queued or running at once")
    parser.add_argument(
        "--refused-share", type=float, default=0.2, help="share of runs whose charge is refused (saga)"
    )
    parser.add_argument("--no-redis-restart", action="store_true")
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker logs even on success")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-ups below
    log_dir = Path(tempfile.mkdtemp(prefix="baton-chaos-"))
    database = f"baton_chaos_{os.getpid()}"
    redis_port = free_port()
    queue = f"baton-chaos-{os.getpid()}"
    database_url = postgres_url(database, SERVER)
    os.environ.update(
        DATABASE_URL=database_url,
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        CELERY_QUEUE=queue,
        RUN_LEASE_SECONDS=str(LEASE_S),
        RUN_SWEEP_INTERVAL_SECONDS=str(SWEEP_INTERVAL_S),
        RUN_RETRY_BACKOFF_SECONDS="0.1",
    )
    redis = tool_server = None
    ok = False
    try:
        print(f"seed {seed}; database {database}; redis port {redis_port}; logs {log_dir}", flush=True)
        create_database(database, SERVER)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=os.environ,
            check=True,
        )

        import _setup  # noqa: F401  (Django set-up, with the environment above)
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group

        from controlplane.identity import PLATFORM
        from tests.chaos.support import (
            Chaos,
            ChaosPlan,
            PrivateRedis,
            SlowToolServer,
            apply_chaos_bundle,
            worker_env,
        )

        redis = PrivateRedis(log_dir, port=redis_port).start()
        tool_server = SlowToolServer(max_delay_s=0.5, seed=seed).start()
        users = get_user_model().objects
        platform = users.create_user(username="chaos-platform")
        platform.groups.set([Group.objects.get(name=PLATFORM)])
        requester = users.create_user(username="chaos-requester")
        apply_chaos_bundle(tool_server.url, author=platform)

        plan = ChaosPlan(
            runs=args.runs,
            kills=args.kills,
            workers=args.workers,
            max_active=args.max_active,
            refused_share=args.refused_share,
            redis_restart=not args.no_redis_restart,
            lease_s=LEASE_S,
            sweep_interval_s=SWEEP_INTERVAL_S,
            kill_gap_s=(0.5, 2.0),
            drain_timeout_s=120,
            timeout_s=1800,
            seed=seed,
        )
        env = worker_env(database_url=database_url, queue=queue, lease_s=LEASE_S, redis_url=redis.url)
        chaos = Chaos(
            plan,
            requester=requester,
            tool_server=tool_server,
            env=env,
            queue=queue,
            log_dir=log_dir,
            redis=redis,
            log=lambda line: print(f"  {line}", flush=True),
        )
        report = chaos.run()
        ok = report.ok and report.kills >= args.kills and report.redis_restarts >= plan.redis_restart
        print(*report.lines(), sep="\n")
        print(report.headline(), flush=True)
        return 0 if ok else 1
    finally:
        if tool_server is not None:
            tool_server.stop()
        if redis is not None:
            redis.stop()
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        drop_database(database, SERVER)
        if ok and not args.keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)
        else:
            print(f"worker logs kept in {log_dir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
