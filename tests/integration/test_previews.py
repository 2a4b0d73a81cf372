"""Derived media: a succeeded generation gets, after its answer and settle,
a poster and a short faststart H.264 preview for each video and WebP
thumbnails for each image, stored beside the output and carried by the
generation's JSON, the list and the event stream (preview_ready). Hostile
files that pass the MIME sniff end as previewStatus=failed with a reason,
never touching the generation's money; a job cut by SIGKILL is made once
after the restart.

Files are checked with real decoders: PIL for the WebP posters and
thumbnails, ffprobe for the preview MP4, and headless Chromium (the
DevTools-pipe driver of test_admin_dashboard) for all three as a gallery
page would load them. The Veo-like clip (8 s, 1280x720,
with an audio track) is made with the ffmpeg CLI and served by the fake
Kie.ai, so it goes through the real download, sniff and store path.
"""
import json
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import unittest
import http.client
from io import BytesIO

from PIL import Image

from fake_providers import FakeProviders, png_bytes
from harness import Server, ServerTest, new_user, wait_for
from test_admin_dashboard import Chromium

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")

# In the page: each image fully decoded (decode() rejects what the browser
# cannot), then the preview as a muted <video> played to its end. Each await
# is on a browser event; an error rejects, which fails Runtime.evaluate.
BROWSER_LOAD = """(async (images, preview) => {
  const out = {images: {}};
  for (const [name, url] of Object.entries(images)) {
    const img = new Image();
    img.src = url;
    await img.decode();
    out.images[name] = [img.naturalWidth, img.naturalHeight];
  }
  const v = document.createElement('video');
  out.canPlayH264 = v.canPlayType('video/mp4; codecs="avc1.42E01E"');
  v.muted = true;
  v.preload = 'auto';
  const failed = () => new Error('video: ' + (v.error ? v.error.code + ' ' + v.error.message : '?'));
  await new Promise((ok, no) => {
    v.onloadeddata = ok;
    v.onerror = () => no(failed());
    v.src = preview;
  });
  Object.assign(out, {readyState: v.readyState, width: v.videoWidth,
                      height: v.videoHeight, duration: v.duration});
  await new Promise((ok, no) => {
    v.onended = ok;
    v.onerror = () => no(failed());
    v.play().catch(no);
  });
  const q = v.getVideoPlaybackQuality();
  out.frames = q.totalVideoFrames;
  out.corrupted = q.corruptedVideoFrames;
  return out;
})"""


def make_clip(path, seconds=8, size="1280x720", faststart=False):
    args = [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i",
            f"testsrc2=size={size}:rate=24:duration={seconds}", "-f", "lavfi", "-i",
            f"sine=frequency=440:duration={seconds}", "-c:v", "libx264", "-preset",
            "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"]
    if faststart:
        args += ["-movflags", "+faststart"]
    subprocess.run(args + [path], check=True, timeout=120)
    with open(path, "rb") as f:
        return f.read()


def top_boxes(data):
    """The MP4's top-level box types, in file order."""
    out, i = [], 0
    while i + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[i:i + 8])
        if size == 1:
            size = struct.unpack(">Q", data[i + 8:i + 16])[0]
        out.append(kind.decode("latin1"))
        if size < 8:
            break
        i += size
    return out


def ffprobe(data):
    with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
        f.write(data)
        f.flush()
        r = subprocess.run([FFPROBE, "-v", "error", "-print_format", "json", "-show_streams",
                            "-show_format", f.name], capture_output=True, text=True, timeout=60,
                           check=True)
    return json.loads(r.stdout)


def claim_frames(mp4, frames):
    """A faststart MP4 whose stts claims `frames` samples (a header lie)."""
    i = mp4.index(b"stts")
    b = bytearray(mp4)
    struct.pack_into(">I", b, i + 12, frames)  # first entry's sample_count
    return bytes(b)


def png_bomb():
    """A PNG whose header claims 20000x20000 RGBA with a tiny IDAT."""
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xffffffff)
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))


def webp_bad_chunk():
    """RIFF/WEBP framing around a VP8 chunk whose bitstream is noise."""
    payload = bytes((i * 131 + 7) & 0xff for i in range(2048))
    chunk = b"VP8 " + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


