"""A loopback server speaking the `http` tool transport's protocol, with faults on demand.

POST /{operation} with an Idempotency-Key header and {"args": {...}} applies one effect per
new key and replies {"result": {"operation", "args", "sequence"}, "effect_id":
"{operation}:{sequence}"}; a known key gets the stored reply with `Idempotent-Replayed: true`
and no new effect (422 if the key came with another operation or other args).
GET /{operation}/effects/{key} answers the stored reply, or 404.

Faults apply to the coming POSTs, in the order they were asked for: `fail_next()` answers
an error without an effect, `delay_next()` applies the effect and then holds the reply back
(so a client times out on a committed effect), `drop_connection_next()` applies the effect
and closes the connection without a reply.
"""

import json
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: dict | None


@dataclass(frozen=True)
class _Fault:
    status: int = 0  # reply this status without an effect
    retry_after: int | None = None
    delay_s: float = 0.0
    drop: bool = False


class ToolServer:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.effects_per_operation: Counter[str] = Counter()
        self._replies: dict[str, tuple[str, dict, dict]] = {}  # key -> (operation, args, reply)
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def effects(self) -> int:
        """Real effects applied, replays not counted."""
        with self._lock:
            return self.effects_per_operation.total()

    def start(self) -> "ToolServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases delayed replies
        self._server.shutdown()
        self._server.server_close()

    def fail_next(self, n: int, status: int, *, retry_after: int | None = None) -> None:
        with self._lock:
            self._faults += [_Fault(status=status, retry_after=retry_after)] * n

    def delay_next(self, seconds: float) -> None:
        with self._lock:
            self._faults.append(_Fault(delay_s=seconds))

    def drop_connection_next(self) -> None:
        with self._lock:
            self._faults.append(_Fault(drop=True))

    def _receive(self, request: Request) -> _Fault:
        with self._lock:
            self.requests.append(request)
            return self._faults.pop(0) if request.method == "POST" and self._faults else _Fault()

    def _apply(self, operation: str, args: dict, key: str) -> tuple[int, dict, bool]:
        """(status, reply, replayed): at most one effect per key, however many threads ask."""
        with self._lock:
            if key in self._replies:
                known_operation, known_args, reply = self._replies[key]
                if (known_operation, known_args) != (operation, args):
                    return 422, {"error": "idempotency key reused for another call"}, False
                return 200, reply, True
            self.effects_per_operation[operation] += 1
            sequence = self.effects_per_operation[operation]
            reply = {
                "result": {"operation": operation, "args": args, "sequence": sequence},
                "effect_id": f"{operation}:{sequence}",
            }
            self._replies[key] = (operation, args, reply)
            return 200, reply, False

    def _stored(self, key: str) -> dict | None:
        with self._lock:
            known = self._replies.get(key)
            return known[2] if known else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _reply(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up waiting (delay_next) and closed the socket
                    self.close_connection = True

            def _request(self) -> Request:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                return Request(self.command, self.path, dict(self.headers.items()), body)

            def do_POST(self) -> None:
                request = self._request()
                fault = server._receive(request)
                if fault.status:
                    retry_after = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
                    return self._reply(fault.status, {"error": "injected failure"}, retry_after)
                key = self.headers.get("Idempotency-Key", "")
                args = (request.body or {}).get("args")
                if not key or not isinstance(args, dict):
                    return self._reply(400, {"error": "needs an Idempotency-Key and {'args': {...}}"})
                status, reply, replayed = server._apply(self.path.strip("/"), args, key)
                if fault.delay_s:
                    server._stopping.wait(fault.delay_s)
                if fault.drop:
                    self.close_connection = True
                    return None
                return self._reply(status, reply, {"Idempotent-Replayed": "true"} if replayed else None)

            def do_GET(self) -> None:
                server._receive(self._request())
                _, marker, key = self.path.partition("/effects/")
                stored = server._stored(unquote(key)) if marker else None
                if stored is None:
                    return self._reply(404, {"error": "no effect with that key"})
                return self._reply(200, stored)

        return Handler
