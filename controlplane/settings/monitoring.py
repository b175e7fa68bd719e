"""Metrics, the dashboard and automatic rollback of canaries."""

from .env import env, secret

# Prometheus scrapes /metrics with `Authorization: Bearer <METRICS_TOKEN>`; without a token
# only signed-in platform engineers and admins can read it.
METRICS_TOKEN = secret("METRICS_TOKEN", default="")
# What one human review costs, added to a release's cost per completed task.
REVIEWER_COST_PER_DECISION_USD = env.float("REVIEWER_COST_PER_DECISION_USD", default=2.0, minimum=0)

# Automatic rollback: a canary is compared with its baseline on the same channel, over runs
# started since the canary was promoted, once each side has ROLLBACK_MIN_RUNS finished runs.
ROLLBACK_CHECK_INTERVAL_SECONDS = env.int("ROLLBACK_CHECK_INTERVAL_SECONDS", default=60, minimum=1)
ROLLBACK_MIN_RUNS = env.int("ROLLBACK_MIN_RUNS", default=20, minimum=1)
# Roll back when the canary's unsafe action rate exceeds the baseline's by more than this
# (0: any increase), its exception leakage by more than this many points, or its cost per
# completed task by more than this fraction.
ROLLBACK_MAX_UNSAFE_RATE_INCREASE = env.float("ROLLBACK_MAX_UNSAFE_RATE_INCREASE", default=0.0, minimum=0)
ROLLBACK_MAX_LEAKAGE_INCREASE = env.float("ROLLBACK_MAX_LEAKAGE_INCREASE", default=0.05, minimum=0)
ROLLBACK_MAX_COST_INCREASE = env.float("ROLLBACK_MAX_COST_INCREASE", default=0.20, minimum=0)
