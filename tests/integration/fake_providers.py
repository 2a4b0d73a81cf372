"""Faithful fakes of Kie.ai (market and Veo APIs) and of the Anthropic
Messages API, on loopback, for the integration tests.

They speak the documented shapes (../shared/reference/kie.md): envelopes
{"code","msg","data"}, createTask / recordInfo with `state` and a
`resultJson` *string*, Veo generate / record-info with `successFlag` and
`response.resultUrls`; Anthropic's /v1/messages with content blocks and
{"type":"error","error":{...}} bodies. Result files are real: a PNG made
with PIL and an MP4 made by libavcodec (taken from the server's own mock).

Requests are checked against the fields Kie's model pages document
(KIE_MODELS below): an unknown model, a field the page does not list, a
value outside its enum or a missing required field is answered as Kie
answers a validation error, {"code": 422, "msg": ...}.

A finished market task's resultJson can be made to carry no usable URL with
result_empty_string ([""]), result_empty_list ([]) or result_missing (no
resultUrls at all); Veo's response likewise.

Faults are chosen per task by tokens in the prompt, e.g. "[create_401]":
  create_401 create_401_in_200 create_402 create_422 create_429_once
  create_455 create_500 create_500_once create_malformed create_no_task_id
  poll_never poll_fail poll_500_3 poll_malformed_2 poll_401_once poll_404
  dl_slow dl_hold (half the file, the rest once release() is called)
  dl_cut dl_cut_once dl_big (60 MB) dl_50mb (just under the limit) dl_html dl_404
  dl_redirect_local dl_redirect_local_https dl_redirect_name
  hold (finishes only when release() is called)   delay_<seconds>
  file_<name> (the result file is files[name], bytes a test put there)
  a_400 a_429_once a_529_once a_500_once a_malformed a_401
"""
import io
import json
import re
import socket
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KIE_KEY = "test-kie-key"
ANTHROPIC_KEY = "test-anthropic-key"

# The request fields of each Kie model as its docs.kie.ai page lists them:
# field -> a type, or the list of allowed values.
#   market/seedream/seedream, market/google/nano-banana-edit,
#   market/google/pro-image-to-image ("nano-banana-pro"),
#   veo3-api/generate-veo-3-video
RATIOS = ["1:1", "9:16", "16:9", "3:4", "4:3", "3:2", "2:3", "5:4", "4:5", "21:9", "auto"]
KIE_MODELS = {
    "bytedance/seedream": {
        "required": ["prompt"],
        "fields": {"prompt": str, "seed": int, "guidance_scale": (int, float),
                   "image_size": ["square", "square_hd", "portrait_4_3", "portrait_16_9",
                                  "landscape_4_3", "landscape_16_9"]}},
    "google/nano-banana-edit": {
        "required": ["prompt", "image_urls"],
        "fields": {"prompt": str, "image_urls": list, "output_format": ["png", "jpeg"],
                   "aspect_ratio": RATIOS,
                   "image_size": RATIOS}},  # the older name, listed as deprecated
    "nano-banana-pro": {
        "required": ["prompt"],
        "fields": {"prompt": str, "image_input": list, "aspect_ratio": RATIOS,
                   "resolution": ["1K", "2K", "4K"], "output_format": ["png", "jpg"]}},
}
VEO_FIELDS = {
    "required": ["prompt"],
    "fields": {"prompt": str, "imageUrls": list, "model": ["veo3", "veo3_fast", "veo3_lite"],
               "generationType": ["TEXT_2_VIDEO", "FIRST_AND_LAST_FRAMES_2_VIDEO",
                                  "REFERENCE_2_VIDEO"],
               "aspect_ratio": ["16:9", "9:16", "Auto"], "seeds": int, "callBackUrl": str,
               "enableFallback": bool, "enableTranslation": bool, "watermark": str,
               "resolution": ["720p", "1080p", "4k"]}}


def validation_error(body, veo):
    """Kie's complaint about a create request, or None when it is as documented."""
    if veo:
        spec, values = VEO_FIELDS, body
    else:
        extra = set(body) - {"model", "callBackUrl", "input"}
        if extra:
            return f"unknown field(s): {', '.join(sorted(extra))}"
        spec = KIE_MODELS.get(body.get("model"))
        if spec is None:
            return f"model {body.get('model')!r} is not supported"
        values = body.get("input")
        if not isinstance(values, dict):
            return "input is required"
    for name in spec["required"]:
        if values.get(name) in (None, "", []):
            return f"{name} is required"
    for name, v in values.items():
        allowed = spec["fields"].get(name)
        if allowed is None:
            return f"{name} is not a parameter of this model"
        if isinstance(allowed, list):
            if v not in allowed:
                return f"{name} must be one of {', '.join(allowed)}"
        elif not isinstance(v, allowed) or (allowed is int and isinstance(v, bool)):
            return f"{name} has the wrong type"
    return None


