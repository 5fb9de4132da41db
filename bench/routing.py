"""Routing policies on a simulated vLLM fleet: cache hit rate, throughput, TTFT, balance.

    . .venv/bin/activate
    python -m bench.routing                  # the full run, about 15-20 minutes on 2 cores
    python -m bench.routing --quick          # a smoke run (80 % load only), about 2 minutes
    python -m bench.routing --policies round_robin,cache_aware --workloads persona \\
        --json /tmp/routing.json
    python -m bench.routing --mode stored    # the gateway keeps the conversations
    python -m bench.routing --workloads multiturn --loads 0.5 --no-dual \\
        --policies "cache_aware;cache_aware@epsilon=1;oracle"   # routing-option variants

**Fleet.** Four ``python -m serving.sim`` replicas (see ``serving/sim.py``), each with
``--max-batch 8 --capacity-blocks 2048`` (16-token blocks: 32k tokens of prefix cache)
``--prefill-ms-per-token 1 --decode-ms-per-token 25``, behind ``ragate serve`` with one model
entry per (policy, load) run, all four replicas as ``kind: vllm`` backends. The **oracle** is
one replica with 4× the capacity of one: ``--max-batch 32 --capacity-blocks 8192
--speed-scale 4`` (4× prefill throughput, 4× concurrent decodes, 4× cache, the same per-token
decode time), so it has the whole fleet's resources with no routing decision to get wrong.
Then **two gateways** (two ``ragate serve`` processes, the same config plus
``conversations: {store: redis}`` at 127.0.0.1:6379, a key prefix of this run's own) take the
requests, each sent to one of them at random.

**Workloads** (``bench/routing_workloads.py``, seeded): ``multiturn`` (many long chats),
``persona`` (one hot ~1.5k-token system prompt, many short chats), ``rag`` (retrieved
passages in the system prompt or the newest turn). Requests are stateless (the client sends
the whole history) with ``X-Session-Id``; with ``--mode stored`` the gateway keeps the
conversations (SQLite with one gateway, Redis with two) and the client sends only the new
message with ``conversation_id``. The open-loop client is in ``bench/routing_client.py``.

**Load.** Saturation is computed, not ramped: the seeded workload is replayed through one
unbounded prefix cache (every request reuses the longest prefix any earlier request left:
perfect routing, unlimited cache), which gives the mean uncached prompt tokens ``u`` and
output tokens ``o`` per request. One replica is then limited by its prefill lane
(``1 / (u·prefill)`` requests/s) and by its batch slots (``max_batch / (u·prefill +
(o-1)·decode)``); saturation is four times the smaller. Runs offer 50 % and 80 % of it as
Poisson arrivals. A policy that loses cache hits needs more prefill than this ideal, so its
own saturation is lower: that is the point.

**Each run**: the replicas' caches are reset (``POST /reset_prefix_cache``), arrivals go on
for a warm-up then a measured window; only requests sent in the window count; afterwards the
client waits up to ``drain`` seconds, then cancels what is left. Columns:
- ``hit``: sum of ``cached_tokens`` / sum of ``prompt_tokens`` over completed requests
  (the replicas' own ``usage``);
- ``thr``: requests completed during the window per second (``offered`` = sent per second);
- ``TTFT p50/p99``: client-side, streamed, to the first content token; a request still
  without one when the drain ends counts as infinite (shown as ``>drain``);
- ``peak/mean``: the most requests one replica received in the window / the mean over the
  four (the column after next);
- ``inflight``: the highest ``running + waiting`` any replica reported (sampled every 0.5 s);
- ``requests per backend``: requests each replica received in the window (its
  ``sim_requests_received_total``), in replica order;
- ``sticky``: of the turns whose conversation's previous reply came from a known replica,
  the share sent to that same replica (a move loses the history's cache);
- ``err``: failed requests + ``u`` unfinished at the end of the drain.

**Targets** (issue 5), checked for ``cache_aware`` per workload and load: hit rate ≥ 0.9×
the oracle's; peak/mean ≤ 1.3; TTFT p99 ≤ 2× its p50 at 80 % load; better than
``sglang_like`` on hit rate or TTFT p99 without losing on the other (a tie is within
1 point of hit rate or 5 % of p99).

The three workloads run at the same time, each with its own fleet, gateway(s) and client
process (``--serial`` runs them one after another). Every process started here is stopped
in a ``finally``; all traffic is to 127.0.0.1. The machine's load is printed at the end:
the simulated times are hundreds of milliseconds, so a few ms of scheduling noise is small,
but a starved client or gateway shows up as ``client lag`` (how late arrivals went out)
and ``gw cpu``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx

from bench.routing_client import drive, summarize
from bench.routing_workloads import WORKLOADS, ideal_cost
from serving import free_port, wait_until_healthy
from tests.integration.conftest import GatewayProcess

ALL_POLICIES = ["round_robin", "least_outstanding", "session", "sglang_like", "cache_aware"]
ORACLE = "oracle"
REPLICAS = 4
FLEET = {"max_batch": 8, "capacity_blocks": 2048, "block_tokens": 16,
         "prefill_ms_per_token": 1.0, "decode_ms_per_token": 25.0}
# warm-up and measured seconds per workload: long chats need longer to grow a history
TIMES = {"multiturn": (8.0, 24.0), "persona": (5.0, 20.0), "rag": (6.0, 22.0)}
QUICK_TIMES = (3.0, 6.0)
TIE_HIT, TIE_P99 = 0.01, 0.05


def known_policies() -> list[str]:
    from gateway.routing.policies import Policy  # what this checkout's gateway accepts

    return [p.value for p in Policy]


class Sim:
    """One ``python -m serving.sim`` process."""

    def __init__(self, name: str, workdir: Path, *, speed_scale: float = 1.0,
                 scale: int = 1) -> None:
        self.name, self.port = name, free_port()
        args = [sys.executable, "-m", "serving.sim", "--port", str(self.port), "--name", name,
                "--max-batch", str(FLEET["max_batch"] * scale),
                "--capacity-blocks", str(FLEET["capacity_blocks"] * scale),
                "--block-tokens", str(FLEET["block_tokens"]),
                "--prefill-ms-per-token", str(FLEET["prefill_ms_per_token"]),
                "--decode-ms-per-token", str(FLEET["decode_ms_per_token"]),
                "--speed-scale", str(speed_scale)]
        with open(workdir / f"sim-{name}.log", "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait(self) -> Sim:
        wait_until_healthy(self.url, path="/health", timeout_s=60,
                           still_running=lambda: self.process.poll() is None)
        return self

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(sims: list[Sim], timeout_s: float = 30) -> None:
    """Wait until no replica has a request left, then empty every prefix cache."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5) as client:
        for sim in sims:
            while time.monotonic() < deadline:
                text = client.get(sim.url + "/metrics").text
                busy = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith(("vllm:num_requests_running{",
                                               "vllm:num_requests_waiting{")))
                if not busy:
                    break
                time.sleep(0.2)
            client.post(sim.url + "/reset_prefix_cache")


