"""Run engine: what one durable step costs in Baton, beside LangGraph on the same PostgreSQL.

Creates its own database (baton_bench_<pid>, on the server of DATABASE_URL or the local
postgres://postgres@127.0.0.1:5432), migrates it and applies a workflow of six no-op gate
steps (a `human_if` condition that is false: no model or tool call, but envelope validation,
the logged step.transition decision, the checkpoint and the audit append in one transaction,
on PostgreSQL one call of the step-commit function).
Then, in the same process:

1. Baton, one worker: 300 runs executed by `run_advance` (what the Celery task does, without
   the broker); per step = run wall time / 6, and checkpoint to checkpoint on the database clock.
2. LangGraph: the same six-node linear graph (nodes return the state) with PostgresSaver,
   durability="sync", 300 threads; per step = invoke wall time / 6, and node to node.
3. A raw single-row INSERT + COMMIT (2,000): the floor of one durable write.
4. The audit append alone (1,000 appends as a step makes them, and as `record()` makes them).
5. Baton, two worker processes taking 300 runs from one shared list: runs/s.

1-4 are interleaved in 10 rounds (the order rotating), so that a busy machine weighs on all
of them alike. Targets (issue "Run engine"): Baton per-step p50 at most 0.8x LangGraph's, and
the audit at most 10% of a step: the p50 of an append made as a step makes it (the entries'
arrays built in Python, then the append function's time inside the step-commit function: no
round trip of its own) times the appends per step (a step appends its events together;
counted from the ledger).
record() on its own, taking the lock itself, is printed beside it. The database is dropped
at the end, also on failure.
`--profile` prints a cProfile of 20 more Baton runs to stderr.
"""

import contextlib
import itertools
import os
import statistics
import sys
import time
from importlib.metadata import version
from typing import TypedDict
from urllib.parse import urlsplit

import psycopg
from _databases import create_database, drop_database, percentile, postgres_url

RUNS = 300
STEPS = 6
ROUNDS = 10
WARMUP_RUNS = 20
PROFILE_RUNS = 20
INSERTS = 2_000
AUDIT_APPENDS = 1_000
TARGET_RATIO = 0.8
TARGET_AUDIT_SHARE = 0.10


def describe(label: str, samples_s: list[float]) -> str:
    ms = [s * 1e3 for s in samples_s]
    return (
        f"  {label:<46} p50 {percentile(ms, 0.5):7.3f} ms   p99 {percentile(ms, 0.99):7.3f} ms   "
        f"mean {statistics.fmean(ms):7.3f} ms   (n={len(ms)})"
    )


class GraphState(TypedDict):
    case_id: str
    never_true: bool


