"""A strict AWS Signature V4 checker in front of s3rver, which accepts any
signature. Every request must carry a well-formed SigV4 Authorization for
the expected access key and region, a payload hash that matches the body
(or UNSIGNED-PAYLOAD), and a signature that botocore, recomputing it with
the expected secret, agrees with; otherwise 403 SignatureDoesNotMatch.
Good requests are forwarded to s3rver unchanged. Every request is logged
on stdout as "METHOD PATH STATUS", so tests can see what was sent.

While the file HOLD_FILE exists, uploads (PUT) are held after their body
arrived and before they are forwarded, each logged as "HELD PUT PATH": a
slow bucket, for tests that need uploads in flight.

While the file HOLD_FILE + ".fail2" exists, the second part of every
multipart upload is answered 500 (a bucket failing mid-upload).

usage: sigv4_proxy.py LISTEN_PORT UPSTREAM_PORT ACCESS_KEY SECRET REGION [HOLD_FILE]
"""
import hashlib
import http.client
import http.server
import os
import re
import sys
import threading
import time

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

PORT, UPSTREAM, ACCESS, SECRET, REGION = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                          sys.argv[4], sys.argv[5])
HOLD = sys.argv[6] if len(sys.argv) > 6 else None
AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/s3/aws4_request,\s*"
                  r"SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$")


LOG_LOCK = threading.Lock()


def log(line):
    """One whole line per request: the handler threads print at once, and
    print() writes the text and its newline apart, so lines could merge."""
    with LOG_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def log_request(self, code="-", size="-"):
        log(f"{self.command} {self.path} {code}")

    def deny(self, why):
        body = (f"<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>"
                f"<Message>{why}</Message></Error>").encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def verify(self, body):
        m = AUTH.match(self.headers.get("Authorization", ""))
        if not m:
            return "missing or malformed SigV4 Authorization"
        key, day, region, signed, signature = m.groups()
        if key != ACCESS or region != REGION:
            return "unknown access key or wrong region"
        amz_date = self.headers.get("x-amz-date", "")
        if not amz_date.startswith(day):
            return "x-amz-date does not match the credential scope"
        payload = self.headers.get("x-amz-content-sha256")
        if payload is None or "x-amz-content-sha256" not in signed.split(";"):
            return "x-amz-content-sha256 missing or not signed"
        if payload != "UNSIGNED-PAYLOAD" and payload != hashlib.sha256(body).hexdigest():
            return "payload hash does not match the body"
        headers = {h: self.headers.get(h, "") for h in signed.split(";")}
        req = AWSRequest(method=self.command, url=f"http://{self.headers['Host']}{self.path}",
                         data=body, headers=headers)
        req.context["timestamp"] = amz_date
        signer = S3SigV4Auth(Credentials(ACCESS, SECRET), "s3", REGION)
        canonical = signer.canonical_request(req)
        expected = signer.signature(signer.string_to_sign(req, canonical), req)
        if expected != signature:
            return "signature does not match"
        return None

    def relay(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        why = self.verify(body)
        if why:
            return self.deny(why)
        if HOLD and self.command == "PUT" and "partNumber=2&" in self.path and \
                os.path.exists(HOLD + ".fail2"):
            body = b"<Error><Code>InternalError</Code></Error>"
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if HOLD and self.command == "PUT" and os.path.exists(HOLD):
            log(f"HELD {self.command} {self.path}")
            while os.path.exists(HOLD):
                time.sleep(0.02)
        up = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=60)
        hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
        up.request(self.command, self.path, body=body, headers=hdrs)
        r = up.getresponse()
        data = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        up.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = relay


if __name__ == "__main__":
    http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
