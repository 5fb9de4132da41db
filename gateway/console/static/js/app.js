// The console's shell: sign-in, the pages a key's role may see, a hash router, the
// language switch. Each page module exports render(view, ctx) and may return a function
// that stops what it started (polling).

import { api, ApiError, session } from "./api.js";
import { h, replace } from "./dom.js";
import { applyStatic, lang, setLang, t } from "./i18n.js";
import * as backends from "./pages/backends.js";
import * as chat from "./pages/chat.js";
import * as conversations from "./pages/conversations.js";
import * as keys from "./pages/keys.js";
import * as knowledge from "./pages/knowledge.js";
import * as usage from "./pages/usage.js";

const ALL = ["admin", "kb_admin", "chat"];
const PAGES = [
  { id: "knowledge", roles: ["admin", "kb_admin"], feature: "knowledge", module: knowledge },
  { id: "chat", roles: ALL, module: chat },
  { id: "backends", roles: ["admin"], module: backends },
  { id: "conversations", roles: ["admin"], module: conversations },
  { id: "keys", roles: ["admin"], feature: "managed_keys", module: keys },
  { id: "usage", roles: ALL, feature: "usage", module: usage },
];

const view = document.getElementById("view");
const toastBox = document.getElementById("toast");
let me = null;
let stop = null;
let toastTimer = null;

export function toast(message, kind = "error") {
  toastBox.textContent = message;
  toastBox.className = `toast ${kind}`;
  toastBox.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { toastBox.hidden = true; }, 6000);
}

function visible() {
  return PAGES.filter((p) => p.roles.includes(me.role) && (!p.feature || me.features[p.feature]));
}

function renderNav() {
  const nav = document.getElementById("nav");
  const current = location.hash.split("/")[1];
  replace(nav, visible().map((p) => h("a", {
    href: `#/${p.id}`, class: p.id === current ? "active" : "", dataset: { page: p.id },
  }, t(`page_${p.id}`))));
  document.getElementById("who").textContent = `${me.owner} · ${t(`role_${me.role}`)}`;
  document.getElementById("signout").hidden = false;
}

function route() {
  if (stop) { stop(); stop = null; }
  if (!me) return signIn();
  const [, id, ...rest] = location.hash.split("/");
  const pages = visible();
  const page = pages.find((p) => p.id === id);
  if (!page) {
    // a page this key may not see is not rendered at all; the server refuses it anyway
    location.replace(`#/${pages[0].id}`);
    return;
  }
  renderNav();
  replace(view);
  const ctx = { me, params: rest.map(decodeURIComponent), toast, go: (hash) => { location.hash = hash; } };
  Promise.resolve(page.module.render(view, ctx))
    .then((cleanup) => { if (typeof cleanup === "function") stop = cleanup; })
    .catch((err) => fail(err));
}

export function fail(err) {
  if (err instanceof ApiError && err.status === 401) {
    me = null;
    session.clear();
    toast(err.message);
    return signIn();
  }
  toast(err.message || String(err));
}

function signIn(message = "") {
  document.getElementById("nav").replaceChildren();
  document.getElementById("who").textContent = "";
  document.getElementById("signout").hidden = true;
  const input = h("input", { type: "password", name: "key", autocomplete: "off",
    placeholder: "sk-…", "data-testid": "key", required: true });
  const error = h("p", { class: "error", "data-testid": "signin-error" }, message);
  const form = h("form", { class: "card signin", onsubmit: async (e) => {
    e.preventDefault();
    session.key = input.value.trim();
    try {
      await load();
      route();
    } catch (err) {
      session.clear();
      error.textContent = err.message;
    }
  } },
  h("h1", {}, t("sign_in_title")),
  h("p", { class: "muted" }, t("sign_in_help")),
  input,
  h("button", { type: "submit", "data-testid": "signin" }, t("sign_in")),
  error);
  replace(view, form);
  input.focus();
}

async function load() {
  me = await api("GET", "/v1/me");
}

function labels() {
  document.documentElement.lang = lang() === "zh" ? "zh-CN" : "en";
  document.getElementById("lang").textContent = lang() === "zh" ? "English" : "中文";
  applyStatic(document);
}

function retranslate() {
  labels();
  route();
}

document.getElementById("lang").addEventListener("click", () => {
  setLang(lang() === "zh" ? "en" : "zh");
  retranslate();
});
document.getElementById("signout").addEventListener("click", () => {
  session.clear();
  me = null;
  location.hash = "";
  signIn();
});
window.addEventListener("hashchange", route);

(async () => {
  labels();
  try {
    await load(); // with the stored key, or none where the gateway asks for none
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) toast(err.message);
    me = null;
  }
  route();
})();
