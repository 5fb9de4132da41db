"""Replay long conversations through the gateway against a real llama.cpp server.

For each truncation strategy the same seeded conversations are sent one message at a time,
streamed, through `ragate serve` in front of one llama-cpp-python server (SmolLM2-135M,
n_ctx 2048, so the context fills). Two ways a client talks:
- ``--mode stored``: a stored conversation; the client sends only its new message
  (strategies none, sliding, stepped, stepped+summary);
- ``--mode stateless``: the client keeps the history and sends all of it every turn, as
  Open WebUI, LobeChat, NextChat and SillyTavern do (strategies: the model's ``stateless``
  setting, stepped or sliding).
``--knowledge turn|system`` adds a knowledge base (a harbour rule book, ingested through
the admin API) whose passages go into the newest user message or the system prompt.
Per turn it records:
- time to first token, measured by the client;
- the gateway's predicted prefix reuse (`x-ragate-prefix-reuse: reused/prompt`);
- the backend's own cache hit, read from llama-cpp-python's log line
  "Llama.generate: N prefix-match hit, remaining M prompt tokens to eval";
- the history kept (`x-ragate-history-turns`, and the prompt tokens).
Statistics cover the turns after the context is full (the strategy keeps fewer turns than
are stored; for `none`, the turns the backend refused are counted as errors).

The workload: a persona card of several hundred tokens as the system prompt, then user
turns of seeded, realistic lengths, interleaved with the human turns of the multi-turn
dialogues in ../shared/data/llamafactory/glaive_toolcall_en_demo.json (tool results are
handed back inside the next user turn).

    python -m bench.conversations            # about 10 minutes on 2 cores
    python -m bench.conversations --quick    # fewer turns, for a smoke run
    python -m bench.conversations --mode stateless --strategies sliding,stepped
    python -m bench.conversations --mode stateless --strategies sliding,stepped --knowledge turn
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from serving import LlamaCppServer
from tests.integration.conftest import GatewayProcess

# the demo rows vendored for the tests (a trimmed copy of LLaMA-Factory's data folder)
DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "llamafactory"
HIT = re.compile(rb"Llama\.generate: (\d+) prefix-match hit, remaining (\d+) prompt tokens")
STRATEGIES = ["none", "sliding", "stepped", "stepped+summary"]
STATELESS = ["sliding", "stepped"]

WORDS = ("ship harbour storm lantern rope compass island tide sail anchor crew captain map "
         "treasure gull wind wave deck mast cargo coast reef fog bell voyage chart star north "
         "south trade spice silk barrel cannon biscuit rum parrot letter port customs dock").split()


def persona_card(rng: random.Random) -> str:
    facts = [
        f"You were born in the port of {rng.choice(['Bristol', 'Lisbon', 'Genoa'])}.",
        "You speak in short, warm sentences and never break character.",
        "You remember every ship you sailed on and every storm you survived.",
    ]
    history = " ".join(
        f"In the year {1700 + i} you {rng.choice(['sailed', 'traded', 'fought', 'wrote'])} "
        f"near the {rng.choice(WORDS)} with a {rng.choice(WORDS)} and a {rng.choice(WORDS)}."
        for i in range(28)
    )
    return ("You are Captain Mira Vale, an old sea captain who now runs a tavern. "
            + " ".join(facts) + " Your life so far: " + history)


def user_turn(rng: random.Random, n: int) -> str:
    words = max(6, min(160, int(rng.lognormvariate(3.6, 0.6))))
    body = " ".join(rng.choice(WORDS) for _ in range(words))
    return f"Turn {n}. Tell me about this: {body}?"


def glaive_turns() -> list[str]:
    """Human turns of the glaive multi-turn dialogues, tool results folded in."""
    dialogues = json.loads((DATA / "glaive_toolcall_en_demo.json").read_text())
    turns: list[str] = []
    for dialogue in dialogues:
        messages = dialogue["conversations"]
        if sum(m["from"] == "human" for m in messages) < 3:
            continue
        pending = ""
        for m in messages:
            if m["from"] == "observation":
                pending = f"(Tool result: {m['value'][:400]}) "
            elif m["from"] == "human":
                turns.append(pending + m["value"])
                pending = ""
    return turns


def workload(seed: int, turns: int) -> list[str]:
    rng = random.Random(seed)
    glaive = glaive_turns()
    rng.shuffle(glaive)
    return [glaive.pop() if n % 3 == 2 and glaive else user_turn(rng, n) for n in range(turns)]


@dataclass
class TurnResult:
    ttft_s: float | None
    reused: int
    prompt: int
    kept_turns: int
    stored_turns: int
    backend_cached: int | None
    backend_prompt: int | None
    error: str | None = None

    @property
    def full(self) -> bool:
        return self.kept_turns < self.stored_turns or self.error is not None


@dataclass
class Run:
    strategy: str
    turns: list[TurnResult] = field(default_factory=list)


def send_turn(client: httpx.Client, gw: GatewayProcess, body: dict[str, Any],
              max_tokens: int, log: Path, reply: list[str] | None = None) -> TurnResult:
    """One streamed turn; the reply's text is appended to ``reply`` when given."""
    offset = log.stat().st_size
    start = time.perf_counter()
    ttft = None
    with client.stream("POST", gw.url + "/v1/chat/completions", json={
        "model": "smollm2", "stream": True, "max_tokens": max_tokens, "temperature": 0,
        **body,
    }) as r:
        if r.status_code != 200:
            text = r.read().decode(errors="replace")
            return TurnResult(None, 0, 0, 0, 0, None, None, error=f"{r.status_code}: {text[:120]}")
        reused, prompt = map(int, r.headers["x-ragate-prefix-reuse"].split("/"))
        kept, stored = map(int, r.headers["x-ragate-history-turns"].split("/"))
        error = None
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                error = chunk["error"]["message"]
                continue
            if ttft is None and chunk.get("choices"):
                # llama.cpp sends its first chunk (the role) with the first token, after the
                # prefill; a reply may be empty, so any first chunk marks the first token
                ttft = time.perf_counter() - start
            if reply is not None and chunk.get("choices"):
                reply.append(chunk["choices"][0].get("delta", {}).get("content") or "")
    time.sleep(0.05)  # let the server flush its log line
    with log.open("rb") as f:
        f.seek(offset)
        hits = HIT.findall(f.read())
    cached, remaining = (int(hits[-1][0]), int(hits[-1][1])) if hits else (None, None)
    backend_prompt = None if cached is None or remaining is None else cached + remaining
    return TurnResult(ttft, reused, prompt, kept, stored, cached, backend_prompt, error)


