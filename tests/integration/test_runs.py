"""Graph runs executed on the server, through the real binary: POST
/api/runs charges the whole quote once, runs the nodes as generations in
dependency order with upstream outputs in their inputs, refunds a failed
node and everything below it exactly once, and GET /api/runs/{id} shows
every node with its outputs and costs."""
import http.client
import json
import threading
import time
import unittest

import os

import yaml
from jsonschema import Draft202012Validator

from fake_providers import FakeProviders, real_mp4
from harness import Server, ServerTest, new_user, wait_for


with open(os.path.join(os.path.dirname(__file__), "../../docs/openapi.yaml")) as f:
    SPEC = yaml.safe_load(f)


def assert_schema(tc, name, body):
    v = Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                              "components": SPEC["components"]})
    tc.assertEqual(sorted(v.iter_errors(body), key=str), [], f"{name}: {body}")


def ref(node, i=0):
    return {"$ref": f"{node}.outputs[{i}]"}


def five_nodes(fail_at=None, hold=None, text_prompt="a castle on a hill"):
    """text -> image -> two edits in parallel -> video (reads the text and
    the second edit). fail_at: the node whose prompt makes the mock fail."""
    def prompt(node, p):
        marks = (" [mock_fail]" if node == fail_at else "") + (" [hold]" if node == hold else "")
        return p + marks
    return {"nodes": [
        {"id": "text", "modelId": "anthropic_text", "inputs": {"prompt": text_prompt}},
        {"id": "img", "modelId": "seedream_image", "inputs": {"prompt": ref("text")}},
        {"id": "night", "modelId": "nano_banana_edit",
         "inputs": {"prompt": prompt("night", "make it night"), "imageUrl": ref("img")}},
        {"id": "snow", "modelId": "nano_banana_edit",
         "inputs": {"prompt": prompt("snow", "add snow"), "imageUrl": ref("img")}},
        {"id": "vid", "modelId": "veo3_video",
         "inputs": {"prompt": ref("text"), "imageUrl": ref("snow")}},
    ]}


class RunClient:
    def __init__(self, server, user):
        self.s = server
        self.user = user
        self.h = {"Authorization": f"Bearer {server.token(user)}"}

    def post(self, path, body, headers=None):
        return self.s.request("POST", path, body=body, headers={**self.h, **(headers or {})})

    def run(self, graph, **extra):
        headers = extra.pop("headers", None)
        return self.post("/api/runs", {"graph": graph, **extra}, headers)

    def quote(self, graph):
        return self.post("/api/quote", {"graph": graph})

    def get(self, run_id):
        return self.s.get(f"/api/runs/{run_id}", self.h)

    def wait_finished(self, run_id, timeout=90):
        def done():
            r = self.get(run_id)
            return r.json if r.status == 200 and r.json["status"] != "running" else None
        body = wait_for(done, timeout, 0.2)
        self.s_assert(body, f"run {run_id} still running: {self.get(run_id).body}")
        return body

    def s_assert(self, cond, msg):
        if not cond:
            raise AssertionError(msg)


def ledger_rows(server, user):
    with server.db() as c:
        rows = c.execute("SELECT amount, type, generation_id, run_id FROM credit_transactions "
                         "WHERE user_id = ? ORDER BY created_at", (user,)).fetchall()
    return [(a, t, str(g) if g else None, str(r) if r else None) for a, t, g, r in rows]


