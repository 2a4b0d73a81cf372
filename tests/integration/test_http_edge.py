"""The HTTP edge over raw sockets: every request the server refuses gets
exactly one well-formed HTTP response (status line, headers, a JSON error
body exactly Content-Length long, X-Request-Id, nothing after it) and the
connection is closed where RFC 9112 requires it; large cookie headers are
served; framing errors never let trailing bytes run as a second request
and move no credit; libmicrohttpd's own log lines are JSON; CORS preflight
reflects the requested headers for allowed origins."""
import json
import socket
import time
import unittest

from harness import Server, ServerTest, new_user

DEADLINE_S = 20


class Answer:
    def __init__(self, status, headers, body, after, closed):
        self.status = status
        self.headers = headers  # lowercase name -> list of values
        self.body = body
        self.after = after      # bytes received after the body
        self.closed = closed    # the server closed the connection

    def header(self, name):
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def json(self):
        return json.loads(self.body)


def read_answer(sock, expect_close=True):
    """Reads one response: head, then exactly Content-Length body bytes,
    then (expect_close) everything up to the server's close."""
    sock.settimeout(DEADLINE_S)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a full response head: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status, _reason = lines[0].split(" ", 2)
    assert version == "HTTP/1.1", lines[0]
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        assert sep and name == name.strip(), f"malformed header line {line!r}"
        headers.setdefault(name.lower(), []).append(value.strip())
    assert len(headers.get("content-length", [])) == 1, headers
    length = int(headers["content-length"][0])
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("connection closed inside the body")
        rest += chunk
    body, after = rest[:length], rest[length:]
    closed = False
    if expect_close:
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            after += chunk
    return Answer(int(status), headers, body, after, closed)


