#!/usr/bin/python3
"""registryd's command line and YAML file, as a user meets them."""
import os
import subprocess
import unittest

from harness import REGISTRYD, Registryd, TempDir, free_port


def run(*args, timeout=20):
    p = subprocess.run([REGISTRYD] + list(args), capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


class ConfigTest(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()

    def tearDown(self):
        self.tmp.cleanup()

    def yaml(self, text):
        path = os.path.join(self.tmp.path, "registryd.yaml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_errors_name_file_line_column(self):
        cases = [
            ("dev: true\nbogus_key: 1\n", 2, 1, "unknown setting"),
            ("dev: true\nhttp_addr: nowhere\n", 2, 12, "HOST:PORT"),
            ("dev: true\nlog_level: [debug]\n", 2, 12, "list"),
            ("dev: true\nmax_body_size: lots\n", 2, 16, "size"),
            ("dev: true\nnode: \"open\n", 3, 1, ""),
            ("dev: maybe\n", 1, 6, "boolean"),
        ]
        for text, line, col, why in cases:
            with self.subTest(text=text):
                path = self.yaml(text)
                rc, out, err = run("--config", path)
                self.assertEqual(rc, 2, err)
                self.assertIn("%s:%d:%d: " % (path, line, col), err)
                self.assertIn(why, err)
                self.assertEqual(err.count("\n"), 1, "one line")

    def test_flag_errors(self):
        for args, why in ((["--dev", "--http-addr", "1.2.3.4"], "--http-addr"),
                          (["--dev", "--no-such-flag"], "--no-such-flag"),
                          (["--dev", "--log-level", "loud"], "--log-level"),
                          ([], "--data-dir")):
            rc, out, err = run(*args)
            self.assertEqual(rc, 2, (args, err))
            self.assertTrue(err.startswith("registryd: "), err)
            self.assertIn(why, err)

    def test_check_config_help_version(self):
        rc, out, err = run("--dev", "--check-config")
        self.assertEqual((rc, out.strip()), (0, "configuration OK"))
        rc, out, _ = run("--help")
        self.assertEqual(rc, 0)
        for flag in ("--dev", "--config", "--data-dir", "--http-addr", "--dns-addr", "--node",
                     "--log-level", "--version", "--help", "--raft-addr", "--max-body-size"):
            self.assertIn(flag, out)
        rc, out, _ = run("--version")
        self.assertEqual(rc, 0)
        self.assertRegex(out, r"^registryd \d+\.\d+\.\d+\n$")

    def test_file_settings_apply_and_flags_win(self):
        port = free_port()
        path = self.yaml("data_dir: %s\nhttp_addr: 127.0.0.1:%d\nnode: from-file\n"
                         "datacenter: filedc\n" % (os.path.join(self.tmp.path, "data"), port))
        d = Registryd(extra_args=["--config", path, "--node", "from-flag"], http_port=port)
        d.data_dir = None
        d.args = lambda: [REGISTRYD, "--config", path, "--node", "from-flag",
                          "--dns-addr", "127.0.0.1:%d" % free_port()]
        d.start()
        try:
            import json
            me = json.loads(d.request("GET", "/v1/agent/self")[1])
            self.assertEqual(me["Config"]["NodeName"], "from-flag")
            self.assertEqual(me["Config"]["Datacenter"], "filedc")
            self.assertTrue(os.path.isdir(os.path.join(self.tmp.path, "data")))
        finally:
            d.stop()

    def test_ready_line_and_clean_stop(self):
        d = Registryd().start()
        d.stop()  # asserts exit status 0
        # stop() removed the log; start again to read it before stopping
        d = Registryd().start()
        self.assertIn('msg="ready"', d.log())
        d.stop()


if __name__ == "__main__":
    unittest.main()
