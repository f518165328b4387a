// The keyledger console in a real browser: Debian's Chromium, driven by Playwright, against the
// real keyledger binary on SQLite and the fake providers. Each step does what a person does and
// asserts what is on screen; each page is scanned with axe-core and photographed at 1280×800.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createInterface } from "node:readline";
import { mkdtempSync, readFileSync, mkdirSync, rmSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import net from "node:net";
import { chromium } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = join(process.env.CARGO_TARGET_DIR || join(ROOT, "target"), "debug");
// Screenshots go under target/ unless asked for elsewhere: `CONSOLE_SCREENSHOTS=docs/console`
// refreshes the ones the README shows.
const SHOTS = resolve(ROOT, process.env.CONSOLE_SCREENSHOTS || "target/console-screenshots");
const AXE = readFileSync(join(dirname(fileURLToPath(import.meta.url)), "node_modules/axe-core/axe.min.js"), "utf8");
const PROVIDERS = ["anthropic", "openai", "google", "mistral", "groq", "azure_openai", "aleph_alpha", "ollama", "lmstudio", "vllm"];
const ORG = "acme";

// Canaries: keys no one else has, searched for everywhere they must not be.
const canary = randomBytes(12).toString("hex");
const KEYS = {
  openai: `sk-proj-CANARY${canary}openai1`,
  openaiRotated: `sk-proj-CANARY${canary}openai2`,
  anthropic: `sk-ant-api03-CANARY${canary}anthropic`,
};

let fake, keyledger, base, env, workdir, browser, logPath;
const tokens = {};
const seenBodies = [];
const consoleErrors = [];

function freePort() {
  return new Promise((ok) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

async function call(method, path, token, body) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

function token(org, role, sub) {
  return execFileSync(join(BIN, "keyledger"), ["token", "--org", org, "--role", role, "--sub", sub], { env }).toString().trim();
}

before(async () => {
  workdir = mkdtempSync(join(tmpdir(), "keyledger-console-"));
  fake = spawn(join(BIN, "fake-providers"), [], { stdio: ["ignore", "pipe", "inherit"] });
  const fakePort = await new Promise((ok) => createInterface({ input: fake.stdout }).once("line", ok));
  const fakeBase = `http://127.0.0.1:${fakePort}`;
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  env = {
    ...process.env,
    DATABASE_URL: `sqlite://${join(workdir, "keyledger.db")}`,
    KEYLEDGER_LISTEN: `127.0.0.1:${port}`,
    KEYLEDGER_MASTER_KEY: randomBytes(32).toString("base64"),
    KEYLEDGER_JWT_SECRET: randomBytes(32).toString("hex"),
    KEYLEDGER_ALLOW_PRIVATE_ENDPOINTS: "true",
    RUST_LOG: "info",
  };
  for (const p of PROVIDERS) env[`KEYLEDGER_PROVIDER_${p.toUpperCase()}_BASE_URL`] = `${fakeBase}/${p}`;
  logPath = join(workdir, "keyledger.log");
  const { openSync } = await import("node:fs");
  const log = openSync(logPath, "w");
  keyledger = spawn(join(BIN, "keyledger"), ["serve"], { env, cwd: workdir, stdio: ["ignore", log, log] });
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${base}/readyz`)).ok) break;
    } catch { /* not up yet */ }
    if (i > 300) throw new Error(`keyledger did not start:\n${readFileSync(logPath, "utf8")}`);
    await new Promise((ok) => setTimeout(ok, 100));
  }
  for (const key of [KEYS.openai, KEYS.openaiRotated, KEYS.anthropic]) {
    await fetch(`${fakeBase}/__admin/accept`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ key }) });
  }
  tokens.owner = token(ORG, "owner", "alice");
  tokens.member = token(ORG, "member", "mia");
  tokens.auditor = token(ORG, "auditor", "audrey");
  tokens.admin = token("*", "platform_admin", "billing");
  tokens.service = token(ORG, "service", "worker");
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  keyledger?.kill("SIGTERM");
  fake?.kill();
  if (logPath) {
    const log = readFileSync(logPath, "utf8");
    for (const key of Object.values(KEYS)) assert.ok(!log.includes(key), "a key is in keyledger's log");
  }
  if (workdir) rmSync(workdir, { recursive: true, force: true });
});

/// A fresh tab signed in with `who`'s token, recording every response body and console error.
async function signedIn(who) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  const page = await context.newPage();
  page.on("response", async (response) => {
    try { seenBodies.push(await response.text()); } catch { /* a redirect has no body */ }
  });
  page.on("console", (message) => { if (message.type() === "error") consoleErrors.push(message.text()); });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
  await page.goto(`${base}/console/`);
  await page.getByLabel("Bearer token").fill(tokens[who]);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#whoami").waitFor();
  return page;
}

async function open(page, name) {
  const link = page.getByRole("navigation", { name: "Pages" }).getByRole("link", { name, exact: true });
  // The console routes a click on the hash change that follows it, so until then the page
  // on screen is still there to be found: it is marked first, when the click will change the
  // hash (a click on the page shown changes nothing).
  const href = await link.getAttribute("href");
  await page.evaluate((href) => {
    if (location.hash !== href) document.querySelector("main .view")?.setAttribute("data-left", "");
  }, href);
  await link.click();
  await page.locator("main .view:not([data-left]) h1").first().waitFor();
  await page.waitForFunction(() => !document.querySelector("main")?.textContent.includes("Loading…"));
}

/// No serious or critical accessibility violations on what the page shows now.
async function accessible(page, what) {
  await page.evaluate(AXE);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`), [], `${what}: accessibility`);
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`) });
}

async function keyRow(page, provider) {
  return page.locator(`#keys tr[data-provider="${provider}"]`);
}

test("the start-up log names the console", () => {
  assert.match(readFileSync(logPath, "utf8"), /console: http:\/\/127\.0\.0\.1:\d+\/console\//);
});

test("a bad token is refused with the server's words", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${base}/console/`);
  await page.getByLabel("Bearer token").fill("not-a-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await assert.doesNotReject(page.getByRole("alert").filter({ hasText: "The token was refused" }).waitFor());
  await context.close();
});

test("on starter, the owner sees who they are and why BYOK is off", async () => {
  const page = await signedIn("owner");
  assert.equal(await page.locator("#whoami").textContent(), "alice · owner · org acme");
  await open(page, "Organization");
  assert.equal(await page.locator("#plan").textContent(), "starter");
  assert.match(await page.locator("#add-reason").textContent(), /BYOK needs a .*private.* plan; this organization is on starter/);
  assert.ok(await page.getByRole("button", { name: "Add key" }).isDisabled());
  await page.context().close();
});

test("the owner adds a key and sees only its mask, anywhere", async () => {
  assert.equal((await call("PUT", `/v1/orgs/${ORG}/plan`, tokens.admin, { plan: "pro" })).status, 200);
  const page = await signedIn("owner");
  await open(page, "Organization");
  await page.getByLabel("Provider", { exact: true }).selectOption("openai");
  await page.getByLabel("Key", { exact: true }).fill(KEYS.openai);
  await page.getByLabel("Description", { exact: true }).fill("production");
  await page.getByRole("button", { name: "Add key" }).click();
  const row = await keyRow(page, "openai");
  await row.waitFor();
  assert.match(await row.textContent(), /sk-proj-••••/);
  assert.match(await row.textContent(), /v1/);
  assert.match(await page.locator("#byok-badge").textContent(), /BYOK active/);
  assert.match(await page.locator("#notice").textContent(), /OpenAI key stored: sk-proj-/);
  // The plaintext is in no DOM, input, storage or response the page received.
  const html = await page.content();
  const inputs = await page.evaluate(() => [...document.querySelectorAll("input")].map((i) => i.value).join("\n"));
  const storage = await page.evaluate(() => JSON.stringify({ ...sessionStorage }) + JSON.stringify({ ...localStorage }));
  for (const [where, text] of [["DOM", html], ["inputs", inputs], ["storage", storage], ["responses", seenBodies.join("\n")]]) {
    assert.ok(!text.includes(KEYS.openai), `the key is in the ${where}`);
  }
  await accessible(page, "organization");
  await shot(page, "organization");
  await page.context().close();
});

test("rotating shows version 2; test connection says what the provider said", async () => {
  const page = await signedIn("owner");
  await open(page, "Organization");
  await page.getByRole("button", { name: "Rotate the OpenAI key" }).click();
  await page.getByLabel("New key").fill(KEYS.openaiRotated);
  await page.getByRole("dialog").getByRole("button", { name: "Rotate" }).click();
  await page.locator("#notice").filter({ hasText: "rotated to version 2" }).waitFor();
  assert.match(await (await keyRow(page, "openai")).textContent(), /v2/);
  await page.getByRole("button", { name: "Test connection to OpenAI" }).click();
  await page.locator("#outcome").filter({ hasText: "OpenAI accepted the key" }).waitFor();
  assert.ok(!(await page.content()).includes(KEYS.openaiRotated));
  await page.context().close();
});

test("a second key, then the provider order dragged and saved at once", async () => {
  const page = await signedIn("owner");
  await open(page, "Organization");
  await page.getByLabel("Provider", { exact: true }).selectOption("anthropic");
  await page.getByLabel("Key", { exact: true }).fill(KEYS.anthropic);
  await page.getByRole("button", { name: "Add key" }).click();
  await (await keyRow(page, "anthropic")).waitFor();
  await open(page, "Provider order");
  const names = () => page.locator("#order li .name").allTextContents();
  assert.deepEqual(await names(), ["Anthropic", "OpenAI"]);
  await page.locator('#order li[data-provider="openai"]').dragTo(page.locator('#order li[data-provider="anthropic"]'));
  await page.locator("#order-state").filter({ hasText: "Saved: OpenAI → Anthropic" }).waitFor();
  assert.deepEqual(await names(), ["OpenAI", "Anthropic"]);
  assert.deepEqual((await call("GET", `/v1/orgs/${ORG}/provider-order`, tokens.owner)).body.providers, ["openai", "anthropic"]);
  // By keyboard too: Anthropic up, back to first.
  await page.getByRole("button", { name: "Move Anthropic up" }).focus();
  await page.keyboard.press("Enter");
  await page.locator("#order-state").filter({ hasText: "Saved: Anthropic → OpenAI" }).waitFor();
  await accessible(page, "provider order");
  await shot(page, "provider-order");
  await page.context().close();
});

test("the audit trail lists who did what, filters, verifies its chain, downloads history", async () => {
  const page = await signedIn("owner");
  await open(page, "Audit trail");
  const entries = page.locator("#audit-entries tbody tr");
  await entries.first().waitFor();
  const all = await entries.allTextContents();
  assert.ok(all.some((e) => e.includes("AI key stored") && e.includes("alice")), all.join("\n"));
  assert.ok(all.some((e) => e.includes("Plan changed from starter to pro") && e.includes("billing")));
  await page.getByLabel("Action", { exact: true }).selectOption("key.rotated");
  await page.waitForFunction(() => document.querySelectorAll("#audit-entries tbody tr").length === 1);
  assert.match(await entries.first().textContent(), /AI key rotated.*sk-proj-••••/);
  // Two filter changes in a row: the first one's answer is held back until after the second's,
  // as a slow network may do; the page must end on the newer answer, not the later one.
  const unfiltered = /\/audit\?(?!.*provider=)/;
  await page.route(unfiltered, async (route) => {
    await new Promise((resolve) => setTimeout(resolve, 700));
    await route.continue();
  });
  const late = page.waitForResponse((response) => unfiltered.test(response.url()));
  await page.getByLabel("Action", { exact: true }).selectOption("");
  await page.getByLabel("Provider", { exact: true }).selectOption("anthropic");
  const onlyAnthropic = () => [...document.querySelectorAll("#audit-entries tbody tr")].every((r) => r.textContent.includes("Anthropic"));
  await page.waitForFunction(onlyAnthropic);
  await late;
  await page.waitForTimeout(300);
  assert.ok(await page.evaluate(onlyAnthropic), "the held-back unfiltered answer replaced the filtered one");
  await page.unroute(unfiltered);
  await page.getByRole("button", { name: "Verify chain" }).click();
  await page.locator("#chain").filter({ hasText: "Chain intact" }).waitFor();
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: /Download raw history/ }).click()]);
  const history = readFileSync(await download.path(), "utf8").trim().split("\n").map((line) => JSON.parse(line));
  assert.ok(history.length >= 5);
  assert.ok(!history.some((e) => JSON.stringify(e).includes(KEYS.openai)));
  await accessible(page, "audit trail");
  await shot(page, "audit");
  await page.context().close();
});

test("usage recorded through the API shows in the cockpit", async () => {
  for (const [i, [provider, model, input, output]] of [["openai", "gpt-4o-mini", 1200, 300], ["anthropic", "claude-3-5-haiku-latest", 800, 200], ["openai", "gpt-4o", 500, 100]].entries()) {
    const recorded = await call("POST", `/v1/orgs/${ORG}/usage`, tokens.service, { request_id: `console-${canary}-${i}`, provider, model, input_tokens: input, output_tokens: output });
    assert.equal(recorded.status, 201, JSON.stringify(recorded.body));
  }
  const page = await signedIn("owner");
  await open(page, "Usage");
  await page.locator("#total-calls").filter({ hasText: "3" }).waitFor();
  assert.equal(await page.locator("#total-input").textContent(), (2500).toLocaleString("en-US"));
  assert.ok(await page.locator("#usage-chart canvas").count() > 0, "the chart is drawn");
  const legend = await page.locator("#usage-chart .u-legend").textContent();
  assert.ok(legend.includes("OpenAI") && legend.includes("Anthropic"), legend);
  assert.match(await page.locator("main").textContent(), /gpt-4o-mini/);
  assert.match(await page.locator("main").textContent(), /Own key \(BYOK\)/);
  assert.match(await page.getByText(/^Calls: /).textContent(), /Calls: 0 of 20,000/);
  await accessible(page, "usage");
  await shot(page, "usage");
  await page.context().close();
});

test("as of an earlier instant, the earlier keys", async () => {
  const history = await call("GET", `/v1/orgs/${ORG}/audit?limit=100`, tokens.owner);
  const stored = history.body.entries.find((e) => e.action === "key.stored" && e.provider === "openai");
  const rotated = history.body.entries.find((e) => e.action === "key.rotated");
  // Between the store and the rotation, which may be less than a second apart.
  const before = new Date((Date.parse(stored.at) + Date.parse(rotated.at)) / 2);
  const page = await signedIn("auditor");
  await open(page, "As of");
  const local = new Date(before.getTime() - before.getTimezoneOffset() * 60000).toISOString().slice(0, 23);
  await page.getByLabel("Instant (your local time)").fill(local);
  await page.getByRole("button", { name: "Show keys" }).click();
  const row = page.locator('#as-of-keys tr[data-provider="openai"]');
  await row.filter({ hasText: "v1" }).waitFor();
  assert.equal(await page.locator('#as-of-keys tr[data-provider="anthropic"]').count(), 0);
  await accessible(page, "as of");
  await shot(page, "as-of");
  await page.context().close();
});

test("the owner edits a key's details; every control on the page is reached by Tab", async () => {
  const page = await signedIn("owner");
  await open(page, "Organization");
  await page.getByRole("button", { name: "Edit the OpenAI key's details" }).click();
  await page.getByRole("dialog").getByLabel("Default model").fill("gpt-4o-mini");
  await page.getByRole("dialog").getByRole("button", { name: "Save" }).click();
  await page.locator("#notice").filter({ hasText: "OpenAI key details saved" }).waitFor();
  assert.match(await (await keyRow(page, "openai")).textContent(), /gpt-4o-mini/);
  // Tab from the top of the page: every enabled control in it gets the focus, in turn.
  const controls = await page.evaluate(() => [...document.querySelectorAll("a[href], button:not([disabled]), input:not([disabled]), select:not([disabled])")]
    .filter((el) => el.offsetParent !== null).length);
  await page.locator("body").focus();
  const reached = new Set();
  for (let i = 0; i < controls + 5; i++) {
    await page.keyboard.press("Tab");
    reached.add(await page.evaluate(() => {
      const el = document.activeElement;
      return el === document.body ? null : `${el.tagName}#${el.id}:${el.getAttribute("aria-label") || el.textContent.trim().slice(0, 30)}`;
    }));
  }
  reached.delete(null);
  assert.equal(reached.size, controls, [...reached].join("\n"));
  await page.context().close();
});