def split_variant(label: str) -> tuple[str, dict[str, float | int]]:
    """``cache_aware@epsilon=1,block_chars=32`` -> the policy and its ``routing`` options."""
    policy, _, rest = label.partition("@")
    options: dict[str, float | int] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        options[key.strip()] = int(value) if value.strip().isdigit() else float(value)
    return policy, options


def model_name(label: str, load: float) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label) + f"-{int(load * 100)}"


def gateway_config(workdir: Path, runs: list[tuple[str, str]], fleet: list[Sim],
                   oracle: Sim | None, redis_prefix: str | None) -> dict[str, Any]:
    """One model per run, named ``{policy}-{load}``; the oracle's has its single replica."""
    models = []
    for name, label in runs:
        policy, options = split_variant(label)
        if policy == ORACLE:
            assert oracle is not None
            models.append({"name": name, "policy": "round_robin", "backends": [
                {"url": oracle.url, "kind": "vllm", "model": "sim"}]})
        else:
            models.append({"name": name, "policy": policy, "backends": [
                {"url": s.url, "kind": "vllm", "model": "sim"} for s in fleet]})
            if options:
                models[-1]["routing"] = options
    config: dict[str, Any] = {
        "local_backends": [],
        "server": {"data_dir": str(workdir / "data"), "log_level": "warning"},
        "pool": {"read_timeout_s": 300, "max_connections": 2048},
        "models": [{**m, "tokenizer": {"source": "estimate"}} for m in models],
    }
    if redis_prefix is not None:
        config["conversations"] = {"store": "redis", "redis_url": "redis://127.0.0.1:6379/0",
                                   "key_prefix": redis_prefix}
    return config


