// Chat playground: model, persona, knowledge base, streaming; the sources of each reply
// (a citation opens its chunk), its tokens, cached tokens, predicted prefix reuse and the
// backend that answered; the same request as curl and as the openai SDK.

import { api, chat } from "../api.js";
import { field, h, replace, select } from "../dom.js";
import { t } from "../i18n.js";

export async function render(view, ctx) {
  const models = (await api("GET", "/v1/models")).data.map((m) => m.id);
  const bases = ctx.me.knowledge_bases ?? (ctx.me.features.knowledge
    ? (await api("GET", "/v1/knowledge_bases").catch(() => ({ data: [] }))).data.map((b) => b.name) : []);
  const model = select(models.map((m) => [m, m]), models[0], { "data-testid": "model" });
  const base = select([["", t("no_kb")], ...bases.map((b) => [b, b])], "", { "data-testid": "kb" });
  const stream = h("input", { type: "checkbox", checked: true, "data-testid": "stream" });
  const persona = h("textarea", { rows: 3, placeholder: t("persona_placeholder"), "data-testid": "persona" });
  const personaFrom = h("select", { "data-testid": "persona-from" }, h("option", { value: "" }, t("persona_from")));
  const log = h("div", { class: "log", "data-testid": "log" });
  const sources = h("div", { class: "sources", "data-testid": "sources" }, h("p", { class: "muted" }, t("sources_none")));
  const snippet = h("pre", { class: "snippet", "data-testid": "snippet" });
  const input = h("textarea", { rows: 2, required: true, placeholder: t("message_placeholder"), "data-testid": "message" });
  const send = h("button", { type: "submit", "data-testid": "send" }, t("send"));
  const history = [];
  let controller = null;

  conversationsFor(ctx).then((list) => {
    for (const c of list) personaFrom.append(h("option", { value: c.id }, c.metadata?.title || c.id));
  });
  personaFrom.addEventListener("change", async () => {
    if (!personaFrom.value) return;
    try {
      const items = (await api("GET", `/v1/conversations/${encodeURIComponent(personaFrom.value)}/items?limit=20`)).data;
      const system = items.find((i) => i.role === "system");
      persona.value = system ? text(system.content) : "";
      if (!system) ctx.toast(t("persona_missing"), "ok");
    } catch (err) { ctx.toast(err.message); }
  });

  const request = () => {
    const messages = [];
    if (persona.value.trim()) messages.push({ role: "system", content: persona.value.trim() });
    messages.push(...history);
    const body = { model: model.value, messages, stream: stream.checked };
    if (stream.checked) body.stream_options = { include_usage: true };
    if (base.value) body.ragate = { knowledge_base: base.value };
    return body;
  };
  const showSnippet = () => {
    const body = request();
    if (!history.length || history[history.length - 1].role !== "user") {
      body.messages = [...body.messages, { role: "user", content: input.value || "…" }];
    }
    snippet.textContent = snippets(body);
  };
  [model, base, stream, persona, input].forEach((el) => el.addEventListener("input", showSnippet));

  const form = h("form", { class: "compose", onsubmit: async (e) => {
    e.preventDefault();
    if (controller) { controller.abort(); return; }
    const content = input.value.trim();
    if (!content) return;
    history.push({ role: "user", content });
    log.append(bubble("user", content));
    input.value = "";
    const reply = bubble("assistant", "");
    const meta = h("div", { class: "meta", "data-testid": "reply-meta" });
    reply.append(meta);
    log.append(reply);
    const body = request();
    let answer = "";
    let usage = null;
    let found = null;
    controller = new AbortController();
    send.textContent = t("stop");
    try {
      const headers = await chat(body, (event) => {
        if (event.ragate?.sources) found = event.ragate.sources;
        if (event.usage) usage = event.usage;
        for (const choice of event.choices || []) {
          const piece = choice.delta?.content ?? choice.message?.content ?? "";
          if (piece) { answer += piece; reply.firstChild.textContent = answer; }
        }
        log.scrollTop = log.scrollHeight;
      }, controller.signal);
      history.push({ role: "assistant", content: answer });
      replace(meta, facts(usage, headers));
      showSources(sources, found, ctx);
    } catch (err) {
      reply.classList.add("failed");
      reply.firstChild.textContent = answer || err.message;
      if (err.name !== "AbortError") ctx.toast(err.message);
      history.pop();
    } finally {
      controller = null;
      send.textContent = t("send");
      showSnippet();
    }
  } }, input, send);

  replace(view, h("h1", {}, t("page_chat")),
    h("div", { class: "card row" }, field(t("model"), model), field(t("knowledge_base"), base),
      h("label", { class: "check" }, stream, t("stream")), field(t("persona"), personaFrom)),
    h("div", { class: "card" }, field(t("system_prompt"), persona)),
    h("div", { class: "chat" }, h("div", { class: "card" }, log, form),
      h("aside", { class: "card" }, h("h2", {}, t("sources")), sources)),
    h("details", { class: "card" }, h("summary", {}, t("as_code")), snippet,
      h("button", { type: "button", class: "small", onclick: () => navigator.clipboard?.writeText(snippet.textContent) }, t("copy"))));
  showSnippet();
  return () => controller?.abort();
}

