"""Replays of recorded runs."""

from .env import env

# A batch replay (release evaluation) takes at most this many recorded runs.
REPLAY_BATCH_MAX_RUNS = env.int("REPLAY_BATCH_MAX_RUNS", default=1000, minimum=1)
# How often beat looks for finished runs of shadow rollouts to replay on their shadow release.
REPLAY_SHADOW_INTERVAL_SECONDS = env.int("REPLAY_SHADOW_INTERVAL_SECONDS", default=60, minimum=1)
# A replay running this long, or a batch that started none of its replays for this long, has lost
# its worker: the sweeper fails it. Long, as a what-if replay may wait on slow models.
REPLAY_STALE_SECONDS = env.int("REPLAY_STALE_SECONDS", default=3600, minimum=1)
REPLAY_SWEEP_INTERVAL_SECONDS = env.int("REPLAY_SWEEP_INTERVAL_SECONDS", default=300, minimum=1)
