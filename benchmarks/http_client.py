"""The HTTP benchmark's clients (standard library only; one keep-alive connection each): upload a
photo, poll until its prediction is there, and many of them in threads for a while."""

import http.client
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field

KEEPALIVE_REUSE_S = 1.0  # gunicorn closes idle keep-alive connections after 2 s


class Client:
    def __init__(self, port: int, token: str, timeout: float):
        self.port, self.timeout = port, timeout
        self.headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
        self.conn: http.client.HTTPConnection | None = None
        self.last_used = 0.0

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        # A connection idle for longer than gunicorn keeps it is not reused: a request sent
        # just as the server closes it would fail for reasons that are not the app's.
        if self.conn is None or time.monotonic() - self.last_used > KEEPALIVE_REUSE_S:
            self.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body, headers=self.headers | (headers or {}))
            response = self.conn.getresponse()
            data = response.read()
        except BaseException:
            self.close()
            raise
        self.last_used = time.monotonic()
        if response.will_close:
            self.close()
        return response.status, data

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def multipart(filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = secrets.token_hex(16)
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{filename}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@dataclass
class Result:
    started: float  # time.monotonic()
    done: float = 0.0
    ok: bool = False
    total_ms: float = 0.0  # POST start -> the GET that shows the prediction
    post_ms: float = 0.0
    polls: int = 0
    get_ms: list[float] = field(default_factory=list)  # each poll's round trip
    server_latency_ms: float | None = None  # the prediction's latency_ms: queued -> stored
    model_ms: float | None = None
    backend: str = ""
    model_version: str = ""
    label: str = ""
    error: str = ""


def upload_and_wait(client: Client, payload: tuple[str, bytes], *, poll_s: float, timeout: float,
                    stop: threading.Event, backoff: float = 1.0, max_poll_s: float = 2.0) -> Result:
    """POST one photo, then GET it every poll_s (times backoff after each GET, at most
    max_poll_s when backing off) until the prediction is there."""
    filename, data = payload
    body, content_type = multipart(filename, data)
    started = time.perf_counter()
    result = Result(started=time.monotonic())

    def fail(message: str) -> Result:
        result.error, result.done = message, time.monotonic()
        result.total_ms = (time.perf_counter() - started) * 1000.0
        return result

    try:
        status, answer = client.request("POST", "/api/images/", body, {"Content-Type": content_type})
        result.post_ms = (time.perf_counter() - started) * 1000.0
        if not 200 <= status < 300:
            return fail(f"POST /api/images/ ({filename}) -> {status}: {answer[:500]!r}")
        [created] = json.loads(answer)
        if not created.get("created", True):
            return fail(f"POST /api/images/ ({filename}) -> created=false: the content was already stored")
        path = f"/api/images/{created['id']}/"
        deadline = started + timeout
        while True:
            get_started = time.perf_counter()
            status, answer = client.request("GET", path)
            result.get_ms.append((time.perf_counter() - get_started) * 1000.0)
            result.polls += 1
            if not 200 <= status < 300:
                return fail(f"GET {path} -> {status}: {answer[:500]!r}")
            image = json.loads(answer)
            if image["status"] == "failed":
                return fail(f"GET {path} -> status failed: {image.get('error')!r}")
            prediction = image.get("prediction")
            if image["status"] == "predicted" and prediction:
                result.total_ms = (time.perf_counter() - started) * 1000.0
                result.done = time.monotonic()
                result.ok = True
                result.server_latency_ms = prediction.get("latency_ms")
                result.model_ms = prediction.get("model_ms")
                result.backend = prediction.get("backend", "")
                result.model_version = (prediction.get("model_version") or {}).get("name", "")
                result.label = prediction.get("label", "")
                return result
            if time.perf_counter() + poll_s > deadline:
                return fail(f"GET {path}: no prediction after {timeout:.0f} s (status {image['status']})")
            if stop.wait(poll_s):
                return fail("interrupted")
            if backoff > 1.0:
                poll_s = max(poll_s, min(poll_s * backoff, max_poll_s))
    except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
        return fail(f"{type(e).__name__}: {e}")


def run_load(*, clients: int, duration: float | None, payloads: list, port: int, token: str, args,
             stop: threading.Event) -> tuple[list[Result], float, float, bool]:
    """`clients` threads upload and wait in a loop for `duration` s (None: until the payloads
    run out). Returns the results, the window's start (monotonic), the time the last one
    finished and whether the payloads ran out."""
    results: list[Result] = []
    lock = threading.Lock()
    state = {"next": 0, "exhausted": False}
    t0 = time.monotonic()
    window_end = t0 + duration if duration is not None else float("inf")

    def client_loop():
        client = Client(port, token, args.timeout)
        try:
            while not stop.is_set() and time.monotonic() < window_end:
                with lock:
                    if state["next"] >= len(payloads):
                        state["exhausted"] = True
                        return
                    payload = payloads[state["next"]]
                    state["next"] += 1
                result = upload_and_wait(client, payload, poll_s=args.load_poll_ms / 1000.0, timeout=args.timeout,
                                         stop=stop, backoff=args.load_poll_backoff, max_poll_s=2.0)
                with lock:
                    results.append(result)
                if not result.ok:
                    stop.wait(0.1)  # no tight loop against a failing server
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:  # each ends by the window's end plus one upload's timeout
        while t.is_alive():
            t.join(0.2)
    return results, t0, time.monotonic(), state["exhausted"]


def healthy(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/healthz")
        ok = connection.getresponse().status == 200
        connection.close()
        return ok
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