def assert_run_money(tc, server, user, run_body):
    """The run's money as the design says: one charge of the quote, at most
    one refund per node, equal to what the node did not use; balance equals
    the ledger; `lensroom audit` clean."""
    rid = run_body["runId"]
    rows = ledger_rows(server, user)
    charges = [r for r in rows if r[3] == rid and r[1] == "generation"]
    tc.assertEqual(len(charges), 1, rows)
    tc.assertEqual(-charges[0][0], run_body["costs"]["quoted"])
    refunded = 0
    for n in run_body["nodes"]:
        refunds = [r for r in rows if r[2] == n["generationId"] and r[1] == "refund"]
        node_charges = [r for r in rows if r[2] == n["generationId"] and r[1] == "generation"]
        tc.assertEqual(node_charges, [], n["id"])
        tc.assertLessEqual(len(refunds), 1, n["id"])
        got = sum(r[0] for r in refunds)
        tc.assertEqual(got, n["cost"]["refunded"], n["id"])
        tc.assertEqual(n["cost"]["charged"], n["cost"]["quoted"] - got, n["id"])
        if n["status"] in ("failed", "canceled"):
            tc.assertEqual(len(refunds), 1, n["id"])
            tc.assertEqual(got, n["cost"]["quoted"], n["id"])
        refunded += got
    tc.assertEqual(run_body["costs"]["refunded"], refunded)
    tc.assertEqual(sum(r[0] for r in rows), server.balance(user), rows)
    audit = server.cli("audit", check=False)
    tc.assertEqual(audit.returncode, 0, audit.stdout + audit.stderr)


