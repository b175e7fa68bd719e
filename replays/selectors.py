from django.db.models import QuerySet

from .models import Replay, ReplayBatch


def replays() -> QuerySet[Replay]:
    """With what every list of replays shows: the run's workflow and who asked."""
    return Replay.objects.select_related("requested_by", "run")


def replays_of(run_id) -> QuerySet[Replay]:
    return replays().filter(run_id=run_id)


def batches() -> QuerySet[ReplayBatch]:
    return ReplayBatch.objects.select_related("requested_by", "release")
