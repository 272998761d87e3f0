"""A scripted OpenAI-compatible chat server on 127.0.0.1, for tests and benchmarks.

It answers ``POST /v1/chat/completions`` with what a ``responder`` function returns, and
``GET /v1/models``. Faults can be queued to exercise a client's retry logic over real HTTP::

    with ScriptedOpenAIServer(lambda body: '{"action_type": "speak", "argument": "hi"}') as srv:
        srv.fault_queue += [429, 500, ("delay", 2.0), "malformed", 401, 400]
        client = LLMClient("openai/scripted", api_base=srv.base_url, api_key="test")

Each queued fault is consumed by one chat request: ``429`` (rate limit, with ``Retry-After``),
``500``, ``503``, ``400``, ``401``, ``403``, ``404`` (OpenAI-style error bodies: bad request,
bad key, no access, no such model), ``("delay", seconds)`` (sleep before a normal answer, to
provoke client timeouts), ``"malformed"`` (a 200 response whose body is not JSON) and
``"echo_key"`` (a 401 whose message echoes the request's ``Authorization`` header, as careless
servers do: the key comes back inside the error text). ``None`` answers normally, so a fault
can be placed at the n-th request. ``requests`` holds every chat request body received,
faulted ones included, and ``faults_served`` the fault each one got (None: a normal answer).

Random faults (load tests): with ``fault_rate`` > 0, a request that finds the queue empty gets a
fault drawn from ``fault_choices`` with that probability, from a ``random.Random(fault_seed)``::

    ScriptedOpenAIServer(stand_in_answer, fault_rate=0.2, fault_choices=(429, 500, ("delay", 1.0)),
                         fault_seed=0)
"""
from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Responder = Callable[[dict], str]

_ERRORS = {
    400: ("invalid_request_error", "Bad request (scripted)."),
    401: ("invalid_api_key", "Incorrect API key provided (scripted)."),
    403: ("permission_denied", "You are not allowed to use this model (scripted)."),
    404: ("model_not_found", "The model does not exist or you do not have access to it (scripted)."),
    429: ("rate_limit_exceeded", "Rate limit reached (scripted)."),
    500: ("server_error", "Internal server error (scripted)."),
    503: ("server_error", "Service unavailable (scripted)."),
}


def _count_tokens(text: str) -> int:
    """A rough token count (whitespace words) so that usage figures are non-zero and monotone."""
    return max(1, len(text.split()))


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # replies go out at once (no 40 ms delayed-ACK stall on keep-alive)

    def log_message(self, format, *args):
        pass

    def _send(self, status: int, body: bytes, headers: dict | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            body = {"object": "list", "data": [{"id": self.server.owner.model_name, "object": "model",
                                                "owned_by": "scripted"}]}
            self._send(200, json.dumps(body).encode())
        else:
            self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode())

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode())
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._send(400, json.dumps({"error": {"message": "request body is not JSON"}}).encode())
            return
        owner = self.server.owner
        fault = owner._take(body)
        if owner.delay:
            time.sleep(owner.delay)
        if isinstance(fault, tuple) and fault and fault[0] == "delay":
            time.sleep(float(fault[1]))
            fault = None
        if fault == "malformed":
            self._send(200, b"this is not JSON {", content_type="application/json")
            return
        if fault == "echo_key":
            fault, message = 401, f"Invalid API key: {self.headers.get('Authorization', '')} (scripted)."
            err = {"error": {"message": message, "type": "invalid_api_key", "param": None,
                             "code": "invalid_api_key"}}
            self._send(fault, json.dumps(err).encode())
            return
        if isinstance(fault, int):
            code, message = _ERRORS.get(fault, ("server_error", f"HTTP {fault} (scripted)."))
            headers = {"Retry-After": str(owner.retry_after)} if fault == 429 else {}
            err = {"error": {"message": message, "type": code, "param": None, "code": code}}
            self._send(fault, json.dumps(err).encode(), headers)
            return
        try:
            content = owner.responder(body)
        except Exception as e:  # noqa: BLE001 - a responder bug becomes a visible 500, not a hung test
            err = {"error": {"message": f"responder failed: {type(e).__name__}: {e}", "type": "server_error"}}
            self._send(500, json.dumps(err).encode())
            return
        prompt_text = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        prompt_tokens, completion_tokens = _count_tokens(prompt_text), _count_tokens(content)
        reply = {
            "id": "chatcmpl-" + uuid.uuid4().hex[:12], "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", owner.model_name),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }
        self._send(200, json.dumps(reply).encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: ScriptedOpenAIServer


class ScriptedOpenAIServer:
    """An OpenAI-compatible chat-completions server on ``127.0.0.1`` (a free port), in a thread.

    ``responder(body) -> str`` gives the assistant message content for a request body (the
    OpenAI JSON: ``model``, ``messages``, ``temperature``...). ``delay`` seconds are slept
    before every answer (a fixed-latency API for benchmarks). ``retry_after`` is the
    ``Retry-After`` header value sent with a scripted 429. ``port`` 0 takes any free port.
    ``fault_rate`` (default 0: none) is the probability that a request the queue does not fault
    gets a random fault from ``fault_choices`` (seeded by ``fault_seed``).
    """

    def __init__(self, responder: Responder | None = None, delay: float = 0.0, *, retry_after: float = 0,
                 model_name: str = "scripted", port: int = 0, fault_rate: float = 0.0,
                 fault_choices: Sequence = (429, 500, 503), fault_seed: int | None = None):
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be in [0, 1], got {fault_rate}")
        if fault_rate > 0 and not fault_choices:
            raise ValueError("fault_rate > 0 needs at least one fault in fault_choices")
        self.responder: Responder = responder or (lambda body: '{"action_type": "speak", "argument": "Hello."}')
        self.delay = delay
        self.retry_after = retry_after
        self.model_name = model_name
        self.requested_port = port
        self.requests: list[dict] = []
        self.fault_queue: list = []
        self.faults_served: list = []
        self.fault_rate = fault_rate
        self.fault_choices = list(fault_choices)
        self._fault_rng = random.Random(fault_seed)
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def _take(self, body: dict):
        """Record a request and pop the next fault for it (None: answer normally); with an empty
        queue, draw a random fault with probability ``fault_rate``."""
        with self._lock:
            self.requests.append(body)
            if self.fault_queue:
                fault = self.fault_queue.pop(0)
            elif self.fault_rate and self._fault_rng.random() < self.fault_rate:
                fault = self._fault_rng.choice(self.fault_choices)
            else:
                fault = None
            self.faults_served.append(fault)
            return fault

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """The OpenAI ``api_base``: ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ScriptedOpenAIServer:
        self._httpd = _Server(("127.0.0.1", self.requested_port), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="scripted-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> ScriptedOpenAIServer:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
