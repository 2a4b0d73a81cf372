"""The run path on a bare machine: `make build` with LENSROOM_TESTS=OFF must
configure, build and serve when only the build packages exist.

pkg-config is pointed at a folder holding only the .pc files of the
modules CMakeLists.txt asks for (and what they require), so cmocka and
every other test package are invisible, as on a machine where only
`scripts/deps.sh build` ran. The configure is traced: no cmocka, no
python3, no enable_testing, nothing under tests/ may be evaluated. A
control configure with LENSROOM_TESTS=ON in the same environment must fail
on cmocka, which proves the packages really were hidden."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "../.."))


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def build_modules():
    m = re.search(r"pkg_check_modules\(DEPS REQUIRED IMPORTED_TARGET\s+([^)]*)\)",
                  read("CMakeLists.txt"))
    return m.group(1).split()


def pc_closure(modules):
    """The .pc files of modules and of everything they require."""
    seen, todo, files = set(), list(modules), []
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        pcdir = subprocess.run(["pkg-config", "--variable=pcfiledir", mod], check=True,
                               capture_output=True, text=True).stdout.strip()
        files.append(os.path.join(pcdir, mod + ".pc"))
        req = subprocess.run(["pkg-config", "--print-requires", "--print-requires-private", mod],
                             check=True, capture_output=True, text=True).stdout
        todo += [line.split()[0] for line in req.splitlines() if line.strip()]
    return files


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunBuild(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="lensroom-bare-")
        pcdir = os.path.join(cls.tmp, "pkgconfig")
        os.mkdir(pcdir)
        cls.pc_files = pc_closure(build_modules())
        for f in cls.pc_files:
            os.symlink(f, os.path.join(pcdir, os.path.basename(f)))
        cls.env = {k: v for k, v in os.environ.items()
                   if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "CMAKE_BUILD_PARALLEL_LEVEL")}
        cls.env.update(PKG_CONFIG_LIBDIR=pcdir, PKG_CONFIG_PATH="")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_test_packages_are_hidden(self):
        r = subprocess.run(["pkg-config", "--exists", "cmocka"], env=self.env)
        self.assertNotEqual(r.returncode, 0, "cmocka still visible: the check would prove nothing")
        control = os.path.join(self.tmp, "control")
        r = subprocess.run(["cmake", "-S", ROOT, "-B", control, "-DLENSROOM_TESTS=ON"],
                           env=self.env, capture_output=True, text=True, timeout=300)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("cmocka", r.stdout + r.stderr)

    def test_deps_build_set_installs_every_module_the_build_needs(self):
        m = re.search(r"^build=\(([^)]*)\)", read("scripts/deps.sh"), re.M)
        listed = set(m.group(1).split())
        for mod in build_modules():
            pcdir = subprocess.run(["pkg-config", "--variable=pcfiledir", mod], check=True,
                                   capture_output=True, text=True).stdout.strip()
            owner = subprocess.run(["dpkg", "-S", os.path.join(pcdir, mod + ".pc")], check=True,
                                   capture_output=True, text=True).stdout.split(":")[0]
            self.assertIn(owner, listed, f"{mod}.pc comes from {owner}, not in deps.sh build")
        self.assertLessEqual({"build-essential", "cmake", "pkg-config"}, listed)

    def test_make_build_configures_builds_and_serves_without_test_packages(self):
        build = os.path.join(self.tmp, "build")
        trace = os.path.join(self.tmp, "trace.json")
        r = subprocess.run(["make", "-s", "-C", ROOT, "build", f"BUILD={build}",
                            f"CMAKE_ARGS=--trace-format=json-v1 --trace-redirect={trace}"],
                           env=self.env, capture_output=True, text=True, timeout=900)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # Quiet: nothing from cmake or the compiler unless something fails.
        self.assertEqual((r.stdout + r.stderr).strip(), "")
        self.assert_no_test_package_looked_for(trace)
        self.assert_serves(os.path.join(build, "lensroom"))

    def assert_no_test_package_looked_for(self, trace):
        tests_dir = os.path.join(ROOT, "tests") + os.sep
        cmds = []
        with open(trace) as f:
            for line in f:
                t = json.loads(line)
                if "cmd" in t:
                    cmds.append(t)
        self.assertTrue(any(t["cmd"] == "pkg_check_modules" for t in cmds), "trace is empty")
        for t in cmds:
            where = f'{t["file"]}:{t["line"]} {t["cmd"]}({" ".join(t["args"])})'
            self.assertFalse(t["file"].startswith(tests_dir), where)
            self.assertNotIn(t["cmd"].lower(), ("enable_testing", "add_test"), where)
            self.assertNotIn("cmocka", " ".join(t["args"]).lower(), where)
            if t["cmd"].lower() == "find_program":
                self.assertNotIn("python", " ".join(t["args"]).lower(), where)

    def assert_serves(self, binary):
        data = os.path.join(self.tmp, "data")
        port = free_port()
        env = dict(self.env, PORT=str(port), LENSROOM_DATA_DIR=data)
        env.pop("DATABASE_URL", None)
        log = open(os.path.join(self.tmp, "serve.log"), "w+")
        p = subprocess.Popen([binary, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline, status = time.time() + 60, None
            while time.time() < deadline and p.poll() is None and status != 200:
                try:
                    status = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                                    timeout=5).status
                except OSError:
                    time.sleep(0.1)
            log.seek(0)
            self.assertEqual(status, 200, log.read())
        finally:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            code = p.wait(timeout=60)
            log.close()
        self.assertEqual(code, 0)


if __name__ == "__main__":
    unittest.main()
