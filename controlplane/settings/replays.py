"""Replays of recorded runs."""

from .env import env

# A batch replay (release evaluation) takes at most this many recorded runs.
REPLAY_BATCH_MAX_RUNS = env.int("REPLAY_BATCH_MAX_RUNS", default=1000)
# How often beat looks for finished runs of shadow rollouts to replay on their shadow release.
REPLAY_SHADOW_INTERVAL_SECONDS = env.int("REPLAY_SHADOW_INTERVAL_SECONDS", default=60)