test("a member reads the keys and has no control that writes", async () => {
  const page = await signedIn("member");
  const links = await page.getByRole("navigation", { name: "Pages" }).getByRole("link").allTextContents();
  assert.deepEqual(links, ["Organization", "Provider order", "As of"]);
  await open(page, "Organization");
  await (await keyRow(page, "openai")).waitFor();
  assert.match(await page.locator("#read-only").textContent(), /member role cannot change keys/);
  for (const name of ["Add key", "Rotate", "Remove", "Test connection"]) {
    assert.equal(await page.getByRole("button", { name }).count(), 0, name);
  }
  await open(page, "Provider order");
  assert.equal(await page.getByRole("button", { name: /Move/ }).count(), 0);
  await page.context().close();
});

test("an auditor reads audit and usage, and writes nothing", async () => {
  const page = await signedIn("auditor");
  const links = await page.getByRole("navigation", { name: "Pages" }).getByRole("link").allTextContents();
  assert.deepEqual(links, ["Organization", "Provider order", "Audit trail", "Usage", "As of"]);
  await open(page, "Organization");
  assert.equal(await page.locator("#add-key-form").count(), 0);
  await open(page, "Usage");
  await page.locator("#total-calls").filter({ hasText: "3" }).waitFor();
  await page.context().close();
});

