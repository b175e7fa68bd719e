"""Baton started anew, as a deployment starts it: settings are read once, when Django starts."""

import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent.parent


def python(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """`python *args` in the project's directory, in a new interpreter with exactly `env`."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
