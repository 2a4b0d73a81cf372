#!/usr/bin/env python3
"""Memory while storing a 50 MB result: the release binary downloads a
just-under-50 MB file from the fake Kie.ai (tests/integration) and streams
it into local storage. Prints RSS before, the peak (VmHWM) during, and the
difference. Usage: bench/store50.py [BIN] (default build/lensroom)."""
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
os.environ["LENSROOM_BIN"] = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "lensroom")

from fake_providers import FakeProviders  # noqa: E402
from harness import Server, new_user  # noqa: E402


def main():
    fake = FakeProviders(mp4=b"")
    env = fake.env()
    env.update({"LENSROOM_LOG_LEVEL": "warn", "ASAN_OPTIONS": ""})
    s = Server(env).start()
    try:
        user = new_user()
        s.grant(user, 1000)
        tok = s.token(user)
        r = s.infer(tok, prompt="warm-up")  # a small result first: every code path loaded
        assert r.status == 200, r.body
        time.sleep(0.5)
        before = s.proc_status("VmRSS", "VmHWM")
        t0 = time.time()
        r = s.infer(tok, prompt="big [dl_50mb]")
        took = time.time() - t0
        assert r.status == 200, r.body
        after = s.proc_status("VmRSS", "VmHWM")
        path = os.path.join(s.data_dir, "storage")
        size = max(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
        print(f"store50 file_bytes={size} seconds={took:.2f} rss_before_kb={before['VmRSS']} "
              f"peak_before_kb={before['VmHWM']} peak_during_kb={after['VmHWM']} "
              f"peak_growth_kb={after['VmHWM'] - before['VmRSS']}")
    finally:
        s.cleanup()
        fake.close()


if __name__ == "__main__":
    main()