class PreviewCase:
    """Helpers shared by the test classes below (self.server, self.token)."""

    def get_generation(self, gid):
        r = self.server.get(f"/api/generations/{gid}",
                            {"Authorization": f"Bearer {self.token}"})
        self.assertEqual(r.status, 200, r.body)
        return r.json["generation"]

    def wait_preview(self, gid, timeout=180):
        done = wait_for(lambda: self.get_generation(gid)["previewStatus"] in ("ready", "failed"),
                        timeout, 0.2)
        g = self.get_generation(gid)
        self.assertTrue(done, g)
        return g

    def fetch(self, url):
        r = self.server.fetch_url(url)
        self.assertEqual(r.status, 200, url)
        return r.body

    def assert_in_chromium(self, images, sizes, preview, probe):
        """Headless Chromium decodes each image at its size in `sizes` (what
        PIL decoded) and plays the preview through at ffprobe's size."""
        self.assertTrue(shutil.which("chromium"), "chromium missing: scripts/deps.sh test installs it")
        b = Chromium(800, 600)
        self.addCleanup(b.close)
        # a page on the server's own origin, so every load is same-origin
        b.goto(f"http://localhost:{self.server.port}/healthz")
        b.wait("document.readyState === 'complete' && location.pathname === '/healthz'")
        got = b.eval(f"{BROWSER_LOAD}({json.dumps(images)}, {json.dumps(preview)})")
        self.assertEqual({k: tuple(wh) for k, wh in got["images"].items()}, sizes)
        # Debian's chromium plays H.264 (canPlayType says "probably"); a build
        # without the proprietary codecs fails here rather than skip the video
        self.assertEqual(got["canPlayH264"], "probably", got)
        self.assertGreaterEqual(got["readyState"], 2, got)  # HAVE_CURRENT_DATA
        self.assertEqual((got["width"], got["height"]), (probe["width"], probe["height"]))
        self.assertLessEqual(max(got["width"], got["height"]), 480)
        self.assertGreater(got["duration"], 0)
        self.assertLessEqual(got["duration"], 3.1)
        self.assertGreater(got["frames"], 0, got)
        self.assertEqual(got["corrupted"], 0, got)
        return got

    def assert_preview_mp4(self, data, max_side=480):
        boxes = top_boxes(data)
        self.assertIn("moov", boxes)
        self.assertIn("mdat", boxes)
        self.assertLess(boxes.index("moov"), boxes.index("mdat"), boxes)  # faststart
        info = ffprobe(data)
        streams = info["streams"]
        self.assertEqual([s["codec_type"] for s in streams], ["video"])  # no audio
        v = streams[0]
        self.assertEqual(v["codec_name"], "h264")
        self.assertLessEqual(max(v["width"], v["height"]), max_side)
        self.assertEqual(v["width"] % 2, 0)
        self.assertEqual(v["height"] % 2, 0)
        self.assertLessEqual(float(info["format"]["duration"]), 3.1)
        return v


