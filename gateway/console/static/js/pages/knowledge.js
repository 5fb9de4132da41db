// Knowledge bases: the list, one base (upload with a status per file, documents, chunks),
// and the search playground.

import { api, upload } from "../api.js";
import { bytes, field, h, replace, select, table, when } from "../dom.js";
import { t } from "../i18n.js";

const FINAL = new Set(["indexed", "unchanged", "duplicate", "failed"]);

export async function render(view, ctx) {
  const [name, tab] = ctx.params;
  if (name) return base(view, ctx, name, tab || "documents");
  return list(view, ctx);
}

async function list(view, ctx) {
  const admin = ctx.me.role === "admin";
  const body = h("tbody");
  const refresh = async () => {
    const bases = (await api("GET", "/v1/knowledge_bases")).data;
    replace(body, bases.length ? bases.map((b) => h("tr", { dataset: { kb: b.name } },
      h("td", {}, h("a", { href: `#/knowledge/${encodeURIComponent(b.name)}` }, b.name)),
      h("td", { class: "num" }, b.documents),
      h("td", { class: "num" }, b.chunks),
      h("td", { class: "mono" }, b.embedding_model),
      h("td", {}, b.index_kind),
      h("td", { class: "num" }, bytes(b.size_bytes)),
      h("td", {}, when(b.updated_at)),
      h("td", {}, admin && h("button", { class: "danger small", "data-testid": `delete-${b.name}`,
        onclick: async () => {
          if (!confirm(t("confirm_delete_kb", { name: b.name }))) return;
          try { await api("DELETE", `/v1/knowledge_bases/${encodeURIComponent(b.name)}`); await refresh(); }
          catch (err) { ctx.toast(err.message); }
        } }, t("delete"))))) : h("tr", {}, h("td", { colspan: 8, class: "muted" }, t("no_kbs"))));
  };
  const heading = h("h1", {}, t("page_knowledge"));
  const parts = [heading];
  if (admin) parts.push(createForm(ctx, refresh));
  parts.push(h("div", { class: "card" }, h("table", { "data-testid": "kb-list" },
    h("thead", {}, h("tr", {}, [t("name"), t("documents"), t("chunks"), t("embedding_model"),
      t("index_kind"), t("size"), t("updated"), ""].map((x) => h("th", {}, x)))), body)));
  replace(view, ...parts);
  await refresh();
}

function createForm(ctx, refresh) {
  const name = h("input", { name: "name", required: true, pattern: "[A-Za-z0-9_\\-]{1,64}",
    "data-testid": "kb-name" });
  const kind = select([["flat", "flat"], ["hnsw", "HNSW"], ["ivf", "IVF"]], "flat");
  const ocr = select([["auto", t("ocr_auto")], ["always", t("ocr_always")], ["never", t("ocr_never")]], "auto");
  const model = h("input", { name: "embedding_model", placeholder: t("embedding_default") });
  return h("form", { class: "card row", "data-testid": "kb-create", onsubmit: async (e) => {
    e.preventDefault();
    const body = { name: name.value.trim(), index_kind: kind.value, ocr: ocr.value };
    if (model.value.trim()) body.embedding_model = model.value.trim();
    try {
      await api("POST", "/v1/knowledge_bases", body);
      ctx.toast(t("kb_created", { name: body.name }), "ok");
      ctx.go(`#/knowledge/${encodeURIComponent(body.name)}`);
    } catch (err) { ctx.toast(err.message); }
    await refresh();
  } },
  field(t("name"), name), field(t("index_kind"), kind), field(t("ocr"), ocr),
  field(t("embedding_model"), model),
  h("button", { type: "submit" }, t("create")));
}

async function base(view, ctx, name, tab) {
  const path = `/v1/knowledge_bases/${encodeURIComponent(name)}`;
  const info = await api("GET", path);
  const tabs = ["documents", "upload", "search"].map((id) => h("a", {
    href: `#/knowledge/${encodeURIComponent(name)}/${id}`, class: id === tab ? "active" : "",
    "data-testid": `tab-${id}`,
  }, t(`tab_${id}`)));
  const content = h("div");
  replace(view,
    h("p", {}, h("a", { href: "#/knowledge" }, `← ${t("page_knowledge")}`)),
    h("h1", {}, name),
    h("p", { class: "muted" }, `${t("embedding_model")}: ${info.embedding_model} · ${t("index_kind")}: ${info.index_kind} · ` +
      `${t("documents")}: ${info.documents} · ${t("chunks")}: ${info.chunks} · OCR: ${info.ocr} · v${info.version}`),
    h("nav", { class: "tabs" }, tabs), content);
  if (tab === "upload") return uploader(content, ctx, path);
  if (tab === "search") return playground(content, ctx, name, path);
  if (tab === "chunks") return chunkViewer(content, ctx, path, ctx.params[2]);
  return documents(content, ctx, name, path);
}

