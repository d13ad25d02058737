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
            # checks made once everything is read: they named the setting
            # but not where it was given
            ("dev: true\nhttp_workers: 65\n", 2, 15, "more than 64"),
            ("dev: true\n\ntls_min_version: TLSv1_0\n", 3, 18, "TLSv1_2"),
            ("dev: true\nacl_default_policy: maybe\n", 2, 21, "allow nor deny"),
            ("dev: true\nacl_token_min_expiration_ttl: soon\n", 2, 31, "duration"),
            ("dev: true\nacl_token_min_expiration_ttl: 48h\n", 2, 31,
             "48h0m0s is more than acl_token_max_expiration_ttl (24h0m0s)"),
            ("dev: true\nacl_token_min_expiration_ttl: 2m\n"
             "acl_token_max_expiration_ttl: 1m\n", 2, 31, "more than"),
            ("dev: true\ncheck_deny_cidrs: 1.2.3.4/33\n", 2, 19, "CIDR"),
            ("dev: true\ntls_ca_file: /nonexistent\n", 2, 14, "No such file"),
        ]
        for text, line, col, why in cases:
            with self.subTest(text=text):
                path = self.yaml(text)
                rc, out, err = run("--config", path)
                self.assertEqual(rc, 2, err)
                self.assertIn("%s:%d:%d: " % (path, line, col), err)
                self.assertIn(why, err)
                self.assertEqual(err.count("\n"), 1, "one line")

    def test_check_config_agrees_with_start(self):
        """What --check-config accepts starts; what cannot start is refused up
        front, each with a message naming the real cause."""
        cases = [
            ("dev: true\nhttp_addr: localhost:8500\n", 2, 12, "numeric IP address"),
            ("dev: true\ndns_addr: example.org:53\n", 2, 11, "numeric IP address"),
            ("dev: true\ndns_ttl: 5000000000s\n", 2, 10, "2147483647s"),
            ("dev: true\ndns_negative_ttl: 100000y\n", 2, 19, ""),
            ("data_dir: /tmp/x\n? [a, b]\n: c\n", 2, 3, "plain word, found a list"),
            ("data_dir: /tmp/x\n? {a: b}\n: c\n", 2, 3, "plain word, found a mapping"),
            ("dev: true\njoin: [127.0.0.1:8501, nowhere]\n", 2, 24, "nowhere"),
        ]
        for text, line, col, why in cases:
            with self.subTest(text=text):
                path = self.yaml(text)
                rc, out, err = run("--config", path, "--check-config")
                self.assertEqual(rc, 2, out + err)
                self.assertIn("%s:%d:%d: " % (path, line, col), err)
                self.assertIn(why, err)
                self.assertNotIn("data_dir", err.split(": ", 1)[1] if "plain word" in why else "")
        rc, out, err = run("--config", self.yaml("dev: true\ndata_dir: /tmp/x\n"),
                           "--check-config")
        self.assertEqual(rc, 2, out)
        self.assertIn("exclude each other", err)
        rc, out, err = run("--dev", "--data-dir", "/tmp/x", "--check-config")
        self.assertEqual(rc, 2, out)

    def test_check_config_loads_the_tls_files(self):
        """--check-config (the unit's pre-start check) refuses what the start
        would: a key that does not match its certificate, a file that is not
        PEM; and accepts matching files."""
        import certs
        p = certs.make_certs(os.path.join(self.tmp.path, "tls"))
        good = ["--dev", "--tls-ca-file", p["ca"], "--tls-cert-file", p["server_cert"],
                "--tls-key-file", p["server_key"], "--check-config"]
        rc, out, err = run(*good)
        self.assertEqual((rc, out.strip()), (0, "configuration OK"), err)
        rc, out, err = run("--dev", "--tls-ca-file", p["ca"], "--tls-cert-file",
                           p["client_cert"], "--tls-key-file", p["server_key"], "--check-config")
        self.assertEqual(rc, 2, out)
        self.assertIn("tls_key_file", err)
        self.assertNotIn("configuration OK", out)
        rc, out, err = run("--dev", "--tls-ca-file", self.yaml("not a certificate\n"),
                           "--tls-cert-file", p["server_cert"], "--tls-key-file",
                           p["server_key"], "--check-config")
        self.assertEqual(rc, 2, out)
        self.assertIn("tls_ca_file", err)

    def test_cluster_key_file_is_checked(self):
        """A missing, empty or short cluster key is refused before anything
        starts, naming the setting; a good one passes."""
        missing = os.path.join(self.tmp.path, "no-such-key")
        empty = os.path.join(self.tmp.path, "empty-key")
        short = os.path.join(self.tmp.path, "short-key")
        good = os.path.join(self.tmp.path, "good-key")
        for path, text in ((empty, ""), (short, "x" * 31 + "\n"), (good, "k" * 64 + "\n")):
            with open(path, "w") as f:
                f.write(text)
        for path, why in ((missing, "No such file"), (empty, "empty"), (short, "32")):
            rc, out, err = run("--dev", "--cluster-key-file", path, "--check-config")
            self.assertEqual(rc, 2, out)
            self.assertIn("--cluster-key-file: ", err)  # the flag that gave it
            self.assertIn(why, err)
        rc, out, err = run("--dev", "--cluster-key-file", good, "--check-config")
        self.assertEqual((rc, out.strip()), (0, "configuration OK"), err)

    def test_join_as_a_yaml_list(self):
        path = self.yaml("data_dir: %s\njoin:\n  - 127.0.0.1:%d\n  - 127.0.0.1:%d\n"
                         % (os.path.join(self.tmp.path, "d"), free_port(), free_port()))
        rc, out, err = run("--config", path, "--check-config")
        self.assertEqual(rc, 0, err)
        self.assertIn("configuration OK", out)

    def test_flag_errors(self):
        for args, why in ((["--dev", "--http-addr", "1.2.3.4"], "--http-addr"),
                          (["--dev", "--no-such-flag"], "--no-such-flag"),
                          (["--dev", "--http-workers", "65"], "--http-workers: 65"),
                          (["--dev", "--join", "127.0.0.1:1"], "single server"),
                          # one request, then 429s with Retry-After: 86401
                          (["--dev", "--http-read-rate", "1e-300"], "1/60"),
                          (["--dev", "--bootstrap-expect", "3"], "single server"),
                          (["--dev", "--acl-default-policy", "x"], "--acl-default-policy: "),
                          (["--dev", "--acl-token-min-expiration-ttl", "x"],
                           "--acl-token-min-expiration-ttl: "),
                          (["--dev", "--acl-token-max-expiration-ttl", "30s"],
                           "--acl-token-max-expiration-ttl: 30s is less than "
                           "acl_token_min_expiration_ttl (1m0s)"),
                          (["--dev", "--log-level", "loud"], "--log-level"),
                          (["--dev", "--check-deregister-min", "soon"], "--check-deregister-min"),
                          (["--dev", "--dns-a-record-limit", "-1"], "--dns-a-record-limit"),
                          (["--dev", "--dns-a-record-limit", "many"], "--dns-a-record-limit"),
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