def png_bytes(size=64, color=(200, 40, 90)):
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


def faults_of(text):
    return set(re.findall(r"\[([a-z0-9_]+)\]", text or ""))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients that vanish (a SIGKILLed server) are expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    @property
    def fake(self):
        return self.server.fake

    def _send(self, status, body, ctype="application/json", extra=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def do_POST(self):
        body = self._body()
        self.fake.record("POST", self.path, body, dict(self.headers))
        if self.path == "/v1/messages":
            return self.fake.anthropic(self, body)
        if self.path in ("/api/v1/jobs/createTask", "/api/v1/veo/generate"):
            return self.fake.create(self, body, veo=self.path.startswith("/api/v1/veo"))
        self._send(404, {"code": 404, "msg": "not found"})

    def do_GET(self):
        self.fake.record("GET", self.path, None, dict(self.headers))
        if self.path.startswith("/api/v1/jobs/recordInfo") or self.path.startswith(
                "/api/v1/veo/record-info"):
            return self.fake.record_info(self, veo="/veo/" in self.path)
        if self.path.startswith("/files/"):
            return self.fake.serve_file(self)
        self._send(404, {"code": 404, "msg": "not found"})


class FakeProviders:
    def __init__(self, mp4=None):
        self.png = png_bytes()
        self.mp4 = mp4
        self.files = {}  # name -> bytes, served for a prompt with [file_<name>]
        self.tasks = {}
        self.requests = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.once = set()
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.fake = self
        self.port = self.httpd.server_address[1]
        # an "internal" service that redirects must never reach
        self.internal = _Server(("127.0.0.1", 0), _Handler)
        self.internal.daemon_threads = True
        self.internal.fake = self
        self.internal_hits = 0
        self.loopback_name = None  # a host name that resolves to 127.0.0.1, if any
        for name in (socket.gethostname(), "localhost."):
            try:
                if socket.gethostbyname(name).startswith("127."):
                    self.loopback_name = name
                    break
            except OSError:
                pass
        for srv in (self.httpd, self.internal):
            threading.Thread(target=srv.serve_forever, daemon=True).start()

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def env(self):
        """Server environment that points the real providers here."""
        return {
            "USE_MOCK_INFERENCE": "false",
            "KIE_API_KEY": KIE_KEY,
            "KIE_API_BASE": self.base,
            "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
            "ANTHROPIC_API_BASE": self.base,
            "LENSROOM_FETCH_ALLOW": f"127.0.0.1:{self.port}",
            "KIE_POLL_MS": "100",
            "KIE_POLL_MAX_MS": "400",
            "LENSROOM_RETRY_MS": "100",
        }

    def close(self):
        self.released.set()
        for srv in (self.httpd, self.internal):
            srv.shutdown()
            srv.server_close()

    def release(self):
        self.released.set()

    def record(self, method, path, body, headers):
        with self.lock:
            self.requests.append({"method": method, "path": path, "body": body,
                                  "headers": headers})

    def requests_to(self, prefix):
        with self.lock:
            return [r for r in self.requests if r["path"].startswith(prefix)]

    def _first_time(self, key):
        with self.lock:
            if key in self.once:
                return False
            self.once.add(key)
            return True

    # -- Kie.ai ----------------------------------------------------------
    def create(self, h, body, veo):
        if h.headers.get("Authorization") != f"Bearer {KIE_KEY}":
            return h._send(200, {"code": 401, "msg": "You do not have access permissions"})
        if not isinstance(body, dict):
            return h._send(200, {"code": 422, "msg": "body must be JSON"})
        prompt = body.get("prompt") if veo else (body.get("input") or {}).get("prompt")
        invalid = validation_error(body, veo)
        if invalid:
            return h._send(200, {"code": 422, "msg": invalid, "data": None})
        f = faults_of(prompt)
        key = ("create", prompt)
        if "create_401" in f:
            return h._send(401, {"code": 401, "msg": "Unauthorized"})
        if "create_401_in_200" in f:
            return h._send(200, {"code": 401, "msg": "Unauthorized"})
        if "create_402" in f:
            return h._send(200, {"code": 402, "msg": "Credits insufficient"})
        if "create_422" in f:
            return h._send(200, {"code": 422, "msg": "prompt violates content policy"})
        if "create_429_once" in f and self._first_time(key):
            return h._send(429, {"code": 429, "msg": "rate limited"}, extra={"Retry-After": "1"})
        if "create_455" in f:
            return h._send(200, {"code": 455, "msg": "service under maintenance"})
        if "create_500" in f or ("create_500_once" in f and self._first_time(key)):
            return h._send(500, {"code": 500, "msg": "internal error"})
        if "create_malformed" in f:
            return h._send(200, b"<html>gateway</html>", ctype="text/html")
        if "create_no_task_id" in f:
            return h._send(200, {"code": 200, "msg": "success", "data": {}})
        if not prompt:
            return h._send(200, {"code": 422, "msg": "prompt is required"})
        tid = ("veo_" if veo else "task_") + uuid.uuid4().hex
        delay = 0.3
        for x in f:
            if x.startswith("delay_"):
                delay = float(x[6:])
        with self.lock:
            self.tasks[tid] = {"tid": tid, "veo": veo, "body": body, "prompt": prompt, "faults": f,
                               "created": time.time(), "ready_at": time.time() + delay,
                               "polls": 0, "callback": body.get("callBackUrl")}
        if body.get("callBackUrl"):
            threading.Thread(target=self._callback, args=(tid,), daemon=True).start()
        h._send(200, {"code": 200, "msg": "success", "data": {"taskId": tid}})

    def _done(self, t):
        if "hold" in t["faults"] and not self.released.is_set():
            return False
        return "poll_never" not in t["faults"] and time.time() >= t["ready_at"]

    def _callback(self, tid):
        t = self.tasks[tid]
        while not self._done(t):
            if "poll_never" in t["faults"]:
                return
            time.sleep(0.05)
        data = json.dumps({"code": 200, "msg": "done", "data": {"taskId": tid}}).encode()
        for _ in range(3):  # Kie may deliver more than once
            try:
                req = urllib.request.Request(t["callback"], data=data, method="POST",
                                             headers={"Content-Type": "application/json"})
                urllib.request.urlopen(req, timeout=5).read()
            except Exception:
                pass
            time.sleep(0.1)

    def file_url(self, tid, ext):
        return f"{self.base}/files/{tid}.{ext}"

    def record_info(self, h, veo):
        if h.headers.get("Authorization") != f"Bearer {KIE_KEY}":
            return h._send(200, {"code": 401, "msg": "Unauthorized"})
        m = re.search(r"taskId=([A-Za-z0-9_]+)", h.path)
        t = self.tasks.get(m.group(1)) if m else None
        if not t:
            return h._send(200, {"code": 404, "msg": "task not found"})
        with self.lock:
            t["polls"] += 1
            n = t["polls"]
        f = t["faults"]
        if "poll_404" in f:
            return h._send(200, {"code": 404, "msg": "record is null"})
        if "poll_500_3" in f and n <= 3:
            return h._send(502, b"bad gateway", ctype="text/plain")
        if "poll_malformed_2" in f and n <= 2:
            return h._send(200, b"{not json", ctype="application/json")
        if "poll_401_once" in f and n == 1:
            return h._send(200, {"code": 401, "msg": "Unauthorized"})
        tid = m.group(1)
        done = self._done(t)
        fail = "poll_fail" in f
        now = int(time.time() * 1000)
        if veo:
            data = {"taskId": tid, "paramJson": json.dumps(t["body"]),
                    "successFlag": 0, "createTime": int(t["created"] * 1000)}
            if done and fail:
                data.update(successFlag=-1, errorMessage="video generation failed: unsafe")
            elif done:
                data.update(successFlag=1, response={"taskId": tid,
                                                     **self._result_urls(t, "mp4")},
                            completeTime=now)
        else:
            data = {"taskId": tid, "model": t["body"].get("model"),
                    "state": "generating" if n > 1 else "waiting",
                    "param": json.dumps(t["body"]), "resultJson": "", "failCode": "",
                    "failMsg": "", "createTime": int(t["created"] * 1000), "updateTime": now}
            if done and fail:
                data.update(state="fail", failCode="500", failMsg="image generation failed: nsfw")
            elif done:
                data.update(state="success", completeTime=now,
                            resultJson=json.dumps(self._result_urls(t, "png")))
        h._send(200, {"code": 200, "msg": "success", "data": data})

    def _result_urls(self, t, ext):
        f = t["faults"]
        if "result_empty_string" in f:
            return {"resultUrls": [""]}
        if "result_empty_list" in f:
            return {"resultUrls": []}
        if "result_missing" in f:
            return {}
        return {"resultUrls": [self.file_url(t["tid"], ext)]}

    def serve_file(self, h):
        if h.server is self.internal:
            self.internal_hits += 1
            return h._send(200, self.png, ctype="image/png")
        name = h.path[len("/files/"):].split("?")[0]
        tid, _, ext = name.partition(".")
        t = self.tasks.get(tid)
        if not t:
            return h._send(404, b"gone", ctype="text/plain")
        f = t["faults"]
        body = self.mp4 if ext == "mp4" else self.png
        ctype = "video/mp4" if ext == "mp4" else "image/png"
        named = [x[len("file_"):] for x in f if x.startswith("file_")]
        if named:
            body = self.files[named[0]]
        if "dl_404" in f:
            return h._send(404, b"expired", ctype="text/plain")
        if "dl_html" in f:
            return h._send(200, b"<!doctype html><html><body>not an image</body></html>" * 10,
                           ctype="image/png")
        redirect = None
        iport = self.internal.server_address[1]
        if "dl_redirect_local" in f:
            redirect = f"http://127.0.0.1:{iport}/files/x.png"
        elif "dl_redirect_local_https" in f:
            redirect = f"https://127.0.0.1:{iport}/files/x.png"
        elif "dl_redirect_name" in f:
            redirect = f"https://{self.loopback_name}:{iport}/files/x.png"
        if redirect:
            h.send_response(302)
            h.send_header("Location", redirect)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if "dl_big" in f or "dl_50mb" in f:
            total = 60 * 1024 * 1024 if "dl_big" in f else 50 * 1024 * 1024 - 4096
            h.send_response(200)
            h.send_header("Content-Type", "image/png")
            if "dl_big_chunked" not in f:
                h.send_header("Content-Length", str(total))
            h.end_headers()
            try:
                h.wfile.write(self.png[:64])
                chunk = b"\0" * 65536
                sent = 64
                while sent < total:
                    h.wfile.write(chunk)
                    sent += len(chunk)
            except OSError:
                pass
            h.close_connection = True
            return
        if "dl_hold" in f:
            h.send_response(200)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            self.released.wait(120)
            try:
                h.wfile.write(body[len(body) // 2:])
            except OSError:
                pass  # the server is gone (a test killed it)
            return
        if "dl_cut" in f or ("dl_cut_once" in f and self._first_time(("cut", tid))):
            h.send_response(200)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if "dl_slow" in f:
            h.send_response(200)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            step = max(1, len(body) // 8)
            for i in range(0, len(body), step):
                h.wfile.write(body[i:i + step])
                h.wfile.flush()
                time.sleep(0.2)
            return
        h._send(200, body, ctype=ctype)

    # -- Anthropic -------------------------------------------------------
    def anthropic(self, h, body):
        if h.headers.get("x-api-key") != ANTHROPIC_KEY or not h.headers.get("anthropic-version"):
            return h._send(401, {"type": "error", "error": {"type": "authentication_error",
                                                             "message": "invalid x-api-key"}})
        msgs = (body or {}).get("messages") or []
        prompt = msgs[0].get("content") if msgs else ""
        f = faults_of(prompt)
        key = ("anthropic", prompt)
        if "a_401" in f:
            return h._send(401, {"type": "error", "error": {"type": "authentication_error",
                                                             "message": "invalid x-api-key"}})
        if "a_400" in f:
            return h._send(400, {"type": "error", "error": {
                "type": "invalid_request_error", "message": "prompt is too long"}})
        if "a_429_once" in f and self._first_time(key):
            return h._send(429, {"type": "error", "error": {"type": "rate_limit_error",
                                                             "message": "rate limited"}},
                           extra={"retry-after": "1"})
        if "a_529_once" in f and self._first_time(key):
            return h._send(529, {"type": "error", "error": {"type": "overloaded_error",
                                                             "message": "Overloaded"}})
        if "a_500_once" in f and self._first_time(key):
            return h._send(500, {"type": "error", "error": {"type": "api_error",
                                                             "message": "Internal server error"}})
        if "a_malformed" in f:
            return h._send(200, b"{\"id\": \"msg_", ctype="application/json")
        h._send(200, {"id": "msg_" + uuid.uuid4().hex[:20], "type": "message", "role": "assistant",
                      "model": body.get("model"), "stop_reason": "end_turn",
                      "content": [{"type": "text", "text": "Echo: " + prompt}],
                      "usage": {"input_tokens": 10, "output_tokens": 5}})


_MP4 = None


def real_mp4():
    """An MP4 made by libavcodec: the server's own mock renders one."""
    global _MP4
    if _MP4 is None:
        from harness import Server, new_user
        s = Server().start()
        try:
            u = new_user()
            s.grant(u, 100)
            r = s.infer(s.token(u), model="veo3_video", prompt="fake source")
            assert r.status == 200, r.body
            _MP4 = s.fetch_url(r.json["url"]).body
        finally:
            s.cleanup()
    return _MP4
