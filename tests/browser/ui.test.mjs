// The admin UI in a real headless browser (Debian's Chromium driven by playwright-core).
// Started by tests/it/ui_browser.rs, which boots the cluster and passes in the environment:
//   ER_UI_URL        the node the browser talks to, e.g. http://127.0.0.1:41234
//   ER_UI_EMAIL, ER_UI_PASSWORD   a UI user created through the library
//   ER_WEBHOOK_URL   a webhook receiver (optional); ER_EXPECT_DELIVERIES=1 to wait for deliveries
//   ER_ARTIFACTS_DIR where screenshots go (default: artifacts/ui at the repository root)
// When the live tail is open it prints "@@publish <topic>" on stdout; the Rust side then
// publishes one event over gRPC (on another node when it has two) and the page must show it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const base = process.env.ER_UI_URL;
const email = process.env.ER_UI_EMAIL;
const password = process.env.ER_UI_PASSWORD;
const shots = process.env.ER_ARTIFACTS_DIR || path.join(here, "..", "..", "artifacts", "ui");
const topic = "browser_demo";
assert.ok(base && email && password, "ER_UI_URL, ER_UI_EMAIL and ER_UI_PASSWORD must be set");
fs.mkdirSync(shots, { recursive: true });

let context;
let page;

before(async () => {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "er-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.ER_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1366, height: 800 },
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(15000);
});

after(async () => {
  await context?.close();
});

async function shot(name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

test("a wrong password is refused, the right one signs in", async () => {
  await page.goto(`${base}/topics`);
  assert.match(page.url(), /\/login\?next=%2Ftopics$/);
  await page.fill("#email", email);
  await page.fill("#password", "not the password");
  await page.click("button[type=submit]");
  await page.getByText("Wrong email or password.").waitFor();
  assert.match(page.url(), /\/login$/);
  await shot("01-login-refused");
  await page.fill("#email", email);
  await page.fill("#password", password);
  await page.press("#password", "Enter");
  await page.waitForURL(`${base}/topics`);
  await page.locator("header").getByText(email).waitFor();
  // Keyboard: the first Tab reaches the skip link.
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Skip to content");
  await shot("02-topics-empty");
});

test("a bad topic name shows its error beside the field; a good one is created", async () => {
  await page.fill("#f-name", "Not Valid!");
  await page.click("text=Create topic");
  await page.locator("#f-name-error").waitFor();
  assert.equal(await page.getAttribute("#f-name", "aria-invalid"), "true");
  await shot("03-topic-invalid");
  await page.fill("#f-name", topic);
  await page.click("text=Create topic");
  await page.waitForURL(`${base}/topics/${topic}/events`);
  await shot("04-events-empty");
});

test("an event published over gRPC appears in the live tail", async () => {
  await page.goto(`${base}/topics/${topic}/tail`);
  await page.locator('#tail-status[data-state="live"]').waitFor();
  process.stdout.write(`@@publish ${topic}\n`);
  const row = page.locator("#tail tbody tr", { hasText: "browser.clicked" });
  await row.first().waitFor({ timeout: 30000 });
  await shot("05-live-tail");
  await page.goto(`${base}/topics/${topic}/events`);
  await page.getByRole("cell", { name: "browser.clicked" }).first().waitFor();
  await shot("06-events");
  await page.click(`a[href="/topics/${topic}/events/1"]`);
  await page.locator("pre.json", { hasText: '"name": "browser.clicked"' }).waitFor();
  await shot("07-event");
});

test("a webhook subscription is created and shows its deliveries", async () => {
  const hook = process.env.ER_WEBHOOK_URL || "http://127.0.0.1:9/unused";
  await page.goto(`${base}/subscriptions/new?topic=${topic}`);
  await page.fill("#f-name", "browser_hook");
  await page.selectOption("#f-kind", "webhook");
  await page.fill("#f-endpoint_url", hook);
  await page.click("text=Create subscription");
  await page.waitForURL(/\/subscriptions\/[0-9a-f-]{36}$/);
  if (process.env.ER_EXPECT_DELIVERIES === "1") {
    // Replay from the start so the event published before the subscription is delivered.
    await page.fill("#f-offset", "0");
    await page.click("button:has-text(\"Replay\")");
    for (let i = 0; i < 60; i++) {
      if (await page.locator("#deliveries td", { hasText: "delivered" }).count()) { break; }
      await page.waitForTimeout(500);
      await page.reload();
    }
    await page.locator("#deliveries td", { hasText: "delivered" }).first().waitFor();
  }
  await shot("08-subscription");
  await page.goto(`${base}/subscriptions`);
  await page.getByRole("link", { name: "browser_hook" }).waitFor();
  await shot("09-subscriptions");
});

test("an API key is created with its secret shown once, then revoked", async () => {
  await page.goto(`${base}/keys`);
  await page.fill("#f-name", "browser key");
  await page.selectOption("#f-key_type", "producer");
  await page.fill("#f-topics", topic);
  await page.click("text=Create key");
  await page.getByText("Copy the secret now").waitFor();
  const secret = (await page.textContent("#secret")).trim();
  assert.match(secret, /^[A-Za-z0-9]{64}$/);
  await shot("10-key-created");
  await page.click("text=Manage this key");
  await page.getByRole("listitem").filter({ hasText: topic }).first().waitFor();
  assert.ok(!(await page.content()).includes(secret), "the secret is never shown again");
  await page.click("text=Revoke this key");
  await page.locator("dd", { hasText: "revoked" }).waitFor();
  await shot("11-key-revoked");
});

test("a topic's retention is shown and changed, with errors beside the fields", async () => {
  await page.goto(`${base}/topics`);
  await page.click(`a[href="/topics/${topic}/retention"]`);
  await page.locator("#policy", { hasText: "forever" }).waitFor();
  await page.fill("#f-max_age", "soon");
  await page.click("text=Save retention");
  await page.locator("#f-max_age-error").waitFor();
  assert.equal(await page.getAttribute("#f-max_age", "aria-invalid"), "true");
  await shot("11a-retention-invalid");
  await page.fill("#f-max_age", "7d");
  await page.fill("#f-max_events", "1000000");
  await page.click("text=Save retention");
  await page.locator("#policy", { hasText: "at most 1w old, 1000000 events" }).waitFor();
  await shot("11b-retention");
});

test("the other pages render: dead letters, users, cluster", async () => {
  for (const [p, name] of [["/dead-letters", "12-dead-letters"], ["/users", "13-users"], ["/cluster", "14-cluster"]]) {
    const r = await page.goto(`${base}${p}`);
    assert.equal(r.status(), 200, p);
    await shot(name);
  }
  await page.goto(`${base}/topics/${topic}/delete`);
  await page.getByText(`${topic}_events`).waitFor();
  await shot("15-topic-delete-confirm");
});

test("signing out ends the session", async () => {
  await page.goto(`${base}/topics`);
  await page.click("text=Sign out");
  await page.waitForURL(`${base}/login`);
  await page.goto(`${base}/keys`);
  assert.match(page.url(), /\/login\?next=%2Fkeys$/);
});
