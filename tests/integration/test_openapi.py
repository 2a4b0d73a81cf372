"""docs/openapi.yaml: valid OpenAPI 3.1 (checked by a real validator from
npm), naming every route and every error code the server has, and true:
real answers of the real binary validate against its schemas."""
import os
import re
import subprocess
import unittest

import yaml
from jsonschema import Draft202012Validator

from harness import ServerTest, new_user

ROOT = os.path.join(os.path.dirname(__file__), "../..")
SPEC = os.path.join(ROOT, "docs/openapi.yaml")
VALIDATOR = os.path.join(ROOT, "tests/node/node_modules/.bin/validate-api")

with open(SPEC) as f:
    DOC = yaml.safe_load(f)


def schema(name):
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                                 "components": DOC["components"]})


class Spec(unittest.TestCase):
    def test_the_file_is_valid_openapi_3_1(self):
        r = subprocess.run([VALIDATOR, SPEC], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn('"valid": true', r.stdout)
        self.assertEqual(DOC["openapi"], "3.1.0")

    def test_every_error_code_in_the_source_is_documented(self):
        codes = set()
        for dirpath, _, files in os.walk(os.path.join(ROOT, "src")):
            if dirpath.endswith("/cli"):
                continue  # the smoke test's own rows never reach a client
            for name in files:
                if name.endswith(".c"):
                    with open(os.path.join(dirpath, name)) as f:
                        text = f.read()
                    codes |= set(re.findall(r'reply_error\(\w+, \d+, "([a-z_]+)"', text))
                    codes |= set(re.findall(r'error_code = "([a-z_]+)"', text))
                    codes |= set(re.findall(r'(?:code|output_finished\([^;]*?)"((?:provider|storage|output)_[a-z_]+)"', text))
        self.assertIn("insufficient_credits", codes)
        documented = set(DOC["components"]["schemas"]["ErrorCode"]["enum"])
        self.assertEqual(codes - documented, set())

    def test_every_route_is_documented(self):
        with open(os.path.join(ROOT, "src/api/common.c")) as f:
            router = f.read()
        routes = set(re.findall(r'!strcmp\(p, "(/[^"]+)"\)', router))
        self.assertIn("/api/infer", routes)
        self.assertEqual(routes - set(DOC["paths"]), set())
        self.assertIn("/api/generations/{id}", DOC["paths"])
        self.assertIn("/storage/v1/object/public/{bucket}/{key}", DOC["paths"])


class Answers(ServerTest):
    def check(self, name, body):
        errors = sorted(schema(name).iter_errors(body), key=str)
        self.assertEqual(errors, [], f"{name}: {body}")

    def test_real_answers_match_the_schemas(self):
        user = new_user()
        self.server.grant(user, 20)
        tok = self.server.token(user)
        auth = {"Authorization": f"Bearer {tok}"}
        r = self.server.infer(tok)
        self.check("InferSuccess", r.json)
        gid = r.json["generationId"]
        r = self.server.infer(tok, model="veo3_video")
        self.assertEqual(r.status, 402)
        self.check("InsufficientCredits", r.json)
        for body in (self.server.infer(tok, model="nope").json,
                     self.server.get("/api/credits/balance").json):
            self.check("Error", body)
        g = self.server.get(f"/api/generations/{gid}", auth).json["generation"]
        self.check("Generation", g)
        for t in self.server.get("/api/credits/transactions", auth).json["transactions"]:
            self.check("Transaction", t)
        for m in self.server.get("/api/models").json:
            self.check("Model", m)
        self.check("Health", self.server.get("/healthz").json)
        r = self.server.infer(tok, headers={"Prefer": "respond-async"})
        self.check("InferPending", r.json)


if __name__ == "__main__":
    unittest.main()
