// Drives the pasarela dashboard in headless Chromium (Debian's, not Playwright's download):
// opens /ui (logging in first when PASARELA_ADMIN_KEY is set), goes to the prompt, moves its
// `staging` label to version 1 through the form, answering the confirmation dialog (first
// "cancel", which must change nothing, then "OK"), and saves a screenshot of the result;
// then opens the diff of versions 1 and 2 and saves it beside (`…-diff.png`).
//
// usage: node dashboard.mjs BASE_URL SCREENSHOT.png [PROMPT_NAME]
// tests/dashboard/browser.rs runs it and checks the label in the registry afterwards.
import { chromium } from "playwright-core";

const [base, screenshot, prompt = "greeting"] = process.argv.slice(2);
if (!base || !screenshot) {
  console.error("usage: node dashboard.mjs BASE_URL SCREENSHOT.png [PROMPT_NAME]");
  process.exit(2);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.PASARELA_CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.setDefaultTimeout(15000);
    // Script errors and CSP violations show up as console errors: none are expected.
    const problems = [];
    page.on("pageerror", (e) => problems.push(`page error: ${e}`));
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(`console error: ${m.text()} (${m.location().url})`);
    });

    await page.goto(`${base}/ui`);
    const adminKey = process.env.PASARELA_ADMIN_KEY;
    if (adminKey) {
      await page.waitForURL(/\/ui\/login\?next=/);
      await page.fill("#login input[name=key]", adminKey);
      await Promise.all([page.waitForURL(`${base}/ui`), page.click("#login button[type=submit]")]);
    }

    await Promise.all([
      page.waitForURL(`${base}/ui/prompts/${prompt}`),
      page.click(`a.prompt-link[href="/ui/prompts/${prompt}"]`),
    ]);
    await page.fill("#move-label input[name=label]", "staging");
    await page.selectOption("#move-label select[name=version]", "1");

    // "Cancel" keeps the page and the label as they were.
    let asked = null;
    page.once("dialog", async (d) => {
      asked = d.message();
      await d.dismiss();
    });
    await page.click("#move-label button[type=submit]");
    await page.waitForTimeout(300);
    if (asked === null) throw new Error("moving a label asked for no confirmation");
    if (page.url() !== `${base}/ui/prompts/${prompt}`) {
      throw new Error(`cancelling the confirmation still submitted: now at ${page.url()}`);
    }

    page.once("dialog", async (d) => {
      asked = d.message();
      await d.accept();
    });
    await Promise.all([page.waitForURL(/done=moved/), page.click("#move-label button[type=submit]")]);
    if (!asked.includes("staging") || !asked.includes("version 1")) {
      throw new Error(`the confirmation should name the label and version, said: ${asked}`);
    }
    const notice = (await page.textContent(".notice.ok")) || "";
    if (!notice.includes("now points at version 1")) {
      throw new Error(`no success notice after the move, found: ${notice}`);
    }
    const badge = await page.textContent("#versions tr#v1");
    if (!badge.includes("staging")) throw new Error(`v1 has no staging badge: ${badge}`);

    await page.screenshot({ path: screenshot, fullPage: true });

    // The diff between the two versions: deleted lines on the left, inserted on the right.
    await Promise.all([
      page.waitForURL(/\/diff\?from=1&to=2$/),
      page.click(`#versions a[href="/ui/prompts/${prompt}/diff?from=1&to=2"]`),
    ]);
    const deleted = await page.locator("#diff td.del").count();
    const inserted = await page.locator("#diff td.ins").count();
    if (deleted === 0 || inserted === 0) {
      throw new Error(`diff shows ${deleted} deleted and ${inserted} inserted lines`);
    }
    await page.screenshot({ path: screenshot.replace(/\.png$/, "-diff.png"), fullPage: true });
    if (problems.length > 0) throw new Error(problems.join("\n"));
    console.log(JSON.stringify({ ok: true, confirmation: asked, notice: notice.trim() }));
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