@unittest.skipUnless(FFMPEG and FFPROBE, "needs the ffmpeg package (scripts/deps.sh test)")
class MockPreviewsTest(PreviewCase, ServerTest):
    def setUp(self):
        super().setUp()
        self.user = new_user()
        self.server.grant(self.user, 1000)
        self.token = self.server.token(self.user)

    def test_mock_video_gets_a_poster_and_a_faststart_preview(self):
        r = self.server.infer(self.token, model="veo3_video", prompt="a storm over the sea")
        self.assertEqual(r.status, 200, r.body)
        gid = r.json["generationId"]
        video = self.fetch(r.json["url"])
        src = ffprobe(video)["streams"][0]
        g = self.wait_preview(gid)
        self.assertEqual(g["previewStatus"], "ready", g)
        self.assertIsNone(g["previewError"])
        self.assertEqual(g["status"], "success")
        poster = Image.open(BytesIO(self.fetch(g["posterUrl"])))
        self.assertEqual(poster.format, "WEBP")
        poster.load()
        self.assertEqual(poster.size, (src["width"], src["height"]))
        self.assertTrue(g["posterUrl"].endswith(f"/video/{gid}.poster.webp"), g["posterUrl"])
        self.assertTrue(g["previewUrl"].endswith(f"/video/{gid}.preview.mp4"), g["previewUrl"])
        self.assert_preview_mp4(self.fetch(g["previewUrl"]))
        # the list carries the same fields
        lst = self.server.get("/api/generations",
                              {"Authorization": f"Bearer {self.token}"}).json
        row = [x for x in lst["generations"] if x["id"] == gid][0]
        self.assertEqual(row["posterUrl"], g["posterUrl"])
        self.assertEqual(row["previewStatus"], "ready")
        # the database row: paths are the object keys
        with self.server.db() as c:
            poster_path, preview_path = c.execute(
                "SELECT poster_path, preview_path FROM generations WHERE id = ?",
                (gid,)).fetchone()
        self.assertEqual(poster_path, f"{self.user}/video/{gid}.poster.webp")
        self.assertEqual(preview_path, f"{self.user}/video/{gid}.preview.mp4")

    def test_image_gets_webp_thumbnails_and_a_failed_preview_never_refunds(self):
        r = self.server.infer(self.token, model="seedream_image", prompt="a lighthouse")
        self.assertEqual(r.status, 200, r.body)
        gid = r.json["generationId"]
        src = Image.open(BytesIO(self.fetch(r.json["url"])))
        g = self.wait_preview(gid)
        self.assertEqual(g["previewStatus"], "ready", g)
        self.assertIsNone(g["posterUrl"])
        small = Image.open(BytesIO(self.fetch(g["thumbnails"]["small"])))
        medium = Image.open(BytesIO(self.fetch(g["thumbnails"]["medium"])))
        self.assertEqual(small.format, "WEBP")
        small.load()
        medium.load()
        self.assertEqual(max(small.size), min(256, max(src.size)))
        self.assertEqual(max(medium.size), min(1024, max(src.size)))
        # aspect kept within a pixel
        self.assertAlmostEqual(small.size[0] / small.size[1], src.size[0] / src.size[1], delta=0.02)
        self.assertTrue(g["thumbnails"]["small"].endswith(f"/photo/{gid}.thumb.webp"))
        self.assertTrue(g["thumbnails"]["medium"].endswith(f"/photo/{gid}.medium.webp"))

    def test_chromium_decodes_the_poster_thumbnails_and_plays_the_preview(self):
        v = self.server.infer(self.token, model="veo3_video", prompt="a lantern at dusk")
        i = self.server.infer(self.token, model="seedream_image", prompt="a paper boat")
        self.assertEqual((v.status, i.status), (200, 200), (v.body, i.body))
        src = ffprobe(self.fetch(v.json["url"]))["streams"][0]
        photo = Image.open(BytesIO(self.fetch(i.json["url"]))).size
        video = self.wait_preview(v.json["generationId"])
        image = self.wait_preview(i.json["generationId"])
        self.assertEqual((video["previewStatus"], image["previewStatus"]), ("ready", "ready"),
                         (video, image))
        urls = {"poster": video["posterUrl"], "small": image["thumbnails"]["small"],
                "medium": image["thumbnails"]["medium"]}
        # the sizes PIL decodes, which the tests above hold to the source's
        pil = {k: Image.open(BytesIO(self.fetch(u))).size for k, u in urls.items()}
        self.assertEqual(pil["poster"], (src["width"], src["height"]))
        self.assertEqual(max(pil["small"]), min(256, max(photo)))
        self.assertEqual(max(pil["medium"]), min(1024, max(photo)))
        probe = self.assert_preview_mp4(self.fetch(video["previewUrl"]))
        self.assert_in_chromium(urls, pil, video["previewUrl"], probe)

    def test_sse_announces_preview_ready_after_the_final_event(self):
        r = self.server.infer(self.token, model="veo3_video", prompt="a quiet harbour",
                              headers={"Prefer": "respond-async"})
        self.assertIn(r.status, (200, 202), r.body)
        gid = r.json["generationId"]
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=120)
        conn.request("GET", f"/api/generations/{gid}/events",
                     headers={"Authorization": f"Bearer {self.token}"})
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        text = resp.read().decode()  # the stream ends after the preview event
        conn.close()
        events = [b for b in text.split("\n\n") if b.startswith("id:")]
        names = [dict(line.split(": ", 1) for line in e.split("\n"))["event"] for e in events]
        self.assertEqual(names[-2:], ["success", "preview_ready"], text)
        last = dict(line.split(": ", 1) for line in events[-1].split("\n"))
        self.assertEqual(last["id"], "6")
        data = json.loads(last["data"])
        self.assertEqual(data["generationId"], gid)
        self.assertTrue(data["posterUrl"].endswith(".poster.webp"))
        self.assertTrue(data["previewUrl"].endswith(".preview.mp4"))
        # a client that saw the preview event reconnects to nothing new
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        conn.request("GET", f"/api/generations/{gid}/events",
                     headers={"Authorization": f"Bearer {self.token}", "Last-Event-ID": "6"})
        again = conn.getresponse()
        self.assertEqual(again.status, 204)  # EventSource stops reconnecting
        conn.close()

    def test_deleting_the_generation_removes_its_previews(self):
        r = self.server.infer(self.token, model="veo3_video", prompt="a passing train")
        gid = r.json["generationId"]
        g = self.wait_preview(gid)
        self.assertEqual(g["previewStatus"], "ready", g)
        d = self.server.request("DELETE", f"/api/generations/{gid}",
                                headers={"Authorization": f"Bearer {self.token}"})
        self.assertEqual(d.status, 200, d.body)
        gone = wait_for(lambda: self.server.fetch_url(g["posterUrl"]).status == 404 and
                        self.server.fetch_url(g["previewUrl"]).status == 404, 30, 0.2)
        self.assertTrue(gone, "the poster and preview outlived their generation")


