// The dashboard in a real headless Chromium, driven by playwright-core (run by tests/it/browser.rs).
// Env: BASE_URL (a gateway), MASTER_KEY, CHROMIUM (the browser binary), SHOTS (where screenshots go),
// MODEL (a model the gateway answers). Exits non-zero with the reason on the first failure.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const { BASE_URL, MASTER_KEY, CHROMIUM, SHOTS, MODEL } = process.env;
mkdirSync(SHOTS, { recursive: true });
const unique = Math.random().toString(36).slice(2, 10);
const hostile = `Acme <img src=x onerror="window.pwned=1"> ${unique}`;
const email = `owner-${unique}@example.com`;
const password = "a long enough password";

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  console.log("ok:", what);
}

async function admin(method, path, body) {
  const resp = await fetch(BASE_URL + path, {
    method,
    headers: { Authorization: "Bearer " + MASTER_KEY, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await resp.json();
  if (!resp.ok) throw new Error(`${method} ${path}: ${resp.status} ${JSON.stringify(data)}`);
  return data;
}

// The gateway admin sets the scene through the API.
const acme = await admin("POST", "/admin/v1/organizations", { name: hostile });
const other = await admin("POST", "/admin/v1/organizations", { name: "Other " + unique });
await admin("POST", "/admin/v1/keys", { organization_id: other.id, name: "theirs-" + unique });
await admin("POST", "/admin/v1/accounts", { email, password, role: "org_admin", organization_id: acme.id });

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
// The whole test suite runs beside this on two cores: give each wait room, so a slow moment is not a failure.
page.setDefaultTimeout(60_000);
const problems = [];
page.on("pageerror", (e) => problems.push("page error: " + e.message));
// A refused fetch is logged by the browser as "Failed to load resource" (the page's first call asks
// whether a session exists, and is refused without one): a network status, not a script error.
page.on("console", (m) => {
  if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push("console error: " + m.text());
});
page.on("dialog", (d) => (d.type() === "prompt" ? d.accept("5") : d.accept()));
const shot = (name) => page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
const noSideScroll = async (where) => {
  const [scroll, width] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  check(scroll <= width, `no horizontal scroll at 390 px on ${where} (${scroll} <= ${width})`);
};
const rowWith = (table, text) => page.locator(`${table} tbody tr`, { hasText: text });

try {
  await page.goto(BASE_URL + "/dashboard");
  await page.locator("#login-form").waitFor();
  check(await page.locator("#tabs").isHidden(), "the tabs are hidden before signing in");
  await shot("01-sign-in");
  await noSideScroll("sign-in");

  // An organisation admin signs in with a password.
  await page.fill("#login-form [name=email]", email);
  await page.fill("#login-form [name=password]", password);
  await page.click("#login-form button[type=submit]");
  await page.locator("#me-name", { hasText: email }).waitFor();
  await page.locator("#keys").waitFor();
  check(await page.evaluate(() => !Object.keys(sessionStorage).length && !Object.keys(localStorage).length),
    "nothing is kept in the tab's storage");

  // It sees its own organisation only; the hostile name is text.
  const options = await page.locator("#key-form [name=organization_id] option").allTextContents();
  check(options.length === 1 && options[0] === hostile, "the organisation list holds its own organisation only, as text");
  check(await page.evaluate(() => !document.querySelector("main img") && !window.pwned), "no markup from data ran");
  check(!(await page.locator("#key-table").textContent()).includes("theirs-" + unique), "another organisation's keys are not shown");

  // It creates a key and sees the secret once, with a copy button.
  await page.fill("#key-form [name=name]", "browser-" + unique);
  await page.click("#key-form button[type=submit]");
  await page.locator("#new-secret").waitFor();
  const secret = (await page.locator("#new-secret-value").textContent()).trim();
  check(secret.startsWith("sk-sy-"), "the new key's secret is shown");
  check(await page.locator("#copy-secret").isVisible(), "with a copy button");
  await rowWith("#key-table", "browser-" + unique).waitFor();
  check((await rowWith("#key-table", "browser-" + unique).textContent()).includes("free"),
    "the new key has the default plan, whatever order the plans are listed in");
  await shot("02-keys");
  await noSideScroll("keys");

  // The key works over HTTP, and its request is in the request log and the usage chart.
  const used = await fetch(BASE_URL + "/v1/chat/completions", {
    method: "POST",
    headers: { Authorization: "Bearer " + secret, "Content-Type": "application/json" },
    body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "hello from the browser test" }] }),
  });
  check(used.status === 200, "the new key answers a chat completion");
  const requestId = used.headers.get("x-request-id");
  await page.click("#tabs [data-tab=requests]");
  let found = false;
  for (const until = Date.now() + 30_000; Date.now() < until && !found; ) {
    await page.fill("#requests-form [name=request_id]", requestId);
    await page.click("#requests-form button[type=submit]");
    await page.waitForTimeout(200);
    found = (await rowWith("#events-table", requestId).count()) === 1;
  }
  check(found, "the request is in the request log");
  await shot("03-requests");
  await page.click("#tabs [data-tab=usage]");
  await page.locator("#chart-requests svg rect").first().waitFor();
  check((await page.locator("#usage-key tbody").textContent()).includes("browser-" + unique), "usage by key names the key");
  await shot("04-usage");
  await noSideScroll("usage");

  // It rotates the key (the old secret keeps working for the grace period) and revokes it.
  await page.click("#dismiss-secret");
  await page.click("#tabs [data-tab=keys]");
  await page.getByRole("button", { name: "Rotate browser-" + unique }).click();
  await page.locator("#new-secret").waitFor();
  const rotated = (await page.locator("#new-secret-value").textContent()).trim();
  check(rotated.startsWith("sk-sy-") && rotated !== secret, "rotation shows a new secret");
  await rowWith("#key-table", "old secret works until").waitFor();
  await page.getByRole("button", { name: "Revoke browser-" + unique }).click();
  // The status cell itself (a row's text also holds its buttons' labels: "RevokeDelete").
  await page.locator("#key-table tbody td", { hasText: /^revoked$/ }).waitFor();
  const after = await fetch(BASE_URL + "/v1/chat/completions", {
    method: "POST",
    headers: { Authorization: "Bearer " + rotated, "Content-Type": "application/json" },
    body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "hi" }] }),
  });
  check(after.status === 401, "the revoked key is refused");
  await page.click("#logout");
  await page.locator("#login-form").waitFor();

  // The gateway admin edits a plan in the UI: the fields left alone keep their values.
  const before = await admin("GET", "/admin/v1/plans/plus");
  await page.fill("#login-form [name=master_key]", MASTER_KEY);
  await page.click("#login-form button[type=submit]");
  await page.locator("#orgs").waitFor();
  await page.click("#tabs [data-tab=plans]");
  await page.getByRole("button", { name: "Edit plan plus" }).click();
  await page.fill("#plan-form [name=daily_prompt_quota]", "777");
  await page.click("#plan-submit");
  await rowWith("#plan-table", "777").waitFor();
  const plus = await admin("GET", "/admin/v1/plans/plus");
  check(plus.daily_prompt_quota === 777, "the edited field changed");
  check(plus.monthly_prompt_quota === before.monthly_prompt_quota && plus.public_alias === before.public_alias,
    "the other fields kept their values");
  await admin("PATCH", "/admin/v1/plans/plus", { daily_prompt_quota: before.daily_prompt_quota });
  await shot("05-plans");

  // It blocks a provider for an organisation.
  await page.click("#tabs [data-tab=orgs]");
  await page.getByRole("button", { name: "Settings of Other " + unique }).click();
  await page.fill("#org-edit [name=blocked]", "upstream");
  await page.click("#org-edit button[type=submit]");
  await rowWith("#org-table", "Other " + unique).filter({ hasText: "upstream" }).waitFor();
  const blocked = await admin("GET", "/admin/v1/organizations/" + other.id);
  check(JSON.stringify(blocked.blocked_providers) === JSON.stringify(["upstream"]), "the provider is blocked");
  await shot("06-organizations");
  await noSideScroll("organizations");

  for (const [tab, wait, name] of [
    ["members", "#member-table tbody tr", "07-members"],
    ["billing", "#billing-orgs tbody tr", "08-billing"],
    ["health", "#provider-table tbody tr", "09-health"],
    ["audit", "#audit-table tbody tr", "10-audit"],
    ["reference", "#reference-list details", "11-api-reference"],
  ]) {
    await page.click(`#tabs [data-tab=${tab}]`);
    await page.locator(wait).first().waitFor();
    await shot(name);
    await noSideScroll(tab);
  }
  check((await page.locator("#audit-table").textContent()).includes("key.revoke"), "the audit log shows the revocation");

  // The health tab names the configuration in force, and an admin reloads it from there.
  await page.click("#tabs [data-tab=health]");
  await page.locator("#config-version", { hasText: /^Configuration version \d+ \([0-9a-f]{16}\), loaded / }).waitFor();
  await page.click("#reload-config");
  await page.locator("#status", { hasText: /^The file is unchanged: version \d+ stays\.$/ }).waitFor();
  check(problems.length === 0, "no script errors or policy violations: " + problems.join("; "));
} catch (e) {
  await shot("failure").catch(() => {});
  console.error(e.stack || String(e));
  if (problems.length) console.error(problems.join("\n"));
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log("all dashboard checks passed");
