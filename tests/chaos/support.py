"""Chaos harness: real Celery workers killed with SIGKILL at random points while runs execute.

Shared by `tests/chaos/test_chaos.py` (CI size) and `bench/chaos.py` (full size).

The runs follow a released workflow (`chaos_bundle`) whose two write steps call a loopback
HTTP system of record (`SlowToolServer`): it applies at most one effect per idempotency key,
holds every request back a random 0-300 ms (part before the effect, part after it, so a kill
lands before, during or after a real effect), and remembers every key that made an effect
with the case it was for. The same logical effect (operation, case) made under two keys is
a duplicate effect; a replay of a known key is not. For a share of the runs the ledger
refuses the charge, so those runs fail and compensate their reservation (saga) and must end
`compensated`; kills aim at those compensations too.

`Chaos` submits the runs, sweeps expired leases itself (standing in for beat), SIGKILLs the
whole process group of a busy worker (the prefork parent and its child) a random moment
after it picked up a step, starts a replacement, and, given a `PrivateRedis`, restarts the
broker once mid-run. It reports:

- lost: submitted runs that ended in another status than planned (`succeeded`, or
  `compensated` for a refused charge), or vanished;
- duplicate effects: effects beyond the first per (operation, case) at the tool server
  (besides, no planned effect may be missing and no unplanned one made);
- stuck: runs still queued, running or compensating once the run set had its time to
  drain after the last kill, and after one more lease and sweeper interval.
"""

import contextlib
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from django.conf import settings
from kombu.exceptions import OperationalError as BrokerError
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from controlplane.audit import verify_chain
from controlplane.identity import actor_for
from registry.services.bundles import bundle_apply, load_bundle_file
from runs.models import Effect, Run, StepCheckpoint
from runs.services import runs_sweep_expired_leases, task_submit
from tests.support.tool_server import Request, ToolServer, _Fault

DEMO_BUNDLE = Path(settings.BASE_DIR) / "demo" / "bundles" / "support_case_resolution.yaml"
WORKFLOW = "chaos_ledger"
AGENT = "ledger_clerk"
OPERATIONS = ("reserve", "charge")  # the effects every run makes once, in this order
# For a share of the runs the ledger refuses the charge: the run fails and compensates its
# reservation (saga), and must end `compensated` with one reserve and one release.
REFUSED_OPERATION = "charge"
COMPENSATED_OPERATIONS = ("reserve", "release")
READY_TIMEOUT_S = 60
# Where kills aim: (state, only while its tool call is on the wire); "compensating" is a run
# undoing its reservation after a refused charge.
KILL_TARGETS = (
    ("screen", False),
    ("reserve", False),
    ("reserve", True),
    ("review", False),
    ("charge", False),
    ("charge", True),
)
COMPENSATION_KILL_TARGETS = (("compensating", False), ("compensating", True))
UNSETTLED = (*Run.ACTIVE_STATUSES, Run.Status.COMPENSATING)

# Broker trouble seen by a publisher while Redis restarts; the run or the lease is committed.
BROKER_ERRORS = (BrokerError, OSError, RedisConnectionError, RedisTimeoutError)


# --- The system of record ------------------------------------------------------------------


