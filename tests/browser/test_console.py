"""The console in a real browser against a real gateway: sign in, a knowledge base from
upload to search, chat with sources, backends, keys, usage, conversations, and what a
chat key may not see. Each page is saved as a screenshot (the README's come from here)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fpdf import FPDF

from tests.browser.conftest import ADMIN_KEY, CHAT_KEY, KB_KEY
from tests.integration.conftest import GatewayProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FACT = ("The Harbour Street pump station runs three impeller pumps. Pump number two is "
        "serviced every 90 days, and its spare seals are stored in cabinet K-17.")
TIMEOUT_MS = 120_000


def manual_pdf() -> bytes:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(0, 8, "Operations manual. Chapter one covers opening hours and the staff rota.")
    pdf.add_page()
    pdf.multi_cell(0, 8, FACT)
    return bytes(pdf.output())


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    manual = folder / "pump-manual.pdf"
    manual.write_bytes(manual_pdf())
    hostile = folder / "notes.txt"
    hostile.write_text('Cabinet notes <img src=x onerror="window.pwned=1"> <b>bold</b> '
                       "and <script>window.pwned=2</script> stay text.", encoding="utf-8")
    broken = folder / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 this is not really a pdf")
    return {"manual": manual, "hostile": hostile, "broken": broken}


def signed_in(browser: Any, gateway: GatewayProcess, key: str) -> Any:
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    page.goto(gateway.url + "/ui/")
    page.fill("[data-testid=key]", key)
    page.click("[data-testid=signin]")
    page.wait_for_selector("#nav a")
    return page


@pytest.fixture(scope="module")
def admin(browser: Any, console_gateway: GatewayProcess) -> Iterator[Any]:
    page = signed_in(browser, console_gateway, ADMIN_KEY)
    yield page
    assert page.errors == [], page.errors  # no script error on any page
    page.close()


def shot(page: Any, shots: Path, name: str) -> None:
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000


def test_a_wrong_key_is_refused_with_the_servers_reason(browser: Any,
                                                         console_gateway: GatewayProcess) -> None:
    page = browser.new_page()
    page.goto(console_gateway.url + "/ui/")
    page.fill("[data-testid=key]", "sk-not-a-key")
    page.click("[data-testid=signin]")
    error = page.locator("[data-testid=signin-error]")
    error.wait_for()
    page.wait_for_function(
        "document.querySelector('[data-testid=signin-error]').textContent.length > 0")
    assert "key" in error.text_content().lower()
    assert page.locator("#nav a").count() == 0
    page.close()


def test_the_console_is_static_and_fenced(console_gateway: GatewayProcess) -> None:
    r = httpx.get(console_gateway.url + "/ui/")
    assert r.status_code == 200 and "<script type=\"module\"" in r.text
    policy = r.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "http" not in r.text.split("<body>")[0]  # nothing loaded from elsewhere


def test_create_upload_and_watch_each_file_until_indexed(
        admin: Any, console_gateway: GatewayProcess, files: dict[str, Path], shots: Path) -> None:
    admin.click("[data-page=knowledge]")
    admin.fill("[data-testid=kb-name]", "manuals")
    admin.click("[data-testid=kb-create] button[type=submit]")
    admin.wait_for_selector("[data-testid=tab-upload]")
    admin.click("[data-testid=tab-upload]")
    admin.set_input_files("[data-testid=files]", [str(files[n]) for n in ("manual", "hostile",
                                                                          "broken")])
    admin.wait_for_selector("[data-testid=job-summary][data-status=done]", timeout=TIMEOUT_MS)
    stages = admin.eval_on_selector_all("[data-testid=file-status] tr",
                                        "rows => rows.map(r => [r.dataset.file, r.dataset.stage])")
    assert sorted(stages) == [["broken.pdf", "failed"], ["notes.txt", "indexed"],
                              ["pump-manual.pdf", "indexed"]]
    reason = admin.locator("tr[data-file='broken.pdf'] td.error").text_content()
    assert "pdf" in reason.lower()  # the file's own reason, not the job's
    assert admin.eval_on_selector("[data-testid=overall]", "p => p.value") == 1
    shot(admin, shots, "knowledge-upload")
    # the failed file alone goes again from the browser's copy; it fails again, alone
    retry = admin.locator("[data-testid=retry]")
    assert "(1)" in retry.text_content()
    retry.click()
    again = "[data-testid=file-status] tr[data-file='broken.pdf'][data-stage=failed]"
    admin.wait_for_selector(again, timeout=TIMEOUT_MS)
    assert admin.locator("[data-testid=file-status] tr").count() == 1
    admin.click("[data-testid=tab-documents]")
    admin.wait_for_selector("[data-testid=documents] tr[data-doc='pump-manual.pdf']")
    shot(admin, shots, "knowledge-documents")
    admin.click("[data-page=knowledge]")
    row = admin.locator("[data-testid=kb-list] tr[data-kb=manuals]")
    row.wait_for()
    assert re.search(r"manuals\s*2", row.inner_text())  # two documents
    shot(admin, shots, "knowledge-list")


def test_chunk_viewer_shows_hostile_text_as_text(admin: Any,
                                                 console_gateway: GatewayProcess) -> None:
    admin.goto(console_gateway.url + "/ui/#/knowledge/manuals/chunks/notes.txt")
    chunk = admin.locator("article.chunk pre").first
    chunk.wait_for()
    assert "<img src=x" in chunk.text_content() and "<script>" in chunk.text_content()
    assert admin.locator("article.chunk img, article.chunk script, article.chunk b").count() == 0
    assert admin.evaluate("window.pwned") is None


def test_search_playground_shows_page_scores_and_the_injected_block(
        admin: Any, console_gateway: GatewayProcess, shots: Path) -> None:
    admin.goto(console_gateway.url + "/ui/#/knowledge/manuals/search")
    admin.fill("[data-testid=query]", "Where are the spare seals for pump two stored?")
    admin.click("[data-testid=search]")
    first = admin.locator("[data-testid=results] article.hit").first
    first.wait_for()
    assert first.get_attribute("data-document") == "pump-manual.pdf"
    assert first.get_attribute("data-page") == "2"
    assert "page 2" in first.locator("[data-testid=hit-page]").text_content()
    assert "dense" in first.inner_text() and "lexical" in first.inner_text()
    injected = admin.locator("[data-testid=injected]")
    injected.wait_for()
    heading = injected.locator("h2").text_content()
    tokens = int(re.search(r"(\d+) tokens", heading).group(1))
    assert tokens > 20 and "K-17" in injected.locator("pre").text_content()
    shot(admin, shots, "knowledge-search")


def test_chat_streams_with_sources_and_reply_facts(admin: Any, console_gateway: GatewayProcess,
                                                   shots: Path) -> None:
    admin.click("[data-page=chat]")
    admin.wait_for_selector("[data-testid=kb] option[value=manuals]", state="attached")
    admin.select_option("[data-testid=kb]", "manuals")
    assert admin.is_checked("[data-testid=stream]")
    admin.fill("[data-testid=persona]", "You are the pump station's maintenance assistant.")
    admin.fill("[data-testid=message]", "Where are the spare seals for pump two?")
    snippet = admin.locator("[data-testid=snippet]").text_content()
    assert '"knowledge_base": "manuals"' in snippet and "curl" in snippet and "OpenAI(" in snippet
    admin.click("[data-testid=send]")
    admin.wait_for_selector("[data-testid=answered-by]", timeout=TIMEOUT_MS)
    reply = admin.locator(".bubble.assistant .text").last.text_content()
    assert reply.strip()
    assert re.search(r"llama-[ab]", admin.locator("[data-testid=answered-by]").last.text_content())
    source = admin.locator("[data-testid=sources] article.source").first
    source.wait_for()
    assert source.get_attribute("data-document") == "pump-manual.pdf"
    assert "page 2" in source.locator("header").text_content()
    meta = admin.locator("[data-testid=reply-meta]").last.text_content()
    assert "prefix reuse" in meta
    shot(admin, shots, "chat")
    source.locator("header a").click()  # a citation opens the document's chunks
    admin.wait_for_selector("article.chunk")
    assert "K-17" in admin.locator("article.chunk pre").all_text_contents()[-1] + "".join(
        admin.locator("article.chunk pre").all_text_contents())


def test_drain_and_undrain_a_backend(admin: Any, shots: Path) -> None:
    admin.click("[data-page=backends]")
    row = admin.locator("[data-testid=backends] tr[data-backend=llama-a]")
    row.wait_for()
    assert row.get_attribute("data-state") == "healthy"
    assert "smollm2" in row.inner_text()
    row.locator("[data-testid=drain]").click()
    admin.wait_for_selector("tr[data-backend=llama-a][data-state=drained]")
    shot(admin, shots, "backends-drained")
    admin.locator("tr[data-backend=llama-a] [data-testid=undrain]").click()
    admin.wait_for_selector("tr[data-backend=llama-a][data-state=healthy]")
    shot(admin, shots, "backends")


def test_keys_page_creates_a_key_shown_once(admin: Any, console_gateway: GatewayProcess,
                                             shots: Path) -> None:
    admin.click("[data-page=keys]")
    admin.fill("[data-testid=key-owner]", "lobe-chat")
    admin.select_option("[data-testid=key-role]", "chat")
    admin.click("[data-testid=create-key]")
    secret = admin.locator("[data-testid=secret-value]")
    secret.wait_for()
    value = secret.text_content()
    assert value.startswith("sk-")
    row = admin.locator("[data-testid=keys] tr", has_text="lobe-chat")
    row.wait_for()
    assert value not in row.inner_text()  # the list never shows the secret
    r = httpx.get(console_gateway.url + "/v1/me", headers={"Authorization": f"Bearer {value}"})
    assert r.status_code == 200 and r.json()["owner"] == "lobe-chat"
    # grants and limits change in place
    key_id = row.get_attribute("data-key")
    row.locator("[data-testid=edit-key]").click()
    admin.fill("[data-testid=key-bases]", "manuals")
    admin.fill("[data-testid=limit-requests_per_minute]", "30")
    admin.click("[data-testid=create-key]")
    admin.wait_for_selector(f"[data-testid=keys] tr[data-key='{key_id}']:has-text('manuals')")
    stored = httpx.get(f"{console_gateway.url}/admin/keys/{key_id}",
                       headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert stored["knowledge_bases"] == ["manuals"]
    assert stored["limits"] == {"requests_per_minute": 30} and stored["owner"] == "lobe-chat"
    shot(admin, shots, "keys")


def test_usage_chart(admin: Any, console_gateway: GatewayProcess, shots: Path) -> None:
    # usage is written once a second: wait for the chat's row before drawing it
    deadline = time.monotonic() + 15
    while not httpx.get(console_gateway.url + "/admin/usage?group_by=day",
                        headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()["data"]:
        assert time.monotonic() < deadline, "the chat's usage was never recorded"
        time.sleep(0.2)
    admin.click("[data-page=usage]")
    admin.wait_for_selector("[data-testid=usage-chart] svg rect", state="attached")
    bars = admin.eval_on_selector_all("[data-testid=usage-chart] rect",
                                      "rs => rs.filter(r => +r.getAttribute('height') > 0).length")
    assert bars >= 2  # today's prompt and completion tokens
    assert "smollm2" in admin.inner_text("main") or "-" in admin.inner_text("main")
    shot(admin, shots, "usage")


def test_conversations_list_open_and_export(admin: Any, console_gateway: GatewayProcess,
                                            shots: Path) -> None:
    r = httpx.post(console_gateway.url + "/v1/conversations",
                   headers={"Authorization": f"Bearer {CHAT_KEY}"},
                   json={"metadata": {"title": "Captain Mira"},
                         "items": [{"role": "system", "content": "You are Captain Mira."},
                                   {"role": "user", "content": "Ahoy!"}]})
    assert r.status_code == 200, r.text
    conversation = r.json()["id"]
    admin.click("[data-page=conversations]")
    admin.fill("[data-testid=owner]", "persona-app")
    admin.press("[data-testid=owner]", "Enter")
    link = admin.locator(f"tr[data-conversation='{conversation}'] a")
    link.wait_for()
    shot(admin, shots, "conversations")
    link.click()
    admin.wait_for_selector("[data-testid=items] .bubble.system")
    with admin.expect_download() as download:
        admin.click("[data-testid=export]")
    assert download.value.suggested_filename == f"{conversation}.json"


def test_chinese_switch(admin: Any, shots: Path) -> None:
    admin.click("[data-page=knowledge]")
    admin.click("[data-testid=lang]")
    label = "document.querySelector('[data-page=knowledge]').textContent"
    admin.wait_for_function(f"{label} === '知识库'")
    shot(admin, shots, "knowledge-list-zh")
    admin.click("[data-testid=lang]")
    admin.wait_for_function(f"{label} === 'Knowledge bases'")


def test_a_chat_key_sees_neither_backends_nor_keys(browser: Any, console_gateway: GatewayProcess,
                                                   shots: Path) -> None:
    page = signed_in(browser, console_gateway, CHAT_KEY)
    pages = page.eval_on_selector_all("#nav a", "as => as.map(a => a.dataset.page)")
    assert "backends" not in pages and "keys" not in pages and "knowledge" not in pages
    assert "chat" in pages
    page.goto(console_gateway.url + "/ui/#/backends")
    page.wait_for_url(re.compile(r"#/chat$"))
    page.goto(console_gateway.url + "/ui/#/keys")
    page.wait_for_url(re.compile(r"#/chat$"))
    page.wait_for_selector("[data-testid=kb] option[value=manuals]", state="attached")
    shot(page, shots, "chat-as-chat-key")
    # and the server refuses it anyway
    for path in ("/admin/backends", "/admin/keys"):
        status = page.evaluate("""async (path) => (await fetch(path, {headers:
            {Authorization: 'Bearer ' + sessionStorage.getItem('ragate.key')}})).status""", path)
        assert status == 403
    page.close()


def test_a_kb_admin_manages_its_base_but_not_the_gateway(browser: Any,
                                                         console_gateway: GatewayProcess) -> None:
    page = signed_in(browser, console_gateway, KB_KEY)
    pages = page.eval_on_selector_all("#nav a", "as => as.map(a => a.dataset.page)")
    assert "knowledge" in pages and "backends" not in pages and "keys" not in pages
    page.click("[data-page=knowledge]")
    page.wait_for_selector("[data-testid=kb-list] tr[data-kb=manuals]")
    assert page.locator("[data-testid=kb-create]").count() == 0  # creating needs admin
    page.close()
