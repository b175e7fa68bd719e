"""Start and stop a real `celery worker` subprocess against the test database."""

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from django.conf import settings

READY_TIMEOUT_S = 30


def database_url(settings_dict: dict) -> str:
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(settings_dict['NAME']).resolve()}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = settings_dict.get("HOST") or "localhost"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{settings_dict['NAME']}"


class WorkerProcess:
    def __init__(self, settings_dict: dict, *, queue: str, log_dir: Path, extra_env: dict | None = None):
        self.queue = queue
        self.log_path = log_dir / f"worker-{uuid.uuid4().hex[:6]}.log"
        self.env = (
            os.environ
            | {
                "DATABASE_URL": database_url(settings_dict),
                "CELERY_QUEUE": queue,
                "BATON_VAR_DIR": str(settings.BASE_DIR / "var"),
                "PYTHONUNBUFFERED": "1",
            }
            | (extra_env or {})
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "controlplane",
                "worker",
                "--loglevel=INFO",
                "--concurrency=1",
                "--pool=prefork",
                f"--queues={self.queue}",
                f"--hostname=test-{uuid.uuid4().hex[:6]}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=settings.BASE_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its prefork child goes with it on stop (see `stop`)
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log()}")
            if " ready." in self.log():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"worker not ready after {READY_TIMEOUT_S}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Warm shutdown; then nothing of the worker's process group may outlive it (a child left
        behind would keep its database connection open, and the test database could not be
        dropped)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
