import importlib.util
import io
import json
import zipfile
from pathlib import Path

import pytest
from django.conf import settings

from approvals.services import approval_decide
from controlplane.identity import actor_for
from evidence.collect import Scope
from evidence.services import evidence_prepare
from runs import services
from runs.models import Run
from tests.support.workflows import advance, http_tool, workflow

_spec = importlib.util.spec_from_file_location(
    "verify_evidence", Path(settings.BASE_DIR) / "docs" / "verify_evidence.py"
)
verifier = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(verifier)


@pytest.fixture
def approved_and_compensated_run(publish, requester, reviewer, tool_server, settings) -> Run:
    """An irreversible charge that policy sends to a reviewer, approved, then a refused shipment:
    the charge is refunded by its compensation tool."""
    settings.RUN_RETRY_BACKOFF_SECONDS = 0
    settings.RUN_TIME_SLICE_SECONDS = 0  # one step per advance
    publish(
        workflow(
            "refund_flow",
            {"name": "charge", "tool": "payments.charge", "agent": "ops_agent", "args": {"amount": 120}},
            {"name": "ship", "tool": "shipments.create", "agent": "ops_agent", "args": {"sku": "A-1"}},
        ),
        tools={
            "payments.refund": http_tool(tool_server, "payments.refund"),
            "payments.charge": http_tool(
                tool_server,
                "payments.charge",
                side_effect="irreversible",
                compensation_tool="payments.refund",
            ),
            "shipments.create": http_tool(tool_server, "shipments.create"),
        },
    )
    run = services.task_submit(
        requester=requester,
        actor=actor_for(requester),
        workflow="refund_flow",
        case_id="CASE-77",
        input={"text": "Refund order #77"},
        channel="staging",
    ).run
    run = advance(run)
    assert run.status == Run.Status.WAITING_APPROVAL
    approval_decide(
        pending_action_id=run.pending_actions.get().pk,
        decision="approve",
        reason="customer was charged twice",
        user=reviewer,
    )
    assert advance(run).current_state == "ship"  # charged
    tool_server.fail_next(1, 400)  # the shipment is refused: no retry
    run = advance(run)
    assert run.status == Run.Status.COMPENSATED
    return run


def package_bytes(scope: Scope, fmt: str, user) -> bytes:
    package = evidence_prepare(scope=scope, format=fmt, actor=actor_for(user))
    return b"".join(package.chunks())


def read_member(data: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.read(name)


def evidence_json(data: bytes) -> dict:
    return json.loads(read_member(data, "evidence.json"))
