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


if __name__ == "__main__":
    unittest.main()
