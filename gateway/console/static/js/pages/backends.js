// Backends: health, breaker, load, models and adapters, last error, TTFT; drain, undrain,
// remove, add. Refreshed every two seconds while shown.

import { api } from "../api.js";
import { field, h, replace, select, table } from "../dom.js";
import { t } from "../i18n.js";

export async function render(view, ctx) {
  const body = h("tbody", { "data-testid": "backends" });
  const act = (verb, name) => async () => {
    try {
      if (verb === "remove") {
        if (!confirm(t("confirm_remove_backend", { name }))) return;
        await api("DELETE", `/admin/backends/${encodeURIComponent(name)}`);
      } else {
        await api("POST", `/admin/backends/${encodeURIComponent(name)}/${verb}`);
      }
      await refresh();
    } catch (err) { ctx.toast(err.message); }
  };
  const refresh = async () => {
    const backends = (await api("GET", "/admin/backends")).data;
    replace(body, backends.map((b) => h("tr", { dataset: { backend: b.name, state: b.state } },
      h("td", { class: "mono" }, b.name, h("div", { class: "muted small" }, b.url)),
      h("td", {}, b.kind),
      h("td", {}, h("span", { class: `badge ${b.state}`, "data-testid": "state" }, t(`state_${b.state}`, {}, b.state))),
      h("td", {}, b.breaker),
      h("td", { class: "num" }, b.in_flight),
      h("td", { class: "num" }, b.waiting),
      h("td", {}, b.models.join(", ")),
      h("td", {}, b.adapters.join(", ")),
      h("td", { class: "num" }, b.ttft_ms === null ? "–" : `${b.ttft_ms} ms`),
      h("td", { class: "error small" }, b.last_error || ""),
      h("td", { class: "actions" },
        b.draining
          ? h("button", { class: "small", "data-testid": "undrain", onclick: act("undrain", b.name) }, t("undrain"))
          : h("button", { class: "small", "data-testid": "drain", onclick: act("drain", b.name) }, t("drain")),
        h("button", { class: "small danger", onclick: act("remove", b.name) }, t("remove"))))));
  };
  const model = h("input", { required: true, placeholder: "model" });
  const url = h("input", { required: true, type: "url", placeholder: "http://127.0.0.1:8000" });
  const kind = select(["openai", "vllm", "sglang", "llamacpp"].map((k) => [k, k]), "vllm");
  const upstream = h("input", { placeholder: t("upstream_model") });
  const add = h("form", { class: "card row", onsubmit: async (e) => {
    e.preventDefault();
    const backend = { url: url.value.trim(), kind: kind.value };
    if (upstream.value.trim()) backend.model = upstream.value.trim();
    try {
      await api("POST", "/admin/backends", { model: model.value.trim(), backend });
      await refresh();
    } catch (err) { ctx.toast(err.message); }
  } }, field(t("model"), model), field("URL", url), field(t("kind"), kind),
  field(t("upstream_model"), upstream), h("button", { type: "submit" }, t("add")));
  replace(view, h("h1", {}, t("page_backends")),
    h("div", { class: "card" }, table([t("backend"), t("kind"), t("state"), t("breaker"),
      t("in_flight"), t("queued"), t("models"), t("adapters"), "TTFT", t("last_error"), ""], body)),
    h("h2", {}, t("add_backend")), add);
  await refresh();
  const timer = setInterval(() => refresh().catch((err) => ctx.toast(err.message)), 2000);
  return () => clearInterval(timer);
}
