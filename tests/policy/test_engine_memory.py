"""A worker process evaluates policy for days: its memory must not grow with each decision."""

import subprocess
import sys

from django.conf import settings

# A process started as the worker and web processes are (the controlplane package first), then
# 3,000 tool.call decisions; the resident memory they add, in MB.
MEASURE = """
import django
django.setup()
from policy.bundles import shipped_default_bundle
from policy.decision_points import POINTS
from policy.engines import configured_engine
from tests.policy.test_default_bundle import CASES, document

engine, bundle = configured_engine(), shipped_default_bundle()
point, fields, _ = next(case for case in CASES.values() if case[0] == "tool.call")
entrypoint, doc = POINTS[point].entrypoint, document(point, **fields)

def resident_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 1e6

for _ in range(200):
    engine.evaluate(bundle, entrypoint, doc)
before = resident_mb()
for _ in range(3000):
    engine.evaluate(bundle, entrypoint, doc)
print(resident_mb() - before)
"""


def test_decisions_do_not_grow_the_process():
    grown = subprocess.run(
        [sys.executable, "-c", MEASURE],
        cwd=settings.BASE_DIR,
        env={"DJANGO_SETTINGS_MODULE": "controlplane.settings", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert float(grown.stdout.strip()) < 5, grown.stdout  # leaking, 3,000 decisions added about 30 MB