async function conversationsFor(ctx) {
  try { return (await api("GET", "/v1/conversations?limit=50")).data; } catch { return []; }
}

function text(content) {
  if (typeof content === "string") return content;
  return (content || []).map((part) => part.text || "").join("");
}

function bubble(role, content) {
  return h("div", { class: `bubble ${role}`, dataset: { role } }, h("div", { class: "text" }, content));
}

function facts(usage, headers) {
  const cached = usage?.prompt_tokens_details?.cached_tokens;
  const parts = [];
  if (usage) parts.push(t("tokens_line", { prompt: usage.prompt_tokens, completion: usage.completion_tokens }));
  if (cached !== undefined && cached !== null) parts.push(t("cached_line", { cached }));
  const reuse = headers.get("x-ragate-prefix-reuse");
  if (reuse) parts.push(t("reuse_line", { reuse }));
  const backend = headers.get("x-ragate-backend");
  if (backend) parts.push(h("span", { "data-testid": "answered-by" }, t("backend_line", { backend })));
  return parts.map((p, i) => [i ? " · " : "", p]);
}

function showSources(box, found, ctx) {
  if (!found || !found.length) {
    replace(box, h("p", { class: "muted", "data-testid": "no-sources" }, t("sources_none")));
    return;
  }
  const canOpen = ctx.me.role !== "chat";
  replace(box, found.map((s, i) => h("article", { class: "source", dataset: { document: s.document } },
    h("header", {}, `[${i + 1}] `,
      canOpen ? h("a", { href: `#/knowledge/${encodeURIComponent(s.knowledge_base)}/chunks/${encodeURIComponent(s.document)}` }, s.document) : s.document,
      ` · ${t("page")} ${s.page ?? "–"} · ${s.score.toFixed(3)}`),
    h("details", {}, h("summary", {}, t("show_text")), h("pre", {}, s.text)))));
}

function snippets(body) {
  const json = JSON.stringify(body, null, 2);
  const origin = location.origin;
  const curl = `curl ${origin}/v1/chat/completions \\\n  -H "Authorization: Bearer $RAGATE_KEY" \\\n` +
    `  -H "Content-Type: application/json" \\\n  -d '${json.replaceAll("'", "'\\''")}'`;
  const { model, messages, stream, ragate, stream_options: options } = body;
  const extra = ragate ? `,\n    extra_body={"ragate": ${JSON.stringify(ragate)}}` : "";
  const py = `from openai import OpenAI\n\nclient = OpenAI(base_url="${origin}/v1", api_key=os.environ["RAGATE_KEY"])\n` +
    `reply = client.chat.completions.create(\n    model=${JSON.stringify(model)},\n` +
    `    messages=${JSON.stringify(messages)},\n    stream=${stream ? "True" : "False"}` +
    (options ? `,\n    stream_options={"include_usage": True}` : "") + `${extra},\n)`;
  return `# curl\n${curl}\n\n# Python (openai)\nimport os\n${py}\n`;
}
