#!/usr/bin/env python3
"""S3 storage benchmarks against a real S3-protocol server (s3rver, the
tests' bucket, reached directly: its signature checker is Python and would
be the bottleneck), release binaries, mock provider at 0 ms.

  bench/s3.py throughput BIN [BASE_BIN]  infer/s of seedream_image (a real PNG
      uploaded per infer) with 100 users, BENCH_ROUNDS rounds (default 3) of
      BENCH_SECONDS (default 10), BIN and BASE_BIN interleaved (BASE_BIN first
      in even rounds); one line per run.
  bench/s3.py slow BIN [BASE_BIN]        the same against a slow bucket: a
      fake that answers each upload after BENCH_STALL_MS (default 200 ms), as
      a distant or overloaded bucket does.
  bench/s3.py store50 BIN                peak RSS while a 50 MB Kie.ai result
      (fake) is downloaded, spooled and uploaded (multipart, 16 MiB parts).
  bench/s3.py busy BIN                   anthropic_text infer/s alone, then
      while ten 50 MB results are being uploaded, and the peak RSS then.
"""
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
os.environ.setdefault("LENSROOM_BIN", os.path.join(ROOT, "build", "lensroom"))

import harness  # noqa: E402
from harness import Server, new_user, wait_for  # noqa: E402
from s3env import S3  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECS = int(os.environ.get("BENCH_SECONDS", "10"))


def server(binary, s3, extra=None):
    harness.BIN = binary
    env = dict(s3.env(), S3_ENDPOINT=f"http://127.0.0.1:{s3.port}", LENSROOM_LOG_LEVEL="warn",
               LENSROOM_USER_RATE_PER_MIN="0", LENSROOM_USER_MAX_IN_FLIGHT="0", ASAN_OPTIONS="")
    env.update(extra or {})
    return Server(env).start()


def tokens(s, n):
    f = tempfile.NamedTemporaryFile("w", delete=False, prefix="lr-bench-tokens-")
    for _ in range(n):
        u = new_user()
        s.grant(u, 1000000000)
        f.write(s.token(u, ttl=86400) + "\n")
    f.close()
    return f.name


def wrk(s, model, tok_file, secs=SECS):
    out = subprocess.run(
        ["wrk", "-t2", "-c64", f"-d{secs}s", "-s", os.path.join(ROOT, "bench", "infer.lua"),
         f"http://127.0.0.1:{s.port}"], env=dict(os.environ, MODEL=model, TOKENS_FILE=tok_file),
        capture_output=True, text=True, check=True).stdout
    rps = next(l.split()[1] for l in out.splitlines() if l.startswith("Requests/sec"))
    non2xx = next((l.split()[-1] for l in out.splitlines() if "Non-2xx" in l), "0")
    return float(rps), int(non2xx)


def throughput(bins):
    s3 = S3()
    try:
        for rnd in range(ROUNDS):
            order = bins if rnd % 2 == 0 else list(reversed(bins))
            for b in order:
                s = server(b, s3)
                try:
                    tf = tokens(s, 100)
                    rps, bad = wrk(s, "seedream_image", tf)
                    rss = s.proc_status("VmRSS", "VmHWM")
                    print(f"s3 throughput round={rnd + 1} bin={b} model=seedream_image "
                          f"infer/s={rps:.0f} non2xx={bad} rss_kb={rss['VmRSS']} "
                          f"peak_kb={rss['VmHWM']}", flush=True)
                    os.unlink(tf)
                finally:
                    s.cleanup()
    finally:
        s3.close()


def slow(bins):
    import test_backlog  # its StallingS3: a bucket answering each PUT after a stall
    test_backlog.UPLOAD_STALL_S = int(os.environ.get("BENCH_STALL_MS", "200")) / 1000
    bucket = test_backlog.StallingS3()
    env = {"S3_ENDPOINT": bucket.endpoint, "S3_BUCKET": "generations", "S3_ACCESS_KEY_ID": "k",
           "S3_SECRET_ACCESS_KEY": "s", "S3_PUBLIC_URL": bucket.endpoint + "/generations"}

    class Direct:  # server() wants an S3-like object
        port = bucket.server_address[1]

        @staticmethod
        def env():
            return env
    try:
        for rnd in range(ROUNDS):
            for b in (bins if rnd % 2 == 0 else list(reversed(bins))):
                s = server(b, Direct, {"S3_ENDPOINT": bucket.endpoint})
                try:
                    tf = tokens(s, 100)
                    rps, bad = wrk(s, "seedream_image", tf)
                    print(f"s3 slow stall_ms={test_backlog.UPLOAD_STALL_S * 1000:.0f} "
                          f"round={rnd + 1} bin={b} infer/s={rps:.0f} non2xx={bad} "
                          f"rss_kb={s.proc_status('VmRSS')['VmRSS']}", flush=True)
                    os.unlink(tf)
                finally:
                    s.cleanup()
    finally:
        bucket.shutdown()


