// Usage: tokens per day (prompt, of it cached, and completion) as a chart, and totals per
// team, key or model. Admins see everyone; other keys their own.

import { api } from "../api.js";
import { field, h, replace, select, table } from "../dom.js";
import { t } from "../i18n.js";

const SVG = "http://www.w3.org/2000/svg";

export async function render(view, ctx) {
  const admin = ctx.me.role === "admin";
  const days = select([["7", "7"], ["30", "30"], ["90", "90"]], "30");
  const by = select([["team", t("team")], ["owner", t("owner")], ["key_id", t("key")], ["model", t("model")]], "team");
  const chartBox = h("div", { class: "card", "data-testid": "usage-chart" });
  const totals = h("div", { class: "card" });
  const load = async () => {
    let perDay, rows;
    if (admin) {
      perDay = (await api("GET", `/admin/usage?days=${days.value}&group_by=day`)).data;
      rows = (await api("GET", `/admin/usage?days=${days.value}&group_by=${by.value}`)).data;
    } else {
      const own = await api("GET", `/v1/usage?days=${days.value}`);
      perDay = own.by_day;
      rows = own.by_model;
    }
    replace(chartBox, h("h2", {}, t("usage_chart")), chart(filled(perDay, Number(days.value))),
      h("p", { class: "legend" }, h("span", { class: "sw cached" }), t("cached"), " ",
        h("span", { class: "sw prompt" }, ""), t("prompt_uncached"), " ",
        h("span", { class: "sw completion" }), t("completion")));
    const key = admin ? by.value : "model";
    replace(totals, table([t(key === "key_id" ? "key" : key), t("requests"), t("errors"), t("prompt"), t("cached"),
      t("completion"), t("cached_share")], rows.map((r) => h("tr", {},
      h("td", { class: "mono" }, r[key]), h("td", { class: "num" }, r.requests), h("td", { class: "num" }, r.errors),
      h("td", { class: "num" }, r.prompt_tokens), h("td", { class: "num" }, r.cached_tokens),
      h("td", { class: "num" }, r.completion_tokens),
      h("td", { class: "num" }, r.prompt_tokens ? `${Math.round((100 * r.cached_tokens) / r.prompt_tokens)} %` : "–")))));
  };
  const controls = [field(t("days"), days)];
  if (admin) controls.push(field(t("group_by"), by));
  [days, by].forEach((el) => el.addEventListener("change", () => load().catch((err) => ctx.toast(err.message))));
  replace(view, h("h1", {}, t("page_usage")), h("div", { class: "card row" }, controls), chartBox, totals);
  await load();
}

function filled(perDay, days) {
  // every day in the range, zero where nothing was used, so the bars line up with dates
  const byDay = new Map(perDay.map((d) => [d.day, d]));
  const out = [];
  for (let i = days - 1; i >= 0; i -= 1) {
    const day = new Date(Date.now() - i * 86400000).toISOString().slice(0, 10);
    out.push(byDay.get(day) || { day, prompt_tokens: 0, cached_tokens: 0, completion_tokens: 0 });
  }
  return out;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  el.append(...children);
  return el;
}

function chart(days) {
  const width = 720, height = 200, pad = 30;
  const max = Math.max(1, ...days.map((d) => d.prompt_tokens + d.completion_tokens));
  const step = (width - pad) / days.length;
  const y = (v) => ((height - pad) * v) / max;
  const bars = days.flatMap((d, i) => {
    const x = pad + i * step + 1;
    const w = Math.max(1, step - 2);
    const cached = y(d.cached_tokens), prompt = y(d.prompt_tokens - d.cached_tokens), completion = y(d.completion_tokens);
    const base = height - pad;
    const title = `${d.day}: ${d.prompt_tokens} + ${d.completion_tokens} (${d.cached_tokens} ${t("cached")})`;
    return [
      svg("rect", { x, y: base - cached, width: w, height: cached, class: "cached" }, svg("title", {}, title)),
      svg("rect", { x, y: base - cached - prompt, width: w, height: prompt, class: "prompt" }, svg("title", {}, title)),
      svg("rect", { x, y: base - cached - prompt - completion, width: w, height: completion, class: "completion" }, svg("title", {}, title)),
    ];
  });
  const labels = [0, Math.floor(days.length / 2), days.length - 1].map((i) =>
    svg("text", { x: pad + i * step, y: height - 10, class: "axis" }, days[i].day.slice(5)));
  return svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" },
    svg("text", { x: 0, y: 12, class: "axis" }, String(max)), ...bars, ...labels);
}
