"""Demo traffic against a live server and a real worker: the expected mix of outcomes."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from controlplane.models import ApiKey
from demo.services import demo_load
from demo.traffic import MIX
from runs.models import Run

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("worker")]


def test_demo_traffic_drives_the_whole_mix_through_the_api(live_server, capsys):
    demo_load()
    before = Run.objects.count()

    call_command("demo_traffic", rate=20, duration=len(MIX) / 20, url=live_server.url, wait=60)

    output = capsys.readouterr().out
    assert f"{len(MIX)}/{len(MIX)} submitted" in output and f"Submitted {len(MIX)} cases." in output
    outcomes_part, kinds_part = output.split("Outcomes:")[1].split("By kind of case:")
    outcomes, kinds = (
        dict(line.strip().split(": ", 1) for line in part.splitlines() if line.strip())
        for part in (outcomes_part, kinds_part)
    )
    assert (outcomes["malformed"], outcomes["refused"]) == ("1", "1")
    assert kinds["restricted_data"] == "refused 1" and kinds["malformed"] == "malformed 1"
    assert kinds["clean_batch"] == "succeeded 1" and kinds["schema_change"] == "succeeded 1"
    assert kinds["anomalous_batch"] == "waiting_approval 1" and kinds["large_refund"] == "waiting_approval 1"
    assert kinds["small_refund"] == "waiting_approval 2" and kinds["wants_person"] == "waiting_approval 1"
    assert kinds["missing_batch"] in ("failed 1", "dead_lettered 1")
    assert Run.objects.count() == before + len(MIX) - 2  # the refused and the malformed never became runs
    assert not ApiKey.objects.filter(name="demo traffic", revoked_at__isnull=True).exists()


def test_demo_traffic_needs_the_demo_user(db):
    with pytest.raises(CommandError, match="load_demo"):
        call_command("demo_traffic", user="nobody")
