"""Background work of replays; thin wrappers over its services."""

from celery import shared_task

from . import services


@shared_task(name="replays.tasks.execute_replay")
def execute_replay(replay_id: int) -> str:
    return services.replay_execute(replay_id=replay_id).outcome


@shared_task(name="replays.tasks.execute_replay_batch")
def execute_replay_batch(batch_id: int) -> None:
    try:
        services.replay_batch_execute(batch_id=batch_id)
    except Exception as error:
        services.replay_batch_failed(batch_id, error)
        raise


@shared_task(name="replays.tasks.replay_shadow_runs")
def replay_shadow_runs() -> int:
    return services.replay_shadow_runs()


@shared_task(name="replays.tasks.sweep_stalled_replays")
def sweep_stalled_replays() -> int:
    return services.replays_sweep_stalled()
