import pytest
from django.core.management import call_command

from runs.tools import ToolCall, ToolError
from runs.tools import sandbox as sandbox_transport
from sandbox.models import CatalogEntry, DatasetBatch, Effect, Outage, SupportCase
from sandbox.seed import OUTAGES

PUBLISH = {"transport": {"type": "sandbox", "operation": "publish_metadata"}}


def publish_call(batch_id: str, key: str) -> ToolCall:
    args = {"dataset": "orders_daily", "batch_id": batch_id, "severity": "low", "report": "No anomalies."}
    return ToolCall(tool="catalog.publish_metadata", spec=PUBLISH, args=args, idempotency_key=key)


@pytest.mark.django_db(transaction=True)
def test_the_sandbox_is_seeded_again_after_a_flush():
    call_command("flush", interactive=False, verbosity=0)
    assert SupportCase.objects.filter(case_id="CASE-1001").exists()
    assert DatasetBatch.objects.filter(dataset__slug="orders_daily").count() == 5
    assert set(Outage.objects.values_list("operation", "subject", "refusals")) == set(OUTAGES)


@pytest.mark.django_db
def test_an_outage_refuses_the_first_attempts_of_each_call_as_retryable_then_serves_it_once():
    refused = []
    for _ in range(4):  # the seeded outage of 2026-11-23 refuses four attempts of each call
        with pytest.raises(ToolError) as error:
            sandbox_transport.invoke(publish_call("2026-11-23", "key-1"))
        refused.append(error.value)
    assert all(error.retryable for error in refused)
    assert "publish_metadata is unavailable for orders_daily/2026-11-23" in str(refused[0])
    assert not Effect.objects.exists()

    served = sandbox_transport.invoke(publish_call("2026-11-23", "key-1"))
    again = sandbox_transport.invoke(publish_call("2026-11-23", "key-1"))

    assert (served.replayed, again.replayed, again.effect_id) == (False, True, served.effect_id)
    assert Effect.objects.filter(idempotency_key="key-1").count() == 1
    assert CatalogEntry.objects.filter(batch__batch_id="2026-11-23").count() == 1
    with pytest.raises(ToolError):  # another call starts its own count
        sandbox_transport.invoke(publish_call("2026-11-23", "key-2"))


@pytest.mark.django_db
def test_calls_about_other_records_meet_no_outage():
    assert not sandbox_transport.invoke(publish_call("2026-11-19", "key-3")).replayed
