"""Approval inbox: what serving a reviewer's inbox costs at 10,000 pending requests, and how fast
an approved run resumes, each beside a baseline measured in the same run.

Creates its own database (baton_inbox_bench_<pid>, on the server of DATABASE_URL or the local
postgres://postgres@127.0.0.1:5432), migrates it, applies the demo support workflow, and:

1. Query counts: the inbox's first page, its rows fragment (the 10 s poll), the navigation
   count and `GET /api/v1/approvals?status=pending` with 100 pending requests, then with
   10,000 (bulk-created): each must be the same at both sizes.
2. Server time at 10,000: those four and a trivial signed-in view (`login_required`, returns
   "ok"), through Django's test client in this process, interleaved in rounds so that a busy
   machine weighs on all alike. Target: inbox first page and API list p50 under 5x the
   trivial view's.
3. Pause to resume with a real Celery worker (its own queue, REDIS_URL's broker): runs of the
   support workflow park at their irreversible commit; for each, the time from the reviewer's
   approval POST to the worker's commit of the commit step's audit event (told by a notification
   that a bench-only trigger on the ledger sends, delivered at that commit: no polling),
   and where it went: the POST, then by the ledger's clock the decision's `run.approved` to the
   worker's `run.started`, and `run.started` to the step's event.
   Beside it, interleaved, a floor: the same parts each at its least, on other parked runs
   (`_inbox_support.floor_decide` and `floor_step`: the signed-in POST, the locked read,
   approval.decide, one write and its commit, the Celery hop, the claim, the agent read,
   tool.call, one write for the decision and the intent, one for the system of record's write,
   the step's ledger append), with the policy inputs the real resumes logged.
   Baseline, interleaved: a trivial task's round trip through the same broker and worker
   (result awaited), plus one single-row INSERT + COMMIT on PostgreSQL. Every sample, resume
   and baseline alike, starts after the same pause: on a virtual machine a call made right
   after another can cost half of one made after a pause (an idle CPU sleeps, caches go cold),
   and a warm baseline beside a cold resume would weigh the pause, not the resume.
   Target: p50 under 3x.

Exits 1 when a query count grows or a target is missed. The database is dropped at the end.
"""

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from _databases import create_database, drop_database, percentile, postgres_url

BENCH_DIR = Path(__file__).resolve().parent
SMALL, LARGE = 100, int(os.environ.get("INBOX_BENCH_PENDING", 10_000))
ROUNDS, PER_ROUND = 10, int(os.environ.get("INBOX_BENCH_PER_ROUND", 20))
RESUMES = 30
WARMUP = 20
SETTLE_S = 0.2
TARGET_PAGE_RATIO = 5
TARGET_RESUME_RATIO = 3


def describe(label: str, samples_s: list[float]) -> str:
    ms = [s * 1e3 for s in samples_s]
    return (
        f"  {label:<44} p50 {percentile(ms, 0.5):8.3f} ms   p95 {percentile(ms, 0.95):8.3f} ms   "
        f"mean {statistics.fmean(ms):8.3f} ms   (n={len(ms)})"
    )


