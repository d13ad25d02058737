// The web UI in headless Chromium (Debian's), driven by playwright-core:
// the page lists the instances, and a check failing through the API shows
// up on the page without a reload. Usage: node ui_check.mjs BASE_URL SCREENSHOT
import { chromium } from "playwright-core";

const [base, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const page = await browser.newPage({ viewport: { width: 420, height: 900 } }); // a narrow screen
  await page.goto(base + "/ui/");
  await page.waitForSelector('#instances tr[data-id="web-1"] .passing', { timeout: 10000 });
  await page.waitForSelector('#instances tr[data-id="web-2"] .passing', { timeout: 10000 });
  if (await page.locator('#failing tr[data-check]').count() !== 0)
    throw new Error("a failing check is listed before any failed");
  // the filter is the first thing the keyboard reaches
  await page.keyboard.type("nomatch");
  await page.waitForSelector('#instances tr:not([data-id])', { timeout: 5000 });
  await page.keyboard.press("Control+A");
  await page.keyboard.press("Backspace");
  await page.waitForSelector('#instances tr[data-id="web-1"]', { timeout: 5000 });

  const r = await fetch(base + "/v1/agent/check/fail/service:web-2?note=disk%20full", { method: "PUT" });
  if (!r.ok) throw new Error("failing the check: " + r.status);
  // no reload: the blocking query wakes the page
  await page.waitForSelector('#instances tr[data-id="web-2"] .critical', { timeout: 10000 });
  await page.waitForSelector('#failing tr[data-check="service:web-2"]', { timeout: 10000 });
  const output = await page.textContent('#failing tr[data-check="service:web-2"] pre');
  if (!output.includes("disk full")) throw new Error("output not shown: " + output);
  await page.screenshot({ path: shot, fullPage: true });
  console.log("ui ok: instances listed, failure shown live, screenshot " + shot);
} finally {
  await browser.close();
}