def big_env():
    from fake_providers import FakeProviders
    fake = FakeProviders(mp4=b"")
    return fake, fake.env()


def store50(binary):
    s3 = S3()
    fake, env = big_env()
    try:
        s = server(binary, s3, env)
        try:
            user = new_user()
            s.grant(user, 1000)
            tok = s.token(user)
            r = s.infer(tok, prompt="warm-up")  # a small result first: every path loaded
            assert r.status == 200, r.body
            time.sleep(0.5)
            before = s.proc_status("VmRSS", "VmHWM")
            t0 = time.time()
            r = s.infer(tok, prompt="big [dl_50mb]")
            took = time.time() - t0
            assert r.status == 200, r.body
            after = s.proc_status("VmRSS", "VmHWM")
            key = r.json["url"][len(s3.public_url) + 1:]
            size = s3.client().head_object(Bucket=s3.bucket, Key=key)["ContentLength"]
            parts = sum(1 for l in s3.requests() if "partNumber=" in l)
            print(f"s3 store50 bin={binary} object_bytes={size} seconds={took:.2f} "
                  f"rss_before_kb={before['VmRSS']} peak_before_kb={before['VmHWM']} "
                  f"peak_during_kb={after['VmHWM']} "
                  f"peak_growth_kb={after['VmHWM'] - before['VmRSS']}", flush=True)
            del parts
        finally:
            s.cleanup()
    finally:
        fake.close()
        s3.close()


def cpu_s(pid):
    """CPU seconds (user + system) process pid has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(s, s3, tf):
    """wrk's text infer/s and the CPU seconds each process used meanwhile:
    the server, the bucket (s3rver), this script (the fake Kie.ai serving
    the results runs in it) and wrk."""
    import resource
    pids = {"lensroom": s.proc.pid, "s3rver": s3.s3rver.pid, "fake": os.getpid()}
    before = {k: cpu_s(p) for k, p in pids.items()}
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    rps, bad = wrk(s, "anthropic_text", tf)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {k: cpu_s(p) - before[k] for k, p in pids.items()}
    cpu["wrk"] = after.ru_utime + after.ru_stime - kids.ru_utime - kids.ru_stime
    return rps, bad, " ".join(f"{k}={v:.1f}" for k, v in cpu.items())


def busy(binary):
    """Text infer/s alone and while ten 50 MB results go up to the bucket,
    with the CPU seconds each process used in each window: on one small
    machine the bucket and the fake share the cores with the server, so
    the server's own cost is its CPU seconds, not the infer/s lost."""
    s3 = S3()
    fake, env = big_env()
    try:
        s = server(binary, s3, env)
        try:
            tf = tokens(s, 100)
            alone, _, cpu_alone = measured(s, s3, tf)
            user = new_user()
            s.grant(user, 100000)
            tok = s.token(user)
            gids = []
            for i in range(10):
                r = s.infer(tok, prompt=f"big {i} [dl_50mb]", headers={"Prefer": "respond-async"})
                assert r.status == 202, r.body
                gids.append(r.json["generationId"])
            before = s.proc_status("VmRSS")["VmRSS"]
            rps, bad, cpu_during = measured(s, s3, tf)
            done = sum(1 for g in gids if s.generation_status(g, tok) == "success")
            wait_for(lambda: all(s.generation_status(g, tok) in ("success", "failed")
                                 for g in gids), timeout=600, interval=0.5)
            ok = sum(1 for g in gids if s.generation_status(g, tok) == "success")
            peak = s.proc_status("VmHWM")["VmHWM"]
            print(f"s3 busy bin={binary} text_infer/s_alone={alone:.0f} "
                  f"text_infer/s_during_10x50MB={rps:.0f} non2xx={bad} "
                  f"big_done_during_run={done} big_succeeded={ok}/10 rss_before_kb={before} "
                  f"peak_kb={peak}", flush=True)
            print(f"  cpu_s alone: {cpu_alone}; during: {cpu_during}", flush=True)
            os.unlink(tf)
        finally:
            s.cleanup()
    finally:
        fake.close()
        s3.close()


if __name__ == "__main__":
    mode, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if mode == "throughput" and args:
        throughput(args)
    elif mode == "slow" and args:
        slow(args)
    elif mode == "store50" and args:
        store50(args[0])
    elif mode == "busy" and args:
        busy(args[0])
    else:
        sys.exit(__doc__)
