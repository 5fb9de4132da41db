// Keys (admin): create (the secret shown once), revoke, grants and limits.

import { api } from "../api.js";
import { field, h, replace, select, table, when } from "../dom.js";
import { t } from "../i18n.js";

const LIMITS = ["requests_per_minute", "tokens_per_minute", "max_concurrent", "tokens_per_day", "tokens_per_month"];

export async function render(view, ctx) {
  const body = h("tbody", { "data-testid": "keys" });
  const refresh = async () => {
    const keys = (await api("GET", "/admin/keys")).data;
    replace(body, keys.map((k) => h("tr", { dataset: { key: k.id, state: k.state } },
      h("td", { class: "mono" }, k.id), h("td", {}, k.owner), h("td", {}, k.team ?? ""),
      h("td", {}, t(`role_${k.role}`)),
      h("td", {}, k.models ? k.models.join(", ") : t("all_models")),
      h("td", {}, (k.knowledge_bases || []).join(", ")),
      h("td", {}, Object.entries(k.limits || {}).map(([n, v]) => `${t(n)}: ${v}`).join(", ")),
      h("td", {}, k.expires_at ? when(k.expires_at) : ""),
      h("td", {}, h("span", { class: `badge ${k.state}` }, t(`key_${k.state}`))),
      h("td", { class: "actions" }, k.state === "active" && h("button", { class: "small",
        "data-testid": "edit-key", onclick: () => edit(k) }, t("edit")),
      k.state === "active" && h("button", { class: "small danger", onclick: async () => {
        if (!confirm(t("confirm_revoke", { name: k.owner }))) return;
        try { await api("DELETE", `/admin/keys/${encodeURIComponent(k.id)}`); await refresh(); }
        catch (err) { ctx.toast(err.message); }
      } }, t("revoke"))))));
  };
  const owner = h("input", { required: true, "data-testid": "key-owner" });
  const team = h("input", {});
  const role = select([["chat", t("role_chat")], ["kb_admin", t("role_kb_admin")], ["admin", t("role_admin")]], "chat", { "data-testid": "key-role" });
  const models = h("input", { placeholder: t("comma_all") });
  const bases = h("input", { placeholder: t("comma"), "data-testid": "key-bases" });
  const days = h("input", { type: "number", min: 1, class: "narrow", placeholder: t("never") });
  const limits = Object.fromEntries(LIMITS.map((n) => [n, h("input", {
    type: "number", min: 1, class: "narrow", "data-testid": `limit-${n}` })]));
  const secret = h("div", { "data-testid": "secret" });
  const list = (input) => input.value.split(",").map((x) => x.trim()).filter(Boolean);
  const submit = h("button", { type: "submit", "data-testid": "create-key" }, t("create_key"));
  const cancel = h("button", { type: "button", class: "small", hidden: true, onclick: () => reset() }, t("cancel"));
  let editing = null; // the key being changed, or null: the form creates one
  const reset = () => {
    editing = null;
    form.reset();
    submit.textContent = t("create_key");
    cancel.hidden = true;
    days.disabled = false;
  };
  const edit = (k) => {
    editing = k.id;
    owner.value = k.owner;
    team.value = k.team ?? "";
    role.value = k.role;
    models.value = (k.models || []).join(", ");
    bases.value = (k.knowledge_bases || []).join(", ");
    for (const [n, input] of Object.entries(limits)) input.value = k.limits?.[n] ?? "";
    days.value = "";
    days.disabled = true; // expiry is kept as it is
    submit.textContent = t("save_key", { id: k.id });
    cancel.hidden = false;
    owner.focus();
  };
  const form = h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    const fields = { owner: owner.value.trim(), role: role.value, knowledge_bases: list(bases), limits: {} };
    fields.team = team.value.trim() || null;
    fields.models = list(models).length ? list(models) : null;
    for (const [n, input] of Object.entries(limits)) if (input.value) fields.limits[n] = Number(input.value);
    try {
      if (editing) {
        await api("PATCH", `/admin/keys/${encodeURIComponent(editing)}`, fields);
        ctx.toast(t("saved"), "ok");
        reset();
      } else {
        if (!fields.team) delete fields.team;
        if (!fields.models) delete fields.models;
        if (days.value) fields.expires_in_s = Number(days.value) * 86400;
        const key = await api("POST", "/admin/keys", fields);
        replace(secret, h("div", { class: "card ok" }, h("p", {}, t("secret_once")),
          h("code", { class: "secret", "data-testid": "secret-value" }, key.secret)));
      }
      await refresh();
    } catch (err) { ctx.toast(err.message); }
  } },
  h("div", { class: "row" }, field(t("owner"), owner), field(t("team"), team), field(t("role"), role),
    field(t("models"), models), field(t("knowledge_bases"), bases), field(t("expires_days"), days)),
  h("div", { class: "row" }, LIMITS.map((n) => field(t(n), limits[n]))),
  h("div", { class: "row" }, submit, cancel));
  replace(view, h("h1", {}, t("page_keys")), form, secret,
    h("div", { class: "card" }, table([t("id"), t("owner"), t("team"), t("role"), t("models"),
      t("knowledge_bases"), t("limits"), t("expires"), t("state"), ""], body)));
  await refresh();
}