class SlowToolServer(ToolServer):
    """The loopback tool server, with a random delay on every POST and effects by case."""

    def __init__(self, *, max_delay_s: float = 0.3, seed: int | None = None) -> None:
        super().__init__()
        self.max_delay_s = max_delay_s
        self.refused_cases: set[str] = set()  # their `charge` is refused (422, no effect)
        self.replays = 0
        self.in_flight: Counter[str] = Counter()  # idempotency key -> POSTs being served
        self._random = random.Random(seed)

    def _receive(self, request: Request) -> _Fault:
        fault = super()._receive(request)
        if request.method != "POST" or fault != _Fault():
            return fault
        with self._lock:
            delay = self._random.uniform(0, self.max_delay_s)
            before = self._random.uniform(0, delay)
            refused = (
                request.path.strip("/") == REFUSED_OPERATION
                and str(((request.body or {}).get("args") or {}).get("case_id")) in self.refused_cases
            )
        self._stopping.wait(before)  # received, effect not applied yet
        if refused:
            return _Fault(status=422)
        return replace(fault, delay_s=delay - before)  # applied, reply held back

    def _apply(self, operation: str, args: dict, key: str) -> tuple[int, dict, bool]:
        status, reply, replayed = super()._apply(operation, args, key)
        if replayed:
            with self._lock:
                self.replays += 1
        return status, reply, replayed

    def _handler(self):
        server, base = self, super()._handler()

        class Handler(base):
            def do_POST(self) -> None:
                key = self.headers.get("Idempotency-Key", "")
                with server._lock:
                    server.in_flight[key] += 1
                try:
                    super().do_POST()
                finally:
                    with server._lock:
                        server.in_flight[key] -= 1
                        if server.in_flight[key] <= 0:
                            del server.in_flight[key]

        return Handler

    def keys_in_flight(self) -> set[str]:
        with self._lock:
            return set(self.in_flight)

    def effects_per_case(self) -> Counter[tuple[str, str]]:
        """Real effects per (operation, case id): more than one is a duplicate effect."""
        with self._lock:
            return Counter(
                (operation, str(args.get("case_id"))) for operation, args, _ in self._replies.values()
            )

    @property
    def lookups(self) -> int:
        with self._lock:
            return sum(request.method == "GET" for request in self.requests)


# --- The workflow --------------------------------------------------------------------------


def _http_tool(url: str, description: str, compensation: str = "") -> dict:
    return {
        "description": description,
        "side_effect": "write",
        **({"compensation_tool": compensation} if compensation else {}),
        "args_schema": {
            "type": "object",
            "required": ["case_id", "amount"],
            "properties": {"case_id": {"type": "string"}, "amount": {"type": "number", "minimum": 0}},
        },
        "result_schema": {"type": "object", "required": ["operation", "sequence"]},
        "transport": {"type": "http", "url": url},
    }


WORKFLOW_SOURCE = f"""\
workflow: {WORKFLOW}
version: 1.0.0
description: Reserve, then charge, an amount in an HTTP ledger; the chaos test's workflow.
run_as: {AGENT}
steps:
  - screen:  {{human_if: ["amount > 100000"]}}
  - reserve: {{tool: ledger.reserve, idempotency_key: case_id, reconcile_before_retry: true,
              args: {{case_id: "=case_id", amount: "=amount"}}}}
  - review:  {{human_if: ["amount > 100000", "case_id == 'NEVER'"]}}
  - charge:  {{tool: ledger.charge, idempotency_key: case_id, reconcile_before_retry: true,
              args: {{case_id: "=case_id", amount: "=amount"}}}}
limits: {{max_hops: 10, deadline_s: 3600, max_tool_calls: 10}}
evaluation: {{min_score: 0.9}}
"""


def chaos_bundle(tool_url: str) -> dict:
    """The demo team and policy bundle, two HTTP write tools (each with its compensation), an
    agent allowed them with scope write, and a 4-step workflow released on staging."""
    demo = load_bundle_file(DEMO_BUNDLE)
    team = demo["teams"][0]
    tools = {
        "ledger.reserve": _http_tool(f"{tool_url}/reserve", "Hold an amount for a case.", "ledger.release"),
        "ledger.release": _http_tool(f"{tool_url}/release", "Release a hold; undoes ledger.reserve."),
        "ledger.charge": _http_tool(f"{tool_url}/charge", "Charge an amount for a case.", "ledger.refund"),
        "ledger.refund": _http_tool(f"{tool_url}/refund", "Refund a charge; undoes ledger.charge."),
    }
    return {
        "teams": [team],
        "artifacts": {"tool": tools, "policy_bundle": demo["artifacts"]["policy_bundle"]},
        "agents": [
            {
                "slug": AGENT,
                "display_name": "Ledger clerk",
                "owner_team": team["slug"],
                "purpose": "Reserves and charges amounts in the ledger (chaos test).",
                "runbook_url": "https://runbooks.example.org/support/ledger-clerk",
                "slo": {"p95_latency_ms": 2000, "success_rate": 0.99},
                "data_classification": "internal",
                "allowed_tools": [{"tool": name, "scope": "write"} for name in tools],
                "status": "active",
            }
        ],
        "workflows": {WORKFLOW: WORKFLOW_SOURCE},
        "releases": [
            {"workflow": WORKFLOW, "policy_bundle": "default", "agents": {}, "channels": ["staging"]}
        ],
    }


