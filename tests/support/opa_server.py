"""A loopback server speaking the part of OPA's REST API that Baton uses, evaluating with rego-cpp.

PUT /v1/policies/{id} (Rego text), PUT /v1/data/{path} (JSON), POST /v1/data/{path}
({"input": ...} -> {"result": ...}, or {} when undefined). `delay_s` and `fail` let a test
make it slow or broken.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from regopy import Input, Interpreter, RegoError


class FakeOpa:
    def __init__(self) -> None:
        self.policies: dict[str, str] = {}
        self.data: dict = {}
        self.delay_s = 0.0
        self.fail = False
        self.requests: list[tuple[str, str]] = []
        self._compiled: dict[tuple[str, ...], tuple[Interpreter, object]] = {}  # emptied by every PUT
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FakeOpa":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def put_data(self, path: list[str], value) -> None:
        self._compiled.clear()
        node = self.data
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value

    def evaluate(self, path: list[str], document) -> dict:
        """Like OPA: policies and data compiled once, then each query evaluated against them."""
        key = tuple(path)
        if key not in self._compiled:
            interpreter = Interpreter()
            for name, source in sorted(self.policies.items()):
                interpreter.add_module(name, source)
            interpreter.add_data(self.data)
            self._compiled[key] = (interpreter, interpreter.build(None, ["/".join(path)]))
        interpreter, compiled = self._compiled[key]
        interpreter.set_input(Input(document))
        output = interpreter.query_bundle_entrypoint(compiled, "/".join(path))
        if not output.ok():
            raise RegoError(str(output))
        expressions = output.results[0].expressions if output.results else []
        return {"result": expressions[0]} if expressions else {}

    def _handler(self):
        opa = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _reply(self, status: int, body: dict | None = None) -> None:
                payload = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def do_PUT(self) -> None:
                opa.requests.append(("PUT", self.path))
                if self.path.startswith("/v1/policies/"):
                    source = self._body().decode()
                    try:
                        Interpreter().add_module("check.rego", source)
                    except RegoError as error:
                        return self._reply(400, {"code": "invalid_parameter", "message": str(error)})
                    opa.policies[self.path.removeprefix("/v1/policies/")] = source
                    opa._compiled.clear()
                    return self._reply(200, {})
                if self.path.startswith("/v1/data/"):
                    opa.put_data(self.path.removeprefix("/v1/data/").split("/"), json.loads(self._body()))
                    return self._reply(204)
                return self._reply(404, {"code": "resource_not_found"})

            def do_POST(self) -> None:
                opa.requests.append(("POST", self.path))
                if opa.delay_s:
                    threading.Event().wait(opa.delay_s)
                if opa.fail:
                    return self._reply(500, {"code": "internal_error", "message": "boom"})
                if not self.path.startswith("/v1/data/"):
                    return self._reply(404, {"code": "resource_not_found"})
                document = json.loads(self._body() or b"{}").get("input")
                try:
                    result = opa.evaluate(
                        self.path.removeprefix("/v1/data/").split("?")[0].split("/"), document
                    )
                except RegoError as error:
                    return self._reply(500, {"code": "internal_error", "message": str(error)})
                return self._reply(200, result)

        return Handler