class Worker:
    """`celery -A _inbox_support worker` on a queue of its own, one process like the tests' worker."""

    def __init__(self, url: str, queue: str, log: Path) -> None:
        self.log = log
        env = os.environ | {"DATABASE_URL": url, "CELERY_QUEUE": queue, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "celery", "-A", "_inbox_support", "worker", "--loglevel=INFO"]
        command += ["--concurrency=1", "--pool=prefork", f"--queues={queue}", f"--hostname=bench-{queue}@%h"]
        command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        self.process = subprocess.Popen(
            command, cwd=BENCH_DIR, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while " ready." not in log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class CommitBench:
    """Single-row INSERT + COMMIT on its own connection: one durable PostgreSQL commit."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url)
        self.conn.execute("CREATE TABLE bench_commits (id bigserial PRIMARY KEY, note text NOT NULL)")
        self.conn.commit()

    def once(self) -> float:
        started = time.perf_counter()
        self.conn.execute("INSERT INTO bench_commits (note) VALUES (%s)", ("approved",))
        self.conn.commit()
        return time.perf_counter() - started

    def close(self) -> None:
        self.conn.execute("DROP TABLE bench_commits")
        self.conn.commit()
        self.conn.close()


PAGES = {
    "trivial signed-in view": "/bench/trivial/",
    "inbox first page": "/approvals/",
    "inbox rows (the 10 s poll, htmx)": "/approvals/?htmx",
    "navigation count (the 10 s poll)": "/approvals/count/",
    "API GET /api/v1/approvals?status=pending": "/api/v1/approvals?status=pending",
}


def measure(url: str) -> int:
    where = urlsplit(url)
    print(f"database {where.path.lstrip('/')} on {where.hostname}:{where.port or 5432}")
    if not os.environ.get("REDIS_URL"):
        print("REDIS_URL is not set: the pause-to-resume part needs a Redis broker", file=sys.stderr)
        return 1
    started = time.perf_counter()
    import _inbox_support as inbox  # Django starts here, on DATABASE_URL

    inbox.prepare()
    browser, api = inbox.reviewer_clients()

    def fetch(label: str):
        path = PAGES[label]
        client = api if path.startswith("/api/") else browser
        if path.endswith("?htmx"):
            return lambda: inbox.timed_get(_HtmxClient(client), path.removesuffix("?htmx"))
        return lambda: inbox.timed_get(client, path)

    calls = {label: fetch(label) for label in PAGES}

    def counts() -> dict[str, int]:
        result = {}
        for label, path in PAGES.items():
            client = api if path.startswith("/api/") else browser
            if path.endswith("?htmx"):
                result[label] = inbox.queries_of(_HtmxClient(client), path.removesuffix("?htmx"))
            else:
                result[label] = inbox.queries_of(client, path)
        return result

    inbox.bulk_pending(SMALL, offset=0)
    for call in calls.values():  # first requests do one-off writes (an API key's last use)
        call()
    small_counts = counts()
    inbox.bulk_pending(LARGE - SMALL, offset=SMALL)
    large_counts = counts()
    print(f"set-up (migrate, workflow, {LARGE:,} pending requests): {time.perf_counter() - started:.1f} s")
    print(f"queries per request at {SMALL:,} and {LARGE:,} pending requests:")
    constant = True
    for label in PAGES:
        same = small_counts[label] == large_counts[label]
        constant &= same
        verdict = "same" if same else "GROWS"
        print(f"  {label:<44} {small_counts[label]:3d} / {large_counts[label]:3d}  {verdict}")

    samples: dict[str, list[float]] = {label: [] for label in PAGES}
    for call in calls.values():
        for _ in range(WARMUP):
            call()
    labels = list(PAGES)
    for round_ in range(ROUNDS):
        for label in labels[round_ % len(labels) :] + labels[: round_ % len(labels)]:
            samples[label] += [calls[label]() for _ in range(PER_ROUND)]
    print(f"server time at {LARGE:,} pending requests, Django test client in process:")
    for label in PAGES:
        print(describe(label, samples[label]))

    queue = f"bench-inbox-{uuid.uuid4().hex[:8]}"
    inbox.app.conf.task_default_queue = queue
    worker = Worker(url, queue, BENCH_DIR.parent / "var" / f"inbox-bench-worker-{os.getpid()}.log")
    commits = CommitBench(url)
    step_commits = inbox.StepCommits(url, state="commit")
    try:
        inbox.create_floor_table()
        parked_ids = inbox.submit_parked(2 * (RESUMES + 3))
        parked = inbox.wait_parked(parked_ids, timeout=30 + 2 * len(parked_ids))
        run_ids, floor_ids = parked_ids[: RESUMES + 3], parked_ids[RESUMES + 3 :]
        for _ in range(WARMUP):
            inbox.celery_round_trip()
            commits.once()
        parts: dict[str, list[float]] = {"resume": [], "post": [], "to_started": [], "step": []}
        round_trips, one_commit, floor, floor_post = [], [], [], []
        for n, (run_id, floor_id) in enumerate(zip(run_ids, floor_ids, strict=True)):
            # Every sample starts from the same quiet machine (the run before has finished):
            # what a process does right after another call costs less than after a pause.
            time.sleep(SETTLE_S)
            measured = inbox.pause_to_resume(browser, step_commits, run_id, parked[run_id])
            time.sleep(SETTLE_S)
            floor_s, floor_post_s = inbox.floor_resume(
                browser, step_commits, floor_id, parked[floor_id], resumed=run_id
            )
            if n >= 3:  # the first resumes warm the worker's caches
                for part, seconds in measured.items():
                    parts[part].append(seconds)
                floor.append(floor_s)
                floor_post.append(floor_post_s)
            time.sleep(SETTLE_S)
            round_trips.append(inbox.celery_round_trip())
            time.sleep(SETTLE_S)
            one_commit.append(commits.once())
        time.sleep(1)
        statuses = inbox.run_statuses(run_ids)
    finally:
        step_commits.close()
        commits.close()
        worker.stop()
    print(f"pause to resume, {RESUMES} approved runs of support_case_resolution, one worker process:")
    resumes = parts["resume"]
    print(describe("approval POST → next step's audit event", resumes))
    print(describe("  of which the POST (decision, policy, audit)", parts["post"]))
    print(describe("  run.approved → run.started (ledger clock)", parts["to_started"]))
    print(describe("  run.started → the step's event (ledger clock)", parts["step"]))
    print(describe("its parts, each at its least (a floor)", floor))
    print(describe("  of which the POST", floor_post))
    print(describe("Celery round trip (trivial task, result)", round_trips))
    print(describe("PostgreSQL INSERT + COMMIT", one_commit))
    print(f"  runs after approval: {statuses}")

    trivial = percentile(samples["trivial signed-in view"], 0.5)
    page_ratio = percentile(samples["inbox first page"], 0.5) / trivial
    api_ratio = percentile(samples["API GET /api/v1/approvals?status=pending"], 0.5) / trivial
    baseline = percentile(round_trips, 0.5) + percentile(one_commit, 0.5)
    resume_ratio = percentile(resumes, 0.5) / baseline
    floor_ratio = percentile(floor, 0.5) / baseline
    print(
        f"targets: inbox and API list p50 < {TARGET_PAGE_RATIO}x the trivial view; "
        f"pause to resume p50 < {TARGET_RESUME_RATIO}x (Celery round trip + one commit); "
        "query counts constant"
    )
    print(
        f"inbox first page {page_ratio:.1f}x, API list {api_ratio:.1f}x the trivial view "
        f"({trivial * 1e3:.2f} ms); pause to resume {resume_ratio:.1f}x "
        f"({percentile(resumes, 0.5) * 1e3:.1f} ms / {baseline * 1e3:.1f} ms), its parts at their least "
        f"{floor_ratio:.1f}x; query counts {'constant' if constant else 'GROW'}"
    )
    succeeded = statuses.get("succeeded", 0) == len(run_ids)
    met = (
        page_ratio < TARGET_PAGE_RATIO
        and api_ratio < TARGET_PAGE_RATIO
        and resume_ratio < TARGET_RESUME_RATIO
    )
    return 0 if constant and succeeded and met else 1


class _HtmxClient:
    """The same client, asking as htmx does (the rows fragment, not the whole page)."""

    def __init__(self, client) -> None:
        self.client = client

    def get(self, path: str):
        return self.client.get(path, HTTP_HX_REQUEST="true")


def main() -> int:
    name = f"baton_inbox_bench_{os.getpid()}"
    create_database(name)
    url = postgres_url(name)
    os.environ["DATABASE_URL"] = url  # before Django starts
    try:
        return measure(url)
    finally:
        from django.db import connections

        with contextlib.suppress(Exception):
            connections.close_all()
        drop_database(name)


if __name__ == "__main__":
    sys.exit(main())