# --- Processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_env(
    *, database_url: str, queue: str, lease_s: int, redis_url: str | None = None, extra: dict | None = None
) -> dict[str, str]:
    env = os.environ | {
        "DATABASE_URL": database_url,
        "CELERY_QUEUE": queue,
        "BATON_VAR_DIR": str(Path(settings.BASE_DIR) / "var"),
        "PYTHONUNBUFFERED": "1",
        "RUN_LEASE_SECONDS": str(lease_s),
        "RUN_RETRY_BACKOFF_SECONDS": "0.1",
        "RUN_SWEEP_INTERVAL_SECONDS": "1",
    }
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return env | (extra or {})


class ChaosWorker:
    """A `celery worker` (prefork, one child) in a session of its own: SIGKILL to the process
    group takes the parent and its child down at once, as a lost machine would."""

    def __init__(self, *, env: dict[str, str], queue: str, log_dir: Path, name: str) -> None:
        self.name = name  # lease tokens of this worker start with f"{name}@"
        self.env, self.queue = env, queue
        self.log_path = log_dir / f"worker-{name}.log"
        self.process: subprocess.Popen | None = None
        self.killed = False
        self._ready = False

    def launch(self) -> "ChaosWorker":
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "controlplane",
                    "worker",
                    "--loglevel=INFO",
                    "--concurrency=1",
                    "--pool=prefork",
                    f"--queues={self.queue}",
                    f"--hostname={self.name}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                cwd=settings.BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and not self.killed and self.process.poll() is None

    @property
    def exited(self) -> bool:
        """Ended without being killed by the harness (a crash)."""
        return self.process is not None and not self.killed and self.process.poll() is not None

    def ready(self) -> bool:
        if not self._ready and self.alive:
            self._ready = " ready." in self.log()
        return self._ready and self.alive

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the parent and its prefork child: no shutdown handler, no ack, no cleanup."""
        assert self.process is not None
        self.killed = True
        self._signal_group(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=15)
        self._signal_group(signal.SIGKILL)  # whatever is left of the group
        self.process.wait()

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)


class PrivateRedis:
    """A redis-server of our own on a free port, without persistence, to restart at will."""

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_dir / "redis.log"
        self.process: subprocess.Popen | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "PrivateRedis":
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    *("--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                    *("--appendonly", "no", "--daemonize", "no", "--maxmemory-policy", "noeviction"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: see {self.log_path}")
            if self.ping():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} does not answer")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def restart(self, down_s: float = 1.0) -> None:
        """Kill it (every queued and unacknowledged message is lost) and start it again."""
        self.kill()
        time.sleep(down_s)
        self.start()
        self.restarts += 1

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    stop = kill


def forget_unacked(redis_url: str, queue: str) -> int:
    """Drop the unacknowledged messages SIGKILLed workers left for `queue` on a shared Redis,
    so that no consumer restores them into a queue nobody reads, an hour later."""
    client = Redis.from_url(redis_url)
    forgotten = 0
    try:
        for tag, raw in client.hscan_iter("unacked"):
            try:
                _, _, routing_key = json.loads(raw)
            except (ValueError, TypeError):
                continue
            if routing_key == queue:
                client.pipeline().zrem("unacked_index", tag).hdel("unacked", tag).execute()
                forgotten += 1
    finally:
        client.close()
    return forgotten


# --- The chaos loop ------------------------------------------------------------------------


@dataclass(frozen=True)
class ChaosPlan:
    runs: int
    kills: int
    workers: int = 2
    max_active: int = 8  # runs queued or running at once
    refused_share: float = 0.0  # of the runs, whose charge the ledger refuses (saga path)
    redis_restart: bool = False  # needs a PrivateRedis
    lease_s: int = 2
    sweep_interval_s: float = 1.0
    kill_gap_s: tuple[float, float] = (0.5, 2.0)  # between kills
    kill_jitter_s: float = 0.3  # after a worker is seen busy, before it is killed
    drain_timeout_s: float = 60.0  # after the last kill and the last submission
    timeout_s: float = 600.0
    seed: int | None = None
    case_prefix: str = "CHAOS"


@dataclass
class ChaosReport:
    runs: int
    submitted: int
    succeeded: int
    compensated: int
    refused: int  # runs whose charge the ledger refused: they must end compensated
    lost: int  # ended in another status than planned, or vanished
    duplicate_effects: int
    missing_effects: int
    unplanned_effects: int
    ledger_mismatches: int
    stuck: int
    kills: int
    redis_restarts: int
    elapsed_s: float
    drain_s: float | None
    statuses: Counter
    kill_points: Counter
    requeued: int
    replays: int
    lookups: int
    reconciled_steps: int
    replayed_steps: int
    crashed_workers: int
    broker_errors: int
    audit_ok: bool
    longest_wait_s: float = 0.0
    longest_wait_at: str = "-"
    worker_logs: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.submitted == self.runs
            and self.lost == 0
            and self.duplicate_effects == 0
            and self.missing_effects == 0
            and self.unplanned_effects == 0
            and self.ledger_mismatches == 0
            and self.stuck == 0
            and self.audit_ok
        )

    @property
    def throughput(self) -> float:
        return (self.succeeded + self.compensated) / self.elapsed_s if self.elapsed_s else 0.0

    def headline(self) -> str:
        restarts = f", {self.redis_restarts} redis restart{'s' if self.redis_restarts != 1 else ''}"
        return (
            f"chaos: {self.runs} runs, {self.kills} kills{restarts if self.redis_restarts else ''}: "
            f"lost {self.lost}, duplicate effects {self.duplicate_effects}, stuck {self.stuck}"
        )

    def lines(self) -> list[str]:
        points = ", ".join(f"{point} {n}" for point, n in sorted(self.kill_points.items()))
        if self.drain_s is not None:
            drain = f"{self.drain_s:.1f} s"
        else:
            drain = "- (no kill)" if not self.kills else "did not drain"
        return [
            f"runs submitted                    {self.submitted} of {self.runs}",
            f"runs succeeded                    {self.succeeded}",
            f"runs compensated (charge refused) {self.compensated} of {self.refused}",
            f"final statuses                    {dict(sorted(self.statuses.items()))}",
            f"workers SIGKILLed                 {self.kills}: {points or 'none'}",
            f"workers that crashed by themselves {self.crashed_workers}",
            f"redis restarts                    {self.redis_restarts}",
            f"publishes refused by the broker   {self.broker_errors} (committed; left to the sweeper)",
            f"runs re-enqueued by the sweeper   {self.requeued}",
            f"tool calls replayed by key        {self.replays}",
            f"reconcile lookups                 {self.lookups}",
            f"steps that reconciled an effect   {self.reconciled_steps}",
            f"steps that found it committed     {self.replayed_steps}",
            f"effects missing / unplanned       {self.missing_effects} / {self.unplanned_effects}",
            f"effect ledger mismatches          {self.ledger_mismatches}",
            f"audit chain verifies              {self.audit_ok}",
            f"longest without progress          {self.longest_wait_s:.1f} s (at {self.longest_wait_at})",
            f"drained after the last kill       {drain}",
            f"elapsed                           {self.elapsed_s:.1f} s",
            f"throughput                        {self.throughput:.2f} runs/s",
            f"runs lost                         {self.lost}",
            f"duplicate effects                 {self.duplicate_effects}",
            f"runs stuck                        {self.stuck}",
        ]


class Chaos:
    def __init__(
        self,
        plan: ChaosPlan,
        *,
        requester,
        tool_server: SlowToolServer,
        env: dict[str, str],
        queue: str,
        log_dir: Path,
        redis: PrivateRedis | None = None,
        log: Callable[[str], None] = lambda _line: None,
    ) -> None:
        if plan.redis_restart and redis is None:
            raise ValueError("a Redis restart needs a PrivateRedis")
        self.plan, self.requester, self.tool_server = plan, requester, tool_server
        self.env, self.queue, self.log_dir, self.redis, self.log = env, queue, log_dir, redis, log
        self.random = random.Random(plan.seed)
        self.workers: list[ChaosWorker] = []
        self.run_ids: list[str] = []
        self.kill_points: Counter[str] = Counter()
        self.requeued = self.broker_errors = self.crashed = 0
        self.last_submit_at = self.started = 0.0
        self.target: tuple[str, bool] | None = None
        self.target_until = 0.0
        self.progress: dict[str, tuple | None] = {}  # run id -> (status, state, last lease owner)
        self.moved_at: dict[str, float] = {}
        self.slow: set[str] = set()  # runs reported as waiting long
        self.longest_wait: tuple[float, str] = (0.0, "-")

    # The loop

    def run(self) -> ChaosReport:
        try:
            return self._run()
        finally:
            self.stop_workers()

    def _run(self) -> ChaosReport:
        plan = self.plan
        for _ in range(plan.workers):
            self._new_worker()
        self._wait_ready()
        started = self.started = time.monotonic()
        kills, last_kill_at, drained_at = 0, None, None
        next_kill = started + self.random.uniform(*plan.kill_gap_s)
        next_sweep = started + plan.sweep_interval_s
        redis_restarted = False
        while True:
            now = time.monotonic()
            if now - started > plan.timeout_s:
                self.log(f"timed out after {plan.timeout_s:.0f} s")
                break
            self._replace_crashed_workers()
            unsettled = self._unsettled()
            while self._may_submit(len(unsettled), kills):
                self.run_ids.append(self._submit(len(self.run_ids)))
                unsettled.add(self.run_ids[-1])
            if now >= next_sweep:
                self._sweep()
                next_sweep = time.monotonic() + plan.sweep_interval_s
            if kills < plan.kills and now >= next_kill and self._kill_a_busy_worker():
                kills += 1
                last_kill_at = time.monotonic()
                next_kill = last_kill_at + self.random.uniform(*plan.kill_gap_s)
            if plan.redis_restart and not redis_restarted and len(self.run_ids) >= plan.runs // 2:
                self.log(f"{now - started:6.1f} s  restarting redis")
                self.redis.restart()
                redis_restarted = True
            all_submitted = len(self.run_ids) == plan.runs
            if all_submitted and not unsettled:
                drained_at = time.monotonic()
                break
            quiet_since = max(last_kill_at or started, self.last_submit_at)
            if all_submitted and kills >= plan.kills and now - quiet_since > plan.drain_timeout_s:
                self.log(f"{len(unsettled)} runs did not drain within {plan.drain_timeout_s:.0f} s")
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        # One more lease and sweeper interval: nothing may come back to life or stay active.
        time.sleep(plan.lease_s + plan.sweep_interval_s)
        self._sweep()
        time.sleep(plan.sweep_interval_s)
        return self._report(
            kills, elapsed, drained_at - last_kill_at if drained_at and last_kill_at else None
        )

    def _may_submit(self, unsettled: int, kills: int) -> bool:
        """Keep at most max_active runs in flight, and pace submissions so that the kills are
        spread over the whole run set (the last run goes in only after the last kill)."""
        submitted = len(self.run_ids)
        if submitted >= self.plan.runs or unsettled >= self.plan.max_active:
            return False
        due = math.ceil(self.plan.kills * submitted / self.plan.runs) if submitted else 0
        return kills >= due or unsettled == 0

    def _submit(self, index: int) -> str:
        key = f"{self.plan.case_prefix.lower()}-{index}"
        case_id = f"{self.plan.case_prefix}-{index:04d}"
        amount = round(self.random.uniform(1, 400), 2)
        if self.random.random() < self.plan.refused_share:
            self.tool_server.refused_cases.add(case_id)
        for _attempt in range(60):
            try:
                run = task_submit(
                    requester=self.requester,
                    actor=actor_for(self.requester),
                    workflow=WORKFLOW,
                    case_id=case_id,
                    input={"amount": amount, "text": f"chaos case {index}"},
                    idempotency_key=key,
                    channel="staging",
                ).run
                self.last_submit_at = time.monotonic()
                self.progress[str(run.pk)], self.moved_at[str(run.pk)] = None, self.last_submit_at
                return str(run.pk)
            except BROKER_ERRORS:
                # The run committed, its message did not go out: the same key returns that
                # run (without publishing again) and the sweeper will pick it up.
                self.broker_errors += 1
                time.sleep(0.5)
        raise RuntimeError(f"could not submit {case_id}")

    def _sweep(self) -> None:
        try:
            self.requeued += runs_sweep_expired_leases()
        except BROKER_ERRORS:
            self.broker_errors += 1  # committed; swept again once its new lease ends

    def _unsettled(self) -> set[str]:
        """The submitted runs not settled yet; notes how long each went without progress (a
        step committed or a worker claimed it; the sweeper clearing a lease is no progress)."""
        now = time.monotonic()
        rows = Run.objects.filter(pk__in=self.run_ids, status__in=UNSETTLED).values_list(
            "pk", "status", "current_state", "lease_owner"
        )
        unsettled = set()
        for pk, status, state, owner in rows:
            run_id = str(pk)
            unsettled.add(run_id)
            previous = self.progress.get(run_id)
            current = (status, state, owner or (previous[2] if previous else ""))
            if current != previous:
                self.progress[run_id], self.moved_at[run_id] = current, now
            self._note_wait(run_id, now, state)
        for run_id in set(self.progress) - unsettled:
            self._note_wait(run_id, now, "its last step")
            del self.progress[run_id], self.moved_at[run_id]
        return unsettled

    def _note_wait(self, run_id: str, now: float, state: str) -> None:
        waited = now - self.moved_at[run_id]
        if waited > self.longest_wait[0]:
            self.longest_wait = (waited, state)
        # Longer than a lease, a sweep and a worker start: say why, once per run.
        if waited > self.plan.lease_s + self.plan.sweep_interval_s + 6 and run_id not in self.slow:
            self.slow.add(run_id)
            run = Run.objects.filter(pk=run_id).values("status", "lease_owner", "lease_expires_at").first()
            ready = sum(worker.ready() for worker in self.workers)
            self.log(
                f"{now - self.started:6.1f} s  run {run_id} waits {waited:.1f} s at {state} "
                f"({run}); {ready} workers ready"
            )

    # Workers

    def _new_worker(self) -> ChaosWorker:
        name = f"cw{len(self.workers) + 1}-{uuid.uuid4().hex[:4]}"
        worker = ChaosWorker(env=self.env, queue=self.queue, log_dir=self.log_dir, name=name)
        self.workers.append(worker)
        return worker.launch()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(worker.ready() for worker in self.workers):
            for worker in self.workers:
                if worker.exited:
                    raise RuntimeError(f"worker {worker.name} exited at start:\n{worker.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready after {READY_TIMEOUT_S} s")
            time.sleep(0.1)

    def _replace_crashed_workers(self) -> None:
        for worker in [w for w in self.workers if w.exited]:
            self.crashed += 1
            self.log(f"worker {worker.name} exited by itself:\n{worker.log()[-2000:]}")
            worker.killed = True  # counted; not replaced twice
            self._new_worker()

    def _busy(self) -> list[tuple[ChaosWorker, str, str]]:
        """(worker, run id, point) for each ready worker holding a run's lease; the point is the
        run's state, or "compensating"."""
        ready = {worker.name: worker for worker in self.workers if worker.ready()}
        leased = Run.objects.filter(pk__in=self.run_ids, status__in=UNSETTLED).exclude(lease_owner="")
        busy = []
        for pk, owner, state, status in leased.values_list("pk", "lease_owner", "current_state", "status"):
            worker = ready.get(owner.split("@", 1)[0])
            if worker is not None:
                busy.append((worker, str(pk), _point(status, state)))
        return busy

    def _keys_in_flight(self) -> set[str]:
        """Effect keys whose call (or compensation call) the tool server is serving now."""
        return {key.removesuffix(":compensate") for key in self.tool_server.keys_in_flight()}

    def _kill_a_busy_worker(self) -> bool:
        """SIGKILL a worker busy with a run at the target point; a new target every few seconds,
        chosen among the states workers are in.

        Targets cycle over the workflow's states, and for the tool steps over "while the call
        is on the wire" (before or after the server applied the effect: it holds the reply
        back) and "anywhere in the step" (policy decision, write-ahead row, commit)."""
        now, busy_now = time.monotonic(), self._busy()
        if self.target is None or now > self.target_until:
            targets = KILL_TARGETS + (COMPENSATION_KILL_TARGETS if self.tool_server.refused_cases else ())
            # A target some worker is in now: a run passes a state in well under a second, and a
            # target no run is near would let the whole run set drain before the kills are made.
            in_play = [target for target in targets if any(entry[2] == target[0] for entry in busy_now)]
            self.target = self.random.choice(in_play or targets)
            self.target_until = now + (3.0 if in_play else 0.0)
        state, on_the_wire = self.target
        busy = [entry for entry in busy_now if entry[2] == state]
        if on_the_wire and busy:
            calling = set(
                Effect.objects.filter(
                    run_id__in=[run_id for _, run_id, _ in busy], idempotency_key__in=self._keys_in_flight()
                ).values_list("run_id", flat=True)
            )
            busy = [entry for entry in busy if uuid.UUID(entry[1]) in calling]
        if not busy:
            return False
        victim, run_id, _ = self.random.choice(busy)
        jitter = self.plan.kill_jitter_s / 2 if on_the_wire else self.plan.kill_jitter_s
        time.sleep(self.random.uniform(0, jitter))
        point = self._kill_point(victim, run_id)
        victim.kill()
        self.target = None
        self.kill_points[point] += 1
        self.log(f"{time.monotonic() - self.started:6.1f} s  SIGKILL {victim.name} ({point})")
        self._new_worker()
        return True

    def _kill_point(self, victim: ChaosWorker, run_id: str) -> str:
        """Where the kill lands: the run's state, and whether its tool call is on the wire."""
        run = Run.objects.filter(pk=run_id).values("current_state", "status", "lease_owner").first()
        if run is None or not run["lease_owner"].startswith(f"{victim.name}@"):
            return "between runs (its run had just moved on)"
        if run["status"] not in UNSETTLED:
            return "after the run ended"
        keys = self._keys_in_flight()
        calling = keys and Effect.objects.filter(run_id=run_id, idempotency_key__in=keys).exists()
        return f"{_point(run['status'], run['current_state'])}{' (tool call in flight)' if calling else ''}"

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()

    # The figures

    def _report(self, kills: int, elapsed: float, drain_s: float | None) -> ChaosReport:
        refused = self.tool_server.refused_cases
        runs = {
            str(pk): (status, case_id)
            for pk, status, case_id in Run.objects.filter(pk__in=self.run_ids).values_list(
                "pk", "status", "case_id"
            )
        }
        statuses = Counter(status for status, _ in runs.values())
        statuses["vanished"] = len(set(self.run_ids) - set(runs))
        statuses = +statuses
        as_planned = {
            pk
            for pk, (status, case_id) in runs.items()
            if status == (Run.Status.COMPENSATED if case_id in refused else Run.Status.SUCCEEDED)
        }
        stuck = sum(status in UNSETTLED for status, _ in runs.values())
        # Effects at the system of record: exactly the planned ones, each exactly once.
        per_case = self.tool_server.effects_per_case()
        planned = {
            (operation, case_id)
            for pk, (_, case_id) in runs.items()
            if pk in as_planned
            for operation in (COMPENSATED_OPERATIONS if case_id in refused else OPERATIONS)
        }
        cases = {case_id for _, case_id in runs.values()}
        unplanned = {
            (operation, case_id)
            for operation, case_id in per_case
            if case_id in cases
            and operation not in (COMPENSATED_OPERATIONS if case_id in refused else OPERATIONS)
        }
        # The effect ledger agrees: committed effects of a success, undone ones of a saga.
        ledger: dict[str, set[tuple[str, str]]] = {}
        for run_id, tool, status in Effect.objects.filter(run_id__in=self.run_ids).values_list(
            "run_id", "tool", "status"
        ):
            ledger.setdefault(str(run_id), set()).add((tool, status))
        expected_ledger = {
            False: {("ledger.reserve", Effect.Status.COMMITTED), ("ledger.charge", Effect.Status.COMMITTED)},
            True: {("ledger.reserve", Effect.Status.COMPENSATED), ("ledger.charge", Effect.Status.REJECTED)},
        }
        ledger_mismatches = sum(
            ledger.get(pk, set()) != expected_ledger[runs[pk][1] in refused] for pk in as_planned
        )
        checkpoints = StepCheckpoint.objects.filter(run_id__in=self.run_ids)
        return ChaosReport(
            runs=self.plan.runs,
            submitted=len(self.run_ids),
            succeeded=statuses.get(Run.Status.SUCCEEDED, 0),
            compensated=statuses.get(Run.Status.COMPENSATED, 0),
            refused=len(refused & cases),
            lost=len(self.run_ids) - len(as_planned) - stuck,
            duplicate_effects=sum(n - 1 for n in per_case.values() if n > 1),
            missing_effects=len(planned - set(per_case)),
            unplanned_effects=len(unplanned),
            ledger_mismatches=ledger_mismatches,
            stuck=stuck,
            kills=kills,
            redis_restarts=self.redis.restarts if self.redis else 0,
            elapsed_s=elapsed,
            drain_s=drain_s,
            statuses=statuses,
            kill_points=self.kill_points,
            requeued=self.requeued,
            replays=self.tool_server.replays,
            lookups=self.tool_server.lookups,
            reconciled_steps=checkpoints.filter(details__reconciled=True).count(),
            replayed_steps=checkpoints.filter(details__replayed=True).count(),
            crashed_workers=self.crashed,
            broker_errors=self.broker_errors,
            audit_ok=verify_chain().ok,
            longest_wait_s=self.longest_wait[0],
            longest_wait_at=self.longest_wait[1],
            worker_logs=[worker.log_path for worker in self.workers],
        )


def _point(status: str, state: str) -> str:
    return "compensating" if status == Run.Status.COMPENSATING else state


def apply_chaos_bundle(tool_url: str, *, author) -> list[str]:
    """Apply the chaos bundle as `author` (a platform user); returns the release ids."""
    return bundle_apply(bundle=chaos_bundle(tool_url), author=author, actor=actor_for(author)).releases
