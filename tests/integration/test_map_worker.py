"""`map` steps on real Celery worker processes: branches in parallel within the concurrency limit,
duplicate deliveries, a failing branch and its saga, a lost branch message, fan-in exactly once."""

import threading
import time

import pytest
from django.db import connection

from controlplane.audit import verify_chain
from controlplane.celery import app as celery_app
from controlplane.models import AuditEvent
from runs import services
from runs.models import Effect, MapBranch, Run
from runs.tasks import advance_branch
from tests.support.tool_server import ToolServer
from tests.support.worker import WorkerProcess
from tests.support.workflows import http_tool, workflow

from .test_worker_end_to_end import wait_for

pytestmark = [pytest.mark.worker]
LINES = [{"sku": f"SKU-{n}"} for n in range(4)]


class HoldingToolServer(ToolServer):
    """Holds each new call for a while and remembers how many were in flight at once; refuses
    (HTTP 400, no effect) the calls about one SKU."""

    def __init__(self, *, hold_s: float = 0.0, refuse_sku: str = "") -> None:
        super().__init__()
        self.hold_s, self.refuse_sku = hold_s, refuse_sku
        self.in_flight = self.most_in_flight = 0
        self._flight = threading.Lock()

    def _apply(self, operation: str, args: dict, key: str) -> tuple[int, dict, bool]:
        if operation == "stock.check" and args.get("sku") == self.refuse_sku:
            return 400, {"error": f"{self.refuse_sku} is not sold any more"}, False
        with self._flight:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if operation == "stock.check":
                time.sleep(self.hold_s)
            return super()._apply(operation, args, key)
        finally:
            with self._flight:
                self.in_flight -= 1


def stock_flow(concurrency: int) -> dict:
    return workflow(
        "stock_flow",
        {
            "name": "check",
            "map": {
                "over": "lines",
                "as": "line",
                "tool": "stock.check",
                "agent": "ops_agent",
                "args": {"sku": "=line.sku"},
                "concurrency": concurrency,
            },
        },
        {"name": "summarise", "tool": "stock.summary", "agent": "ops_agent", "args": {"checks": "=check"}},
    )


def publish_stock_flow(publish, server: ToolServer, concurrency: int) -> None:
    publish(
        stock_flow(concurrency),
        tools={
            "stock.release": http_tool(server, "stock.release"),
            "stock.check": http_tool(server, "stock.check", compensation_tool="stock.release"),
            "stock.summary": http_tool(server, "stock.summary"),
        },
    )


@pytest.fixture
def tool_server():
    server = HoldingToolServer(hold_s=0.8).start()
    yield server
    server.stop()


@pytest.fixture
def second_worker(worker, isolated_celery_queue, tmp_path):
    process = WorkerProcess(connection.settings_dict, queue=isolated_celery_queue, log_dir=tmp_path)
    process.start()
    yield process
    process.stop()


def finished(run: Run, timeout: float = 40, *workers: WorkerProcess) -> Run:
    try:
        wait_for(lambda: Run.objects.get(pk=run.pk).is_finished, timeout=timeout, what="the run to finish")
    except AssertionError:
        logs = "\n".join(worker.log()[-4000:] for worker in workers)
        raise AssertionError(f"run {Run.objects.get(pk=run.pk).status}; worker logs:\n{logs}") from None
    return Run.objects.get(pk=run.pk)


def actions(run: Run) -> list[str]:
    return list(
        AuditEvent.objects.filter(run_id=str(run.pk)).order_by("seq").values_list("action", flat=True)
    )


def assert_fanned_in_once(run: Run) -> None:
    completed = AuditEvent.objects.filter(run_id=str(run.pk), action="run.step.completed")
    assert [event.payload["state"] for event in completed.order_by("seq")] == ["check", "summarise"]
    assert run.checkpoints.filter(state="check").count() == 1
    assert actions(run).count("run.map.started") == 1