test("the platform admin lists organizations and changes a plan; the org's page follows", async () => {
  await call("POST", `/v1/orgs/globex/usage`, token("globex", "service", "worker"), { request_id: `g-${canary}`, provider: "openai", model: "gpt-4o-mini", input_tokens: 10, output_tokens: 5 });
  const page = await signedIn("admin");
  await open(page, "Organizations");
  const acme = page.locator('#org-list tr[data-org="acme"]');
  await acme.waitFor();
  assert.match(await acme.textContent(), /active/);
  await page.locator('#org-list tr[data-org="globex"]').waitFor();
  await page.getByLabel("Search organizations").fill("glob");
  await page.getByRole("button", { name: "Search" }).click();
  await page.waitForFunction(() => document.querySelectorAll("#org-list tbody tr").length === 1);
  await page.getByLabel("Search organizations").fill("");
  await page.getByRole("button", { name: "Search" }).click();
  await acme.waitFor();
  await accessible(page, "organizations");
  await shot(page, "organizations");
  await page.getByLabel("Plan of acme").selectOption("private");
  await page.locator("#notice").filter({ hasText: "acme: plan private" }).waitFor();
  await page.getByRole("button", { name: "Open acme" }).click();
  await page.locator("#plan").filter({ hasText: "private" }).waitFor();
  // Private allows one provider: one key is suspended, and adding would replace.
  assert.match(await page.locator("#keys").textContent(), /suspended/);
  await page.getByLabel("BYOK access of acme").count(); // the org page has no admin controls
  assert.equal(await page.locator("#add-key-form").count(), 0, "a platform admin does not manage keys");
  await page.context().close();
});

