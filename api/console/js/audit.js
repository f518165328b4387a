// The audit trail: who did what to which key and when, a page at a time, filtered by action
// and provider; its hash chain verified on demand; the raw history downloadable.

import * as api from "./api.js";
import { h, fill, field, when } from "./dom.js";

const ACTIONS = ["key.stored", "key.rotated", "key.details_changed", "key.removed", "key.verified",
  "key.verification_failed", "key.suspended", "key.reinstated", "provider_order.set", "plan.changed",
  "byok_access.changed", "key.resealed", "organization.erased", "organization.restarted"];
const PAGE = 25;

/// The mask an entry names, if any. `details` is JSON text: the exact bytes the chain hashes.
function masked(entry) {
  try {
    return JSON.parse(entry.details)?.masked || null;
  } catch {
    return null;
  }
}

export async function render(ctx, view) {
  const filters = { action: "", provider: "" };
  const pages = [0]; // the `after` of each page seen, to step back
  const body = h("div", { id: "audit" });
  const chain = h("div", { id: "chain", role: "status", "aria-live": "polite" });

  let asked = 0; // loads started; only the latest one's answer is shown
  async function load() {
    const mine = ++asked;
    const params = new URLSearchParams({ after: pages.at(-1), limit: PAGE });
    if (filters.action) params.set("action", filters.action);
    if (filters.provider) params.set("provider", filters.provider);
    const page = await api.get(`${api.org(ctx.org)}/audit?${params}`);
    // Filters changed while this was on its way: an older answer arriving last must not
    // replace the newer one.
    if (mine !== asked) return;
    fill(body,
      page.entries.length === 0 ? h("p", { class: "muted" }, "No entries.") : h("table", { id: "audit-entries" },
        h("caption", { class: "cap" }, `Entries ${page.entries[0].seq} to ${page.entries.at(-1).seq}, oldest first`),
        h("thead", {}, h("tr", {}, ["#", "When", "Who", "Action", "Provider", "What"].map((n) => h("th", { scope: "col" }, n)))),
        h("tbody", {}, page.entries.map((e) => h("tr", {},
          h("td", { class: "num" }, e.seq),
          h("td", {}, when(e.at)),
          h("td", {}, e.actor),
          h("td", { class: "mono" }, e.action),
          h("td", {}, e.provider ? ctx.providerName(e.provider) : "—"),
          h("td", {}, e.summary, masked(e) ? h("span", { class: "mono muted" }, ` ${masked(e)}`) : null))))),
      h("div", { class: "pager" },
        h("button", { type: "button", class: "plain", disabled: pages.length === 1, onclick: () => { pages.pop(); load(); } }, "Previous page"),
        h("button", { type: "button", class: "plain", disabled: page.next === null, onclick: () => { pages.push(page.next); load(); } }, "Next page")));
  }

  const choose = (name, options, label) => field(label,
    h("select", { id: `filter-${name}`, onchange: (event) => { filters[name] = event.target.value; pages.splice(1); load(); } },
      h("option", { value: "" }, "any"), options.map(([value, text]) => h("option", { value }, text))));

  fill(view,
    h("h1", {}, "Audit trail"),
    h("div", { class: "row card" },
      choose("action", ACTIONS.map((a) => [a, a]), "Action"),
      choose("provider", ctx.providers.map((p) => [p.id, p.name]), "Provider"),
      h("button", { type: "button", id: "verify-chain", onclick: async () => {
        fill(chain, "Verifying…");
        try {
          const report = await api.get(`${api.org(ctx.org)}/audit/verify`);
          fill(chain, report.ok
            ? h("p", { class: "ok" }, `Chain intact: ${report.entries} entries, head ${report.head.slice(0, 16)}…, matching the event log.`)
            : h("p", { class: "error" }, `Chain broken: entry ${report.first_bad_seq} is the first that does not match.`));
        } catch (error) {
          fill(chain, h("p", { class: "error" }, error.message));
        }
      } }, "Verify chain"),
      h("button", { type: "button", class: "plain", id: "download-events", onclick: async () => {
        const ndjson = await api.text(`${api.org(ctx.org)}/events`);
        const link = h("a", { href: URL.createObjectURL(new Blob([ndjson], { type: "application/x-ndjson" })), download: `${ctx.org}-events.ndjson` });
        document.body.append(link);
        link.click();
        link.remove();
      } }, "Download raw history (NDJSON)")),
    chain,
    body);
  await load();
}