async function documents(box, ctx, name, path) {
  const docs = (await api("GET", `${path}/documents`)).data;
  const reindex = h("input", { type: "file", hidden: true });
  let target = null;
  reindex.addEventListener("change", async () => {
    // a file with a document's name replaces it: that is re-indexing a changed file
    const file = reindex.files[0];
    if (!file) return;
    const renamed = new File([file], target, { type: file.type });
    try {
      await upload(`${path}/documents`, [renamed], () => {});
      ctx.go(`#/knowledge/${encodeURIComponent(name)}/upload`);
    } catch (err) { ctx.toast(err.message); }
  });
  const rows = docs.map((d) => h("tr", { dataset: { doc: d.source } },
    h("td", {}, h("a", { href: `#/knowledge/${encodeURIComponent(name)}/chunks/${encodeURIComponent(d.source)}` }, d.source)),
    h("td", { class: "num" }, d.pages ?? ""),
    h("td", { class: "num" }, d.chunks),
    h("td", {}, when(d.added_at || d.updated_at)),
    h("td", { class: "actions" },
      h("button", { class: "small", onclick: () => { target = d.source; reindex.click(); } }, t("reindex")),
      h("button", { class: "small danger", onclick: async () => {
        if (!confirm(t("confirm_delete_doc", { name: d.source }))) return;
        try { await api("DELETE", `${path}/documents/${encodeURIComponent(d.source)}`); await documents(box, ctx, name, path); }
        catch (err) { ctx.toast(err.message); }
      } }, t("delete")))));
  const actions = [];
  if (ctx.me.role === "admin") {
    actions.push(h("button", { class: "small", onclick: async () => {
      try { await api("POST", `${path}/rebuild`, {}); ctx.toast(t("rebuilt"), "ok"); }
      catch (err) { ctx.toast(err.message); }
    } }, t("rebuild")));
  }
  replace(box, h("div", { class: "card" }, reindex, h("div", { class: "row" }, actions),
    table([t("document"), t("pages"), t("chunks"), t("updated"), ""],
      rows.length ? rows : h("tr", {}, h("td", { colspan: 5, class: "muted" }, t("no_documents"))),
      { "data-testid": "documents" })));
}

function uploader(box, ctx, path) {
  const input = h("input", { type: "file", multiple: true, "data-testid": "files" });
  const drop = h("div", { class: "drop", "data-testid": "drop" }, t("drop_here"), h("br"), input);
  const overall = h("progress", { max: 1, value: 0, "data-testid": "overall" });
  const summary = h("p", { class: "muted", "data-testid": "job-summary" });
  const rows = h("tbody", { "data-testid": "file-status" });
  const retry = h("button", { type: "button", class: "small", hidden: true, "data-testid": "retry" });
  let timer = null;
  let chosen = [];
  const start = async (files) => {
    if (!files.length) return;
    chosen = [...files];
    retry.hidden = true;
    replace(rows, [...files].map((f) => fileRow(f.name, "uploading")));
    summary.textContent = t("uploading");
    try {
      const job = await upload(`${path}/documents`, files, (share) => { overall.value = share * 0.1; });
      follow(job.job_id);
    } catch (err) {
      offerRetry(chosen);
      replace(rows, [...files].map((f) => fileRow(f.name, "failed", err.message)));
      summary.textContent = err.message;
    }
  };
  const follow = (jobId) => {
    const poll = async () => {
      try {
        const job = await api("GET", `/v1/knowledge_bases/jobs/${encodeURIComponent(jobId)}`);
        replace(rows, job.files.map((f) => fileRow(f.source, f.stage, f.reason, f)));
        const done = job.files.filter((f) => FINAL.has(f.stage)).length;
        overall.value = 0.1 + 0.9 * (job.files_total ? done / job.files_total : 0);
        summary.textContent = t("job_summary", { status: t(`status_${job.status}`), done,
          total: job.files_total, pages: job.pages_done, chunks: job.chunks_total }) +
          (job.message ? ` — ${job.message}` : "");
        summary.dataset.status = job.status;
        if (job.status === "done" || job.status === "failed") {
          overall.value = 1;
          const failed = new Set(job.files.filter((f) => f.stage === "failed").map((f) => f.source));
          offerRetry(chosen.filter((f) => failed.has(f.name)));
          return;
        }
      } catch (err) { ctx.toast(err.message); return; }
      timer = setTimeout(poll, 400);
    };
    poll();
  };
  // the files the browser still holds: a failed one goes again, alone, without choosing it
  const offerRetry = (files) => {
    retry.hidden = !files.length;
    retry.textContent = t("retry_failed", { n: files.length });
    retry.onclick = () => start(files);
  };
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    start(e.dataTransfer.files);
  });
  input.addEventListener("change", () => start(input.files));
  replace(box, h("div", { class: "card" }, drop, overall, summary, retry,
    table([t("file"), t("stage"), t("pages"), t("chunks"), t("reason")], rows)));
  return () => clearTimeout(timer);
}

