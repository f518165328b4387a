// The console's shell: sign-in, who is signed in, the pages a role may see, and the hash router.

import * as api from "./api.js";
import { h, fill, field } from "./dom.js";
import * as org from "./org.js";
import * as order from "./order.js";
import * as audit from "./audit.js";
import * as usage from "./usage.js";
import * as asof from "./asof.js";
import * as admin from "./admin.js";

const READS_KEYS = ["owner", "admin", "member", "auditor", "platform_admin"];
const READS_AUDIT = ["owner", "admin", "auditor", "platform_admin"];

/// Every page: its hash, its name in the menu, who may open it, and its module.
const PAGES = [
  { path: "org", name: "Organization", roles: READS_KEYS, page: org },
  { path: "order", name: "Provider order", roles: READS_KEYS, page: order },
  { path: "audit", name: "Audit trail", roles: READS_AUDIT, page: audit },
  { path: "usage", name: "Usage", roles: READS_AUDIT, page: usage },
  { path: "asof", name: "As of", roles: READS_KEYS, page: asof },
  { path: "admin", name: "Organizations", roles: ["platform_admin"], page: admin, everyOrg: true },
];

const main = document.getElementById("main");
const notice = document.getElementById("notice");
let catalogue = null;

/// What every page gets: who is signed in, which organization it shows, what the server offers.
function context(claims) {
  const everyOrg = claims.org === "*";
  const current = everyOrg ? sessionStorage.getItem("keyledger.org") : claims.org;
  return {
    claims,
    org: current,
    manages: ["owner", "admin"].includes(claims.role),
    everyOrg,
    providers: catalogue.providers,
    plans: catalogue.plans,
    providerName: (id) => catalogue.providers.find((p) => p.id === id)?.name || id,
    chooseOrg(id) {
      sessionStorage.setItem("keyledger.org", id);
      location.hash = "#/org";
    },
    notify,
    refresh: () => route({ keepNotice: true }),
  };
}

export function notify(message, isError = false) {
  notice.hidden = !message;
  notice.className = isError ? "notice error" : "notice";
  notice.textContent = message || "";
}

function signInPage(reason) {
  fill(document.getElementById("nav"));
  fill(document.getElementById("who"));
  const input = h("input", { id: "token", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  const form = h("form", { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to the keyledger console"),
    h("p", {}, "Paste a bearer token: your identity provider's, or one from ", h("code", {}, "keyledger token --org acme --role owner --sub you"),
      ". It is kept in this browser tab only and forgotten when the tab closes."),
    reason ? h("p", { class: "error", role: "alert" }, reason) : null,
    field("Bearer token", input),
    h("p", {}, h("button", { type: "submit" }, "Sign in")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    api.signIn(input.value);
    input.value = "";
    // A new hash routes by itself; the same hash needs asking.
    if (location.hash === "#/org") route();
    else location.hash = "#/org";
  });
  fill(main, form);
  input.focus();
}

function menu(claims, current) {
  const nav = document.getElementById("nav");
  fill(nav, PAGES.filter((p) => p.roles.includes(claims.role) && (!p.everyOrg || claims.org === "*"))
    .map((p) => h("a", { href: `#/${p.path}`, "aria-current": p.path === current ? "page" : null }, p.name)));
  const ctx = claims.org === "*" ? sessionStorage.getItem("keyledger.org") : claims.org;
  fill(document.getElementById("who"),
    h("span", { id: "whoami" }, `${claims.sub} · ${claims.role} · org ${claims.org}`),
    claims.org === "*" && ctx ? h("span", {}, `viewing ${ctx}`) : null,
    h("button", { type: "button", onclick: () => { api.signOut(); catalogue = null; signInPage(); } }, "Sign out"));
}

/// Shows the page the hash names. A new page starts without the last page's notice; a refresh
/// after a change keeps the notice that says what changed.
async function route({ keepNotice = false } = {}) {
  if (!keepNotice) notify("");
  if (!api.token()) return signInPage();
  // The server judges the token first, so a refused one shows the server's own words; and it
  // says who the token names, wherever the identity provider put the role and organization.
  let claims;
  try {
    if (!catalogue) {
      const [who, providers, plans] = await Promise.all([api.get("/v1/whoami"), api.get("/v1/providers"), api.get("/v1/plans")]);
      catalogue = { who, providers: providers.providers, plans: plans.plans };
    }
    claims = catalogue.who;
  } catch (error) {
    api.signOut();
    catalogue = null;
    return signInPage(error.status === 401 ? `The token was refused: ${error.message}` : error.message);
  }
  const allowed = PAGES.filter((p) => p.roles.includes(claims.role) && (!p.everyOrg || claims.org === "*"));
  if (allowed.length === 0) {
    menu(claims, null);
    return fill(main, h("p", {}, `The ${claims.role} role has nothing to see in the console; it makes model calls.`));
  }
  const wanted = location.hash.replace(/^#\//, "");
  const entry = allowed.find((p) => p.path === wanted) || allowed[0];
  menu(claims, entry.path);
  const ctx = context(claims);
  if (!entry.everyOrg && !ctx.org) {
    return fill(main, h("h1", {}, entry.name), h("p", {}, "Choose an organization on the ",
      h("a", { href: "#/admin" }, "Organizations"), " page first."));
  }
  // Each visit renders into a view of its own: a slow page answering after the person moved on
  // fills a view no longer shown instead of replacing the page they are on.
  const view = h("div", { class: "view" }, h("p", { class: "muted" }, "Loading…"));
  fill(main, view);
  try {
    await entry.page.render(ctx, view);
  } catch (error) {
    fill(view, h("h1", {}, entry.name), h("p", { class: "error", role: "alert" }, error.message));
  }
  main.focus({ preventScroll: true });
}

window.addEventListener("hashchange", () => route());
route();
