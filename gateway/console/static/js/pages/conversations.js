// Conversations (admin): list by owner, open one, export it as JSON.

import { api } from "../api.js";
import { field, h, replace, table, when } from "../dom.js";
import { t } from "../i18n.js";

export async function render(view, ctx) {
  const [id] = ctx.params;
  if (id) return open(view, ctx, id);
  const owner = h("input", { name: "owner", placeholder: t("owner_all"), "data-testid": "owner" });
  const body = h("tbody", { "data-testid": "conversations" });
  let after = null;
  const load = async (more = false) => {
    const query = new URLSearchParams({ limit: "50" });
    if (owner.value.trim()) query.set("owner", owner.value.trim());
    if (more && after) query.set("after", after);
    const page = await api("GET", `/v1/conversations?${query}`);
    const rows = page.data.map((c) => h("tr", { dataset: { conversation: c.id } },
      h("td", { class: "mono" }, h("a", { href: `#/conversations/${encodeURIComponent(c.id)}` }, c.id)),
      h("td", {}, c.owner ?? ""),
      h("td", {}, Object.entries(c.metadata || {}).map(([k, v]) => `${k}=${v}`).join(", ")),
      h("td", {}, when(c.created_at))));
    if (more) body.append(...rows); else replace(body, rows);
    after = page.has_more ? page.last_id : null;
    moreButton.hidden = !after;
  };
  const moreButton = h("button", { class: "small", hidden: true, onclick: () => load(true).catch((e) => ctx.toast(e.message)) }, t("more"));
  replace(view, h("h1", {}, t("page_conversations")),
    h("form", { class: "card row", onsubmit: (e) => { e.preventDefault(); load().catch((err) => ctx.toast(err.message)); } },
      field(t("owner"), owner), h("button", { type: "submit" }, t("filter"))),
    h("div", { class: "card" }, table([t("conversation"), t("owner"), t("metadata"), t("created")], body), moreButton));
  await load();
}

async function open(view, ctx, id) {
  const path = `/v1/conversations/${encodeURIComponent(id)}`;
  const conversation = await api("GET", path);
  const items = (await api("GET", `${path}/items?limit=100`)).data;
  const exportButton = h("button", { "data-testid": "export", onclick: async () => {
    try {
      const record = await api("GET", `${path}/export`);
      const blob = new Blob([JSON.stringify(record, null, 2)], { type: "application/json" });
      const a = h("a", { href: URL.createObjectURL(blob), download: `${id}.json` });
      document.body.append(a);
      a.click();
      a.remove();
    } catch (err) { ctx.toast(err.message); }
  } }, t("export"));
  replace(view, h("p", {}, h("a", { href: "#/conversations" }, `← ${t("page_conversations")}`)),
    h("h1", { class: "mono" }, id),
    h("p", { class: "muted" }, `${t("owner")}: ${conversation.owner ?? ""} · ${when(conversation.created_at)}`),
    h("div", { class: "row" }, exportButton),
    h("div", { class: "card log", "data-testid": "items" }, items.map((i) => h("div", { class: `bubble ${i.role}` },
      h("div", { class: "muted small" }, i.role), h("div", { class: "text" },
        typeof i.content === "string" ? i.content : JSON.stringify(i.content))))));
}