function fileRow(name, stage, reason = "", f = {}) {
  return h("tr", { dataset: { file: name, stage } },
    h("td", {}, name),
    h("td", {}, h("span", { class: `badge ${stage}` }, t(`stage_${stage}`))),
    h("td", { class: "num" }, f.pages || ""),
    h("td", { class: "num" }, f.chunks || ""),
    h("td", { class: "error" }, reason || ""));
}

async function chunkViewer(box, ctx, path, source, offset = 0) {
  const limit = 50;
  const page = await api("GET", `${path}/documents/${encodeURIComponent(source)}/chunks?offset=${offset}&limit=${limit}`);
  const more = [];
  if (offset > 0) more.push(h("button", { class: "small", onclick: () => chunkViewer(box, ctx, path, source, Math.max(0, offset - limit)) }, t("previous")));
  if (offset + limit < page.total) more.push(h("button", { class: "small", onclick: () => chunkViewer(box, ctx, path, source, offset + limit) }, t("next")));
  replace(box, h("div", { class: "card" },
    h("h2", {}, source),
    h("p", { class: "muted" }, t("chunks_of", { from: offset + 1, to: Math.min(offset + limit, page.total), total: page.total })),
    page.data.map((c) => h("article", { class: "chunk", id: `chunk-${c.chunk_id}`, dataset: { chunk: c.chunk_id } },
      h("header", {}, `#${c.ordinal} · ${t("page")} ${c.page ?? "–"} · ${c.start}–${c.end}`),
      h("pre", {}, c.text))),
    h("div", { class: "row" }, more)));
}

export async function playground(box, ctx, name, path) {
  const query = h("input", { name: "query", required: true, "data-testid": "query", class: "grow" });
  const mode = select([["hybrid", t("mode_hybrid")], ["dense", t("mode_dense")], ["lexical", t("mode_lexical")]], "hybrid");
  const topK = h("input", { type: "number", min: 1, max: 100, value: 5, class: "narrow" });
  const threshold = h("input", { type: "number", min: 0, step: "0.01", placeholder: t("threshold_default"), class: "narrow" });
  const models = (await api("GET", "/v1/models")).data.map((m) => [m.id, m.id]);
  const model = select([["", t("no_model")], ...models], models[0]?.[0] || "");
  const results = h("div", { "data-testid": "results" });
  const injectedBox = h("div");
  const form = h("form", { class: "card row", onsubmit: async (e) => {
    e.preventDefault();
    const body = { query: query.value, mode: mode.value, top_k: Number(topK.value) || 5 };
    if (threshold.value !== "") body.score_threshold = Number(threshold.value);
    if (model.value) body.model = model.value;
    try {
      const answer = await api("POST", `${path}/search`, body);
      replace(results, answer.data.length ? answer.data.map((hit, i) => hitCard(hit, i, name)) :
        h("p", { class: "muted", "data-testid": "no-hits" }, t("no_hits")));
      replace(injectedBox, answer.injected ? h("div", { class: "card", "data-testid": "injected" },
        h("h2", {}, t("injected", { tokens: answer.injected.tokens, reserve: answer.injected.reserve_tokens, mode: answer.injected.mode })),
        h("pre", {}, answer.injected.text || t("nothing_injected"))) : "");
    } catch (err) { ctx.toast(err.message); }
  } },
  field(t("query"), query), field(t("mode"), mode), field("top-k", topK),
  field(t("threshold"), threshold), field(t("token_count_for"), model),
  h("button", { type: "submit", "data-testid": "search" }, t("search")));
  replace(box, form, results, injectedBox);
}

function hitCard(hit, i, name) {
  const score = (x) => (x === null || x === undefined ? "–" : x.toFixed(3));
  const link = `#/knowledge/${encodeURIComponent(name)}/chunks/${encodeURIComponent(hit.document)}`;
  return h("article", { class: "card hit", dataset: { document: hit.document, page: hit.page ?? "" } },
    h("header", {}, `[${i + 1}] `, h("a", { href: link }, hit.document),
      h("span", { class: "page", "data-testid": "hit-page" }, ` · ${t("page")} ${hit.page ?? "–"}`),
      h("span", { class: "scores" }, ` · ${t("fused")} ${score(hit.score)} · ${t("dense")} ${score(hit.dense_score)} · ${t("lexical")} ${score(hit.lexical_score)}`)),
    h("pre", {}, hit.text));
}