@pytest.mark.parametrize("concurrency", [1, 2])
def test_two_workers_run_branches_in_parallel_up_to_the_concurrency_limit(
    publish,
    submit,
    tool_server,
    worker,
    second_worker,
    concurrency,
):
    publish_stock_flow(publish, tool_server, concurrency)

    run = finished(
        submit("stock_flow", {"text": "check my order", "lines": LINES}), 40, worker, second_worker
    )

    assert run.status == Run.Status.SUCCEEDED
    assert tool_server.most_in_flight == concurrency  # parallel when allowed, never beyond the limit
    outputs = run.checkpoints.get(state="check").output["check"]
    assert [output["args"]["sku"] for output in outputs] == [line["sku"] for line in LINES]
    assert tool_server.effects_per_operation["stock.check"] == len(LINES)
    assert_fanned_in_once(run)
    assert verify_chain().ok


def test_duplicate_deliveries_of_branch_tasks_make_no_second_effect(publish, submit, tool_server, worker):
    tool_server.hold_s = 0.3
    publish_stock_flow(publish, tool_server, concurrency=2)
    run = submit("stock_flow", {"text": "check my order", "lines": LINES})
    wait_for(lambda: MapBranch.objects.filter(run=run).count() == len(LINES), what="the fan-out")

    for branch_id in MapBranch.objects.filter(run=run).values_list("pk", flat=True):
        for _ in range(2):
            advance_branch.delay(branch_id)  # delivered again, pending or not

    run = finished(run, 40, worker)
    time.sleep(1)  # let the duplicates be consumed too

    assert run.status == Run.Status.SUCCEEDED
    assert tool_server.effects_per_operation["stock.check"] == len(LINES)
    assert set(MapBranch.objects.filter(run=run).values_list("status", flat=True)) == {"succeeded"}
    assert actions(run).count("run.map.branch.completed") == len(LINES)
    assert_fanned_in_once(run)


def test_a_failing_branch_fails_the_map_and_the_saga_undoes_the_other_branches_newest_first(
    publish,
    submit,
    worker,
):
    server = HoldingToolServer(refuse_sku="SKU-2").start()
    try:
        publish_stock_flow(publish, server, concurrency=1)
        run = finished(submit("stock_flow", {"text": "check my order", "lines": LINES}), 40, worker)
    finally:
        server.stop()

    assert run.status == Run.Status.COMPENSATED
    assert run.error.startswith("map check: branch 2 failed: stock.check failed") and "HTTP 400" in run.error
    released = [r.body["args"]["original_effect_id"] for r in server.requests if r.path == "/stock.release"]
    assert released == ["stock.check:2", "stock.check:1"]
    statuses = dict(MapBranch.objects.filter(run=run).values_list("index", "status"))
    assert statuses == {0: "succeeded", 1: "succeeded", 2: "failed", 3: "cancelled"}
    assert dict(Effect.objects.filter(run=run).values_list("state", "status")) == {
        "check[0]": "compensated",
        "check[1]": "compensated",
        "check[2]": "rejected",
    }
    assert not run.checkpoints.exists()
    assert actions(run)[-2:] == ["run.compensating", "run.compensated"]


def test_branch_messages_lost_with_the_broker_are_recovered_by_the_sweeper(
    publish,
    submit,
    tool_server,
    committed_db,
    isolated_celery_queue,
    tmp_path,
):
    tool_server.hold_s = 0
    publish_stock_flow(publish, tool_server, concurrency=2)
    run = submit("stock_flow", {"text": "check my order", "lines": LINES})
    services.run_advance(run_id=str(run.pk), worker="gone")  # fans out, then its branch messages are lost
    with celery_app.connection_for_write() as broker:
        broker.default_channel.queue_purge(isolated_celery_queue)
    queued = MapBranch.objects.filter(run=run, status=MapBranch.Status.QUEUED)
    assert queued.count() == 2
    queued.update(lease_expires_at="2020-01-01T00:00:00Z")  # as if RUN_LEASE_SECONDS had passed
    process = WorkerProcess(connection.settings_dict, queue=isolated_celery_queue, log_dir=tmp_path)
    process.start()
    try:
        assert services.runs_sweep_expired_leases() == 2

        run = finished(run, 40, process)
    finally:
        process.stop()

    assert run.status == Run.Status.SUCCEEDED
    assert actions(run).count("run.map.branch.lease_expired") == 2
    assert tool_server.effects_per_operation["stock.check"] == len(LINES)
    assert_fanned_in_once(run)
