// The platform admin's list of organizations: searchable and paged, where plan and BYOK access
// are changed and an organization is opened in the other pages.

import * as api from "./api.js";
import { h, fill, field, usd, count } from "./dom.js";

const PAGE = 25;

export async function render(ctx, view) {
  const pages = [""];
  let query = "";
  const body = h("div", { id: "orgs" });
  const search = h("input", { id: "org-search", type: "search", placeholder: "part of an org id" });
  const open = h("input", { id: "org-open", placeholder: "org id", pattern: "[A-Za-z0-9][A-Za-z0-9._-]{0,63}", required: true });

  let asked = 0; // loads started; only the latest one's answer is shown
  async function load() {
    const mine = ++asked;
    const params = new URLSearchParams({ limit: PAGE });
    if (pages.at(-1)) params.set("after", pages.at(-1));
    if (query) params.set("q", query);
    const list = await api.get(`/v1/orgs?${params}`);
    // A newer search or page was asked meanwhile: its answer is the one to show.
    if (mine !== asked) return;
    fill(body,
      list.orgs.length === 0 ? h("p", { class: "muted" }, "No organizations.") : h("table", { id: "org-list" },
        h("caption", { class: "cap" }, "Organizations with any event, by id"),
        h("thead", {}, h("tr", {}, ["Organization", "Plan", "BYOK access", "BYOK", "Keys", "Calls this month", "Cost this month", ""]
          .map((n, i) => h("th", { scope: "col", class: i >= 4 && i <= 6 ? "num" : null }, n)))),
        h("tbody", {}, list.orgs.map((o) => row(ctx, o)))),
      h("div", { class: "pager" },
        h("button", { type: "button", class: "plain", disabled: pages.length === 1, onclick: () => { pages.pop(); load(); } }, "Previous page"),
        h("button", { type: "button", class: "plain", disabled: list.next === null, onclick: () => { pages.push(list.next); load(); } }, "Next page")));
  }

  const searchForm = h("form", { class: "row card", role: "search" },
    field("Search organizations", search),
    h("button", { type: "submit" }, "Search"));
  searchForm.addEventListener("submit", (event) => { event.preventDefault(); query = search.value.trim(); pages.splice(1); load(); });
  const openForm = h("form", { class: "row card" },
    field("Open an organization by id (a new one starts on its defaults)", open),
    h("button", { type: "submit", class: "plain" }, "Open"));
  openForm.addEventListener("submit", (event) => { event.preventDefault(); ctx.chooseOrg(open.value.trim()); });
  fill(view, h("h1", {}, "Organizations"), searchForm, openForm, body);
  await load();
}

function row(ctx, o) {
  const path = api.org(o.org);
  const plan = h("select", { "aria-label": `Plan of ${o.org}`, class: "plan" },
    ctx.plans.map((p) => h("option", { value: p.id, selected: p.id === o.plan }, p.id)));
  const access = h("input", { type: "checkbox", "aria-label": `BYOK access of ${o.org}`, class: "access", checked: o.byok_access });
  const badge = h("span", { class: `badge ${o.byok_active ? "on" : "off"}` }, o.byok_active ? "active" : "inactive");
  const change = async (control, request, undo) => {
    control.disabled = true;
    try {
      const status = await api.send("PUT", request.path, request.body);
      // What is saved now is what a later failed change goes back to.
      o.plan = status.plan;
      o.byok_access = status.byok_access;
      fill(badge, status.byok_active ? "active" : "inactive");
      badge.className = `badge ${status.byok_active ? "on" : "off"}`;
      ctx.notify(`${o.org}: plan ${status.plan}, BYOK access ${status.byok_access ? "granted" : "withdrawn"}.`);
    } catch (error) {
      undo();
      ctx.notify(`${o.org}: ${error.message}`, true);
    } finally {
      control.disabled = false;
    }
  };
  plan.addEventListener("change", () => change(plan, { path: `${path}/plan`, body: { plan: plan.value } }, () => { plan.value = o.plan; }));
  access.addEventListener("change", () => change(access, { path: `${path}/byok-access`, body: { enabled: access.checked } }, () => { access.checked = o.byok_access; }));
  return h("tr", { dataset: { org: o.org } },
    h("td", {}, o.org), h("td", {}, plan), h("td", {}, access), h("td", {}, badge),
    h("td", { class: "num" }, count(o.keys)), h("td", { class: "num" }, count(o.calls_this_month)), h("td", { class: "num" }, usd(o.cost_usd_this_month)),
    h("td", {}, h("button", { type: "button", class: "plain", "aria-label": `Open ${o.org}`, onclick: () => ctx.chooseOrg(o.org) }, "Open")));
}