def header_accepted(gateway: GatewayProcess, model: str) -> tuple[bool, str]:
    """Does the gateway take ``X-Session-Id`` on a stateless request as a routing key?"""
    body = {"model": model, "max_tokens": 2,
            "messages": [{"role": "user", "content": "preflight"}]}
    r = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30,
                   headers={"x-session-id": "bench-preflight"})
    return r.status_code == 200, f"HTTP {r.status_code} {r.text[:200]}"


def start_gateways(config: dict[str, Any], workdir: Path, count: int) -> list[GatewayProcess]:
    """``count`` gateways on one config; a failed start is retried (the tree may be mid-edit)."""
    started: list[GatewayProcess] = []
    try:
        for i in range(count):
            sub = workdir / f"gw{count}-{i}"
            sub.mkdir(exist_ok=True)
            for attempt in range(3):
                try:
                    started.append(GatewayProcess(copy.deepcopy(config), sub).start())
                    break
                except AssertionError as exc:
                    if attempt == 2:
                        raise RuntimeError(f"gateway did not start: {str(exc)[-300:]}") from exc
                    time.sleep(15)
    except BaseException:
        for g in started:
            g.stop()
        raise
    return started


def run_phase(workload_name: str, opts: argparse.Namespace, gateways: list[GatewayProcess],
              sims: list[Sim], fleet: list[Sim], runs: list[tuple[str, str, float]],
              rate_of: dict[float, float], header: bool, rows: list[dict[str, Any]]) -> None:
    """Each run in turn; its row is appended to ``rows`` as soon as it is done."""
    workload = WORKLOADS[workload_name](opts.seed)
    warmup, measure = QUICK_TIMES if opts.quick else TIMES[workload_name]
    drain = 3.0 if opts.quick else 8.0
    for model, policy, load in runs:
        settle(sims)
        used = fleet if split_variant(policy)[0] != ORACLE else sims[-1:]
        backends = {s.name: s.url for s in used}
        cpu0 = [cpu_seconds(g.process.pid) for g in gateways if g.process]
        load0, wall0 = os.getloadavg()[0], time.monotonic()
        data = asyncio.run(drive(
            workload, [g.url for g in gateways], model, rate=rate_of[load], warmup_s=warmup,
            measure_s=measure, drain_s=drain, seed=opts.seed, backends=backends,
            mode=opts.mode, header=header))
        wall = time.monotonic() - wall0
        cpu1 = [cpu_seconds(g.process.pid) for g in gateways if g.process]
        row = summarize(data, list(backends))
        row.update(workload=workload_name, policy=policy, load=load, gateways=len(gateways),
                   mode=opts.mode, rate_rps=rate_of[load], drain_s=drain,
                   loadavg=max(load0, os.getloadavg()[0]),
                   gw_cpu_pct=100 * max((b - a for a, b in zip(cpu0, cpu1, strict=True)),
                                        default=0) / wall)
        rows.append(row)
        print(f"[{workload_name}] {len(gateways)}gw load={load:.0%} {policy:>17}: "
              f"hit={row['hit_rate']:.3f} thr={row['throughput_rps']:.1f}/"
              f"{row['offered_rps']:.1f} ttft p50={_s(row['ttft_p50_s'], drain)} "
              f"p99={_s(row['ttft_p99_s'], drain)} peak/mean={_r(row['peak_over_mean'])} "
              f"sticky={_r(row['sticky'])} per-backend={row['per_backend']} "
              f"err={row['errors']} u={row['unfinished']}"
              + (f" ({row['error_sample']})" if row["error_sample"] else ""),
              file=sys.stderr, flush=True)


