from django.apps import AppConfig


class ReplaysConfig(AppConfig):
    """Replay of recorded runs: deterministic, what-if against another release, and in batches."""

    name = "replays"