class Edge(ServerTest):
    server_env = {"LENSROOM_CORS_ORIGINS": "https://app.example"}

    def exchange(self, data, expect_close=True):
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=DEADLINE_S) as s:
            s.sendall(data)
            return read_answer(s, expect_close)

    def assert_refused(self, data, status, code):
        """One well-formed JSON error answer, then the close."""
        a = self.exchange(data)
        self.assertEqual(a.status, status, a.body)
        self.assertEqual(a.header("content-type"), "application/json; charset=utf-8")
        self.assertEqual(a.json["success"], False)
        self.assertEqual(a.json["code"], code)
        self.assertTrue(a.json["error"])
        self.assertTrue(a.header("x-request-id"))
        self.assertEqual(a.header("connection"), "close")
        self.assertEqual(a.after, b"", "bytes after the response")
        self.assertTrue(a.closed)
        return a

    # -- size -------------------------------------------------------------
    def test_oversized_header_block_is_431_json(self):
        big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: a=" + b"v" * (70 * 1024) + b"\r\n\r\n"
        self.assert_refused(big, 431, "header_too_large")

    def test_headers_above_the_limit_without_end_are_431_at_once(self):
        # no blank line ever comes: refused once more than the limit arrived
        start = time.monotonic()
        self.assert_refused(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"v" * (80 * 1024), 431,
                            "header_too_large")
        self.assertLess(time.monotonic() - start, 15)

    def test_40k_cookie_header_with_many_cookies_is_served(self):
        cookies = "; ".join(f"c{i}={'v' * 100}" for i in range(390))
        self.assertGreater(len(cookies), 40 * 1024)
        a = self.exchange(f"GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: {cookies}\r\n\r\n".encode(),
                          expect_close=False)
        self.assertEqual(a.status, 200, a.body)
        self.assertIsNone(a.header("connection"))  # kept alive

    def test_session_cookie_after_a_56k_cookie_header_authenticates(self):
        user = new_user()
        self.server.grant(user, 10)
        tok = self.server.token(user)
        junk = "; ".join(f"junk{i}={'x' * 1400}" for i in range(40))
        a = self.exchange(f"GET /api/credits/balance HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                          f"Cookie: {junk}; lr_session={tok}\r\n\r\n".encode())
        self.assertEqual(a.status, 200, a.body)
        self.assertEqual(a.json["balance"], 10)

    def test_more_cookies_than_the_server_can_hold_are_431_json(self):
        cookies = "; ".join(f"c{i}=v" for i in range(4000))  # 30 KB, 4,000 cookies
        a = self.assert_refused(f"GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: {cookies}\r\n\r\n".encode(),
                                431, "header_too_large")
        self.assertIn("cookies", a.json["error"])

    def test_near_the_limits_every_answer_is_json(self):
        # around the memory estimate: either served or refused, never
        # libmicrohttpd's own answer
        for total, per in ((40000, 60), (40000, 120), (63000, 300), (65400, 300), (65400, 1000)):
            n = total // (per + 2)
            cookie = "; ".join(f"c{i:05d}={'v' * (per - 7)}" for i in range(n))
            extra = "".join(f"X-H{i}: v\r\n" for i in range(20))
            a = self.exchange(f"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}"
                              f"Cookie: {cookie}\r\n\r\n".encode())
            with self.subTest(total=total, per=per, status=a.status):
                self.assertIn(a.status, (200, 431))
                self.assertEqual(a.header("content-type"), "application/json; charset=utf-8")
                self.assertEqual(a.after, b"")

    # -- request line and Host --------------------------------------------
    def test_garbage_request_lines_are_400_json(self):
        for line in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"HELLO\r\n\r\n",
                     b"GET\r\n\r\n", b"GET /x HTTP/1.1 extra\r\n\r\n", b" GET / HTTP/1.1\r\n\r\n"):
            with self.subTest(line=line):
                self.assert_refused(line, 400, "bad_request_line")

    def test_unknown_http_version_is_505_json(self):
        self.assert_refused(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "http_version_not_supported")
        self.assert_refused(b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", 505, "http_version_not_supported")
        # a higher 1.x minor version is served as HTTP/1.1 (RFC 9110 2.5), Host included
        self.assert_refused(b"GET /healthz HTTP/1.2\r\n\r\n", 400, "missing_host")
        a = self.exchange(b"GET /healthz HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual(a.status, 200, a.body)

    def test_http11_without_host_is_400_and_http10_without_host_is_served(self):
        self.assert_refused(b"GET /healthz HTTP/1.1\r\n\r\n", 400, "missing_host")
        a = self.exchange(b"GET /healthz HTTP/1.0\r\n\r\n")
        self.assertEqual(a.status, 200, a.body)

    def test_folded_and_control_character_headers_are_400(self):
        self.assert_refused(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400, "bad_header")
        self.assert_refused(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400, "bad_header")
        self.assert_refused(b"GET / HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n", 400, "bad_header")

    # -- framing ----------------------------------------------------------
    def test_bad_content_length_is_400_json(self):
        self.assert_refused(b"POST /api/infer HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400,
                            "bad_content_length")
        self.assert_refused(b"POST /api/infer HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400,
                            "bad_content_length")

    def test_two_different_content_lengths_are_400(self):
        self.assert_refused(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                            b"Content-Length: 40\r\n\r\nabcdGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                            400, "bad_content_length")

    def test_content_length_and_transfer_encoding_smuggle_nothing(self):
        smuggled = (b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        a = self.assert_refused(smuggled, 400, "bad_framing")
        self.assertNotIn(b"HTTP/1.1", a.after)

    def test_smuggling_on_a_kept_alive_connection_is_refused_too(self):
        # the first request passes; the second one is checked by the handler
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=DEADLINE_S) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            first = read_answer(s, expect_close=False)
            self.assertEqual(first.status, 200)
            s.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                      b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            second = read_answer(s)
        self.assertEqual(second.status, 400, second.body)
        self.assertEqual(second.json["code"], "bad_framing")
        self.assertTrue(second.header("x-request-id"))
        self.assertEqual(second.after, b"")
        self.assertTrue(second.closed)

    def test_odd_transfer_encodings_are_answered_at_once(self):
        start = time.monotonic()
        for te in (b"xchunked", b"identity", b"chunked, identity", b"chunked, chunked"):
            with self.subTest(te=te):
                self.assert_refused(b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + te +
                                    b"\r\n\r\n", 400, "bad_framing")
        self.assert_refused(b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked"
                            b"\r\n\r\n", 501, "unsupported_transfer_coding")
        self.assertLess(time.monotonic() - start, 15)  # not the 120 s timeout

    def test_chunked_body_still_works(self):
        body = json.dumps({"modelId": "seedream_image", "inputs": {"prompt": "x"}}).encode()
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        a = self.exchange(b"POST /api/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                          b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
        self.assertEqual(a.status, 401, a.body)  # parsed and routed: no session

    def test_framing_errors_on_infer_move_no_credit(self):
        user = new_user()
        self.server.grant(user, 40)
        tok = self.server.token(user)
        body = json.dumps({"modelId": "seedream_image", "inputs": {"prompt": "a dragon"}}).encode()
        head = (b"POST /api/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Cookie: lr_session=" + tok.encode() + b"\r\n")
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        cases = [
            (head + b"Content-Length: abc\r\n\r\n" + body, 400),
            (head + b"Content-Length: %d\r\nContent-Length: 2\r\n\r\n" % len(body) + body, 400),
            (head + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(chunked) + chunked, 400),
            (head + b"Transfer-Encoding: identity\r\n\r\n" + body, 400),
            (head + b"Transfer-Encoding: gzip, chunked\r\n\r\n" + chunked, 501),
        ]
        for data, status in cases:
            with self.subTest(data=data[-80:]):
                a = self.exchange(data)
                self.assertEqual(a.status, status, a.body)
                self.assertTrue(a.closed)
        self.assertEqual(self.server.balance(user), 40)
        self.assertEqual([r for r in self.server.ledger(user) if r[2] is not None], [])
        with self.server.db() as c:
            n = c.execute("SELECT count(*) FROM generations WHERE user_id = ?", (user,)).fetchone()[0]
        self.assertEqual(n, 0)
        # the same request, well framed, is charged
        a = self.exchange(head + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        self.assertEqual(a.status, 200, a.body)
        self.assertLess(self.server.balance(user), 40)
        self.server.assert_ledger_consistent(self, user)

    # -- CORS -------------------------------------------------------------
    def test_preflight_reflects_requested_headers_for_allowed_origins(self):
        asked = ("authorization, content-type, apikey, x-client-info, idempotency-key, prefer, "
                 "last-event-id, sentry-trace, baggage")
        r = self.server.request("OPTIONS", "/api/infer", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": asked})
        self.assertEqual(r.status, 204, r.body)
        self.assertEqual(r.header("Access-Control-Allow-Origin"), "https://app.example")
        allowed = {h.strip() for h in r.header("Access-Control-Allow-Headers").split(",")}
        self.assertEqual(allowed, {h.strip() for h in asked.split(",")})
        # no list asked for: the documented default list
        r = self.server.request("OPTIONS", "/api/infer", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
        self.assertEqual(r.status, 204)
        self.assertIn("x-client-info", r.header("Access-Control-Allow-Headers"))
        # disallowed origin: 403 as before, no CORS headers
        r = self.server.request("OPTIONS", "/api/infer", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": asked})
        self.assertEqual(r.status, 403)
        self.assertEqual(r.json["code"], "origin_not_allowed")
        self.assertIsNone(r.header("Access-Control-Allow-Origin"))
        self.assertIsNone(r.header("Access-Control-Allow-Headers"))

    def test_answers_expose_headers_to_allowed_origins(self):
        r = self.server.get("/api/models", headers={"Origin": "https://app.example"})
        self.assertEqual(r.status, 200)
        exposed = {h.strip().lower() for h in r.header("Access-Control-Expose-Headers").split(",")}
        self.assertTrue({"location", "retry-after", "x-request-id", "idempotent-replayed"} <= exposed)
        # refusals at the edge carry them too, so a browser can read the error
        a = self.exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n"
                          b"Cookie: a=" + b"v" * (70 * 1024) + b"\r\n\r\n")
        self.assertEqual(a.status, 431)
        self.assertEqual(a.header("access-control-allow-origin"), "https://app.example")
        self.assertIn("X-Request-Id", a.header("access-control-expose-headers"))


class LibraryLog(unittest.TestCase):
    def test_every_log_line_is_json_including_libmicrohttpd_messages(self):
        s = Server().start()
        self.addCleanup(s.cleanup)
        # A bad Content-Length on a kept-alive connection's second request is
        # parsed by libmicrohttpd itself (the edge sees first requests only),
        # and it logs why it refuses it.
        with socket.create_connection(("127.0.0.1", s.port), timeout=DEADLINE_S) as c:
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(read_answer(c, expect_close=False).status, 200)
            c.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
            while c.recv(65536):
                pass
        # edge refusals too
        self.assertEqual(s.request("GET", "/healthz", headers={"Content-Length": "x"}).status, 400)
        s.stop()
        lines = [l for l in s.read_log().splitlines() if l.strip()]
        for line in lines:
            json.loads(line)  # raises on a plain-text line
        mhd = [json.loads(l) for l in lines if '"libmicrohttpd"' in l]
        self.assertTrue(mhd, "no libmicrohttpd message was logged")
        self.assertTrue(all(m["source"] == "libmicrohttpd" and m["msg"] for m in mhd))


class HeaderLimit(ServerTest):
    server_env = {"LENSROOM_MAX_HEADER_BYTES": "16384"}

    def test_the_limit_is_configurable(self):
        ok = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: a=" + b"v" * 15000 + b"\r\n\r\n"
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=DEADLINE_S) as s:
            s.sendall(ok)
            self.assertEqual(read_answer(s).status, 200)
        big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: a=" + b"v" * 17000 + b"\r\n\r\n"
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=DEADLINE_S) as s:
            s.sendall(big)
            a = read_answer(s)
        self.assertEqual(a.status, 431)
        self.assertEqual(a.json["code"], "header_too_large")


if __name__ == "__main__":
    unittest.main()
