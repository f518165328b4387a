// The organization page: plan, BYOK status, the masked keys, and what an owner or admin may do
// with them. What the plan forbids is shown disabled, with the reason.

import * as api from "./api.js";
import { h, fill, field, when } from "./dom.js";

const OUTCOMES = {
  valid: "accepted the key",
  invalid_key: "refused the key as invalid",
  insufficient_permissions: "accepted the key, but it lacks the permissions needed",
  unreachable: "could not be reached",
  rate_limited: "is rate-limiting this key; try again later",
  provider_error: "answered with an error of its own",
};

export function outcomeInWords(outcome) {
  return OUTCOMES[outcome] || outcome;
}

export function planRules(ctx, plan) {
  return ctx.plans.find((p) => p.id === plan);
}

/// "private, pro or business": the plans that allow what `allows` asks.
export function plansThat(ctx, allows) {
  const names = ctx.plans.filter(allows).map((p) => p.id);
  return names.length <= 1 ? names.join("") : `${names.slice(0, -1).join(", ")} or ${names.at(-1)}`;
}

/// Why this organization cannot add a key now, or null; and whether adding replaces.
function addingRule(ctx, status, rules) {
  const active = status.keys.filter((k) => k.status === "active").length;
  if (!status.byok_access) return { reason: "The platform has withdrawn BYOK access for this organization." };
  if (!rules || !rules.byok) return { reason: `BYOK needs a ${plansThat(ctx, (p) => p.byok)} plan; this organization is on ${status.plan}.` };
  if (rules.max_providers === 1 && active >= 1) {
    return { replaces: true, note: `The ${status.plan} plan allows one provider — adding replaces the current key.` };
  }
  if (rules.max_providers !== null && active >= rules.max_providers) {
    return { reason: `The ${status.plan} plan allows ${rules.max_providers} providers, and all are taken.` };
  }
  return {};
}

export async function render(ctx, view) {
  const status = await api.get(api.org(ctx.org));
  const rules = planRules(ctx, status.plan);
  const adding = addingRule(ctx, status, rules);
  const outcome = h("div", { id: "outcome", role: "status", "aria-live": "polite" });

  fill(view,
    h("h1", {}, `Organization ${status.org}`),
    h("section", { class: "card facts", "aria-label": "Status" },
      h("div", {}, h("span", {}, "Plan"), h("strong", { id: "plan" }, status.plan)),
      h("div", {}, h("span", {}, "BYOK access"), h("strong", { id: "byok-access" }, status.byok_access ? "granted" : "withdrawn")),
      h("div", {}, h("span", {}, "BYOK"), h("span", { id: "byok-badge", class: `badge ${status.byok_active ? "on" : "off"}` },
        status.byok_active ? "BYOK active" : "BYOK inactive — calls use the platform key")),
      h("div", {}, h("span", {}, "Provider order"), h("strong", {}, status.provider_order.join(" → ") || "not set"))),
    ctx.manages ? null : h("p", { class: "muted", id: "read-only" }, `Read-only: the ${ctx.claims.role} role cannot change keys.`),
    h("h2", {}, "Keys"),
    keysTable(ctx, status, outcome),
    outcome,
    ctx.manages ? addForm(ctx, status, adding) : null);
}

function keysTable(ctx, status, outcome) {
  if (status.keys.length === 0) {
    return h("p", { class: "muted", id: "no-keys" }, "No keys of its own: every call uses the platform's shared key.");
  }
  const headings = ["Provider", "Key", "Description", "Default model", "Endpoint", "Version", "Status",
    "Last verification", "Created", "Rotated"];
  if (ctx.manages) headings.push("Actions");
  return h("table", { id: "keys" },
    h("caption", { class: "cap" }, "Stored keys, masked. The full key is never shown again."),
    h("thead", {}, h("tr", {}, headings.map((name) => h("th", { scope: "col" }, name)))),
    h("tbody", {}, status.keys.map((key) => h("tr", { dataset: { provider: key.provider } },
      h("td", {}, ctx.providerName(key.provider)),
      h("td", { class: "mono" }, key.masked),
      h("td", {}, key.description || "—"),
      h("td", {}, key.default_model || "—"),
      h("td", { class: "mono" }, key.endpoint || "—"),
      h("td", { class: "num" }, `v${key.version}`),
      h("td", {}, h("span", { class: `badge ${key.status === "active" ? "on" : "warn"}` }, key.status)),
      h("td", {}, key.last_verification
        ? `${key.last_verification.outcome.replace(/_/g, " ")} · ${when(key.last_verification.checked_at)}` : "never"),
      h("td", {}, when(key.created_at)),
      h("td", {}, when(key.rotated_at)),
      ctx.manages ? h("td", {}, rowActions(ctx, key, outcome)) : null))));
}

function rowActions(ctx, key, outcome) {
  const name = ctx.providerName(key.provider);
  const path = `${api.org(ctx.org)}/keys/${key.provider}`;
  return h("div", { class: "actions" },
    h("button", { type: "button", class: "plain", "aria-label": `Rotate the ${name} key`, onclick: () => rotateDialog(ctx, key, name, path) }, "Rotate"),
    h("button", { type: "button", class: "plain", "aria-label": `Edit the ${name} key's details`, onclick: () => editDialog(ctx, key, name, path) }, "Edit"),
    h("button", { type: "button", class: "plain", "aria-label": `Test connection to ${name}`, onclick: async (event) => {
      event.target.disabled = true;
      fill(outcome, `Testing the ${name} key…`);
      try {
        const result = await api.send("POST", `${path}/verify`);
        fill(outcome, h("p", { class: result.ok ? "ok" : "error" },
          `${name} ${outcomeInWords(result.outcome)} (checked ${when(result.checked_at)}).`));
      } catch (error) {
        fill(outcome, h("p", { class: "error" }, error.message));
      } finally {
        event.target.disabled = false;
      }
    } }, "Test connection"),
    h("button", { type: "button", class: "danger", "aria-label": `Remove the ${name} key`, onclick: () => removeDialog(ctx, key, name, path) }, "Remove"));
}

