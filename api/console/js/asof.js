// As of: the organization's keys as they were at an instant, rebuilt from the event log.

import * as api from "./api.js";
import { h, fill, field, when } from "./dom.js";

/// `datetime-local` wants local time without a zone; to the millisecond, as events are.
function localInput(date) {
  const shifted = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return shifted.toISOString().slice(0, 23);
}

export async function render(ctx, view) {
  const input = h("input", { id: "as-of", type: "datetime-local", step: "0.001", value: localInput(new Date()) });
  const result = h("div", { id: "as-of-keys", "aria-live": "polite" });
  async function show() {
    const at = new Date(input.value);
    if (Number.isNaN(at.getTime())) return fill(result, h("p", { class: "error" }, "Pick a date and time."));
    try {
      const list = await api.get(`${api.org(ctx.org)}/keys?as_of=${encodeURIComponent(at.toISOString())}`);
      fill(result,
        h("p", {}, `As of ${when(at)}: `, h("span", { class: `badge ${list.byok_active ? "on" : "off"}` }, list.byok_active ? "BYOK active" : "BYOK inactive")),
        list.keys.length === 0 ? h("p", { class: "muted" }, "No keys at that instant.") : h("table", {},
          h("caption", { class: "cap" }, "Keys as they were"),
          h("thead", {}, h("tr", {}, ["Provider", "Key", "Version", "Status", "Description", "Rotated"].map((n) => h("th", { scope: "col" }, n)))),
          h("tbody", {}, list.keys.map((k) => h("tr", { dataset: { provider: k.provider } },
            h("td", {}, ctx.providerName(k.provider)), h("td", { class: "mono" }, k.masked), h("td", { class: "num" }, `v${k.version}`),
            h("td", {}, k.status), h("td", {}, k.description || "—"), h("td", {}, when(k.rotated_at)))))));
    } catch (error) {
      fill(result, h("p", { class: "error" }, error.message));
    }
  }
  const form = h("form", { class: "row card" },
    field("Instant (your local time)", input),
    h("button", { type: "submit" }, "Show keys"));
  form.addEventListener("submit", (event) => { event.preventDefault(); show(); });
  fill(view, h("h1", {}, "Keys as of an instant"), form, result);
  await show();
}
