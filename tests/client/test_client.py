"""The Python client against a live server and a real worker: submit, wait, decide, evidence."""

import pytest
import requests

from baton_client import BatonClient, BatonError
from controlplane.identity import Actor, api_key_issue
from tests.evidence.conftest import verifier

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("worker")]
SMALL_REFUND = {"text": "Please refund order #123, I want my money back: a refund of $120"}


def key(user, scopes) -> str:
    issued = api_key_issue(user=user, name="client", scopes=scopes, issued_by=Actor("tests", kind="system"))
    return issued.secret


@pytest.fixture
def client():
    """Clients with a new API key each, closed after the test: an open client keeps its HTTP
    connection, and with it a live server thread and that thread's database session."""
    made: list[BatonClient] = []

    def make(live_server, user, scopes) -> BatonClient:
        made.append(BatonClient(live_server.url, key(user, scopes)))
        return made[-1]

    yield make
    for baton in made:
        baton.close()


def test_submit_wait_decide_and_download_evidence(
    live_server, client, demo_registry, requester, reviewer, auditor, tmp_path
):
    baton = client(live_server, requester, ["tasks:write", "runs:read"])
    accepted = baton.submit_task(
        "support_case_resolution",
        case_id="CASE-1001",
        input=SMALL_REFUND,
        channel="staging",
        idempotency_key="case-1001-refund",
    )
    assert accepted.created and accepted.release_id.startswith("rel_")
    again = baton.submit_task(
        "support_case_resolution",
        case_id="CASE-1001",
        input=SMALL_REFUND,
        channel="staging",
        idempotency_key="case-1001-refund",
    )
    assert (again.run_id, again.created) == (accepted.run_id, False)

    parked = baton.wait_for_run(accepted.run_id, timeout=60)
    assert parked.status == "waiting_approval" and not parked.finished

    reviewer_api = client(live_server, reviewer, ["approvals:read", "approvals:decide"])
    [request] = list(reviewer_api.list_approvals(status="pending"))
    assert request["run"] == accepted.run_id
    reviewer_api.decide_approval(request["id"], "approve", reason="refund is within policy")
    finished = baton.wait_for_run(accepted.run_id, timeout=60)
    assert finished.status == "succeeded" and finished.finished
    actions = [event["action"] for event in baton.run_events(accepted.run_id)]
    assert actions[0] == "run.created" and actions[-1] == "run.succeeded" and "run.approved" in actions

    with pytest.raises(BatonError) as refused:
        reviewer_api.decide_approval(request["id"], "approve", reason="again")
    assert refused.value.status == 409

    auditor_api = client(live_server, auditor, ["audit:read"])
    package = auditor_api.download_evidence(tmp_path / "evidence.zip", run=accepted.run_id, format="csv")
    assert verifier.verify_package(package)["runs"] == 1


def test_refusals_carry_the_problem_details(live_server, client, requester):
    baton = client(live_server, requester, ["runs:read"])
    with pytest.raises(BatonError) as missing_scope:
        baton.submit_task("builtin.intake", case_id="C-1", input={"text": "hi"})
    assert missing_scope.value.status == 403 and "tasks:write" in missing_scope.value.detail

    writer = client(live_server, requester, ["tasks:write", "runs:read"])
    with pytest.raises(BatonError) as invalid:
        writer.submit_task("builtin.intake", case_id="C-1", input={"text": "hi"}, sensitivity="secret")
    assert invalid.value.status == 422 and "sensitivity" in invalid.value.errors

    with (
        BatonClient(live_server.url, "baton_not-a-key") as stranger,
        pytest.raises(BatonError) as unauthenticated,
    ):
        stranger.get_run("00000000-0000-0000-0000-000000000000")
    assert unauthenticated.value.status == 401


def test_a_client_hangs_up_when_closed_but_not_on_a_session_it_was_given(live_server, requester):
    secret = key(requester, ["runs:read"])
    missing = "00000000-0000-0000-0000-000000000000"

    def open_connections(session: requests.Session) -> int:
        return len(session.get_adapter(live_server.url).poolmanager.pools)

    with BatonClient(live_server.url, secret) as baton:
        with pytest.raises(BatonError):
            baton.get_run(missing)
        assert open_connections(baton.session) == 1
    assert open_connections(baton.session) == 0

    with requests.Session() as given:
        with BatonClient(live_server.url, secret, session=given) as baton, pytest.raises(BatonError):
            baton.get_run(missing)
        assert open_connections(given) == 1