class LangGraphBench:
    """The six-node linear graph on PostgresSaver; each run is a new thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.entered: list[float] = []
        self.per_run: list[float] = []
        self.intervals: list[float] = []
        self.measured_threads = 0

    def __enter__(self) -> "LangGraphBench":
        from langgraph.checkpoint.postgres import PostgresSaver
        from langgraph.graph import END, START, StateGraph

        def node(state: GraphState) -> GraphState:
            self.entered.append(time.perf_counter())
            return state

        builder = StateGraph(GraphState)
        names = [f"step_{n}" for n in range(1, STEPS + 1)]
        for name in names:
            builder.add_node(name, node)
        builder.add_edge(START, names[0])
        for before, after in itertools.pairwise(names):
            builder.add_edge(before, after)
        builder.add_edge(names[-1], END)
        self._saver_context = PostgresSaver.from_conn_string(self.url)
        self.saver = self._saver_context.__enter__()
        self.saver.setup()
        self.graph = builder.compile(checkpointer=self.saver)
        return self

    def __exit__(self, *exc) -> None:
        self._saver_context.__exit__(*exc)

    def invoke(self, thread: str) -> None:
        config = {"configurable": {"thread_id": thread}}
        result = self.graph.invoke({"case_id": thread, "never_true": False}, config, durability="sync")
        assert result == {"case_id": thread, "never_true": False}

    def measure(self, runs: int) -> None:
        for _ in range(runs):
            thread = f"measured-{self.measured_threads}"
            self.measured_threads += 1
            self.entered.clear()
            started = time.perf_counter()
            self.invoke(thread)
            self.per_run.append(time.perf_counter() - started)
            self.intervals += [b - a for a, b in itertools.pairwise(self.entered)]

    def checkpoints_per_run(self) -> float:
        row = self.saver.conn.execute(
            "SELECT count(*) AS n FROM checkpoints WHERE thread_id LIKE 'measured-%'"
        ).fetchone()
        return row["n"] / self.measured_threads


class InsertBench:
    """Single-row INSERT + COMMIT on its own connection (autocommit off)."""

    def __init__(self, url: str, temporary: bool) -> None:
        self.conn = psycopg.connect(url)
        self.table = "bench_rows_temp" if temporary else "bench_rows"
        self.conn.execute(
            f"CREATE {'TEMP TABLE' if temporary else 'TABLE'} {self.table} (id bigserial PRIMARY KEY, "
            "run_id text NOT NULL, payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        )
        self.conn.commit()
        self.samples: list[float] = []

    def measure(self, count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            self.conn.execute(
                f"INSERT INTO {self.table} (run_id, payload) VALUES (%s, %s)",
                (f"run-{len(self.samples)}", '{"approval_required": false}'),
            )
            self.conn.commit()
            self.samples.append(time.perf_counter() - started)

    def close(self) -> None:
        self.conn.execute(f"DROP TABLE {self.table}")
        self.conn.commit()
        self.conn.close()


def measure(url: str, profile: bool) -> int:
    where = urlsplit(url)
    print(f"database {where.path.lstrip('/')} on {where.hostname}:{where.port or 5432}")
    setup_started = time.perf_counter()
    import _engine_support as engine  # Django starts here, on DATABASE_URL

    engine.prepare()
    print(f"set-up (migrate, bundle, promote): {time.perf_counter() - setup_started:.1f} s")

    baton_ids = engine.submit(RUNS, "one")
    baton_per_run: list[float] = []
    audit_in_step: list[float] = []
    audit_in_tx: list[float] = []
    audit_with_commit: list[float] = []
    inserts, temp_inserts = InsertBench(url, temporary=False), InsertBench(url, temporary=True)
    with LangGraphBench(url) as langgraph:
        engine.execute_one_worker(engine.submit(WARMUP_RUNS, "warmup"))
        for n in range(WARMUP_RUNS):
            langgraph.invoke(f"warmup-{n}")
        engine.audit_appends(50)
        for warm in (inserts, temp_inserts):
            warm.measure(100)
            warm.samples.clear()

        def baton(round_: int) -> None:
            size = RUNS // ROUNDS
            baton_per_run.extend(engine.execute_one_worker(baton_ids[round_ * size : (round_ + 1) * size])[0])

        def audit(_round: int) -> None:
            in_step, in_tx, with_commit = engine.audit_appends(AUDIT_APPENDS // ROUNDS)
            audit_in_step.extend(in_step)
            audit_in_tx.extend(in_tx)
            audit_with_commit.extend(with_commit)

        parts = [
            baton,
            lambda _round: langgraph.measure(RUNS // ROUNDS),
            lambda _round: inserts.measure(INSERTS // ROUNDS),
            lambda _round: temp_inserts.measure(INSERTS // ROUNDS),
            audit,
        ]
        started_all = time.perf_counter()
        for round_ in range(ROUNDS):
            for part in parts[round_ % len(parts) :] + parts[: round_ % len(parts)]:
                part(round_)
        interleaved_wall = time.perf_counter() - started_all
        lg_checkpoints = langgraph.checkpoints_per_run()
    inserts.close()
    temp_inserts.close()

    failed = engine.unfinished(baton_ids)
    if failed:
        print(f"{len(failed)} Baton runs did not succeed", file=sys.stderr)
        return 1
    baton_intervals = engine.checkpoint_intervals(baton_ids)
    events, appends = engine.worker_audit_events(baton_ids)
    events_per_step, appends_per_step = events / (RUNS * STEPS), appends / (RUNS * STEPS)
    decisions, denied = engine.transition_decisions(baton_ids)
    if profile:
        print(engine.profile(engine.submit(PROFILE_RUNS, "profile")), file=sys.stderr)

    shared_ids = engine.submit(RUNS, "two")
    two_wall, executed = engine.execute_workers(shared_ids, workers=2)
    failed = engine.unfinished(shared_ids)
    chain_ok, checked = engine.chain_ok()
    if failed or not chain_ok:
        print(f"{len(failed)} runs of two workers did not succeed; chain ok: {chain_ok}", file=sys.stderr)
        return 1

    baton_step = [s / STEPS for s in baton_per_run]
    lg_step = [s / STEPS for s in langgraph.per_run]
    baton_run_rate = RUNS / sum(baton_per_run)
    print(f"interleaved measurements: {ROUNDS} rounds, {interleaved_wall:.1f} s")
    print(f"Baton: {RUNS} runs x {STEPS} no-op gate steps, run_advance in this process (one worker)")
    print(describe("per step (run wall time / 6)", baton_step))
    print(describe("per step (checkpoint to checkpoint, db clock)", baton_intervals))
    print(
        f"  one worker: {baton_run_rate:.1f} runs/s; per run {decisions / RUNS:.0f} step.transition "
        f"decisions ({denied} denied) and {events_per_step * STEPS:.0f} worker audit events"
    )
    print(
        f"LangGraph {version('langgraph')}, PostgresSaver (langgraph-checkpoint-postgres "
        f"{version('langgraph-checkpoint-postgres')}), durability='sync': {RUNS} runs x {STEPS} nodes, "
        f"{lg_checkpoints:.0f} checkpoints per run"
    )
    print(describe("per step (invoke wall time / 6)", lg_step))
    print(describe("per step (node to node)", langgraph.intervals))
    print(f"  one process: {RUNS / sum(langgraph.per_run):.1f} runs/s")
    print(
        f"Baton, two forked worker processes taking {RUNS} runs from one list: {RUNS / two_wall:.1f} runs/s "
        f"({two_wall:.2f} s; runs per worker {', '.join(str(executed[n]) for n in sorted(executed))}) "
        f"= {RUNS / two_wall / baton_run_rate:.2f}x one worker; audit chain "
        f"{'intact' if chain_ok else 'BROKEN'} ({checked} events)"
    )
    print(f"Raw single-row INSERT + COMMIT, psycopg, {INSERTS} rows")
    print(describe("logged table", inserts.samples))
    print(describe("TEMP table (not WAL-logged, no flush)", temp_inserts.samples))
    print(
        f"Audit record() alone, {AUDIT_APPENDS} appends ({events_per_step:.2f} worker events per step, "
        f"in {appends_per_step:.2f} appends)"
    )
    print(describe("append as a step makes it (inside its commit)", audit_in_step))
    print(describe("record() inside an open transaction", audit_in_tx))
    print(describe("record() with its own commit (reference)", audit_with_commit))

    baton_p50, baton_p99 = percentile(baton_step, 0.5), percentile(baton_step, 0.99)
    lg_p50, lg_p99 = percentile(lg_step, 0.5), percentile(lg_step, 0.99)
    ratio_p50, ratio_p99 = baton_p50 / lg_p50, baton_p99 / lg_p99
    insert_p50 = percentile(inserts.samples, 0.5)
    audit_p50 = percentile(audit_in_step, 0.5)
    audit_share = audit_p50 * appends_per_step / baton_p50
    intervals_ratio = percentile(baton_intervals, 0.5) / percentile(langgraph.intervals, 0.5)
    print(
        f"Baton / LangGraph per step: p50 {ratio_p50:.2f}x, p99 {ratio_p99:.2f}x "
        f"(checkpoint to checkpoint / node to node, p50: {intervals_ratio:.2f}x)"
    )
    print(
        f"Baton per step / raw INSERT+COMMIT: p50 {baton_p50 / insert_p50:.1f}x "
        f"({baton_p50 * 1e3:.2f} ms / {insert_p50 * 1e3:.3f} ms)"
    )
    print(
        f"audit: {appends_per_step:.2f} appends x append p50 {audit_p50 * 1e3:.3f} ms "
        f"= {audit_share:.1%} of a step (p50 {baton_p50 * 1e3:.2f} ms)"
    )
    print(f"targets: Baton per-step p50 <= {TARGET_RATIO}x LangGraph's; audit <= {TARGET_AUDIT_SHARE:.0%}")
    print(
        f"Baton per-step p50 {baton_p50 * 1e3:.2f} ms = {ratio_p50:.2f}x LangGraph "
        f"({lg_p50 * 1e3:.2f} ms), p99 {ratio_p99:.2f}x; audit {audit_share:.0%} of a step"
    )
    return 0 if ratio_p50 <= TARGET_RATIO and audit_share <= TARGET_AUDIT_SHARE else 1


def main() -> int:
    name = f"baton_bench_{os.getpid()}"
    create_database(name)
    url = postgres_url(name)
    os.environ["DATABASE_URL"] = url  # before Django starts
    try:
        return measure(url, profile="--profile" in sys.argv[1:])
    finally:
        engine = sys.modules.get("_engine_support")
        if engine is not None:
            with contextlib.suppress(Exception):
                engine.close()
        drop_database(name)


if __name__ == "__main__":
    sys.exit(main())