test("on private, the owner sees what the plan forbids and removes the suspended key", async () => {
  const page = await signedIn("owner");
  await open(page, "Organization");
  assert.match(await page.locator("#add-note").textContent(), /private plan allows one provider — adding replaces the current key/);
  assert.ok(await page.getByRole("button", { name: "Replace the key" }).isEnabled());
  const suspended = page.locator("#keys tbody tr").filter({ hasText: "suspended" });
  const provider = await suspended.getAttribute("data-provider");
  const name = provider === "openai" ? "OpenAI" : "Anthropic";
  await page.getByRole("button", { name: `Remove the ${name} key` }).click();
  const confirm = page.getByRole("dialog");
  assert.match(await confirm.textContent(), new RegExp(`Calls to ${name} fall back to the platform's shared key`));
  await confirm.getByRole("button", { name: "Remove" }).click();
  await page.locator("#notice").filter({ hasText: `${name} key removed; ${name} calls now use the platform key` }).waitFor();
  assert.equal(await page.locator(`#keys tr[data-provider="${provider}"]`).count(), 0);
  await open(page, "Provider order");
  assert.match(await page.locator("#order-reason").textContent(), /A provider order needs a .+ plan; this organization is on private/);
  assert.equal(await page.getByRole("button", { name: /Move/ }).count(), 0);
  await page.context().close();
});

test("an audit entry edited in the database shows as the first bad entry", async () => {
  // An insider rewrites entry 2's summary straight in the SQLite file the server runs on.
  const db = join(workdir, "keyledger.db");
  execFileSync("python3", ["-c", `import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=10)
c.execute("update audit_log set summary = 'nothing happened' where org_id = 'acme' and seq = 2")
c.commit()`, db]);
  const page = await signedIn("auditor");
  await open(page, "Audit trail");
  await page.getByRole("button", { name: "Verify chain" }).click();
  await page.locator("#chain").filter({ hasText: "Chain broken: entry 2 is the first that does not match" }).waitFor();
  await page.context().close();
});

test("the page broke no content security rule and threw nothing", () => {
  assert.deepEqual(consoleErrors.filter((e) => !e.includes("401") && !e.includes("Failed to load resource")), []);
});