def run_workload(workload_name: str, opts: argparse.Namespace) -> dict[str, Any]:
    """Everything for one workload, in its own process: fleet, gateway(s), all its runs.

    A phase that fails (a gateway that will not start) is noted; the rows so far are kept.
    """
    workload = WORKLOADS[workload_name](opts.seed)
    cost = ideal_cost(workload, opts.ideal_conversations, FLEET["block_tokens"])
    saturation = cost.saturation_rps(REPLICAS, FLEET["max_batch"],
                                     FLEET["prefill_ms_per_token"], FLEET["decode_ms_per_token"])
    rate_of = {load: load * saturation for load in opts.loads}
    workdir = Path(tempfile.mkdtemp(prefix=f"ragate-bench-routing-{workload_name}-"))
    dual_policies = opts.dual_policies or [p for p in opts.policies
                                           if split_variant(p)[0] != ORACLE]
    notes: list[str] = []
    sims: list[Sim] = []
    gateways: list[GatewayProcess] = []
    rows: list[dict[str, Any]] = []
    redis_prefix = f"ragate-bench-{uuid.uuid4().hex[:8]}"
    try:
        sims = [Sim(f"b{i}", workdir) for i in range(REPLICAS)]
        sims.append(Sim(ORACLE, workdir, speed_scale=REPLICAS, scale=REPLICAS))
        for sim in sims:
            sim.wait()
        fleet = sims[:REPLICAS]
        single = [(model_name(p, load), p, load) for load in opts.loads for p in opts.policies]
        dual = [] if opts.no_dual else [(model_name(p, load), p, load)
                                        for load in opts.dual_loads for p in dual_policies]
        header = opts.mode == "stateless"
        for count, runs in ((1, single), (2, dual)):
            if not runs:
                continue
            config = gateway_config(workdir, [(m, p) for m, p, _ in runs], fleet, sims[-1],
                                    redis_prefix if count == 2 else None)
            try:
                gateways = start_gateways(config, workdir, count)
                if count == 1 and opts.mode == "stateless":
                    header, why = header_accepted(gateways[0], runs[0][0])
                    if not header:
                        notes.append(
                            "the gateway refused X-Session-Id on a stateless request "
                            f"({why}); requests were sent without it, so `session` had no key "
                            "(it then routes by load alone) and cache_aware keyed on the first "
                            "user message")
                run_phase(workload_name, opts, gateways, sims, fleet, runs, rate_of, header,
                          rows)
            except Exception as exc:  # keep what was measured; say what broke
                notes.append(f"the {count}-gateway phase stopped: {type(exc).__name__}: "
                             f"{str(exc)[-400:]}")
                print(f"[{workload_name}] {notes[-1]}", file=sys.stderr, flush=True)
            finally:
                for g in gateways:
                    g.stop()
                gateways = []
    finally:
        for g in gateways:
            g.stop()
        for sim in sims:
            sim.stop()
        _drop_redis_keys(redis_prefix)
    return {"workload": workload_name, "summary": workload.summary, "saturation_rps": saturation,
            "mode": opts.mode,
            "ideal": {"requests": cost.requests, "prompt_tokens": cost.prompt_tokens,
                      "uncached_tokens": cost.uncached_tokens,
                      "output_tokens": cost.output_tokens, "hit_rate": cost.hit_rate},
            "rows": rows, "notes": notes, "workdir": str(workdir)}


def _drop_redis_keys(prefix: str) -> None:
    try:
        import redis
    except ImportError:
        return
    try:
        client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=5)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    except redis.RedisError:
        pass


# ---------------------------------------------------------------- report


def _s(value: float | None, drain: float = 8.0) -> str:
    if value is None:
        return "-"
    return f">{drain:.0f}" if value == float("inf") else f"{value:.2f}"


