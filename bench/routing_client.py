"""The routing benchmark's open-loop client: Poisson arrivals, conversations, SSE timing.

Arrivals are a Poisson process at ``rate`` requests/s, independent of how fast replies come
(open loop: a slow fleet gets a backlog, not fewer requests). Each arrival sends the next
turn of a conversation that is ready for one, the one that has waited longest (ready = its
previous reply arrived and the user's think time has passed); when none is ready, a new
conversation starts. So the number of live conversations settles at about
``rate × (latency + think time)``, like users at keyboards. A conversation has at most one
request in flight; one whose request failed is dropped. Above ``max_active`` live
conversations an arrival that finds none ready is counted as dropped.

In ``stateless`` mode (the default) each request carries the whole history plus the new
user message, streamed, with ``X-Session-Id: <script key>`` so a session policy can key
on it (``header=False`` leaves the header out). In ``stored`` mode the client creates a
conversation (``POST /v1/conversations``) and sends only the system message and the new user
message with ``conversation_id``: the gateway keeps the history (in Redis with two gateways)
and routes on the conversation id; the stored user message then keeps its RAG passage.
From the stream the client takes: time to the first content token, which replica answered
(the simulator's reply id is ``chatcmpl-{replica}-{n}``), and ``usage`` with
``prompt_tokens_details.cached_tokens``. With several gateways, each request goes to one at
random (seeded), as behind an L4 balancer: turns of one conversation land on either.

Meanwhile the backends' ``/metrics`` are polled every ``poll_s`` for
``vllm:num_requests_running`` + ``vllm:num_requests_waiting`` (the peak in-flight column),
and read at the start and the end of the measured window for the simulator's
``sim_requests_received_total``: the requests the router sent to each replica in the window,
including those still queued when the run ends (without that counter, as with a real vLLM,
the completed replies per replica stand in).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.routing_workloads import Script, Workload, request_messages


@dataclass(slots=True)
class Sample:
    """One request as the client saw it; times in seconds since the run started."""

    sent: float
    gateway: int
    conversation: str = ""
    turn: int = 0
    first: float | None = None  # first content token
    done: float | None = None  # last byte of a successful reply
    backend: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    error: str | None = None  # "unfinished" when cut at the end of the drain


@dataclass
class RunData:
    samples: list[Sample]
    warmup_s: float
    measure_s: float
    dropped: int
    conversations: int
    lateness_p99_s: float  # how late arrivals went out: the client's own event-loop lag
    inflight_peak: dict[str, int] = field(default_factory=dict)  # per backend name
    received: dict[str, int] | None = None  # per backend name, sent to it in the window


@dataclass
class _Conversation:
    script: Script
    history: list[dict[str, str]] = field(default_factory=list)
    turn: int = 0
    stored_id: str | None = None  # the gateway's conversation id, in stored mode


def _metric(text: str, *names: str) -> float | None:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(tuple(n + "{" for n in names))]
    return sum(values) if values else None


async def _poll(client: httpx.AsyncClient, backends: dict[str, str], peaks: dict[str, int],
                poll_s: float, window: tuple[float, float], t0: float,
                received: list[dict[str, float | None]]) -> None:
    """Sample in-flight during the window; read the received counters at both its ends."""
    marks = list(window)
    while True:
        now = time.monotonic() - t0
        mark = bool(marks) and now >= marks[0]
        if mark:
            marks.pop(0)
        if now >= window[0]:
            counts: dict[str, float | None] = {}
            for name, url in backends.items():
                try:
                    text = (await client.get(url + "/metrics", timeout=2)).text
                except httpx.HTTPError:
                    continue
                load = _metric(text, "vllm:num_requests_running", "vllm:num_requests_waiting")
                peaks[name] = max(peaks.get(name, 0), int(load or 0))
                counts[name] = _metric(text, "sim_requests_received_total")
            if mark:
                received.append(counts)
        if not marks and now >= window[1]:
            return
        await asyncio.sleep(min(poll_s, max(0.0, marks[0] - now)) if marks else poll_s)


async def _one(client: httpx.AsyncClient, url: str, model: str, conv: _Conversation,
               sample: Sample, t0: float, mode: str, header: bool) -> bool:
    """Send the conversation's next turn; True when the reply completed."""
    turn = conv.script.turns[conv.turn]
    stored = mode == "stored"
    history = [] if stored else conv.history
    body: dict[str, Any] = {
        "model": model, "messages": request_messages(conv.script, conv.turn, history),
        "max_tokens": turn.max_tokens, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True}}
    headers = {"x-session-id": conv.script.key} if header and not stored else {}
    parts: list[str] = []
    try:
        if stored and conv.stored_id is None:
            r = await client.post(url + "/v1/conversations", json={})
            if r.status_code != 200:
                sample.error = f"create conversation: HTTP {r.status_code}: {r.text[:120]}"
                return False
            conv.stored_id = r.json()["id"]
            sample.sent = time.monotonic() - t0  # the turn starts now, as for its successors
        if stored:
            body["conversation_id"] = conv.stored_id
        async with client.stream("POST", url + "/v1/chat/completions", json=body,
                                 headers=headers) as r:
            if r.status_code != 200:
                sample.error = f"HTTP {r.status_code}: {(await r.aread())[:160]!r}"
                return False
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    sample.error = str(chunk["error"].get("message"))[:160]
                    return False
                if sample.backend is None and isinstance(chunk.get("id"), str):
                    sample.backend = chunk["id"].split("-")[1] if "-" in chunk["id"] else "?"
                for choice in chunk.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        if sample.first is None:
                            sample.first = time.monotonic() - t0
                        parts.append(content)
                usage = chunk.get("usage")
                if usage:
                    sample.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                    details = usage.get("prompt_tokens_details") or {}
                    sample.cached_tokens = int(details.get("cached_tokens") or 0)
    except asyncio.CancelledError:
        sample.error = "unfinished"
        raise
    except (httpx.HTTPError, ValueError) as exc:
        sample.error = f"{type(exc).__name__}: {exc}"[:160]
        return False
    sample.done = time.monotonic() - t0
    conv.history += [{"role": "user", "content": turn.user},
                     {"role": "assistant", "content": "".join(parts)}]
    return True


