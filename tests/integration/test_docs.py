#!/usr/bin/python3
"""The man pages say what the binaries do: every flag registryd and
registryctl accept is documented, and nothing documented is unknown to them."""
import os
import re
import subprocess
import unittest

from harness import REGISTRYCTL, REGISTRYD, ROOT

MAN = os.path.join(ROOT, "man")


def read(name):
    with open(os.path.join(MAN, name)) as f:
        return f.read().replace("\\-", "-")


def help_flags(binary):
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"^\s+(--[a-z][a-z-]*)", out, re.M)), out


class DocsTest(unittest.TestCase):
    def test_registryd_flags_and_keys(self):
        flags, _ = help_flags(REGISTRYD)
        self.assertIn("--http-addr", flags)
        page = read("registryd.8")
        documented = set(re.findall(r"(--[a-z][a-z-]*)", page))
        self.assertEqual(flags - documented, set(), "flags missing from registryd(8)")
        self.assertEqual(documented - flags, set(), "registryd(8) documents unknown flags")
        keys = {f[2:].replace("-", "_") for f in flags} - {"config", "check_config", "help",
                                                            "version"}
        yaml_page = read("registryd.yaml.5")
        documented_keys = set(re.findall(r"^\.B ([a-z_]+)", yaml_page, re.M))
        self.assertEqual(keys, documented_keys)

    def test_registryctl_verbs_and_options(self):
        flags, out = help_flags(REGISTRYCTL)
        verbs = set(re.findall(r"^  ([a-z]+) ", out, re.M))
        page = read("registryctl.1")
        for verb in verbs:
            self.assertRegex(page, r"\.B(I|R)? %s\b" % verb, "verb %s not in registryctl(1)" % verb)
        for flag in flags:
            self.assertIn(flag, page)
        documented_verbs = set(re.findall(r"^\.BI? ([a-z]+)\b", page, re.M)) & {
            "services", "instances", "checks", "register", "deregister", "check", "maint",
            "leader", "pick", "call", "watch", "snapshot", "raft", "members", "leave", "metrics"}
        self.assertEqual(documented_verbs - verbs, set())


if __name__ == "__main__":
    unittest.main()
