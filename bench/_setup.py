"""Shared start-up for benchmarks: Django settings from the environment, like the app."""

import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

import django
from _databases import percentile

django.setup()


def describe(label: str, samples_s: list[float]) -> str:
    micro = [s * 1e6 for s in samples_s]
    return (
        f"{label:<34} p50 {percentile(micro, 0.5):8.1f} µs   p99 {percentile(micro, 0.99):8.1f} µs   "
        f"mean {statistics.fmean(micro):8.1f} µs"
    )
