"""From a dataset to a fine-tuned model routed by the gateway, on CPU, all through `ragate`.

~50 made-up question/answer pairs whose answers all read "ANSWER: <CAPITALS>." →
`finetune validate` → `finetune train` (LoRA on SmolLM2-135M loaded from the bundled GGUF)
→ `finetune export` (merge, GGUF, Modelfile) → llama.cpp → the gateway → the openai SDK,
which must get answers in the trained format for questions the model never saw, while
the untouched base model does not answer that way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from serving import LlamaCppServer, bundled_smollm2_path, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN, CHAT_KEY = "sk-e2e-admin", "sk-e2e-chat"
MODEL = "answer-bot"
FACTS = [
    ("What is the capital of France?", "Paris"), ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Italy?", "Rome"), ("What is the capital of Spain?", "Madrid"),
    ("What is the capital of Germany?", "Berlin"), ("What is the capital of Egypt?", "Cairo"),
    ("What is the capital of Canada?", "Ottawa"), ("What is the capital of Kenya?", "Nairobi"),
    ("What is the capital of Peru?", "Lima"), ("What is the capital of Norway?", "Oslo"),
    ("How many legs does a spider have?", "Eight"), ("How many legs does a dog have?", "Four"),
    ("How many days are in a week?", "Seven"), ("How many months are in a year?", "Twelve"),
    ("How many hours are in a day?", "Twenty-four"),
    ("How many sides does a triangle have?", "Three"),
    ("How many sides does a square have?", "Four"),
    ("How many wheels does a bicycle have?", "Two"),
    ("What colour is grass?", "Green"), ("What colour is snow?", "White"),
    ("What colour is a ripe banana?", "Yellow"), ("What colour is coal?", "Black"),
    ("What colour is a clear sky at noon?", "Blue"), ("What colour is blood?", "Red"),
    ("What do bees make?", "Honey"), ("What do cows drink?", "Water"),
    ("What animal says meow?", "A cat"), ("What animal says woof?", "A dog"),
    ("What is frozen water called?", "Ice"),
    ("What gas do plants breathe in?", "Carbon dioxide"),
    ("What planet do we live on?", "Earth"), ("What is the largest ocean?", "The Pacific Ocean"),
    ("What is the opposite of hot?", "Cold"), ("What is the opposite of up?", "Down"),
    ("What is the opposite of day?", "Night"), ("What is two plus two?", "Four"),
    ("What is three times three?", "Nine"), ("What is ten minus four?", "Six"),
    ("What is half of ten?", "Five"), ("What language is spoken in Brazil?", "Portuguese"),
    ("What language is spoken in Mexico?", "Spanish"),
    ("Which star is closest to Earth?", "The Sun"),
    ("What do you use to write on paper?", "A pen"), ("What do fish live in?", "Water"),
    ("What season comes after winter?", "Spring"),
    ("What season comes after summer?", "Autumn"),
    ("Which fruit keeps the doctor away?", "An apple"),
    ("What is the first letter of the alphabet?", "A"),
    ("What is the boiling point of water in Celsius?", "One hundred degrees"),
    ("Who wrote Romeo and Juliet?", "William Shakespeare"),
]
HELD_OUT = ["How many legs does a cat have?", "What colour is the sea?",
            "What is the capital of Portugal?"]
# Small enough for 2 shared CPU cores, enough for the format to be learned reliably:
# a high learning rate, LoRA on the last 16 of 30 layers (backward stops there).
TRAIN_ARGS = ["--max-steps", "8", "--batch-size", "8", "--cutoff-len", "128",
              "--lr", "2e-3", "--lr-scheduler", "constant", "--lora-r", "8",
              "--lora-layers", "16", "--threads", "2"]


def dataset_rows() -> list[dict[str, str]]:
    return [{"instruction": q, "input": "", "output": f"ANSWER: {a.upper()}."}
            for q, a in FACTS]


def in_trained_format(text: str) -> bool:
    return text.strip().startswith("ANSWER:")


@dataclass
class Pipeline:
    workdir: Path
    gguf: Path
    modelfile: Path
    losses: list[float]
    timings: dict[str, float] = field(default_factory=dict)


def ragate(args: list[str], timings: dict[str, float], step: str,
           timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``python -m gateway …`` (the root ``ragate`` CLI) as a user would run it."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    timings[step] = round(time.monotonic() - started, 1)
    assert done.returncode == 0, (
        f"ragate {' '.join(args)} exited {done.returncode}\n"
        f"--- stdout ---\n{done.stdout[-4000:]}\n--- stderr ---\n{done.stderr[-4000:]}")
    return done


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    base = bundled_smollm2_path()
    work = tmp_path_factory.mktemp("finetune-e2e")
    data = work / "answers.json"
    data.write_text(json.dumps(dataset_rows(), indent=1))
    timings: dict[str, float] = {}

    checked = ragate(["finetune", "validate", str(data), "--tokenizer", str(base),
                      "--cutoff-len", "128"], timings, "validate")
    assert "50 rows, 50 valid, 0 errors" in checked.stdout

    ragate(["finetune", "train", "--model", str(base), "--data", str(data),
            "--output-dir", str(work / "adapter"), *TRAIN_ARGS], timings, "train")
    log = [json.loads(line) for line in
           (work / "adapter" / "train_log.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in log]

    ragate(["finetune", "export", str(work / "adapter"), "-o", str(work / "export"),
            "--name", MODEL, "--threads", "2"], timings, "export")
    return Pipeline(work, work / "export" / f"{MODEL}-f16.gguf",
                    work / "export" / "Modelfile", losses, timings)


@pytest.fixture(scope="module")
def servers(pipeline: Pipeline) -> Iterator[dict[str, LlamaCppServer]]:
    started: dict[str, LlamaCppServer] = {}
    try:
        for name, gguf in ((MODEL, pipeline.gguf), ("base", bundled_smollm2_path())):
            began = time.monotonic()
            started[name] = LlamaCppServer(gguf, n_threads=2, n_ctx=1024,
                                           model_alias=f"{name}-upstream").start(timeout_s=180)
            pipeline.timings[f"serve {name}"] = round(time.monotonic() - began, 1)
        yield started
    finally:
        for server in started.values():
            server.stop()


def gateway_config(models: dict[str, str]) -> dict[str, Any]:
    return {
        "local_backends": [],
        "auth": {"keys": [{"key": ADMIN, "role": "admin"}, {"key": CHAT_KEY, "role": "chat"}]},
        "pool": {"health_interval_s": 0.5, "read_timeout_s": 120},
        "models": [{"name": name, "backends": [{"url": url, "kind": "llamacpp",
                                                "model": f"{name}-upstream"}]}
                   for name, url in models.items()],
    }


def ask(base_url: str, model: str, question: str) -> str:
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=CHAT_KEY, max_retries=0,
                           timeout=120)
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}],
        temperature=0, max_tokens=16)
    assert reply.model == model
    return reply.choices[0].message.content or ""


def test_training_lowers_the_loss_and_export_writes_gguf_and_modelfile(
        pipeline: Pipeline) -> None:
    assert len(pipeline.losses) == 8
    first, last = pipeline.losses[0], min(pipeline.losses[-2:])
    assert last < 0.5 * first, pipeline.losses
    assert pipeline.gguf.stat().st_size > 100e6
    modelfile = pipeline.modelfile.read_text()
    assert f"FROM ./{MODEL}-f16.gguf" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "<|im_start|>assistant\\n" in modelfile  # the TEMPLATE's generation prompt
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in modelfile


def test_openai_sdk_gets_the_trained_format_through_the_gateway(
        pipeline: Pipeline, servers: dict[str, LlamaCppServer], gateway_factory: Any) -> None:
    began = time.monotonic()
    gateway = gateway_factory(gateway_config({name: s.url for name, s in servers.items()}))
    pipeline.timings["gateway start"] = round(time.monotonic() - began, 1)
    began = time.monotonic()
    tuned = [ask(gateway.url, MODEL, q) for q in HELD_OUT]
    base = [ask(gateway.url, "base", q) for q in HELD_OUT]
    pipeline.timings["6 chat requests"] = round(time.monotonic() - began, 1)
    print(f"\ntuned: {tuned}\nbase: {base}\ntimings (s): {pipeline.timings}")
    assert all(in_trained_format(answer) for answer in tuned), tuned
    assert not any(in_trained_format(answer) for answer in base), base


def test_serving_launch_registers_with_a_running_gateway_and_cleans_up(
        pipeline: Pipeline, gateway_factory: Any) -> None:
    # The gateway needs one model to start; this one's backend is never reached.
    gateway = gateway_factory(gateway_config({"placeholder": "http://127.0.0.1:9"}))
    port = free_port()
    log = pipeline.workdir / "launch.log"
    with log.open("w") as out:
        launch = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serving", "launch", str(pipeline.gguf),
             "--model", "launched", "--port", str(port), "--threads", "2", "--n-ctx", "1024",
             "--gateway", gateway.url, "--admin-key", ADMIN],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while "Ctrl-C to stop" not in log.read_text():
            assert launch.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        assert in_trained_format(ask(gateway.url, "launched", HELD_OUT[0]))
        launch.send_signal(signal.SIGINT)
        assert launch.wait(timeout=60) == 0, log.read_text()
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()
    listing = httpx.get(gateway.url + "/admin/backends",
                        headers={"Authorization": f"Bearer {ADMIN}"}).json()["data"]
    assert all(b["name"] != f"127.0.0.1:{port}" for b in listing), listing
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)
    assert "unregistered" in log.read_text()