def parse_sse(text):
    """[(id, event, data-json)] of an SSE body."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        ev = {}
        for line in block.split("\n"):
            if ": " in line and not line.startswith(":"):
                k, v = line.split(": ", 1)
                ev[k] = v
        if "event" in ev:
            events.append((ev["id"], ev["event"], json.loads(ev["data"])))
    return events


def read_stream(server, run_id, headers, timeout=90):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    conn.request("GET", f"/api/runs/{run_id}/events", headers=headers)
    r = conn.getresponse()
    status, ctype = r.status, r.getheader("Content-Type")
    body = r.read().decode()
    conn.close()
    return status, ctype, parse_sse(body)


def assert_valid_order(tc, events, graph):
    """Each node: queued, then started, progress, then one final event; a
    node starts only after the nodes it reads succeeded; run.finished last."""
    reads = {n["id"]: [v["$ref"].split(".")[0] for v in n["inputs"].values()
                       if isinstance(v, dict)] for n in graph["nodes"]}
    seen = {}
    rank = {"node.queued": 0, "node.started": 1, "node.progress": 2,
            "node.succeeded": 3, "node.failed": 3, "node.cached": 3}
    for k, (_, name, data) in enumerate(events):
        if name == "run.finished":
            tc.assertEqual(k, len(events) - 1, events)
            continue
        nid = data["nodeId"] if "nodeId" in data else data["id"]
        tc.assertGreaterEqual(rank[name], seen.get(nid, -1), (nid, name))
        tc.assertFalse(seen.get(nid) == 3, (nid, name, "after its end"))
        seen[nid] = rank[name]
        if name == "node.started":
            for src in reads[nid]:
                tc.assertEqual(seen.get(src), 3, (nid, "started before", src))
    tc.assertEqual(events[-1][1], "run.finished")
    tc.assertEqual(set(seen), set(reads))
    tc.assertTrue(all(v == 3 for v in seen.values()), seen)


def nodes_by_id(body):
    return {n["id"]: n for n in body["nodes"]}


class Runs(ServerTest):
    server_env = {"LENSROOM_MOCK_LATENCY_MS": "150"}

    def setUp(self):
        super().setUp()
        self.user = new_user()
        self.server.grant(self.user, 500)
        self.c = RunClient(self.server, self.user)

    def test_five_node_graph_quote_equals_charge_and_outputs_flow(self):
        graph = five_nodes()
        q = self.c.quote(graph)
        self.assertEqual(q.status, 200, q.body)
        total = q.json["total"]
        r = self.c.run(graph, quoteId=q.json["quoteId"])
        self.assertEqual(r.status, 202, r.body)
        self.assertEqual(r.json["costs"]["quoted"], total)
        self.assertEqual(r.json["balance"], 500 - total)
        self.assertEqual(self.server.balance(self.user), 500 - total)
        self.assertEqual(r.header("location"), f"/api/runs/{r.json['runId']}")
        assert_schema(self, "Run", r.json)
        body = self.c.wait_finished(r.json["runId"])
        assert_schema(self, "Run", body)
        self.assertEqual(body["status"], "success", body)
        self.assertIsNone(body["error"])
        self.assertEqual(body["costs"], {"quoted": total, "charged": total, "refunded": 0})
        self.assertEqual([n["id"] for n in body["nodes"]], ["text", "img", "night", "snow", "vid"])
        n = nodes_by_id(body)
        lines = {l["nodeId"]: l["credits"] for l in q.json["lines"]}
        for nid, node in n.items():
            self.assertEqual(node["status"], "success", node)
            self.assertEqual(node["cost"]["quoted"], lines[nid])
        # outputs flow into the inputs that name them
        text = n["text"]["text"]
        self.assertTrue(text.startswith("Mock answer to: a castle"), text)
        self.assertEqual(n["img"]["inputs"]["prompt"], text)
        self.assertEqual(n["vid"]["inputs"]["prompt"], text)
        self.assertEqual(n["night"]["inputs"]["imageUrl"], n["img"]["urls"][0])
        self.assertEqual(n["snow"]["inputs"]["imageUrl"], n["img"]["urls"][0])
        self.assertEqual(n["vid"]["inputs"]["imageUrl"], n["snow"]["urls"][0])
        for nid in ("img", "night", "snow", "vid"):
            self.assertEqual(len(n[nid]["urls"]), 1)
            f = self.server.fetch_url(n[nid]["urls"][0])
            self.assertEqual(f.status, 200)
            want = "video/mp4" if nid == "vid" else "image/png"
            self.assertEqual(f.header("content-type"), want)
        # each node is a generation of its own, linked to the run
        g = self.server.get(f"/api/generations/{n['img']['generationId']}", self.c.h)
        self.assertEqual(g.status, 200)
        self.assertEqual(g.json["generation"]["resultUrls"], n["img"]["urls"])
        assert_run_money(self, self.server, self.user, body)

    def test_failure_at_node_three_refunds_it_and_its_descendants_once(self):
        r = self.c.run(five_nodes(fail_at="snow"))
        self.assertEqual(r.status, 202, r.body)
        total = r.json["costs"]["quoted"]
        body = self.c.wait_finished(r.json["runId"])
        self.assertEqual(body["status"], "failed", body)
        assert_schema(self, "Run", body)
        self.assertEqual(body["error"]["nodeId"], "snow")
        self.assertEqual(body["error"]["code"], "provider_failed")
        n = nodes_by_id(body)
        for nid in ("text", "img", "night"):  # upstream and beside: kept, charged
            self.assertEqual(n[nid]["status"], "success", n[nid])
            self.assertEqual(n[nid]["cost"]["refunded"], 0)
        self.assertEqual(n["snow"]["status"], "failed")
        self.assertEqual(n["snow"]["error"]["code"], "provider_failed")
        self.assertEqual(n["vid"]["status"], "failed")
        self.assertEqual(n["vid"]["error"]["code"], "upstream_failed")
        self.assertEqual(n["vid"]["urls"], [])
        refunded = n["snow"]["cost"]["quoted"] + n["vid"]["cost"]["quoted"]
        self.assertEqual(body["costs"]["refunded"], refunded)
        self.assertEqual(self.server.balance(self.user), 500 - total + refunded)
        assert_run_money(self, self.server, self.user, body)

    def test_bad_graphs_are_refused_and_nothing_is_charged(self):
        before = ledger_rows(self.server, self.user)
        cases = [
            ({"nodes": [
                {"id": "a", "modelId": "seedream_image", "inputs": {"prompt": "p"}},
                {"id": "b", "modelId": "anthropic_text", "inputs": {"prompt": ref("a")}}]},
             422, "invalid_graph", {"b": "type_mismatch"}),
            ({"nodes": [
                {"id": "a", "modelId": "anthropic_text", "inputs": {"prompt": ref("b")}},
                {"id": "b", "modelId": "anthropic_text", "inputs": {"prompt": ref("a")}}]},
             422, "invalid_graph", {"a": "graph_cycle", "b": "graph_cycle"}),
            ({"nodes": [
                {"id": "a", "modelId": "seedream_image", "inputs": {"prompt": ref("ghost")}}]},
             422, "invalid_graph", {"a": "dangling_reference"}),
            ({"nodes": [
                {"id": "a", "modelId": "seedream_image", "inputs": {"prompt": "p"}},
                {"id": "b", "modelId": "veo3_video", "inputs": {"prompt": "p"},
                 "params": {"duration": ref("a")}}]},
             422, "invalid_graph", {"b": "type_mismatch"}),
        ]
        for graph, status, code, node_codes in cases:
            r = self.c.run(graph)
            self.assertEqual(r.status, status, r.body)
            self.assertEqual(r.json["code"], code)
            self.assertIs(r.json["success"], False)
            self.assertIsInstance(r.json["error"], str)
            for nid, ncode in node_codes.items():
                self.assertIn(ncode, [e["code"] for e in r.json["nodeErrors"][nid]], r.json)
        big = {"nodes": [{"id": f"n{i}", "modelId": "anthropic_text", "inputs": {"prompt": "p"}}
                         for i in range(200)]}
        r = self.c.run(big)
        self.assertEqual(r.status, 413, r.body)
        self.assertEqual(r.json["code"], "graph_too_large")
        r = self.c.run(five_nodes(), maxCredits=10)
        self.assertEqual(r.status, 402, r.body)
        self.assertEqual(r.json["code"], "max_credits_exceeded")
        self.assertGreater(r.json["required"], 10)
        poor = new_user()
        self.server.grant(poor, 5)
        r = RunClient(self.server, poor).run(five_nodes())
        self.assertEqual(r.status, 402, r.body)
        self.assertEqual(r.json["code"], "insufficient_credits")
        self.assertEqual(r.json["balance"], 5)
        self.assertEqual(self.server.balance(poor), 5)
        self.assertEqual(self.server.balance(self.user), 500)
        self.assertEqual(ledger_rows(self.server, self.user), before)
        with self.server.db() as c:
            self.assertEqual(c.execute("SELECT count(*) FROM runs").fetchone()[0], 0)
            self.assertEqual(c.execute("SELECT count(*) FROM generations").fetchone()[0], 0)

    def test_idempotency_key_replays_the_run_and_another_body_conflicts(self):
        graph = {"nodes": [{"id": "a", "modelId": "anthropic_text", "inputs": {"prompt": "hi"}}]}
        h = {"Idempotency-Key": "run-key-1"}
        r1 = self.c.run(graph, headers=h)
        self.assertEqual(r1.status, 202, r1.body)
        r2 = self.c.run(graph, headers=h)
        self.assertEqual(r2.status, 200, r2.body)
        self.assertEqual(r2.json["runId"], r1.json["runId"])
        r3 = self.c.run({"nodes": [{"id": "a", "modelId": "anthropic_text",
                                    "inputs": {"prompt": "other"}}]}, headers=h)
        self.assertEqual(r3.status, 422, r3.body)
        self.assertEqual(r3.json["code"], "idempotency_key_reused")
        body = self.c.wait_finished(r1.json["runId"])
        self.assertEqual(self.server.balance(self.user), 500 - body["costs"]["quoted"])
        assert_run_money(self, self.server, self.user, body)

    def test_events_show_every_node_in_a_valid_order_and_resume(self):
        graph = five_nodes()
        r = self.c.run(graph)
        self.assertEqual(r.status, 202, r.body)
        rid = r.json["runId"]
        status, ctype, events = read_stream(self.server, rid, self.c.h)
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/event-stream"), ctype)
        assert_valid_order(self, events, graph)
        for _, name, data in events:
            assert_schema(self, "Run" if name == "run.finished" else "RunNode", data)
        finals = [(e[1], e[2]["id"]) for e in events if e[1] in ("node.succeeded", "node.failed")]
        self.assertEqual(sorted(finals), sorted(("node.succeeded", n["id"])
                                                for n in graph["nodes"]))
        done = events[-1][2]
        self.assertEqual(done["status"], "success")
        self.assertEqual(done["runId"], rid)
        # resume after the first node's end: only what came after it
        cut = next(k for k, e in enumerate(events) if e[1] == "node.succeeded")
        _, _, rest = read_stream(self.server, rid, {**self.c.h, "Last-Event-ID": events[cut][0]})
        self.assertEqual([e for e in rest if e[2].get("id") == events[cut][2]["id"]], [])
        self.assertEqual(rest[-1][1], "run.finished")
        self.assertEqual(len([e for e in rest if e[1] == "node.succeeded"]), 4)
        # after the end: 204, EventSource stops
        st, _, _ = read_stream(self.server, rid, {**self.c.h, "Last-Event-ID": events[-1][0]})
        self.assertEqual(st, 204)
        st, _, _ = read_stream(self.server, rid, {**self.c.h, "Last-Event-ID": "r12"})
        self.assertEqual(st, 400)

    def test_another_users_run_is_not_found(self):
        r = self.c.run({"nodes": [{"id": "a", "modelId": "anthropic_text",
                                   "inputs": {"prompt": "hi"}}]})
        self.assertEqual(r.status, 202, r.body)
        other = RunClient(self.server, new_user())
        for resp in (other.get(r.json["runId"]),
                     other.s.get(f"/api/runs/{r.json['runId']}/events", other.h),
                     other.post(f"/api/runs/{r.json['runId']}/cancel", {}),
                     other.get("00000000-0000-4000-8000-000000000000"),
                     other.get("not-a-uuid")):
            self.assertEqual(resp.status, 404, resp.body)
            self.assertEqual(resp.json["code"], "run_not_found")
        self.assertEqual(self.c.s.get(f"/api/runs/{r.json['runId']}").status, 401)
        self.c.wait_finished(r.json["runId"])


class RunLimits(ServerTest):
    server_env = {"LENSROOM_USER_RATE_PER_MIN": "1"}

    def test_a_run_counts_against_the_request_rate_and_a_refusal_charges_nothing(self):
        user = new_user()
        self.server.grant(user, 100)
        c = RunClient(self.server, user)
        graph = {"nodes": [{"id": "a", "modelId": "anthropic_text", "inputs": {"prompt": "hi"}}]}
        r = c.run(graph)
        self.assertEqual(r.status, 202, r.body)
        c.wait_finished(r.json["runId"])
        r = c.run(graph)
        self.assertEqual(r.status, 429, r.body)
        self.assertEqual(r.json["code"], "rate_limited")
        self.assertTrue(r.header("retry-after"))
        self.assertEqual(self.server.balance(user), 98)


class RunRestart(unittest.TestCase):
    def test_sigterm_mid_run_exits_cleanly_and_the_next_process_finishes_it(self):
        s = Server({"LENSROOM_MOCK_LATENCY_MS": "1500", "LENSROOM_LEASE_S": "2"})
        self.addCleanup(s.cleanup)
        s.start()
        user = new_user()
        s.grant(user, 500)
        c = RunClient(s, user)
        r = c.run(five_nodes())
        self.assertEqual(r.status, 202, r.body)
        rid, total = r.json["runId"], r.json["costs"]["quoted"]
        self.assertTrue(wait_for(lambda: nodes_by_id(c.get(rid).json)["text"]["status"]
                                 == "processing", 30))
        s.stop()  # SIGTERM: exit 0, no sanitizer report (asserted by the harness)
        with s.db() as db:
            left = db.execute("SELECT count(*) FROM generations WHERE run_id = ? AND status = "
                              "'pending'", (rid,)).fetchone()[0]
        self.assertGreater(left, 0)
        s.start()
        body = c.wait_finished(rid, 120)
        self.assertEqual(body["status"], "success", body)
        self.assertEqual(s.balance(user), 500 - total)
        assert_run_money(self, s, user, body)


class RunCache(ServerTest):
    server_env = {"LENSROOM_MOCK_LATENCY_MS": "50"}

    def setUp(self):
        super().setUp()
        self.user = new_user()
        self.server.grant(self.user, 500)
        self.c = RunClient(self.server, self.user)
        r = self.c.run(five_nodes())
        self.assertEqual(r.status, 202, r.body)
        self.first = self.c.wait_finished(r.json["runId"])
        self.assertEqual(self.first["status"], "success", self.first)
        self.prices = {n["id"]: n["cost"]["quoted"] for n in self.first["nodes"]}

    def test_rerun_after_editing_one_prompt_charges_only_it_and_below(self):
        graph = five_nodes()
        graph["nodes"][3]["inputs"]["prompt"] = "add heavy snow"
        q = self.c.quote(graph)
        self.assertEqual(q.status, 200, q.body)
        want = self.prices["snow"] + self.prices["vid"]
        self.assertEqual(q.json["total"], want)
        cached = {l["nodeId"] for l in q.json["lines"] if l.get("cached")}
        self.assertEqual(cached, {"text", "img", "night"})
        before = self.server.balance(self.user)
        r = self.c.run(graph, quoteId=q.json["quoteId"])
        self.assertEqual(r.status, 202, r.body)
        self.assertEqual(r.json["costs"]["quoted"], want)
        body = self.c.wait_finished(r.json["runId"])
        self.assertEqual(body["status"], "success", body)
        self.assertEqual(self.server.balance(self.user), before - want)
        n, old = nodes_by_id(body), nodes_by_id(self.first)
        for nid in ("text", "img", "night"):
            self.assertTrue(n[nid]["cached"], nid)
            self.assertEqual(n[nid]["cost"], {"quoted": 0, "charged": 0, "refunded": 0})
            self.assertEqual(n[nid]["outputs"], old[nid]["outputs"])
        for nid in ("snow", "vid"):
            self.assertFalse(n[nid]["cached"], nid)
            self.assertNotEqual(n[nid]["urls"], old[nid]["urls"])
        self.assertEqual(n["snow"]["inputs"]["imageUrl"], old["img"]["urls"][0])
        self.assertEqual(n["vid"]["inputs"]["imageUrl"], n["snow"]["urls"][0])
        assert_run_money(self, self.server, self.user, body)
        # the same graph once more: everything from the cache, nothing charged
        r = self.c.run(graph)
        self.assertEqual(r.json["costs"]["quoted"], 0)
        body = self.c.wait_finished(r.json["runId"])
        self.assertEqual(body["status"], "success")
        self.assertTrue(all(x["cached"] for x in body["nodes"]))
        self.assertEqual(self.server.balance(self.user), before - want)
        assert_run_money(self, self.server, self.user, body)

    def test_targets_with_a_cached_ancestor_runs_one_node(self):
        graph = five_nodes()
        graph["nodes"][4]["inputs"]["prompt"] = "a slow pan across the snow"
        before = self.server.balance(self.user)
        r = self.c.run(graph, targets=["vid"], fromRunId=self.first["runId"])
        self.assertEqual(r.status, 202, r.body)
        self.assertEqual(r.json["costs"]["quoted"], self.prices["vid"])
        body = self.c.wait_finished(r.json["runId"])
        self.assertEqual(body["status"], "success", body)
        self.assertEqual([x["id"] for x in body["nodes"]], ["snow", "vid"])
        _, _, events = read_stream(self.server, r.json["runId"], self.c.h)
        seq = [(e[1], e[2]["id"]) for e in events[:-1] if e[1] != "node.progress"]
        self.assertEqual([x for x, nid in seq if nid == "snow"], ["node.queued", "node.cached"])
        self.assertEqual([x for x, nid in seq if nid == "vid"],
                         ["node.queued", "node.started", "node.succeeded"])
        self.assertLess(seq.index(("node.cached", "snow")), seq.index(("node.started", "vid")))
        self.assertEqual(events[-1][1], "run.finished")
        n = nodes_by_id(body)
        self.assertTrue(n["snow"]["cached"])
        self.assertFalse(n["vid"]["cached"])
        self.assertEqual(n["vid"]["inputs"]["imageUrl"], nodes_by_id(self.first)["snow"]["urls"][0])
        self.assertEqual(self.server.balance(self.user), before - self.prices["vid"])
        assert_run_money(self, self.server, self.user, body)
        with self.server.db() as c:
            made = c.execute("SELECT count(*) FROM generations WHERE run_id = ? AND "
                             "run_cost > 0", (r.json["runId"],)).fetchone()[0]
        self.assertEqual(made, 1)

    def test_bad_targets_and_another_users_run_are_refused(self):
        r = self.c.run(five_nodes(), targets=["ghost"])
        self.assertEqual(r.status, 422, r.body)
        self.assertEqual((r.json["code"], r.json["field"]), ("invalid_parameter", "targets"))
        other = RunClient(self.server, new_user())
        self.server.grant(other.user, 500)
        r = other.run(five_nodes(), fromRunId=self.first["runId"])
        self.assertEqual(r.status, 404, r.body)
        self.assertEqual(r.json["code"], "run_not_found")
        self.assertEqual(self.server.balance(other.user), 500)
        # another user's cache is not this user's: a full price
        r = other.run(five_nodes())
        self.assertEqual(r.json["costs"]["quoted"], sum(self.prices.values()))
        other.wait_finished(r.json["runId"])


class RunCancel(ServerTest):
    server_env = {"LENSROOM_MOCK_LATENCY_MS": "2000"}

    def test_cancel_refunds_what_has_not_finished(self):
        user = new_user()
        self.server.grant(user, 500)
        c = RunClient(self.server, user)
        r = c.run(five_nodes())
        self.assertEqual(r.status, 202, r.body)
        rid = r.json["runId"]
        x = c.post(f"/api/runs/{rid}/cancel", {})
        self.assertEqual(x.status, 200, x.body)
        body = c.wait_finished(rid)
        self.assertEqual(body["status"], "canceled", body)
        for n in body["nodes"]:
            self.assertEqual(n["status"], "canceled", n)
        self.assertEqual(body["costs"]["refunded"], body["costs"]["quoted"])
        self.assertEqual(self.server.balance(user), 500)
        again = c.post(f"/api/runs/{rid}/cancel", {})
        self.assertEqual(again.status, 409, again.body)
        self.assertEqual(again.json["code"], "run_finished")
        assert_run_money(self, self.server, user, body)

    def test_a_node_canceled_on_its_own_fails_the_run_naming_it(self):
        user = new_user()
        self.server.grant(user, 500)
        c = RunClient(self.server, user)
        r = c.run(five_nodes())
        rid = r.json["runId"]
        self.assertTrue(wait_for(lambda: nodes_by_id(c.get(rid).json)["text"]["status"]
                                 == "processing", 30))
        gid = nodes_by_id(c.get(rid).json)["text"]["generationId"]
        x = c.post(f"/api/generations/{gid}/cancel", {})
        self.assertEqual(x.status, 200, x.body)
        body = c.wait_finished(rid)
        self.assertEqual(body["status"], "failed", body)
        self.assertEqual((body["error"]["nodeId"], body["error"]["code"]), ("text", "canceled"))
        self.assertEqual(body["costs"]["refunded"], body["costs"]["quoted"])
        self.assertEqual(self.server.balance(user), 500)
        assert_run_money(self, self.server, user, body)


class KieRuns(unittest.TestCase):
    """The same graph on the real providers' code, against loopback fakes of
    Kie.ai and Anthropic that record what each create received."""

    @classmethod
    def setUpClass(cls):
        cls.mp4 = real_mp4()

    def setUp(self):
        self.fake = FakeProviders(mp4=self.mp4)
        self.addCleanup(self.fake.close)
        self.fake.released.clear()

    def server(self, **extra):
        env = self.fake.env()
        env.update({"LENSROOM_LEASE_S": "2", **extra})
        s = Server(env)
        self.addCleanup(s.cleanup)
        s.start()
        user = new_user()
        s.grant(user, 500)
        return s, user, RunClient(s, user)

    def creates(self):
        """Kie creates by prompt: (model, prompt, image urls)."""
        out = []
        for r in self.fake.requests_to("/api/v1/"):
            b = r["body"] if isinstance(r["body"], dict) else {}
            if r["method"] != "POST" or ("generate" not in r["path"] and "createTask" not in r["path"]):
                continue
            inp = b.get("input") or b
            out.append((b.get("model"), inp.get("prompt"),
                        inp.get("image_urls") or inp.get("imageUrls") or []))
        return out

    def test_five_nodes_on_kie_outputs_reach_the_right_creates(self):
        self.fake.release()
        s, user, c = self.server()
        q = c.quote(five_nodes())
        r = c.run(five_nodes(), quoteId=q.json["quoteId"])
        self.assertEqual(r.status, 202, r.body)
        body = c.wait_finished(r.json["runId"])
        self.assertEqual(body["status"], "success", body)
        self.assertEqual(body["costs"]["charged"], q.json["total"])
        n = nodes_by_id(body)
        text = n["text"]["text"]
        self.assertEqual(text, "Echo: a castle on a hill")
        creates = self.creates()
        self.assertEqual(len(creates), 4, creates)
        by_prompt = {(p, tuple(u)) for _, p, u in creates}
        img_url, snow_url = n["img"]["urls"][0], n["snow"]["urls"][0]
        self.assertIn((text, ()), by_prompt)  # the image, from the text
        self.assertIn(("make it night", (img_url,)), by_prompt)
        self.assertIn(("add snow", (img_url,)), by_prompt)
        self.assertIn((text, (snow_url,)), by_prompt)  # the video
        self.assertEqual(s.fetch_url(img_url).body, self.fake.png)
        assert_run_money(self, s, user, body)

    def test_failure_at_kie_refunds_the_node_and_below_once(self):
        self.fake.release()
        s, user, c = self.server()
        graph = five_nodes()
        graph["nodes"][3]["inputs"]["prompt"] = "add snow [create_500]"
        r = c.run(graph)
        self.assertEqual(r.status, 202, r.body)
        body = c.wait_finished(r.json["runId"])
        self.assertEqual(body["status"], "failed", body)
        self.assertEqual(body["error"]["nodeId"], "snow")
        n = nodes_by_id(body)
        self.assertEqual([n[x]["status"] for x in ("text", "img", "night", "snow", "vid")],
                         ["success", "success", "success", "failed", "failed"])
        self.assertEqual(n["vid"]["error"]["code"], "upstream_failed")
        self.assertEqual(len([1 for _, p, _ in self.creates() if p == n["text"]["text"]]), 1)
        assert_run_money(self, s, user, body)

    def test_sigkill_mid_run_then_restart_completes_each_node_charged_and_sent_once(self):
        s, user, c = self.server()
        r = c.run(five_nodes(text_prompt="a castle [hold]"))
        self.assertEqual(r.status, 202, r.body)
        rid = r.json["runId"]
        total = r.json["costs"]["quoted"]

        def img_at_provider():
            n = nodes_by_id(c.get(rid).json)["img"]
            return n["status"] == "processing" and n["generationId"] and self.task_recorded(
                s, n["generationId"])

        self.assertTrue(wait_for(img_at_provider, 60), c.get(rid).body)
        s.kill()
        self.assertEqual(s.balance(user), 500 - total)
        self.fake.release()
        s.start()
        body = c.wait_finished(rid, 120)
        self.assertEqual(body["status"], "success", body)
        self.assertIn("resuming a run's node left by a stopped process", s.read_log())
        self.assertEqual(s.balance(user), 500 - total)
        prompts = [p for _, p, _ in self.creates()]
        text = nodes_by_id(body)["text"]["text"]
        self.assertEqual(prompts.count(text), 2, prompts)  # the image and the video, once each
        self.assertEqual(len(prompts), 4, prompts)
        assert_run_money(self, s, user, body)

    @staticmethod
    def task_recorded(s, gid):
        with s.db() as c:
            (t,) = c.execute("SELECT provider_task_ids FROM generations WHERE id = ?",
                             (gid,)).fetchone()
        return t not in ("[]", [], None)


if __name__ == "__main__":
    unittest.main()