def render_path(url, port, query):
    """The render URL of a public object URL the server returned."""
    prefix = f"http://localhost:{port}/storage/v1/object/public/"
    assert url.startswith(prefix), url
    return "/storage/v1/render/image/public/" + url[len(prefix):] + query


class RenderTest(PreviewCase, ServerTest):
    """GET /storage/v1/render/image/public/{bucket}/{key} on local storage."""

    def setUp(self):
        super().setUp()
        self.user = new_user()
        self.server.grant(self.user, 1000)
        self.token = self.server.token(self.user)
        r = self.server.infer(self.token, model="seedream_image", prompt="a red barn")
        self.assertEqual(r.status, 200, r.body)
        self.url = r.json["url"]
        self.src = Image.open(BytesIO(self.fetch(self.url))).size

    def render(self, query, accept="image/webp,image/*"):
        return self.server.get(render_path(self.url, self.server.port, query),
                               {"Accept": accept} if accept else None)

    def test_each_fit_gives_the_asked_box_as_webp_then_from_the_cache(self):
        for resize, want in (("cover", (100, 50)), ("fill", (100, 50))):
            r = self.render(f"?width=100&height=50&resize={resize}")
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.header("Content-Type"), "image/webp")
            self.assertEqual(r.header("Vary"), "Accept")
            im = Image.open(BytesIO(r.body))
            self.assertEqual((im.format, im.size), ("WEBP", want), resize)
        r = self.render("?width=100&height=50&resize=contain")
        im = Image.open(BytesIO(r.body))
        k = min(100 / self.src[0], 50 / self.src[1])
        self.assertEqual(im.size, (round(self.src[0] * k), round(self.src[1] * k)))
        cache = os.path.join(self.server.data_dir, "render-cache")
        made = sorted(os.listdir(cache))
        again = self.render("?width=100&height=50&resize=cover")
        self.assertEqual(again.status, 200)
        self.assertEqual(sorted(os.listdir(cache)), made)  # served, not made again
        self.assertEqual(self.render("?width=100&height=50&resize=cover",
                                     accept=None).header("Content-Type"), "image/png")
        r = self.server.get(render_path(self.url, self.server.port, "?width=100&height=50"),
                            {"Accept": "image/webp", "If-None-Match": again.header("ETag")})
        self.assertEqual(r.status, 304)

    def test_limits_and_unknown_objects_are_refused_as_json(self):
        for query in ("?width=99999", "?width=0", "?quality=5", "?resize=zoom", "?width=abc",
                      "?format=avif"):
            r = self.render(query)
            self.assertEqual(r.status, 422, query)
            self.assertEqual(r.json["code"], "invalid_parameter")
            self.assertFalse(r.json["success"])
        base = self.url.split("/storage/v1/object/public/")[1]
        bucket, key = base.split("/", 1)
        for path in (f"/storage/v1/render/image/public/{bucket}/{key}.nope",
                     f"/storage/v1/render/image/public/other/{key}",
                     f"/storage/v1/render/image/public/{bucket}/../{key}"):
            r = self.server.get(path + "?width=10")
            self.assertEqual(r.status, 404, path)
            self.assertEqual(r.json["code"], "not_found")
        v = self.server.infer(self.token, model="veo3_video", prompt="a video is not an image")
        r = self.server.get(render_path(v.json["url"], self.server.port, "?width=10"))
        self.assertEqual(r.status, 404)


