#!/usr/bin/env python3
"""Posters, previews and thumbnails: how fast the server makes them, each
against a baseline run in the same process of this script.

  clips    previews/s for 8 s 1280x720 H.264 clips (made here with the
           ffmpeg CLI, served by the fake Kie.ai as Veo results): the time
           from the first "preview started" to the last "preview ready" in
           the server's log, with LENSROOM_PREVIEW_WORKERS=2 (two cores).
           Baseline: the ffmpeg CLI making the same poster (WebP, frame at
           1 s) and preview (3 s, 480 px, H.264 CRF 30, faststart), one
           thread each, two at a time.
  images   thumbnails/s (a 256 px and a 1024 px WebP each) for 1024x1024
           PNGs, the same way. Baseline: PIL making the same two WebPs, two
           processes at a time.
  infer    POST /api/infer throughput and p99 of the mock image model at
           0 ms, previews off (the baseline) then on: the request path must
           not slow down while the preview threads (nice +10) work.

Usage: bench/previews.py [--clips N] [--images N] [--infers N] [--clients C] [BIN]
(default BIN: build/lensroom). Needs ffmpeg and python3-pil."""
import argparse
import http.client
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, ProcessPoolExecutor
from io import BytesIO

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import harness  # noqa: E402
from fake_providers import FakeProviders  # noqa: E402
from harness import Server, new_user, wait_for  # noqa: E402


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--clips", type=int, default=12)
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--infers", type=int, default=3000)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("bin", nargs="?", default=os.path.join(ROOT, "build", "lensroom"))
    return p.parse_args()


def make_clip(path):
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=1280x720:rate=24:duration=8", "-f", "lavfi", "-i",
                    "sine=duration=8", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt",
                    "yuv420p", "-c:a", "aac", "-shortest", path], check=True)
    with open(path, "rb") as f:
        return f.read()


def make_png():
    from PIL import Image
    m = Image.effect_mandelbrot((1024, 1024), (-2.0, -1.5, 1.0, 1.5), 200)
    g = Image.linear_gradient("L").resize((1024, 1024))
    img = Image.merge("RGB", (m, g, g.transpose(Image.Transpose.ROTATE_90)))
    buf = BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def ffmpeg_job(args):
    clip, out = args
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-threads", "1", "-ss", "1", "-i", clip,
                    "-frames:v", "1", "-vf", "scale='min(1280,iw)':-2", out + ".webp"],
                   check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-threads", "1", "-i", clip, "-t", "3", "-an",
                    "-vf", "scale=480:-2", "-c:v", "libx264", "-x264-params", "threads=1",
                    "-preset", "veryfast", "-crf", "30", "-movflags", "+faststart", out + ".mp4"],
                   check=True)


def pil_job(png):
    from PIL import Image
    for side, q in ((256, 80), (1024, 82)):
        im = Image.open(BytesIO(png))
        im.thumbnail((side, side), Image.Resampling.BOX)
        im.save(BytesIO(), "WEBP", quality=q)


def log_span(server, first_msg, last_msg, gids):
    """Seconds from the first first_msg to the last last_msg of gids."""
    t0, t1 = None, None
    for line in server.read_log().splitlines():
        try:
            j = json.loads(line)
        except ValueError:
            continue
        if j.get("generation_id") not in gids:
            continue
        ts = time.mktime(time.strptime(j["ts"][:19], "%Y-%m-%dT%H:%M:%S")) + \
            float("0." + j["ts"][20:23])
        if j.get("msg") == first_msg:
            t0 = ts if t0 is None else min(t0, ts)
        if j.get("msg") == last_msg:
            t1 = ts if t1 is None else max(t1, ts)
    return (t1 - t0) if t0 is not None and t1 is not None else float("nan")


