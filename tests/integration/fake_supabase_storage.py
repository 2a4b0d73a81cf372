"""A faithful stand-in for Supabase Storage's REST API, for tests (facts in
shared/reference/supabase.md): buckets with public flag, file_size_limit and
allowed_mime_types, x-upsert, Supabase-shaped JSON errors, public URLs,
prefix deletes. Auth as Supabase takes the server's key: a secret key
(sb_secret_…) in apikey alone, since it is not a JWT (sent as Bearer it is
refused); a legacy service_role JWT in apikey and as Bearer. Every request
is recorded with its headers in .requests (method, path, headers).

usage (in-process): FakeStorage(key, buckets={"generations": {...}}).start()
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from harness import free_port


class FakeStorage:
    def __init__(self, service_key, buckets=None):
        self.key = service_key
        self.buckets = buckets if buckets is not None else {
            "generations": {"public": True, "file_size_limit": 52428800,
                            "allowed_mime_types": ["image/png", "image/jpeg", "image/webp",
                                                   "image/gif", "video/mp4", "video/webm"]}}
        self.objects = {}  # (bucket, name) -> (content_type, bytes)
        self.requests = []
        self.port = free_port()
        self.lock = threading.Lock()

    @property
    def storage_requests(self):
        """The Storage API calls (the server also asks this host for the
        project's JWKS, a public endpoint that takes no key)."""
        with self.lock:
            return [r for r in self.requests if r[1].startswith("/storage/")]

    def bearer_headers(self):
        """Every Authorization header the server sent to Storage (None when absent)."""
        return [next((v for k, v in h.items() if k.lower() == "authorization"), None)
                for _, _, h in self.storage_requests]

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def reply(self, status, body, ctype="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def error(self, status, error, message):
                self.reply(status, {"statusCode": str(status), "error": error, "message": message})

            def authorized(self):
                auth = self.headers.get("Authorization")
                if self.headers.get("apikey") != fake.key:
                    return False
                if fake.key.startswith("sb_"):
                    return auth is None
                return auth == f"Bearer {fake.key}"

            def body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def route(self):
                path = unquote(urlsplit(self.path).path)
                data = self.body()
                with fake.lock:
                    fake.requests.append((self.command, path, dict(self.headers)))
                if path.startswith("/storage/v1/object/public/"):
                    bucket, _, name = path[len("/storage/v1/object/public/"):].partition("/")
                    b = fake.buckets.get(bucket)
                    obj = fake.objects.get((bucket, name))
                    if not b or not b["public"] or not obj:
                        return self.error(404, "not_found", "Object not found")
                    return self.reply(200, obj[1], obj[0])
                if (self.headers.get("Authorization") or "").startswith("Bearer sb_"):
                    return self.error(401, "InvalidJWT", "Invalid Compact JWS")
                if not self.authorized():
                    return self.error(403, "Unauthorized", "invalid signature")
                if path.startswith("/storage/v1/bucket/"):
                    name = path[len("/storage/v1/bucket/"):]
                    b = fake.buckets.get(name)
                    if not b:
                        return self.error(404, "Bucket not found", "Bucket not found")
                    return self.reply(200, dict(b, id=name, name=name))
                if not path.startswith("/storage/v1/object/"):
                    return self.error(404, "not_found", "Route not found")
                bucket, _, name = path[len("/storage/v1/object/"):].partition("/")
                b = fake.buckets.get(bucket)
                if not b:
                    return self.error(404, "Bucket not found", "Bucket not found")
                if self.command == "DELETE" and not name:
                    prefixes = json.loads(data or b"{}").get("prefixes", [])
                    gone = []
                    with fake.lock:
                        for p in prefixes:
                            if fake.objects.pop((bucket, p), None) is not None:
                                gone.append({"name": p, "bucket_id": bucket})
                    return self.reply(200, gone)
                if self.command in ("POST", "PUT"):
                    ctype = self.headers.get("Content-Type", "")
                    if len(data) > b["file_size_limit"]:
                        return self.error(413, "Payload too large",
                                          "The object exceeded the maximum allowed size")
                    if ctype not in b["allowed_mime_types"]:
                        return self.error(415, "invalid_mime_type",
                                          f"mime type {ctype} is not supported")
                    exists = (bucket, name) in fake.objects
                    upsert = self.headers.get("x-upsert") == "true"
                    if self.command == "POST" and exists and not upsert:
                        return self.error(409, "Duplicate", "The resource already exists")
                    with fake.lock:
                        fake.objects[(bucket, name)] = (ctype, data)
                    return self.reply(200, {"Key": f"{bucket}/{name}"})
                if self.command == "GET":
                    obj = fake.objects.get((bucket, name))
                    if not obj:
                        return self.error(404, "not_found", "Object not found")
                    return self.reply(200, obj[1], obj[0])
                return self.error(405, "method_not_allowed", "Method not allowed")

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = route

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