@unittest.skipUnless(FFMPEG and FFPROBE, "needs the ffmpeg package (scripts/deps.sh test)")
class ProviderFilesTest(PreviewCase, unittest.TestCase):
    """Files a provider returns, through the real download path."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="lensroom-previews-")
        cls.clip = make_clip(os.path.join(cls.tmp.name, "clip.mp4"))
        cls.fast = make_clip(os.path.join(cls.tmp.name, "fast.mp4"), faststart=True)
        cls.fake = FakeProviders(mp4=cls.clip)
        cls.fake.files.update({
            "clip": cls.clip,
            "truncated": cls.clip[: len(cls.clip) * 2 // 5],
            "bomb": png_bomb(),
            "billion": claim_frames(cls.fast, 1_000_000_000),
            "badwebp": webp_bad_chunk(),
            "png1024": png_bytes(1024),
        })

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()
        cls.tmp.cleanup()

    METRICS = "previews-metrics-token-0123456789abcdef0123456789"

    def setUp(self):
        self.server = Server(dict(self.fake.env(), LENSROOM_METRICS_TOKEN=self.METRICS)).start()
        self.addCleanup(self.server.cleanup)
        self.user = new_user()
        self.server.grant(self.user, 10000)
        self.token = self.server.token(self.user)

    def generate(self, model, name):
        r = self.server.infer(self.token, model=model, prompt=f"clip [file_{name}]")
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json["meta"]["provider"], "kie")
        return r.json["generationId"]

    def test_veo_like_8s_720p_clip(self):
        gid = self.generate("veo3_video", "clip")
        g = self.wait_preview(gid)
        self.assertEqual(g["previewStatus"], "ready", g)
        poster = Image.open(BytesIO(self.fetch(g["posterUrl"])))
        poster.load()
        self.assertEqual(poster.size, (1280, 720))
        self.assertEqual((g["previews"][0]["width"], g["previews"][0]["height"]), (1280, 720))
        v = self.assert_preview_mp4(self.fetch(g["previewUrl"]))
        self.assertEqual((v["width"], v["height"]), (480, 270))

    def test_chromium_loads_the_derived_files_of_a_720p_clip_and_a_1024px_png(self):
        """Unlike the mock's 192x108 clip and 256px image, these are scaled
        down: poster 1280x720, preview 480x270 cut to 3 s, thumbnails 256
        and 1024 px."""
        video = self.wait_preview(self.generate("veo3_video", "clip"))
        image = self.wait_preview(self.generate("seedream_image", "png1024"))
        self.assertEqual((video["previewStatus"], image["previewStatus"]), ("ready", "ready"),
                         (video, image))
        urls = {"poster": video["posterUrl"], "small": image["thumbnails"]["small"],
                "medium": image["thumbnails"]["medium"]}
        pil = {k: Image.open(BytesIO(self.fetch(u))).size for k, u in urls.items()}
        self.assertEqual(pil, {"poster": (1280, 720), "small": (256, 256),
                               "medium": (1024, 1024)})
        probe = self.assert_preview_mp4(self.fetch(video["previewUrl"]))
        self.assertEqual((probe["width"], probe["height"]), (480, 270))
        got = self.assert_in_chromium(urls, pil, video["previewUrl"], probe)
        self.assertGreater(got["duration"], 2.5, got)  # the first 3 s of 8, not less

    def test_hostile_files_fail_with_a_reason_and_keep_the_money_and_the_server(self):
        before = self.server.balance(self.user)
        cases = [("veo3_video", "truncated"), ("seedream_image", "bomb"),
                 ("veo3_video", "billion"), ("seedream_image", "badwebp")]
        gids = {name: self.generate(model, name) for model, name in cases}
        costs = 0
        for name, gid in gids.items():
            g = self.wait_preview(gid)
            self.assertEqual(g["status"], "success", (name, g))
            self.assertEqual(g["previewStatus"], "failed", (name, g))
            self.assertTrue(g["previewError"], (name, g))
            self.assertIsNone(g["posterUrl"])
            costs += g["creditsUsed"]
            self.assertGreater(g["creditsUsed"], 0)
        errors = {n: self.get_generation(gid)["previewError"] for n, gid in gids.items()}
        self.assertIn("20000x20000", errors["bomb"])
        self.assertIn("1000000000 frames", errors["billion"])
        # a failed preview never refunds: charged once, nothing given back
        self.assertEqual(self.server.balance(self.user), before - costs)
        self.server.assert_ledger_consistent(self, self.user)
        # still serving, and the bomb's 1.6 GB was never allocated
        self.assertEqual(self.server.get("/healthz").status, 200)
        hwm = self.server.proc_status("VmHWM")["VmHWM"]
        self.assertLess(hwm, 700 * 1024, f"peak RSS {hwm} kB")
        ok = self.generate("seedream_image", "png1024")
        self.assertEqual(self.wait_preview(ok)["previewStatus"], "ready")
        scrape = self.server.get("/metrics", {"Authorization": f"Bearer {self.METRICS}"})
        text = scrape.body.decode()
        self.assertIn('lensroom_preview_jobs_total{status="failed"} 4', text)
        self.assertIn('lensroom_preview_jobs_total{status="ready"} 1', text)
        self.assertIn("lensroom_preview_job_duration_seconds_count 5", text)
        # the render URL refuses the bomb from its header too
        bomb = self.get_generation(gids["bomb"])
        r = self.server.get(render_path(bomb["url"], self.server.port, "?width=64"),
                            {"Accept": "image/webp"})
        self.assertEqual(r.status, 415, r.body)
        self.assertEqual(r.json["code"], "unsupported_input_image")
        self.assertIn("20000x20000", r.json["error"])
        self.assertEqual(self.server.get("/healthz").status, 200)


@unittest.skipUnless(FFMPEG and FFPROBE, "needs the ffmpeg package (scripts/deps.sh test)")
class RestartTest(PreviewCase, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="lensroom-previews-")
        cls.clip = make_clip(os.path.join(cls.tmp.name, "clip.mp4"), seconds=8, size="1920x1080")
        cls.fake = FakeProviders(mp4=cls.clip)
        cls.fake.files["clip"] = cls.clip

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()
        cls.tmp.cleanup()

    def log_lines(self, msg, gid):
        out = []
        for line in self.server.read_log().splitlines():
            try:
                j = json.loads(line)
            except ValueError:
                continue
            if j.get("msg") == msg and j.get("generation_id") == gid:
                out.append(j)
        return out

    def test_deleting_during_a_preview_job_leaves_no_derived_file(self):
        self.server = Server(self.fake.env())
        self.addCleanup(self.server.cleanup)
        self.server.start()
        self.user = new_user()
        self.server.grant(self.user, 10000)
        self.token = self.server.token(self.user)
        r = self.server.infer(self.token, model="veo3_video", prompt="clip [file_clip]")
        self.assertEqual(r.status, 200, r.body)
        gid = r.json["generationId"]
        self.assertTrue(wait_for(lambda: self.log_lines("preview started", gid), 120, 0.01))
        d = self.server.request("DELETE", f"/api/generations/{gid}",
                                headers={"Authorization": f"Bearer {self.token}"})
        self.assertEqual(d.status, 200, d.body)
        # the job ends either way: recorded before the deletion (which then
        # removes its files) or refused after it (and removes them itself)
        ended = lambda: (self.log_lines("preview ready", gid) +
                         self.log_lines("preview failed", gid))
        self.assertTrue(wait_for(ended, 120, 0.05))
        folder = os.path.join(self.server.data_dir, "storage", "generations", self.user, "video")
        self.assertTrue(wait_for(lambda: not [f for f in os.listdir(folder)
                                              if f.startswith(gid)], 30, 0.1),
                        os.listdir(folder))

    def test_sigkill_during_a_preview_job_then_restart_makes_it_once(self):
        self.server = Server(self.fake.env())
        self.addCleanup(self.server.cleanup)
        self.server.start()
        self.user = new_user()
        self.server.grant(self.user, 10000)
        self.token = self.server.token(self.user)
        gid = None
        for _ in range(5):  # a job this short may end before the kill lands
            r = self.server.infer(self.token, model="veo3_video", prompt="clip [file_clip]")
            self.assertEqual(r.status, 200, r.body)
            cand = r.json["generationId"]
            self.assertTrue(wait_for(lambda: self.log_lines("preview started", cand), 120, 0.01))
            self.server.kill()
            with self.server.db() as c:
                status = c.execute("SELECT preview_status FROM generations WHERE id = ?",
                                   (cand,)).fetchone()[0]
            if status == "processing":
                gid = cand
                break
            self.server.start()
        self.assertIsNotNone(gid, "every job ended before SIGKILL")
        log_before = len(self.server.read_log())
        self.server.start()
        g = self.wait_preview(gid)
        self.assertEqual(g["previewStatus"], "ready", g)
        after = self.server.read_log()[log_before:]
        started = [ln for ln in after.splitlines() if '"preview started"' in ln and gid in ln]
        ready = [ln for ln in after.splitlines() if '"preview ready"' in ln and gid in ln]
        self.assertEqual(len(started), 1, after)
        self.assertEqual(len(ready), 1, after)
        v = self.assert_preview_mp4(self.fetch(g["previewUrl"]))
        self.assertEqual(v["width"], 480)
        # the killed job's temporary file was swept at the restart
        tmp = os.path.join(self.server.data_dir, "tmp")
        self.assertEqual([f for f in os.listdir(tmp) if f.startswith(".lr-preview-")], [])


if __name__ == "__main__":
    unittest.main()


class RemoteStorageTest(PreviewCase, unittest.TestCase):
    """Previews made through the S3 and Supabase Storage backends; the
    render URL is Supabase's own there, and not served beside S3."""

    def start(self, env):
        self.server = Server(env)
        self.addCleanup(self.server.cleanup)
        self.server.start()
        self.user = new_user()
        self.server.grant(self.user, 1000)
        self.token = self.server.token(self.user)

    def test_s3_video_preview_and_no_render_url(self):
        from s3env import S3
        s3 = S3()
        self.addCleanup(s3.close)
        self.start(s3.env())
        r = self.server.infer(self.token, model="veo3_video", prompt="a bay at dawn")
        self.assertEqual(r.status, 200, r.body)
        gid = r.json["generationId"]
        g = self.wait_preview(gid)
        self.assertEqual(g["previewStatus"], "ready", g)
        self.assertEqual(g["posterUrl"], f"{s3.public_url}/{self.user}/video/{gid}.poster.webp")
        obj = s3.client().get_object(Bucket=s3.bucket, Key=f"{self.user}/video/{gid}.preview.mp4")
        self.assertEqual(obj["ContentType"], "video/mp4")
        if FFPROBE:
            self.assert_preview_mp4(obj["Body"].read())
        poster = s3.client().get_object(Bucket=s3.bucket, Key=f"{self.user}/video/{gid}.poster.webp")
        Image.open(BytesIO(poster["Body"].read())).load()
        r = self.server.get(f"/storage/v1/render/image/public/{s3.bucket}/{self.user}/video/"
                            f"{gid}.poster.webp?width=10")
        self.assertEqual(r.status, 404)
        self.assertIn("local storage", r.json["error"])

    def test_supabase_thumbnails_and_the_render_url_goes_to_supabase(self):
        from fake_supabase_storage import FakeStorage
        key = "sb_secret_test-service-role-key-0123456789"
        fake = FakeStorage(key).start()
        self.addCleanup(fake.stop)
        self.start({"LENSROOM_STORAGE": "supabase", "SUPABASE_URL": fake.url,
                    "SUPABASE_SERVICE_ROLE_KEY": key})
        r = self.server.infer(self.token, model="seedream_image", prompt="a snowy field")
        self.assertEqual(r.status, 200, r.body)
        gid = r.json["generationId"]
        g = self.wait_preview(gid)
        self.assertEqual(g["previewStatus"], "ready", g)
        ctype, data = fake.objects[("generations", f"{self.user}/photo/{gid}.thumb.webp")]
        self.assertEqual(ctype, "image/webp")
        self.assertEqual(max(Image.open(BytesIO(data)).size), 256)
        path = f"generations/{self.user}/photo/{gid}.png"
        r = self.server.get(f"/storage/v1/render/image/public/{path}?width=100&resize=contain")
        self.assertEqual(r.status, 302)
        self.assertEqual(r.header("Location"),
                         f"{fake.url}/storage/v1/render/image/public/{path}"
                         "?width=100&resize=contain")
