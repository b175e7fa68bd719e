"""A small typed client for Baton's REST API (`/api/v1`).

    from baton_client import BatonClient

    baton = BatonClient("http://127.0.0.1:8000", api_key="baton_…")
    run = baton.submit_task("support_case_resolution", case_id="CASE-7", input={"text": "…"},
                            idempotency_key="case-7-refund", channel="staging")
    run = baton.wait_for_run(run.run_id, timeout=60)
    for approval in baton.list_approvals(status="pending"):
        baton.decide_approval(approval["id"], "approve", reason="checked the order")
    baton.download_evidence("evidence.zip", run=run.run_id)

Errors come back as `BatonError` carrying the server's problem details.
"""

from .client import BatonClient, BatonError, RunStatus, TaskAccepted

__all__ = ["BatonClient", "BatonError", "RunStatus", "TaskAccepted"]