async def drive(workload: Workload, gateways: list[str], model: str, *, rate: float,
                warmup_s: float, measure_s: float, drain_s: float, seed: int,
                backends: dict[str, str], mode: str = "stateless", header: bool = True,
                max_active: int = 600,
                poll_s: float = 0.5) -> RunData:
    """One run: arrivals for ``warmup_s + measure_s``, then up to ``drain_s`` to finish."""
    rng = random.Random(f"{seed}/arrivals")  # the same arrival times for every policy
    scripts = workload.scripts()
    ready: list[tuple[float, int, _Conversation]] = []  # (ready at, tiebreak, conversation)
    samples: list[Sample] = []
    tasks: set[asyncio.Task[None]] = set()
    lateness: list[float] = []
    dropped = started = live = 0
    peaks: dict[str, int] = {}
    received: list[dict[str, float | None]] = []
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=400)
    timeout = httpx.Timeout(warmup_s + measure_s + drain_s + 60, connect=10)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client, \
            httpx.AsyncClient(timeout=5) as poll_client:
        t0 = time.monotonic()
        poller = asyncio.create_task(_poll(poll_client, backends, peaks, poll_s,
                                           (warmup_s, warmup_s + measure_s), t0, received))

        async def run_turn(conv: _Conversation, sample: Sample) -> None:
            nonlocal live
            url = gateways[sample.gateway]
            ok = await _one(client, url, model, conv, sample, t0, mode, header)
            if ok and conv.turn + 1 < len(conv.script.turns):
                conv.turn += 1
                ready_at = time.monotonic() - t0 + conv.script.turns[conv.turn].think_s
                heapq.heappush(ready, (ready_at, id(conv), conv))
            else:
                live -= 1

        at, end = 0.0, warmup_s + measure_s
        while True:
            at += rng.expovariate(rate)
            gateway = rng.randrange(len(gateways))
            if at >= end:
                break
            delay = at - (time.monotonic() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic() - t0
            lateness.append(now - at)
            if ready and ready[0][0] <= now:
                conv = heapq.heappop(ready)[2]
            elif live < max_active:
                conv, started, live = _Conversation(next(scripts)), started + 1, live + 1
            else:
                dropped += 1
                continue
            sample = Sample(sent=now, gateway=gateway, conversation=conv.script.key,
                            turn=conv.turn)
            samples.append(sample)
            task = asyncio.create_task(run_turn(conv, sample))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=drain_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
    lateness.sort()
    p99 = lateness[int(0.99 * (len(lateness) - 1))] if lateness else 0.0
    counts = None
    if len(received) == 2 and all(received[i].get(n) is not None for i in (0, 1)
                                  for n in backends):
        counts = {n: int((received[1][n] or 0) - (received[0][n] or 0)) for n in backends}
    return RunData(samples, warmup_s, measure_s, dropped, started, p99, peaks, counts)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (unsorted; ``inf`` allowed)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summarize(data: RunData, backend_names: list[str]) -> dict[str, Any]:
    """The table's numbers for one run; only requests sent in the measured window count."""
    lo, hi = data.warmup_s, data.warmup_s + data.measure_s
    window = [s for s in data.samples if lo <= s.sent < hi]
    ok = [s for s in window if s.error is None and s.done is not None]
    prompt = sum(s.prompt_tokens for s in ok)
    cached = sum(s.cached_tokens for s in ok)
    # a request with no first token by the end of the drain counts as infinitely slow
    ttfts = [(s.first - s.sent) if s.first is not None else float("inf") for s in window
             if s.error in (None, "unfinished")]
    # stickiness: a turn that follows a reply from another replica lost that replica's cache
    last: dict[str, str] = {}
    stays = moves = 0
    for s in sorted(data.samples, key=lambda s: s.sent):
        if s.backend is None:
            continue
        previous = last.get(s.conversation)
        if previous is not None and lo <= s.sent < hi:
            stays, moves = stays + (previous == s.backend), moves + (previous != s.backend)
        last[s.conversation] = s.backend
    counts = data.received
    if counts is None:
        counts = {name: 0 for name in backend_names}
        for s in ok:
            counts[s.backend or "?"] = counts.get(s.backend or "?", 0) + 1
    fleet = [counts.get(name, 0) for name in backend_names]
    mean = sum(fleet) / len(fleet) if fleet else 0
    completed_in_window = sum(1 for s in data.samples if s.done is not None and lo <= s.done < hi)
    return {
        "sent": len(window),
        "offered_rps": len(window) / data.measure_s,
        "throughput_rps": completed_in_window / data.measure_s,
        "hit_rate": cached / prompt if prompt else 0.0,
        "prompt_tokens_mean": prompt / len(ok) if ok else 0.0,
        "ttft_p50_s": percentile(ttfts, 0.5) if ttfts else None,
        "ttft_p99_s": percentile(ttfts, 0.99) if ttfts else None,
        "peak_over_mean": max(fleet) / mean if mean else None,
        "per_backend": counts,
        "sticky": stays / (stays + moves) if stays + moves else None,
        "inflight_peak": max(data.inflight_peak.values(), default=0),
        "errors": sum(1 for s in window if s.error not in (None, "unfinished")),
        "error_sample": next((s.error for s in window
                              if s.error not in (None, "unfinished")), None),
        "unfinished": sum(1 for s in window if s.error == "unfinished"),
        "dropped": data.dropped,
        "conversations": data.conversations,
        "client_lag_p99_s": data.lateness_p99_s,
    }
