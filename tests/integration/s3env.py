"""A real S3-protocol server for tests: s3rver (npm) on loopback, behind the
strict SigV4 checker (sigv4_proxy.py). The server under test talks to the
checker; reads of public URLs and the independent client go to s3rver."""
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

from harness import free_port

S3_DIR = os.path.join(os.path.dirname(__file__), "../node")
S3RVER = os.path.join(S3_DIR, "node_modules/.bin/s3rver")
ACCESS, SECRET, REGION = "S3RVER", "S3RVER-secret-for-tests", "us-east-1"


class S3:
    def __init__(self, bucket="generations"):
        self.bucket = bucket
        self.dir = tempfile.mkdtemp(prefix="lensroom-s3-")
        self.port, self.proxy_port = free_port(), free_port()
        self.log = open(os.path.join(self.dir, "s3.log"), "wb")
        self.hold_file = os.path.join(self.dir, "hold")
        self.s3rver = subprocess.Popen(
            [S3RVER, "-d", os.path.join(self.dir, "data"), "-a", "127.0.0.1", "-p",
             str(self.port), "--configure-bucket", bucket, "--silent"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.start_proxy()
        # Up once s3rver lists the configured bucket (it is created at start).
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/{bucket}", timeout=5)
                break
            except OSError:
                time.sleep(0.1)

    def start_proxy(self):
        self.proxy = subprocess.Popen(
            ["/usr/bin/python3", os.path.join(S3_DIR, "sigv4_proxy.py"), str(self.proxy_port),
             str(self.port), ACCESS, SECRET, REGION, self.hold_file], stdout=self.log,
            stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:  # until it accepts connections
            try:
                socket.create_connection(("127.0.0.1", self.proxy_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)

    def requests(self):
        """The lines "METHOD PATH STATUS" the signature checker logged so far."""
        with open(os.path.join(self.dir, "s3.log"), errors="replace") as f:
            return [l.rstrip("\n") for l in f if l[:4] in ("GET ", "PUT ", "POST", "HEAD", "DELE")]

    def hold_uploads(self, on):
        """While on, the checker holds every PUT before forwarding it."""
        if on:
            open(self.hold_file, "w").close()
        elif os.path.exists(self.hold_file):
            os.unlink(self.hold_file)

    def fail_second_parts(self, on):
        """While on, the checker answers 500 to part 2 of every multipart upload."""
        if on:
            open(self.hold_file + ".fail2", "w").close()
        elif os.path.exists(self.hold_file + ".fail2"):
            os.unlink(self.hold_file + ".fail2")

    def held(self):
        """The lines "HELD PUT PATH" logged so far."""
        with open(os.path.join(self.dir, "s3.log"), errors="replace") as f:
            return [l.rstrip("\n") for l in f if l.startswith("HELD ")]

    def stop_proxy(self):
        self.proxy.terminate()
        self.proxy.wait()

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def public_url(self):
        return f"http://127.0.0.1:{self.port}/{self.bucket}"

    def env(self, secret=SECRET, bucket=None):
        return {"S3_ENDPOINT": self.endpoint, "S3_BUCKET": bucket or self.bucket,
                "S3_REGION": REGION, "S3_ACCESS_KEY_ID": ACCESS,
                "S3_SECRET_ACCESS_KEY": secret, "S3_PUBLIC_URL": self.public_url}

    def client(self):
        """An independent S3 client (botocore) straight to s3rver."""
        import botocore.session
        from botocore.config import Config
        return botocore.session.get_session().create_client(
            "s3", endpoint_url=f"http://127.0.0.1:{self.port}", region_name=REGION,
            aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
            config=Config(s3={"addressing_style": "path"}))

    def close(self):
        for p in (self.proxy, self.s3rver):
            p.terminate()
            p.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
