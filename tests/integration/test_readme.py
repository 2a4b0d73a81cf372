"""README's quick start, run exactly as written (only the port and the
binary's path differ): it must return 200 with a URL whose bytes are a
valid PNG, and the balance must drop by the model's cost."""
import io
import json
import os
import re
import subprocess
import unittest

from PIL import Image

from harness import BIN, ServerTest

README = os.path.join(os.path.dirname(__file__), "../../README.md")


class Readme(ServerTest):
    def test_quickstart_block_works_as_pasted(self):
        with open(README) as f:
            text = f.read()
        m = re.search(r"<!-- quickstart -->\n```sh\n(.*?)```\n<!-- /quickstart -->", text, re.S)
        self.assertIsNotNone(m, "README lost its quick-start block")
        script = m.group(1)
        self.assertIn("http://localhost:3001/api/infer", script)
        script = script.replace("localhost:3001", f"localhost:{self.server.port}")
        script = script.replace("./build/lensroom", BIN)
        script += '\nprintf "\\nUSER=%s\\n" "$USER_ID"\n'
        r = subprocess.run(["bash", "-e", "-c", script], env=self.server.env, capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.strip().splitlines()
        user = lines[-1].split("=", 1)[1]
        body = json.loads(lines[-2])
        self.assertTrue(body["success"], body)
        self.assertEqual(body["newBalance"], 92)
        f = self.server.fetch_url(body["urls"][0])
        img = Image.open(io.BytesIO(f.body))
        img.load()
        self.assertEqual(img.format, "PNG")
        self.assertEqual(self.server.balance(user), 92)

    def test_run_example_works_as_pasted(self):
        with open(README) as f:
            text = f.read()
        m = re.search(r"<!-- runexample -->\n```sh\n(.*?)```\n<!-- /runexample -->", text, re.S)
        self.assertIsNotNone(m, "README lost its graph run example")
        script = m.group(1).replace("localhost:3001", f"localhost:{self.server.port}")
        script = script.replace("./build/lensroom", BIN)
        script += '\nprintf "\\nUSER=%s\\n" "$USER_ID"\n'
        r = subprocess.run(["bash", "-e", "-c", script], env=self.server.env, capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.strip().splitlines()
        user = lines[-1].split("=", 1)[1]
        run = json.loads(lines[-2])
        self.assertEqual(run["status"], "success", run)
        self.assertEqual([n["id"] for n in run["nodes"]], ["dragon", "night"])
        self.assertEqual(run["nodes"][1]["inputs"]["imageUrl"], run["nodes"][0]["urls"][0])
        self.assertEqual(run["costs"], {"quoted": 16, "charged": 16, "refunded": 0})
        self.assertEqual(self.server.balance(user), 100 - 16)
        events = [l.split(": ", 1)[1] for l in lines if l.startswith("event: ")]
        self.assertEqual(events[-1], "run.finished")
        self.assertLess(events.index("node.succeeded"), events.index("run.finished"))


if __name__ == "__main__":
    unittest.main()