def rule_book() -> str:
    """The knowledge base: numbered harbour rules that name the workload's words."""
    rng = random.Random(3)
    return "\n\n".join(
        f"Rule {n}. " + " ".join(
            f"Every {rng.choice(WORDS)} near the {rng.choice(WORDS)} must be checked for "
            f"{rng.choice(WORDS)} before the {rng.choice(WORDS)} leaves." for _ in range(4))
        for n in range(60))


def ingest_rule_book(client: httpx.Client, gw: GatewayProcess) -> None:
    client.post(gw.url + "/v1/knowledge_bases", json={"name": "harbour"}).raise_for_status()
    r = client.post(gw.url + "/v1/knowledge_bases/harbour/documents",
                    files=[("files", ("rules.txt", rule_book().encode(), "text/plain"))])
    r.raise_for_status()
    job_id = r.json()["job_id"]
    while (job := client.get(f"{gw.url}/v1/knowledge_bases/jobs/{job_id}").json())[
            "status"] not in ("done", "failed"):
        time.sleep(0.2)
    if job["status"] != "done":
        raise SystemExit(f"ingestion failed: {job}")


def run_strategy(strategy: str, server: LlamaCppServer, log: Path, conversations: list[list[str]],
                 persona: str, max_tokens: int, workdir: Path, low_water: float,
                 mode: str = "stored", knowledge: str = "none") -> Run:
    stateless = mode == "stateless"
    model: dict[str, Any] = {
        "name": "smollm2", "context_window": server.n_ctx,
        "truncation": {"strategy": "stepped" if stateless else strategy,
                       "reserve_completion_tokens": 128, "low_water": low_water,
                       "summary_max_tokens": 120},
        "stateless": strategy if stateless else "stepped",
        "backends": [{"url": server.url, "kind": "llamacpp", "model": "smollm2"}],
    }
    if knowledge != "none":
        model["knowledge"] = {"knowledge_base": "harbour", "mode": knowledge, "top_k": 3,
                              "max_context_chars": 900}
    config = {
        "local_backends": [],
        "server": {"data_dir": str(workdir / "data"), "log_level": "warning"},
        "pool": {"read_timeout_s": 300},
        "knowledge": {"enabled": knowledge != "none"},
        "models": [model],
    }
    gw = GatewayProcess(config, workdir).start()
    run = Run(strategy)
    try:
        with httpx.Client(timeout=300) as client:
            if knowledge != "none":
                ingest_rule_book(client, gw)
            for turns in conversations:
                history: list[dict[str, str]] = [{"role": "system", "content": persona}]
                if not stateless:
                    cid = client.post(gw.url + "/v1/conversations",
                                      json={"metadata": {"system": persona}}).json()["id"]
                for n, text in enumerate(turns):
                    question = {"role": "user", "content": text}
                    reply: list[str] = []
                    body = ({"messages": [*history, question]} if stateless else
                            {"conversation_id": cid, "messages": [question]})
                    result = send_turn(client, gw, body, max_tokens, log, reply)
                    history += [question, {"role": "assistant", "content": "".join(reply)}]
                    run.turns.append(result)
                    print(f"  {strategy:>16} turn {n:>3}: ttft={_fmt(result.ttft_s)}s "
                          f"reuse={result.reused}/{result.prompt} "
                          f"backend_hit={result.backend_cached}/{result.backend_prompt} "
                          f"kept={result.kept_turns}/{result.stored_turns}"
                          + (f" error={result.error[:60]}" if result.error else ""),
                          file=sys.stderr, flush=True)
    finally:
        gw.stop()
    return run


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summarize(run: Run) -> dict[str, Any]:
    full = [t for t in run.turns if t.full]
    ok = [t for t in full if t.error is None and t.ttft_s is not None]
    ttfts = sorted(t.ttft_s for t in ok if t.ttft_s is not None)
    reuse = [t.reused / t.prompt for t in ok if t.prompt]
    hits = [t.backend_cached / t.backend_prompt for t in ok
            if t.backend_cached is not None and t.backend_prompt]
    return {
        "strategy": run.strategy,
        "turns_after_full": len(full),
        "errors": sum(1 for t in full if t.error),
        "ttft_mean_s": statistics.fmean(ttfts) if ttfts else None,
        "ttft_p90_s": ttfts[int(0.9 * (len(ttfts) - 1))] if ttfts else None,
        "predicted_reuse": statistics.fmean(reuse) if reuse else None,
        "backend_cached": statistics.fmean(hits) if hits else None,
        "backend_cached_tokens": statistics.fmean(t.backend_cached for t in ok
                                                  if t.backend_cached is not None) if ok else None,
        "history_kept_tokens": statistics.fmean(t.prompt for t in ok) if ok else None,
    }


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| strategy | turns after full | errors | TTFT mean s | TTFT p90 s | predicted "
            "reuse | backend cached (share) | backend cached tokens | prompt kept (tokens) |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['strategy']} | {r['turns_after_full']} | {r['errors']} | "
            f"{_fmt(r['ttft_mean_s'])} | {_fmt(r['ttft_p90_s'])} | {pct(r['predicted_reuse'])} | "
            f"{pct(r['backend_cached'])} | {_fmt(r['backend_cached_tokens'], 0)} | "
            f"{_fmt(r['history_kept_tokens'], 0)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=36, help="turns per conversation")
    parser.add_argument("--conversations", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--strategies", help="default: all of the mode's "
                        f"(stored: {','.join(STRATEGIES)}; stateless: {','.join(STATELESS)})")
    parser.add_argument("--mode", choices=["stored", "stateless"], default="stored")
    parser.add_argument("--knowledge", choices=["none", "turn", "system"], default="none")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--low-water", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true", help="20 turns")
    parser.add_argument("--json", type=Path, help="write the raw rows here")
    args = parser.parse_args()
    if args.quick:
        args.turns, args.conversations = 20, 1
    if args.strategies is None:
        args.strategies = ",".join(STATELESS if args.mode == "stateless" else STRATEGIES)
    persona = persona_card(random.Random(args.seed))
    conversations = [workload(args.seed + i, args.turns) for i in range(args.conversations)]
    workdir = Path(tempfile.mkdtemp(prefix="ragate-bench-conv-"))
    log = workdir / "llama.log"
    server = LlamaCppServer("bundled:smollm2", n_ctx=2048, n_threads=args.threads,
                            model_alias="smollm2", log_path=log,
                            extra_args=["--verbose", "true"])
    rows = []
    with server:
        for i, strategy in enumerate(args.strategies.split(",")):
            sub = workdir / f"run{i}"
            sub.mkdir()
            rows.append(summarize(run_strategy(strategy, server, log, conversations, persona,
                                               args.max_tokens, sub, args.low_water,
                                               args.mode, args.knowledge)))
    print(f"mode {args.mode}, knowledge {args.knowledge}, {args.turns} turns")
    print(table(rows))
    by = {r["strategy"]: r for r in rows}
    if "sliding" in by and "stepped" in by and by["stepped"]["ttft_mean_s"]:
        ratio = by["sliding"]["ttft_mean_s"] / by["stepped"]["ttft_mean_s"]
        print(f"\nstepped vs sliding, mean TTFT once full: {ratio:.1f}x lower (target >= 5x); "
              f"stepped predicted reuse {100 * (by['stepped']['predicted_reuse'] or 0):.1f}% "
              f"(target >= 90%)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