def _r(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def tables(results: list[dict[str, Any]]) -> str:
    out = []
    for res in results:
        out.append(f"\n### {res['workload']}: {res['summary']}\n")
        ideal = res["ideal"]
        if ideal is None:
            out.extend(f"note: {note}\n" for note in res["notes"])
            continue
        out.append(f"ideal (perfect routing, unbounded cache, {ideal['requests']} requests): "
                   f"prompt {ideal['prompt_tokens']:.0f} tokens, uncached "
                   f"{ideal['uncached_tokens']:.0f}, output {ideal['output_tokens']:.0f}, hit "
                   f"{ideal['hit_rate']:.3f}; fleet saturation {res['saturation_rps']:.1f} "
                   "req/s\n")
        for note in res["notes"]:
            out.append(f"note: {note}\n")
        out.append("| gw | load | policy | hit | thr / offered req/s | TTFT p50 s | TTFT p99 s "
                   "| peak/mean | inflight | requests per backend | sticky | err |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in res["rows"]:
            per = " ".join(str(v) for v in r["per_backend"].values())
            out.append(
                f"| {r['gateways']} | {r['load']:.0%} | {r['policy']} | {r['hit_rate']:.3f} | "
                f"{r['throughput_rps']:.1f} / {r['offered_rps']:.1f} | "
                f"{_s(r['ttft_p50_s'], r['drain_s'])} | {_s(r['ttft_p99_s'], r['drain_s'])} | "
                f"{_r(r['peak_over_mean'])} | {r['inflight_peak']} | {per} | "
                f"{_r(r.get('sticky'))} | {r['errors']}+{r['unfinished']}u |")
        lost = _dual_loss(res["rows"])
        if lost:
            out.append("\ntwo gateways vs one (hit rate lost, in points; relative):\n")
            out.append("| load | policy | hit 1 gw | hit 2 gw | lost | TTFT p99 1 gw | 2 gw |")
            out.append("|---|---|---|---|---|---|---|")
            for one, two in lost:
                loss = one["hit_rate"] - two["hit_rate"]
                rel = loss / one["hit_rate"] if one["hit_rate"] else 0
                out.append(f"| {one['load']:.0%} | {one['policy']} | {one['hit_rate']:.3f} | "
                           f"{two['hit_rate']:.3f} | {100 * loss:+.1f} ({100 * rel:+.0f} %) | "
                           f"{_s(one['ttft_p99_s'], one['drain_s'])} | "
                           f"{_s(two['ttft_p99_s'], two['drain_s'])} |")
    return "\n".join(out)


def _dual_loss(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    one = {(r["policy"], r["load"]): r for r in rows if r["gateways"] == 1}
    return [(one[(r["policy"], r["load"])], r) for r in rows
            if r["gateways"] == 2 and (r["policy"], r["load"]) in one]


def verdicts(results: list[dict[str, Any]]) -> str:
    lines = ["\nverdict (cache_aware, one gateway):"]
    for res in results:
        rows = {(r["policy"], r["load"]): r for r in res["rows"] if r["gateways"] == 1}
        for load in sorted({r["load"] for r in res["rows"]}):
            ca = rows.get(("cache_aware", load))
            if ca is None:
                lines.append(f"- {res['workload']} {load:.0%}: cache_aware not run")
                continue
            checks = []
            oracle = rows.get((ORACLE, load))
            if oracle:
                ok = ca["hit_rate"] >= 0.9 * oracle["hit_rate"]
                checks.append(f"hit {ca['hit_rate']:.3f} vs 0.9×oracle "
                              f"{0.9 * oracle['hit_rate']:.3f} {_ok(ok)}")
            pm = ca["peak_over_mean"]
            checks.append(f"peak/mean {_r(pm)} ≤ 1.3 {_ok(pm is not None and pm <= 1.3)}")
            p50, p99 = ca["ttft_p50_s"], ca["ttft_p99_s"]
            if load >= 0.8 and p50 and p99 is not None:
                ratio = (f"p99/p50 {p99 / p50:.1f} ≤ 2 {_ok(p99 <= 2 * p50)}")
                if oracle and oracle["ttft_p50_s"] and oracle["ttft_p99_s"] is not None:
                    ratio += f" (oracle's {oracle['ttft_p99_s'] / oracle['ttft_p50_s']:.1f})"
                checks.append(ratio)
            sg = rows.get(("sglang_like", load))
            if sg:
                checks.append(f"vs sglang_like: {_versus(ca, sg)}")
            lines.append(f"- {res['workload']} {load:.0%}: " + "; ".join(checks))
    return "\n".join(lines)


def _ok(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def _versus(ca: dict[str, Any], sg: dict[str, Any]) -> str:
    dh = ca["hit_rate"] - sg["hit_rate"]
    a, b = ca["ttft_p99_s"], sg["ttft_p99_s"]
    dp = 0.0 if a == b else (a - b) / b if b not in (0, None, float("inf")) else -1.0
    hit_better, hit_worse = dh > TIE_HIT, dh < -TIE_HIT
    p99_better, p99_worse = dp < -TIE_P99, dp > TIE_P99
    ok = (hit_better and not p99_worse) or (p99_better and not hit_worse)
    drain = ca["drain_s"]
    return f"hit {dh * 100:+.1f} pts, p99 {_s(a, drain)} vs {_s(b, drain)} s {_ok(ok)}"


def noise(results: list[dict[str, Any]]) -> str:
    rows = [r for res in results for r in res["rows"]]
    if not rows:
        return ""
    lag = max(r["client_lag_p99_s"] for r in rows)
    cpu = max(r["gw_cpu_pct"] for r in rows)
    loads = [r["loadavg"] for r in rows]
    return (f"\nmachine: {os.cpu_count()} cores; 1-min load average during runs "
            f"{min(loads):.1f}..{max(loads):.1f}; client lag p99 (arrivals sent late) up to "
            f"{1000 * lag:.0f} ms; busiest gateway {cpu:.0f} % of a core")


def _guarded(workload: str, opts: argparse.Namespace) -> dict[str, Any]:
    try:
        return run_workload(workload, opts)
    except Exception as exc:
        return {"workload": workload, "summary": "(failed)", "saturation_rps": 0.0,
                "mode": opts.mode, "ideal": None, "rows": [],
                "notes": [f"failed: {type(exc).__name__}: {str(exc)[-400:]}"], "workdir": ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="80 %% load, short runs")
    parser.add_argument("--policies", default=",".join(ALL_POLICIES + [ORACLE]),
                        help="comma-separated; a variant sets the model's routing options, "
                        "e.g. cache_aware@epsilon=1,block_chars=32 (separate variants with ';' "
                        "then)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--loads", default="0.5,0.8")
    parser.add_argument("--dual-loads", default=None,
                        help="loads of the two-gateway runs (default: --loads)")
    parser.add_argument("--no-dual", action="store_true", help="skip the two-gateway runs")
    parser.add_argument("--serial", action="store_true", help="one workload at a time")
    parser.add_argument("--mode", choices=("stateless", "stored"), default="stateless",
                        help="full history per request (default), or gateway-stored "
                        "conversations")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--ideal-conversations", type=int, default=120)
    parser.add_argument("--json", type=Path, help="write every row here")
    opts = parser.parse_args()
    if opts.quick:
        opts.loads = "0.8"
    opts.loads = [float(x) for x in opts.loads.split(",")]
    opts.dual_loads = ([float(x) for x in opts.dual_loads.split(",")] if opts.dual_loads
                       else opts.loads)
    known = known_policies()
    sep = ";" if "@" in opts.policies else ","
    wanted = [p.strip() for p in opts.policies.split(sep) if p.strip()]
    missing = [p for p in wanted if split_variant(p)[0] not in (*known, ORACLE)]
    opts.policies = [p for p in wanted if p not in missing]
    if opts.quick:
        # the two-gateway path, smoke-tested on one policy (cache_aware when it runs)
        gateway_policies = [p for p in opts.policies if split_variant(p)[0] != ORACLE]
        opts.dual_policies = [p for p in gateway_policies if p == "cache_aware"] or \
            gateway_policies[:1]
    else:
        opts.dual_policies = None
    workloads = [w.strip() for w in opts.workloads.split(",") if w.strip()]
    for w in workloads:
        if w not in WORKLOADS:
            parser.error(f"unknown workload {w!r}; expected one of {', '.join(WORKLOADS)}")
    started = time.monotonic()
    results = []
    if opts.serial or len(workloads) == 1:
        for w in workloads:
            results.append(_guarded(w, opts))
    else:
        with ProcessPoolExecutor(len(workloads), mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_guarded, w, opts) for w in workloads]
            results = [f.result() for f in futures]
    print(f"\n## Routing on a simulated vLLM fleet, {opts.mode} requests ({REPLICAS} replicas: "
          + ", ".join(f"{k} {v}" for k, v in FLEET.items())
          + f"; oracle = 1 replica with {REPLICAS}× max_batch, cache and prefill speed)")
    if missing:
        print(f"\nnot in this gateway's Policy enum, skipped: {', '.join(missing)}")
    print(tables(results))
    print(verdicts(results))
    print(noise(results))
    print(f"\nwall time {time.monotonic() - started:.0f} s")
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
