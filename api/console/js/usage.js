// The usage cockpit: calls, tokens and cost per day stacked by provider, breakdowns by model and
// by key source, the platform quota and cost cap with this month's use, and the latest calls.

import * as api from "./api.js";
import { h, fill, field, when, usd, count, table } from "./dom.js";
import { planRules } from "./org.js";

const COLOURS = ["#2451b7", "#d9822b", "#17733a", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#b7950b", "#34495e", "#e84393"];
const METRICS = {
  calls: { name: "Calls", of: (r) => r.calls, show: count },
  tokens: { name: "Tokens", of: (r) => r.input_tokens + r.output_tokens, show: count },
  cost: { name: "Cost (USD)", of: (r) => r.cost_usd, show: usd },
};

const day = (date) => date.toISOString().slice(0, 10);

function daysBetween(from, to) {
  const days = [];
  for (let d = new Date(`${from}T00:00:00Z`); day(d) <= to; d.setUTCDate(d.getUTCDate() + 1)) days.push(day(d));
  return days;
}

export async function render(ctx, view) {
  const today = new Date();
  // The last 30 days: on the first of a month, "this month" would be a single bar.
  const monthAgo = new Date(today.getTime() - 29 * 86400000);
  const from = h("input", { id: "usage-from", type: "date", value: day(monthAgo) });
  const to = h("input", { id: "usage-to", type: "date", value: day(today) });
  const metric = h("select", { id: "usage-metric" }, Object.entries(METRICS).map(([id, m]) => h("option", { value: id }, m.name)));
  const out = h("div", { id: "usage" });
  const form = h("form", { class: "row card" },
    field("From", from),
    field("To", to),
    field("Chart", metric),
    h("button", { type: "submit" }, "Show"));
  const show = () => draw(ctx, out, from.value, to.value, metric.value).catch((e) => fill(out, h("p", { class: "error" }, e.message)));
  form.addEventListener("submit", (event) => { event.preventDefault(); show(); });
  metric.addEventListener("change", show);
  fill(view, h("h1", {}, "Usage"), form, out);
  await draw(ctx, out, from.value, to.value, metric.value);
}

async function draw(ctx, out, from, to, metricId) {
  const base = `${api.org(ctx.org)}/usage`;
  const monthStart = `${day(new Date()).slice(0, 8)}01`;
  const [daily, models, sources, month, status, calls] = await Promise.all([
    api.get(`${base}?from=${from}&to=${to}&group_by=day,provider`),
    api.get(`${base}?from=${from}&to=${to}&group_by=model,provider`),
    api.get(`${base}?from=${from}&to=${to}&group_by=key_source`),
    api.get(`${base}?from=${monthStart}&group_by=key_source`),
    api.get(api.org(ctx.org)),
    api.get(`${base}/calls?limit=20`),
  ]);
  const chart = h("div", { class: "chart card", id: "usage-chart", role: "img",
    "aria-label": `${METRICS[metricId].name} per day from ${from} to ${to}, stacked by provider` });
  const totals = daily.totals;
  fill(out,
    h("section", { class: "card facts", "aria-label": "Totals" },
      h("div", {}, h("span", {}, "Calls"), h("strong", { id: "total-calls" }, count(totals.calls))),
      h("div", {}, h("span", {}, "Input tokens"), h("strong", { id: "total-input" }, count(totals.input_tokens))),
      h("div", {}, h("span", {}, "Output tokens"), h("strong", { id: "total-output" }, count(totals.output_tokens))),
      h("div", {}, h("span", {}, "Cost"), h("strong", { id: "total-cost" }, usd(totals.cost_usd)))),
    chart,
    gauges(ctx, status, month.rows.find((r) => r.key_source === "platform")),
    h("h2", {}, "By model"),
    table("Usage by model in the range", [["Provider"], ["Model"], ["Calls", "num"], ["Tokens", "num"], ["Cost", "num"]],
      models.rows.map((r) => [ctx.providerName(r.provider), r.model, count(r.calls), count(r.input_tokens + r.output_tokens), usd(r.cost_usd)])),
    h("h2", {}, "By key source"),
    table("Usage by key source in the range", [["Key"], ["Calls", "num"], ["Tokens", "num"], ["Cost", "num"]],
      sources.rows.map((r) => [r.key_source === "byok" ? "Own key (BYOK)" : "Platform key", count(r.calls), count(r.input_tokens + r.output_tokens), usd(r.cost_usd)])),
    h("h2", {}, "Latest calls"),
    table("The 20 most recent calls", [["When"], ["Provider"], ["Model"], ["Key"], ["Tokens in", "num"], ["Tokens out", "num"], ["Cost", "num"], ["Request"]],
      calls.calls.map((c) => [when(c.at), ctx.providerName(c.provider), c.model, c.key_source === "byok" ? `own v${c.key_version ?? "?"}` : "platform",
        count(c.input_tokens), count(c.output_tokens), usd(c.cost_usd), h("span", { class: "mono" }, c.request_id)]), "No calls yet."));
  plot(ctx, chart, daily.rows, from, to, METRICS[metricId]);
}

function gauges(ctx, status, platform = { calls: 0, cost_usd: 0 }) {
  const rules = planRules(ctx, status.plan);
  if (!rules) return null;
  const gauge = (id, label, used, limit, show) => h("div", { class: "gauge" },
    field(`${label}: ${show(used)} of ${show(limit)}`,
      h("meter", { id, min: 0, max: limit, low: limit * 0.8, high: limit * 0.95, optimum: 0, value: Math.min(used, limit) }, `${show(used)} of ${show(limit)}`)));
  return h("section", { class: "card", "aria-labelledby": "gauges-title" },
    h("h2", { id: "gauges-title" }, `Platform key this month (plan ${status.plan})`),
    h("div", { class: "gauges" },
      gauge("quota", "Calls", platform.calls, rules.monthly_platform_queries, count),
      gauge("cost-cap", "Cost", platform.cost_usd, rules.monthly_platform_cost_cap_usd, usd)));
}

function plot(ctx, element, rows, from, to, metric) {
  const days = daysBetween(from, to);
  const providers = [...new Set(rows.map((r) => r.provider))];
  const own = providers.map((p) => days.map((d) => {
    const row = rows.find((r) => r.day === d && r.provider === p);
    return row ? metric.of(row) : 0;
  }));
  if (typeof uPlot === "undefined" || days.length === 0) return;
  // Stacked: each series is its provider plus every provider below it, drawn tallest first.
  const stacked = own.map((_, i) => days.map((__, d) => own.slice(0, i + 1).reduce((sum, s) => sum + s[d], 0)));
  const order = providers.map((_, i) => i).reverse();
  const bars = uPlot.paths.bars({ size: [0.7, 48] });
  const options = {
    width: Math.max(320, element.clientWidth - 32),
    height: 280,
    // Half a day either side, so the first and last bars are whole; counts start at zero.
    scales: {
      x: { time: true, range: (u, min, max) => [min - 43200, max + 43200] },
      y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] },
    },
    series: [{ label: "Day", value: (u, v) => (v === null ? "—" : day(new Date(v * 1000))) },
      ...order.map((i) => ({
        label: ctx.providerName(providers[i]),
        fill: COLOURS[i % COLOURS.length],
        stroke: COLOURS[i % COLOURS.length],
        paths: bars,
        points: { show: false },
        value: (u, v, s, idx) => (idx === null || idx === undefined ? "—" : metric.show(own[i][idx])),
      }))],
    axes: [{}, { values: (u, ticks) => ticks.map((t) => metric.show(t)) , size: 70 }],
  };
  const data = [days.map((d) => Date.parse(`${d}T12:00:00Z`) / 1000), ...order.map((i) => stacked[i])];
  element.replaceChildren();
  // eslint-disable-next-line no-new
  new uPlot(options, data, element);
}
