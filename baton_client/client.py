import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

FINISHED = frozenset(
    {"succeeded", "failed", "compensated", "compensation_failed", "dead_lettered", "rejected", "cancelled"}
)
PAUSED = frozenset({"waiting_approval"})


class BatonError(Exception):
    """A refused request: the HTTP status and the problem details Baton answered with."""

    def __init__(self, status: int, problem: dict):
        self.status = status
        self.problem = problem
        self.title = problem.get("title", "")
        self.detail = problem.get("detail", "")
        self.errors = problem.get("errors") or {}
        super().__init__(f"{status} {self.title}: {self.detail}".strip())


@dataclass(frozen=True)
class TaskAccepted:
    run_id: str
    status: str
    trace_id: str
    release_id: str
    channel: str
    created: bool  # False when the idempotency key returned an existing run


@dataclass(frozen=True)
class RunStatus:
    id: str
    status: str
    current_state: str
    raw: dict = field(repr=False)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class BatonClient:
    """Baton's REST API as methods. It keeps its HTTP connections open between calls: close it
    (or use it in a `with` block) when done; a session passed in stays the caller's to close."""

    def __init__(
        self, base_url: str, api_key: str, *, timeout: float = 10.0, session: requests.Session | None = None
    ):
        self.base_url = base_url.rstrip("/") + "/api/v1"
        self.timeout = timeout
        self._owns_session = session is None
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"

    def close(self) -> None:
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> "BatonClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Tasks and runs -------------------------------------------------------------------------

    def submit_task(
        self,
        workflow: str,
        *,
        case_id: str,
        input: dict,
        idempotency_key: str | None = None,
        channel: str | None = None,
        release: str | None = None,
        sensitivity: str | None = None,
        budget: dict | None = None,
        deadline: str | None = None,
    ) -> TaskAccepted:
        """Submit a task. The idempotency key (a fresh one if none is given) makes a retry of
        this call return the same run instead of starting a second one."""
        body: dict[str, Any] = {"workflow": workflow, "case_id": case_id, "input": input}
        optional = {"channel": channel, "release": release, "sensitivity": sensitivity, "budget": budget}
        body.update({key: value for key, value in optional.items() if value is not None})
        if deadline is not None:
            body["deadline"] = deadline
        response = self._request(
            "POST", "/tasks", json=body, headers={"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        )
        data = response.json()
        return TaskAccepted(
            run_id=data["run_id"],
            status=data["status"],
            trace_id=data["trace_id"],
            release_id=data.get("release_id", ""),
            channel=data.get("channel", ""),
            created=response.status_code == 201,
        )

    def get_run(self, run_id: str) -> RunStatus:
        data = self._request("GET", f"/runs/{run_id}").json()
        return RunStatus(
            id=data["id"], status=data["status"], current_state=data.get("current_state", ""), raw=data
        )

    def wait_for_run(
        self, run_id: str, *, timeout: float = 60.0, interval: float = 0.5, stop_when_paused: bool = True
    ) -> RunStatus:
        """Poll until the run finishes (or, by default, waits for a human); TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.get_run(run_id)
            if run.finished or (stop_when_paused and run.status in PAUSED):
                return run
            if time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} is still {run.status} after {timeout} s")
            time.sleep(interval)

    def run_events(self, run_id: str) -> list[dict]:
        return self._request("GET", f"/runs/{run_id}/events").json()  # one list, in chain order

    def cancel_run(self, run_id: str, reason: str) -> dict:
        return self._request("POST", f"/runs/{run_id}/cancel", json={"reason": reason}).json()

    # Approvals ------------------------------------------------------------------------------

    def list_approvals(self, *, status: str = "pending", **filters: str) -> Iterator[dict]:
        """The caller's view of approval requests, every page."""
        return self._pages("/approvals", params={"status": status, **filters})

    def get_approval(self, approval_id: int) -> dict:
        return self._request("GET", f"/approvals/{approval_id}").json()

    def decide_approval(self, approval_id: int, decision: str, *, reason: str = "") -> dict:
        """`decision` is "approve" or "reject" (a rejection needs a reason)."""
        body = {"decision": decision, "reason": reason}
        return self._request("POST", f"/approvals/{approval_id}/decision", json=body).json()

    # Evidence -------------------------------------------------------------------------------

    def download_evidence(
        self,
        path: str | Path,
        *,
        run: str | None = None,
        release: str | None = None,
        since: str | None = None,
        until: str | None = None,
        format: str = "json",
    ) -> Path:
        """Stream a signed evidence package to `path` (verify it with docs/verify_evidence.py)."""
        scope = {"run": run, "release": release, "since": since, "until": until}
        params = {key: value for key, value in scope.items() if value} | {"format": format}
        target = Path(path)
        with (
            self._request("GET", "/evidence", params=params, stream=True) as response,
            target.open("wb") as file,
        ):
            for chunk in response.iter_content(chunk_size=64 * 1024):
                file.write(chunk)
        return target

    # Plumbing -------------------------------------------------------------------------------

    def _pages(self, path: str, params: dict | None = None) -> Iterator[dict]:
        url: str | None = self.base_url + path
        while url:
            data = self._request("GET", url, params=params).json()
            yield from data["results"]
            url, params = data.get("next"), None  # `next` carries the query already

    def _request(self, method: str, path_or_url: str, **kwargs: Any) -> requests.Response:
        url = path_or_url if path_or_url.startswith("http") else self.base_url + path_or_url
        response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"title": response.reason, "detail": response.text[:500]}
            raise BatonError(response.status_code, problem)
        return response
