#!/usr/bin/python3
"""The web UI end to end: a real registryd, Debian's Chromium, playwright-core
(installed from the npm registry into the build tree on first run)."""
import json
import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import Registryd  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.environ.get("REGISTRY_UI_NODE_DIR", os.path.join(HERE, "node"))
SHOT = os.environ.get("REGISTRY_UI_SCREENSHOT", os.path.join(NODE_DIR, "ui.png"))


def ensure_playwright():
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "playwright-core")):
        os.makedirs(NODE_DIR, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", NODE_DIR,
                        "playwright-core@1.65.1"], check=True, capture_output=True, timeout=300)


class UiTest(unittest.TestCase):
    def test_page_lists_instances_and_follows_changes(self):
        ensure_playwright()
        d = Registryd().start()
        try:
            for sid in ("web-1", "web-2"):
                status, _ = d.request("PUT", "/v1/agent/service/register", json.dumps(
                    {"Name": "web", "ID": sid, "Address": "10.0.0.1", "Port": 80,
                     "Tags": ["v1"], "Check": {"TTL": "60s"}}))
                self.assertEqual(status, 200)
                self.assertEqual(d.request("PUT", "/v1/agent/check/pass/service:" + sid)[0], 200)
            status, text, headers = d.request_full("GET", "/ui/")
            self.assertEqual(status, 200)
            self.assertTrue(headers["Content-Type"].startswith("text/html"))
            self.assertNotIn("http://", text.replace("http://www.w3.org", ""))  # no CDN
            if os.path.exists(SHOT):
                os.unlink(SHOT)
            # an ES module resolves imports from where it lives: run a copy
            # next to node_modules
            script = os.path.join(NODE_DIR, "ui_check.mjs")
            shutil.copyfile(os.path.join(HERE, "ui_check.mjs"), script)
            p = subprocess.run(["node", script, "http://" + d.addr, SHOT],
                               capture_output=True, text=True, timeout=120, cwd=NODE_DIR)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertTrue(os.path.getsize(SHOT) > 1000)
        finally:
            d.stop()


if __name__ == "__main__":
    unittest.main()