def server_previews(bin_, fake, model, name, n):
    env = dict(fake.env(), LENSROOM_PREVIEW_WORKERS="2",
               LENSROOM_USER_RATE_PER_MIN="0", LENSROOM_USER_MAX_IN_FLIGHT="0",
               LENSROOM_PREVIEW_QUEUE="100000", LENSROOM_LOG_LEVEL="info")
    s = Server(env).start()
    try:
        u = new_user()
        s.grant(u, 10 ** 7)
        tok = s.token(u)
        with ThreadPoolExecutor(8) as ex:
            rs = list(ex.map(lambda i: s.infer(tok, model=model, prompt=f"b{i} [file_{name}]",
                                               headers={"Prefer": "respond-async"}), range(n)))
        bad = [r for r in rs if r.status not in (200, 202)]
        assert not bad, bad[0].body
        gids = {r.json["generationId"] for r in rs}
        db = os.path.join(s.data_dir, "lensroom.db")

        def done():
            with sqlite3.connect(db, timeout=30) as c:
                return c.execute("SELECT count(*) FROM generations WHERE preview_status IN "
                                 "('ready', 'failed')").fetchone()[0] >= n
        assert wait_for(done, 3600, 0.5), "previews did not finish"
        with sqlite3.connect(db) as c:
            failed = c.execute("SELECT count(*) FROM generations WHERE preview_status = "
                               "'failed'").fetchone()[0]
        span = log_span(s, "preview started", "preview ready", gids)
        return n / span, failed
    finally:
        s.cleanup()


def infer_rate(bin_, n, clients, previews):
    s = Server({"LENSROOM_PREVIEWS": "true" if previews else "false",
                "LENSROOM_PREVIEW_QUEUE": "100000", "LENSROOM_USER_RATE_PER_MIN": "0",
                "LENSROOM_USER_MAX_IN_FLIGHT": "0"}).start()
    try:
        users = [new_user() for _ in range(clients)]
        for u in users:
            s.grant(u, 10 ** 6)
        toks = [s.token(u) for u in users]
        lat = []
        lock = threading.Lock()
        per = n // clients

        def client(i):
            conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
            body = json.dumps({"modelId": "seedream_image", "inputs": {"prompt": f"c{i}"}})
            mine = []
            for _ in range(per):
                t = time.perf_counter()
                conn.request("POST", "/api/infer", body=body,
                             headers={"Content-Type": "application/json",
                                      "Cookie": f"lr_session={toks[i]}"})
                r = conn.getresponse()
                r.read()
                assert r.status == 200, r.status
                mine.append(time.perf_counter() - t)
            conn.close()
            with lock:
                lat.extend(mine)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as ex:
            list(ex.map(client, range(clients)))
        wall = time.perf_counter() - t0
        lat.sort()
        made = 0
        if previews:
            with s.db() as c:
                made = c.execute("SELECT count(*) FROM generations WHERE preview_status = "
                                 "'ready'").fetchone()[0]
        return len(lat) / wall, lat[int(len(lat) * 0.99)] * 1000, made
    finally:
        s.cleanup()


def main():
    a = parse()
    harness.BIN = os.path.abspath(a.bin)  # the harness starts this binary
    if not shutil.which("ffmpeg"):
        sys.exit("bench/previews.py: needs ffmpeg (scripts/deps.sh test)")
    tmp = tempfile.mkdtemp(prefix="lensroom-bench-previews-")
    try:
        clip_path = os.path.join(tmp, "clip.mp4")
        clip, png = make_clip(clip_path), make_png()
        fake = FakeProviders(mp4=clip)
        fake.files.update({"clip": clip, "png": png})
        print(f"clip: 8 s 1280x720, {len(clip)} bytes; image: 1024x1024 PNG, {len(png)} bytes")

        rate, failed = server_previews(a.bin, fake, "veo3_video", "clip", a.clips)
        t = time.perf_counter()
        with ThreadPoolExecutor(2) as ex:
            list(ex.map(ffmpeg_job, [(clip_path, os.path.join(tmp, f"o{i}"))
                                     for i in range(a.clips)]))
        base = a.clips / (time.perf_counter() - t)
        print(f"previews/s (8 s 720p clips, 2 threads): server {rate:.2f} (failed {failed}), "
              f"ffmpeg CLI baseline {base:.2f}")

        rate, failed = server_previews(a.bin, fake, "seedream_image", "png", a.images)
        t = time.perf_counter()
        with ProcessPoolExecutor(2) as ex:
            list(ex.map(pil_job, [png] * a.images))
        base = a.images / (time.perf_counter() - t)
        print(f"thumbnails/s (1024x1024 PNG -> 256 + 1024 WebP, 2 threads): server {rate:.1f} "
              f"(failed {failed}), PIL baseline {base:.1f}")
        fake.close()

        off = infer_rate(a.bin, a.infers, a.clients, False)
        on = infer_rate(a.bin, a.infers, a.clients, True)
        print(f"infer/s (mock image, {a.clients} clients): previews off {off[0]:.0f} "
              f"(p99 {off[1]:.1f} ms), on {on[0]:.0f} (p99 {on[1]:.1f} ms, "
              f"{on[2]} previews ready at the end)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
