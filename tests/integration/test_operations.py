"""Operator-facing details through the real binary: the /api/health alias,
request ids echoed back and carried by a generation's log lines up to its
settlement, and the model catalog replaced by LENSROOM_MODELS
(a broken file stops the start with a config line)."""
import json
import os
import tempfile
import unittest

from harness import Server, ServerTest, new_user, wait_for


class Health(ServerTest):
    def test_api_health_answers_like_healthz(self):
        a, b = self.server.get("/healthz"), self.server.get("/api/health")
        self.assertEqual((a.status, b.status), (200, 200))
        self.assertEqual(set(a.json), set(b.json))
        self.assertTrue(b.json["provider"]["mock"])

    def test_request_id_is_echoed_when_safe_and_made_up_otherwise(self):
        r = self.server.get("/api/models", {"X-Request-Id": "trace-123.abc"})
        self.assertEqual(r.header("x-request-id"), "trace-123.abc")
        r = self.server.get("/api/models", {"X-Request-Id": "bad id; drop table"})
        self.assertNotEqual(r.header("x-request-id"), "bad id; drop table")
        self.assertEqual(len(r.header("x-request-id")), 36)
        self.assertIn('"request_id":"trace-123.abc"', self.server.read_log())


def log_lines(server):
    out = []
    for line in server.read_log().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


class SettleLog(ServerTest):
    # Slow enough that the settlement happens on the loop after the 202.
    server_env = {"LENSROOM_MOCK_LATENCY_MS": "300", "LENSROOM_MOCK_FAIL_RATE": "0.5"}

    def test_settle_lines_carry_the_request_id_of_the_infer(self):
        user = new_user()
        self.server.grant(user, 200)
        token = self.server.token(user)
        started = {}
        for k in range(6):
            rid = f"settle-trace-{k}"
            r = self.server.infer(token, prompt=f"p{k}", extra={"outputsCount": 2} if k % 2 else None,
                                  headers={"X-Request-Id": rid, "Prefer": "respond-async"})
            self.assertEqual(r.status, 202, r.body)
            started[r.json["generationId"]] = rid

        def settled():
            seen = {l.get("generation_id"): l for l in log_lines(self.server)
                    if l.get("msg") == "generation settled"}
            return seen if set(started) <= set(seen) else None
        seen = wait_for(settled, timeout=60)
        self.assertTrue(seen, "every generation should settle")
        for gid, rid in started.items():
            self.assertEqual(seen[gid].get("request_id"), rid, seen[gid])
        # The failed outputs' lines, written on the loop, carry it too.
        failed = [l for l in log_lines(self.server) if " failed: " in l.get("msg", "")
                  and "output" in l.get("msg", "")]
        for l in failed:
            gid = l["msg"].split()[1]
            self.assertEqual(l.get("request_id"), started[gid], l)


class ModelsOverride(unittest.TestCase):
    def models_file(self, content):
        fd, path = tempfile.mkstemp(suffix=".json")
        with os.fdopen(fd, "w") as f:
            f.write(content)
        self.addCleanup(os.unlink, path)
        return path

    def test_catalog_file_replaces_the_built_in_one(self):
        path = self.models_file(json.dumps([
            {"id": "cheap_image", "title": "Cheap", "provider": "kie", "capability": "image",
             "enabled": True, "creditCost": 3,
             "paramsSchema": {"steps": {"type": "number", "default": 4, "min": 1, "max": 8}}}]))
        s = Server({"LENSROOM_MODELS": path})
        self.addCleanup(s.cleanup)
        s.start()
        self.assertEqual([m["id"] for m in s.get("/api/models").json], ["cheap_image"])
        user = new_user()
        s.grant(user, 5)
        tok = s.token(user)
        self.assertEqual(s.infer(tok).status, 404)  # seedream_image is gone
        r = s.infer(tok, model="cheap_image", params={"steps": 9})
        self.assertEqual((r.status, r.json["field"]), (422, "steps"))
        r = s.infer(tok, model="cheap_image")
        self.assertEqual((r.status, r.json["newBalance"]), (200, 2))

    def test_broken_catalog_file_stops_the_start(self):
        path = self.models_file('[{"id": "x", "capability": "image", "creditCost": 0}]')
        s = Server({"LENSROOM_MODELS": path})
        self.addCleanup(s.cleanup)
        code, log = s.start_refused()
        self.assertNotEqual(code, 0)
        self.assertIn("config: LENSROOM_MODELS: model x: creditCost", log)
        self.assertNotIn("Sanitizer", log)


if __name__ == "__main__":
    unittest.main()
