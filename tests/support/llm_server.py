"""A loopback server speaking OpenAI's chat-completions protocol, scripted by each test.

POST /v1/chat/completions answers with the next scripted `Reply` (a content string, an HTTP
status, a delay to provoke timeouts), or `default` when the script is empty. Every request
(headers, JSON body) is recorded; one without `Bearer <api_key>` gets 401.
"""

import json
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Reply:
    content: str = '{"answer": "ok"}'
    status: int = 200
    delay_s: float = 0.0
    usage: dict | None = None  # None: estimated from the text, like a real server would count


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]  # lower-cased names
    body: dict

    @property
    def user_prompt(self) -> str:
        return self.body["messages"][-1]["content"]


class FakeLLM:
    def __init__(self, api_key: str | None = "test-key") -> None:
        self.api_key = api_key
        self.default = Reply()
        self.rejected_formats: set[str] = set()  # response_format types answered with 400
        self.requests: list[Received] = []
        self._script: deque[Reply] = deque()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """The base_url of a model config pointing here."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def script(self, *replies: "Reply | str | int") -> None:
        """Queue replies: a Reply, a content string, or an HTTP error status."""
        for reply in replies:
            if isinstance(reply, str):
                reply = Reply(content=reply)
            elif isinstance(reply, int):
                reply = Reply(content="", status=reply)
            self._script.append(reply)

    def start(self) -> "FakeLLM":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping on a delay
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeLLM":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def answer(self, received: Received) -> tuple[int, dict]:
        if self.api_key is not None and received.headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
        response_format = (received.body.get("response_format") or {}).get("type")
        if response_format in self.rejected_formats:
            message = f"response_format type {response_format} is not supported by this server"
            return 400, {"error": {"message": message, "type": "invalid_request_error"}}
        reply = self._script.popleft() if self._script else self.default
        if reply.delay_s:
            self._stopping.wait(reply.delay_s)
        if reply.status != 200:
            return reply.status, {"error": {"message": f"scripted {reply.status}", "type": "server_error"}}
        prompt = "".join(message["content"] for message in received.body.get("messages", []))
        usage = reply.usage or {
            "prompt_tokens": len(prompt) // 4,
            "completion_tokens": len(reply.content) // 4,
        }
        usage = usage | {"total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
        return 200, {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": 0,
            "model": received.body.get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                if self.path != "/v1/chat/completions":
                    return self._reply(404, {"error": {"message": "not found"}})
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                received = Received({k.lower(): v for k, v in self.headers.items()}, body)
                fake.requests.append(received)
                self._reply(*fake.answer(received))

            def _reply(self, status: int, body: dict) -> None:
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except ConnectionError:  # the client gave up waiting (a timeout test)
                    pass

        return Handler
