// The provider order: which provider a call tries first. Dragged (or moved with the buttons, by
// keyboard) and saved at once, on plans that allow an order.

import * as api from "./api.js";
import { h, fill } from "./dom.js";
import { planRules, plansThat } from "./org.js";

export async function render(ctx, view) {
  const status = await api.get(api.org(ctx.org));
  const rules = planRules(ctx, status.plan);
  const allowed = Boolean(rules?.provider_order) && ctx.manages;
  // The order as set, then the providers holding a key that it does not name yet.
  const order = [...status.provider_order];
  for (const key of status.keys) if (!order.includes(key.provider)) order.push(key.provider);
  const reason = !rules?.provider_order
    ? `A provider order needs a ${plansThat(ctx, (p) => p.provider_order)} plan; this organization is on ${status.plan}, so calls try providers in the registry's order.`
    : !ctx.manages ? `Read-only: the ${ctx.claims.role} role cannot change the order.` : null;
  const state = h("p", { id: "order-state", role: "status", "aria-live": "polite", class: "muted" },
    status.provider_order.length ? "Saved." : "Not set yet: calls try providers in the registry's order.");
  const list = h("ol", { class: "order", id: "order", "aria-label": "Provider order, first tried first" });

  async function save(next) {
    fill(state, "Saving…");
    try {
      const saved = await api.send("PUT", `${api.org(ctx.org)}/provider-order`, { providers: next });
      order.splice(0, order.length, ...saved.providers, ...order.filter((p) => !saved.providers.includes(p)));
      fill(state, `Saved: ${saved.providers.map(ctx.providerName).join(" → ")}.`);
    } catch (error) {
      fill(state, h("span", { class: "error" }, error.message));
    }
    draw();
  }

  function move(from, to, focus) {
    if (to < 0 || to >= order.length || from === to) return;
    const next = [...order];
    const [item] = next.splice(from, 1);
    next.splice(to, 0, item);
    save(next).then(() => list.querySelector(`[data-provider="${item}"] button.${focus}`)?.focus());
  }

  function draw() {
    let dragged = null;
    fill(list, order.map((provider, index) => {
      const name = ctx.providerName(provider);
      const item = h("li", { draggable: allowed ? "true" : null, dataset: { provider } },
        h("span", { class: "pos" }, `${index + 1}.`),
        h("span", { class: "name" }, name),
        allowed ? h("button", { type: "button", class: "plain up", "aria-label": `Move ${name} up`, disabled: index === 0, onclick: () => move(index, index - 1, "up") }, "↑") : null,
        allowed ? h("button", { type: "button", class: "plain down", "aria-label": `Move ${name} down`, disabled: index === order.length - 1, onclick: () => move(index, index + 1, "down") }, "↓") : null);
      if (allowed) {
        item.addEventListener("dragstart", (event) => {
          dragged = index;
          item.classList.add("dragging");
          event.dataTransfer.effectAllowed = "move";
          event.dataTransfer.setData("text/plain", provider);
        });
        item.addEventListener("dragend", () => item.classList.remove("dragging"));
        item.addEventListener("dragover", (event) => event.preventDefault());
        item.addEventListener("drop", (event) => {
          event.preventDefault();
          if (dragged !== null) move(dragged, index, "up");
        });
      }
      return item;
    }));
  }

  draw();
  fill(view,
    h("h1", {}, "Provider order"),
    h("p", {}, "Model calls try these providers in this order. Drag a provider, or use its arrows; the order is saved at once."),
    reason ? h("p", { class: "reason", id: "order-reason" }, reason) : null,
    order.length ? list : h("p", { class: "muted" }, "No provider holds a key yet."),
    allowed ? state : null);
}