/// A modal form: `fields`, a submit button named `action`, and what submitting does.
function dialog(title, fields, action, submit, danger = false) {
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", {},
    h("h2", {}, title), ...fields, error,
    h("div", { class: "actions" },
      h("button", { type: "submit", class: danger ? "danger" : null }, action),
      h("button", { type: "button", class: "plain", onclick: () => box.close() }, "Cancel")));
  const box = h("dialog", { "aria-label": title }, form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await submit(form);
      box.close();
    } catch (e) {
      fill(error, e.message);
      button.disabled = false;
    }
  });
  box.addEventListener("close", () => {
    // No key typed into a dialog stays in the page once it is closed.
    form.querySelectorAll("input[type=password]").forEach((input) => { input.value = ""; });
    box.remove();
  });
  document.body.append(box);
  box.showModal();
  return box;
}

function secretField(id, label, required) {
  return field(label, h("input", { id, name: "key", type: "password", autocomplete: "off", spellcheck: "false", required }));
}

function rotateDialog(ctx, key, name, path) {
  dialog(`Rotate the ${name} key`, [
    h("p", {}, `The new key takes effect at once; version ${key.version} is destroyed.`),
    secretField("rotate-key", "New key", true),
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "verify", checked: true }), "Verify with the provider first"),
  ], "Rotate", async (form) => {
    const body = { key: form.elements.key.value, verify: form.elements.verify.checked };
    form.elements.key.value = "";
    const rotated = await api.send("PUT", path, body);
    ctx.notify(`${name} key rotated to version ${rotated.version}: ${rotated.masked}`);
    await ctx.refresh();
  });
}

function editDialog(ctx, key, name, path) {
  dialog(`Edit the ${name} key`, [
    field("Description", h("input", { id: "edit-description", name: "description", value: key.description || "", maxlength: 200 })),
    field("Default model", h("input", { id: "edit-model", name: "default_model", value: key.default_model || "", maxlength: 200 })),
  ], "Save", async (form) => {
    await api.send("PATCH", path, {
      description: form.elements.description.value || null,
      default_model: form.elements.default_model.value || null,
    });
    ctx.notify(`${name} key details saved.`);
    await ctx.refresh();
  });
}

function removeDialog(ctx, key, name, path) {
  dialog(`Remove the ${name} key?`, [
    h("p", {}, `The ${name} key ${key.masked} is destroyed. Calls to ${name} fall back to the platform's shared key, within the plan's monthly quota and cost cap.`),
  ], "Remove", async () => {
    await api.send("DELETE", path);
    ctx.notify(`${name} key removed; ${name} calls now use the platform key.`);
    await ctx.refresh();
  }, true);
}

function addForm(ctx, status, adding) {
  const active = new Set(status.keys.filter((k) => k.status === "active").map((k) => k.provider));
  const choices = ctx.providers.filter((p) => !active.has(p.id));
  const disabled = Boolean(adding.reason) || choices.length === 0;
  const provider = h("select", { id: "add-provider", name: "provider", disabled },
    choices.map((p) => h("option", { value: p.id }, p.name)));
  const endpoint = field("Endpoint (where the provider runs)",
    h("input", { id: "add-endpoint", name: "endpoint", type: "url", placeholder: "https://…", disabled }));
  const secret = secretField("add-key", "Key", false);
  const sync = () => {
    const chosen = ctx.providers.find((p) => p.id === provider.value);
    endpoint.hidden = !chosen?.needs_endpoint;
    endpoint.querySelector("input").required = Boolean(chosen?.needs_endpoint);
    secret.querySelector("input").required = !chosen?.key_optional;
  };
  provider.addEventListener("change", sync);
  const form = h("form", { id: "add-key-form", class: "card", "aria-labelledby": "add-title" },
    h("h2", { id: "add-title" }, "Add a key"),
    adding.reason ? h("p", { class: "reason", id: "add-reason" }, adding.reason) : null,
    adding.note ? h("p", { class: "reason", id: "add-note" }, adding.note) : null,
    h("div", { class: "row" },
      field("Provider", provider),
      secret,
      field("Description", h("input", { id: "add-description", name: "description", maxlength: 200, disabled })),
      field("Default model", h("input", { id: "add-model", name: "default_model", maxlength: 200, disabled })),
      endpoint),
    h("p", {}, h("label", { class: "check" }, h("input", { type: "checkbox", name: "verify", checked: true, disabled }), "Verify with the provider first")),
    h("p", { class: "error", role: "alert", id: "add-error" }),
    h("button", { type: "submit", disabled }, adding.replaces ? "Replace the key" : "Add key"));
  secret.querySelector("input").disabled = disabled;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = form.elements;
    const body = { provider: f.provider.value, key: f.key.value, verify: f.verify.checked };
    for (const name of ["description", "default_model", "endpoint"]) if (f[name].value) body[name] = f[name].value;
    if (adding.replaces) body.replace = true;
    if (!body.key) delete body.key;
    f.key.value = "";
    try {
      const stored = await api.send("POST", `${api.org(ctx.org)}/keys`, body);
      ctx.notify(`${ctx.providerName(stored.provider)} key stored: ${stored.masked}`);
      await ctx.refresh();
    } catch (error) {
      fill(form.querySelector("#add-error"), error.message);
    }
  });
  sync();
  return form;
}
