"""Gateway overhead: a fake OpenAI backend alone, ragate in front of it, LiteLLM in front of it.

    . .venv/bin/activate
    python bench/overhead.py                      # backend, nginx, ragate, LiteLLM: about 4 minutes
    python bench/overhead.py --skip-litellm --no-stream --duration 5
    python bench/overhead.py --json bench/results/overhead.json

What it measures: requests/s and p50/p99 latency of ``POST /v1/chat/completions`` at
concurrency 1 and 32 (``--concurrency``), non-streamed and, unless ``--no-stream``,
streamed (``"stream": true``; latency is then the time to the last byte), for these
targets on loopback, one after the other:

- ``backend``: the fake backend alone (``bench/fake_backend.py``, raw asyncio on uvloop,
  canned answers; about 50k req/s on one core here, far above what it is measured against);
- ``nginx``: Debian's nginx in front of it, one worker, a keep-alive upstream (64),
  HTTP/1.1 to the backend, no buffering, no access log: the floor a proxy can reach;
- ``ragate``: ``ragate serve`` with one uvicorn worker, log level warning, no API keys,
  one model ``fake`` routed to the fake backend (``kind: vllm``);
- ``ragate-tenants``: ragate with a key, grants and limits in Redis (see below);
- ``ragate-w1`` / ``ragate-w2``: ``ragate serve --workers 1`` / ``--workers 2`` with the
  conversations in a Redis of the script's own (what more than one worker needs), not
  pinned: two workers need both cores, which they then share with wrk and the backend;
- ``replicas-1`` / ``replicas-2``: one / two separate ``ragate serve --workers 1``
  processes sharing a Redis of the script's own (conversations, backend registry), behind
  nginx round-robin (the balancer a deployment has in front of its replicas); the
  replicas unpinned, nginx on the helpers' core; the cpu columns are then nginx's;
- ``litellm``: ``litellm --num_workers 1`` (uvicorn) from its own venv
  ``bench/.venv-litellm`` (created with ``pip install 'litellm[proxy]'`` on first use),
  one model ``fake`` = ``openai/fake-upstream`` at the fake backend, no master key,
  no database, ``LITELLM_LOG=ERROR`` (so no access log, like ragate), the local cost map.

Load generator: ``wrk`` (``apt-get install -y wrk``), one thread, ``-c`` = concurrency,
with a Lua script that sets the POST body and prints wrk's summary as JSON. Each
measurement is a warm-up run (``--warmup`` s, discarded) then ``--duration`` s measured.
Every target is checked first with one real request of each kind (the answer must be
the fake backend's text), so a proxy that answers errors fast cannot look good.

CPU placement (this machine has 2 cores, and the load generator competes with the servers):
with at least 2 usable CPUs the process under test -- the proxy, or the backend when it is
measured alone -- is pinned with ``taskset`` to the first CPU, and wrk and the backend
(when behind a proxy) to the others. So each proxy gets one whole core, as a single
uvicorn worker can only use about one; wrk (C, epoll) and the fake backend need little.
``--no-pin`` turns this off. CPU is counted for the process and its children (nginx's
worker, ragate's worker processes). The ``cpu %`` column is the CPU time the process under test
used during the measured run, in percent of one core: well under 100 at c=32 means it
was starved (other work on the machine) or waiting, not CPU-bound. ``cpu ms/req`` is that
CPU time per request: the cost of one request in the process under test, which moves less
than req/s when other work shares the machine (req/s of a CPU-bound server is about
1000 / cpu ms/req at 100 % CPU).

Targets, computed at the end per mode: ragate at c=32 has >= 20x LiteLLM's throughput;
ragate adds <= 1 ms to the p50 latency at c=1 (added = ragate p50 - backend p50), and
<= 0.3 ms for the hot-path work; ragate's CPU per request at c=32 is <= 0.3 ms
non-streamed and <= 0.5 ms streamed; keys, grants and limits cost <= 15 % of throughput
and <= 0.3 ms of p50. nginx's figures and the ``--workers 2`` / ``--workers 1`` ratio
are reported beside them.

Every process started here (backends, proxies, wrk) runs in its own session and is
stopped in a ``finally`` (SIGTERM, then SIGKILL after 10 s); all traffic is to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LITELLM_VENV = REPO / "bench" / ".venv-litellm"
HOST = "127.0.0.1"
FAKE_CONTENT = "Hello! I am a fake backend."  # bench.fake_backend.CONTENT
CHAT_PATH = "/v1/chat/completions"
REQUEST = {"model": "fake", "messages": [{"role": "user", "content": "Say hello."}],
           "max_tokens": 16}

WRK_LUA = r"""
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
%(auth)s

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%%d,"duration_us":%%d,"bytes":%%d,"connect":%%d,"read":%%d,' ..
    '"write":%%d,"status":%%d,"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,' ..
    '"mean_us":%%.1f,"max_us":%%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
"""


class BenchError(RuntimeError):
    pass


@dataclass
class Result:
    target: str
    mode: str  # "non-stream" or "stream"
    concurrency: int
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: int
    error_detail: dict[str, int] = field(default_factory=dict)
    cpu_pct: float | None = None
    cpu_ms_per_req: float | None = None


# -- processes --------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the process and its live descendants (nginx
        and ``ragate serve --workers N`` do their work in child processes)."""
        total, pending = 0, [self.popen.pid]
        while pending:
            pid = pending.pop()
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as f:
                        pending.extend(int(child) for child in f.read().split())
            except (OSError, ValueError):
                continue  # gone meanwhile
        return total / os.sysconf("SC_CLK_TCK")


class Processes:
    """Everything started here, each in its own session; ``stop_all`` ends them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str], *, cpus: set[int] | None,
              env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
        if cpus:
            argv = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *argv]
        log = self.workdir / f"{name}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=cwd or REPO, env=env, start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGTERM)
            try:
                proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(timeout=10)
        # the session leader is gone; anything it left in its group goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: dict[str, Any] | None = None,
         timeout: float = 10.0, key: str | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(proc: Proc, url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise BenchError(f"{proc.name} exited with {proc.popen.returncode} before it was "
                             f"ready; its log ends with:\n{proc.tail()}")
        with contextlib.suppress(OSError):
            if http("GET", url, timeout=2)[0] == 200:
                return
        time.sleep(0.2)
    raise BenchError(f"{proc.name} not ready at {url} after {timeout_s:.0f} s; "
                     f"its log ends with:\n{proc.tail()}")


def check_answers(name: str, base: str, key: str | None = None) -> None:
    """One real request of each kind; the fake backend's text must come back."""
    status, raw = http("POST", base + CHAT_PATH, REQUEST, timeout=30, key=key)
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, LookupError, TypeError):
        content = None
    if status != 200 or content != FAKE_CONTENT:
        raise BenchError(f"{name}: unexpected chat answer {status}: {raw[:500]!r}")
    status, raw = http("POST", base + CHAT_PATH, {**REQUEST, "stream": True}, timeout=30,
                       key=key)
    text = ""
    for line in raw.decode(errors="replace").splitlines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            for choice in json.loads(line[5:]).get("choices") or []:
                text += (choice.get("delta") or {}).get("content") or ""
    if status != 200 or text != FAKE_CONTENT or "data: [DONE]" not in raw.decode():
        raise BenchError(f"{name}: unexpected stream {status}: {raw[:500]!r}")


# -- targets ----------------------------------------------------------------------------


@dataclass
class Layout:
    """Which CPUs the process under test, and everything else, may use (None: any)."""

    sut: set[int] | None
    helpers: set[int] | None

    @classmethod
    def choose(cls, pin: bool) -> Layout:
        cpus = sorted(os.sched_getaffinity(0))
        if not pin or len(cpus) < 2 or shutil.which("taskset") is None:
            return cls(None, None)
        return cls({cpus[0]}, set(cpus[1:]))


def start_backend(procs: Processes, cpus: set[int] | None) -> tuple[Proc, str]:
    port = free_port()
    proc = procs.start("backend", [sys.executable, "-m", "bench.fake_backend", "--host", HOST,
                                   "--port", str(port)], cpus=cpus)
    base = f"http://{HOST}:{port}"
    wait_ready(proc, base + "/health", 15)
    return proc, base


def ragate_argv() -> list[str]:
    script = Path(sys.executable).parent / "ragate"
    if script.exists():
        return [str(script)]
    found = shutil.which("ragate")
    if found:
        return [found]
    return [sys.executable, "-c", "from gateway.cli import main; main()"]


# ragate-tenants: a chat key with a model grant, knowledge-base grants and every limit
# (high enough never to refuse), in a team with limits of its own, keys and limits in
# Redis: each request is authenticated, granted, admitted by the Lua script for two
# scopes, settled and recorded
TENANT_KEY = "sk-bench-chat"
ADMIN_KEY = "sk-bench-admin"
HIGH = 10**12
TENANT_LIMITS = (f"{{requests_per_minute: {HIGH}, tokens_per_minute: {HIGH}, "
                 f"max_concurrent: 100000, tokens_per_day: {HIGH}, tokens_per_month: {HIGH}}}")


def start_redis(procs: Processes, cpus: set[int] | None) -> tuple[Proc, str]:
    """A Redis of the benchmark's own, on the helpers' core: the shared one at 6379 may
    land on the core under test and cost it CPU that is not ragate's."""
    port = free_port()
    proc = procs.start("redis", ["redis-server", "--bind", HOST, "--port", str(port),
                                 "--save", "", "--appendonly", "no"], cpus=cpus)
    import redis

    client = redis.Redis(host=HOST, port=port)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"redis-server did not start (see {proc.log})") from None
            time.sleep(0.05)
    return proc, f"redis://{HOST}:{port}/0"


def tenants_config(prefix: str, store: str, redis_url: str | None) -> str:
    """The auth section: keys in Redis and limits shared (``redis``), or keys in SQLite
    and limits in process (``local``, one gateway)."""
    keys = ("auth:\n"
            "  keys:\n"
            f"    - {{key: {ADMIN_KEY}, role: admin, owner: ops}}\n"
            f"    - {{key: {TENANT_KEY}, owner: bench, team: bench-team, models: [fake],\n"
            f"       knowledge_bases: [handbook], limits: {TENANT_LIMITS}}}\n")
    if store == "local":
        return keys + "  limits: {store: local}\n"
    return (keys + f"  store: redis\n  redis_url: \"{redis_url}\"\n  key_prefix: {prefix}\n"
            "  limits: {store: redis}\n")


def start_ragate(procs: Processes, workdir: Path, backend: str,
                 cpus: set[int] | None, tenants: str | None = None,
                 redis_url: str | None = None, workers: int | None = None,
                 label: str | None = None) -> tuple[Proc, str]:
    """``tenants``: None (open gateway), "redis" or "local" (keys, grants, limits on).
    ``workers``: ``--workers N``, with the conversations in ``redis_url`` (what more than
    one worker needs)."""
    port = free_port()
    name = label or ("ragate-tenants" if tenants else f"ragate-w{workers}" if workers
                     else "ragate")
    config = workdir / f"{name}.yaml"
    prefix = f"ragate-bench-{os.getpid()}"
    shared = (f"conversations: {{store: redis, redis_url: \"{redis_url}\", "
              f"key_prefix: {prefix}}}\n" if workers else "")
    config.write_text(
        "local_backends: []\n"
        f"server: {{log_level: warning, data_dir: \"{workdir / config.stem}\"}}\n"
        "knowledge: {enabled: false}\n"
        + shared
        + (tenants_config(prefix, tenants, redis_url) if tenants else "")
        + "models:\n"
        "  - name: fake\n"
        f"    backends: [{{url: \"{backend}\", kind: vllm, model: fake-upstream}}]\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGATE_")}
    argv = [*ragate_argv(), "serve", "-c", str(config), "--host", HOST, "--port", str(port),
            "--no-local"]
    if workers:
        argv += ["--workers", str(workers)]
    proc = procs.start("ragate", argv, cpus=cpus, env=env)
    base = f"http://{HOST}:{port}"
    wait_ready(proc, base + "/ready", 60)
    if tenants:
        status, raw = http("PUT", base + "/admin/teams/bench-team",
                           {"knowledge_bases": ["faq"],
                            "limits": {"requests_per_minute": HIGH, "tokens_per_day": HIGH}},
                           key=ADMIN_KEY)
        if status != 200:
            raise BenchError(f"ragate-tenants: team not set: {status} {raw[:300]!r}")
    return proc, base


NGINX_CONF = """
worker_processes 1;
daemon off;
pid %(workdir)s/nginx.pid;
error_log %(workdir)s/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %(workdir)s/nginx-body;
  proxy_temp_path %(workdir)s/nginx-proxy;
  upstream backend { %(servers)s keepalive 64; }
  server {
    listen %(host)s:%(port)d;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
"""


def start_nginx(procs: Processes, workdir: Path, backend: str | list[str],
                cpus: set[int] | None) -> tuple[Proc, str]:
    """Debian's nginx as the reference reverse proxy: one worker, keep-alive upstream,
    no buffering (what a streaming proxy needs), no access log (ragate logs none here).
    Several backends: round-robin over them (the balancer in front of replicas)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise BenchError("nginx is missing: apt-get install -y nginx")
    port = free_port()
    config = workdir / "nginx.conf"
    upstreams = [backend] if isinstance(backend, str) else backend
    servers = " ".join(f"server {u.split('://', 1)[1]};" for u in upstreams)
    config.write_text(NGINX_CONF % {"workdir": workdir, "host": HOST, "port": port,
                                    "servers": servers})
    proc = procs.start("nginx", [nginx, "-p", str(workdir), "-c", str(config)], cpus=cpus)
    base = f"http://{HOST}:{port}"
    wait_ready(proc, base + "/health", 15)
    return proc, base


def ensure_litellm(venv: Path) -> Path:
    """The ``litellm`` script of ``venv``, creating the venv the first time."""
    script = venv / "bin" / "litellm"
    if script.exists():
        return script
    commands = [[sys.executable, "-m", "venv", str(venv)],
                [str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"]]
    print(f"creating the LiteLLM venv {venv} (about a minute):", file=sys.stderr)
    for command in commands:
        print("  " + " ".join(command), file=sys.stderr)
        if subprocess.run(command).returncode != 0:
            raise BenchError("could not install LiteLLM; run the commands above by hand, "
                             "or pass --skip-litellm")
    if not script.exists():
        raise BenchError(f"{script} missing after the install")
    return script


LITELLM_KEY = "sk-litellm-bench-master"


def start_litellm(procs: Processes, workdir: Path, backend: str, cpus: set[int] | None,
                  venv: Path, keyed: bool = False) -> tuple[Proc, str]:
    """``keyed``: LiteLLM's closest configuration to ragate-tenants that runs here: its
    master key and an rpm limit on the deployment. Its virtual keys (per-key limits and
    budgets) need Postgres and Prisma, whose engines Prisma downloads at start-up from
    binaries.prisma.sh: not reachable from these machines."""
    script = ensure_litellm(venv)
    port = free_port()
    config = workdir / ("litellm-keyed.yaml" if keyed else "litellm.yaml")
    rpm = ", rpm: 1000000000" if keyed else ""
    config.write_text(
        "model_list:\n"
        "  - model_name: fake\n"
        "    litellm_params:\n"
        f"      {{model: openai/fake-upstream, api_base: \"{backend}/v1\", api_key: x{rpm}}}\n"
        + (f"general_settings: {{master_key: {LITELLM_KEY}}}\n" if keyed else "")
    )
    drop = ("DATABASE_URL", "DIRECT_URL", "REDIS_URL", "REDIS_HOST", "LITELLM_MASTER_KEY",
            "OPENAI_API_KEY", "OPENAI_BASE_URL", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # no fetch of the price list
        LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY="true",  # no key, loopback only
        LITELLM_TELEMETRY="False",
        LITELLM_LOG="ERROR",  # uvicorn log level error: no access log (ragate has none)
        DISABLE_SCHEMA_UPDATE="true",
        NO_PROXY="*", no_proxy="*",
        PATH=f"{script.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    proc = procs.start("litellm", [str(script), "--config", str(config), "--host", HOST,
                                   "--port", str(port), "--num_workers", "1"],
                       cpus=cpus, env=env, cwd=workdir)
    base = f"http://{HOST}:{port}"
    wait_ready(proc, base + "/health/liveliness", 120)
    return proc, base


def litellm_version(venv: Path) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m;"
                          "print(m.version('litellm'))"], capture_output=True, text=True)
    return out.stdout.strip() or None


# -- load -------------------------------------------------------------------------------


def run_wrk(procs: Processes, workdir: Path, url: str, body: dict[str, Any], concurrency: int,
            seconds: float, cpus: set[int] | None, key: str | None = None) -> dict[str, Any]:
    script = workdir / f"wrk-{abs(hash(json.dumps(body, sort_keys=True)))}-{key or 'open'}.lua"
    if not script.exists():
        auth = f'wrk.headers["Authorization"] = "Bearer {key}"' if key else ""
        script.write_text(WRK_LUA % {"body": json.dumps(body, separators=(",", ":")),
                                     "auth": auth})
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
            "-s", str(script), url]
    proc = procs.start("wrk", argv, cpus=cpus)
    try:
        proc.popen.wait(timeout=seconds + 30)
    finally:
        procs.stop(proc)
    for line in proc.log.read_text(errors="replace").splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])  # type: ignore[no-any-return]
    raise BenchError(f"wrk printed no result:\n{proc.tail()}")


def measure(procs: Processes, workdir: Path, target: str, base: str, sut: Proc, mode: str,
            concurrency: int, args: argparse.Namespace, cpus: set[int] | None) -> Result:
    body = {**REQUEST, "stream": True} if mode == "stream" else REQUEST
    url = base + CHAT_PATH
    key = key_of(target)
    if args.warmup > 0:
        run_wrk(procs, workdir, url, body, concurrency, args.warmup, cpus, key)
    cpu0 = sut.cpu_seconds()
    wall0 = time.monotonic()
    raw = run_wrk(procs, workdir, url, body, concurrency, args.duration, cpus, key)
    cpu_s = sut.cpu_seconds() - cpu0
    cpu_pct = 100 * cpu_s / (time.monotonic() - wall0)
    duration_s = raw["duration_us"] / 1e6
    detail = {k: raw[k] for k in ("connect", "read", "write", "status", "timeout") if raw[k]}
    return Result(
        target=target, mode=mode, concurrency=concurrency, requests=raw["requests"],
        duration_s=round(duration_s, 3), rps=round(raw["requests"] / duration_s, 1),
        p50_ms=raw["p50_us"] / 1000, p90_ms=raw["p90_us"] / 1000, p99_ms=raw["p99_us"] / 1000,
        mean_ms=round(raw["mean_us"] / 1000, 3), max_ms=raw["max_us"] / 1000,
        errors=sum(detail.values()), error_detail=detail, cpu_pct=round(cpu_pct),
        cpu_ms_per_req=round(1000 * cpu_s / raw["requests"], 3) if raw["requests"] else None,
    )


@contextlib.contextmanager
def target_running(name: str, procs: Processes, workdir: Path, layout: Layout,
                   args: argparse.Namespace) -> Iterator[tuple[str, Proc]]:
    """Start the fake backend (and the proxy ``name`` in front of it); stop them after."""
    started: list[Proc] = []
    try:
        if name == "backend":
            backend, base = start_backend(procs, layout.sut)
            started.append(backend)
            sut = backend
        else:
            backend, backend_base = start_backend(procs, layout.helpers)
            started.append(backend)
            if name in ("ragate", "ragate-tenants"):
                tenants = args.tenants_store if name == "ragate-tenants" else None
                redis_url = None
                if tenants == "redis":
                    store, redis_url = start_redis(procs, layout.helpers)
                    started.append(store)
                sut, base = start_ragate(procs, workdir, backend_base, layout.sut,
                                         tenants=tenants, redis_url=redis_url)
            elif name in ("ragate-w1", "ragate-w2"):
                # every CPU for the gateway (two workers on one core would share it);
                # wrk and the backend then compete with it, for both runs alike
                store, redis_url = start_redis(procs, layout.helpers)
                started.append(store)
                sut, base = start_ragate(procs, workdir, backend_base, None,
                                         redis_url=redis_url, workers=int(name[-1]))
            elif name in ("replicas-1", "replicas-2"):
                # N gateways sharing a Redis (conversations, registry), one process each,
                # behind nginx round-robin on the helpers' core; the replicas get every
                # CPU, alike for both runs (the cpu columns are then nginx's)
                store, redis_url = start_redis(procs, layout.helpers)
                started.append(store)
                replicas = []
                for index in range(int(name[-1])):
                    replica, replica_base = start_ragate(
                        procs, workdir, backend_base, None, redis_url=redis_url, workers=1,
                        label=f"{name}-{index}")
                    started.append(replica)
                    replicas.append(replica_base)
                sut, base = start_nginx(procs, workdir, replicas, layout.helpers)
            elif name == "nginx":
                sut, base = start_nginx(procs, workdir, backend_base, layout.sut)
            else:
                sut, base = start_litellm(procs, workdir, backend_base, layout.sut,
                                          args.litellm_venv, keyed=name == "litellm-key")
            started.append(sut)
        check_answers(name, base, key_of(name))
        yield base, sut
    finally:
        for proc in reversed(started):
            procs.stop(proc)


def key_of(target: str) -> str | None:
    return {"ragate-tenants": TENANT_KEY, "litellm-key": LITELLM_KEY}.get(target)


# -- report -----------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    head = ("| target | mode | concurrency | req/s | p50 ms | p99 ms | errors | cpu % "
            "| cpu ms/req |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = [
        f"| {r.target} | {r.mode} | {r.concurrency} | {r.rps:,.0f} | {r.p50_ms:.2f} | "
        f"{r.p99_ms:.2f} | {r.errors} | {'' if r.cpu_pct is None else r.cpu_pct} | "
        f"{'' if r.cpu_ms_per_req is None else f'{r.cpu_ms_per_req:.3f}'} |"
        for r in results
    ]
    return "\n".join([head, *rows])


def medians(results: list[Result]) -> list[Result]:
    """One result per target, mode and concurrency: the run with the median throughput
    (the lower middle one for an even count), in first-seen order."""
    groups: dict[tuple[str, str, int], list[Result]] = {}
    for r in results:
        groups.setdefault((r.target, r.mode, r.concurrency), []).append(r)
    return [sorted(runs, key=lambda r: r.rps)[(len(runs) - 1) // 2] for runs in groups.values()]


def per_round_costs(results: list[Result], args: argparse.Namespace) -> list[float]:
    """The limits' throughput cost at the highest concurrency, round by round."""
    high = max(args.concurrency)
    off = [r.rps for r in results if (r.target, r.mode, r.concurrency)
           == ("ragate", "non-stream", high)]
    on = [r.rps for r in results if (r.target, r.mode, r.concurrency)
          == ("ragate-tenants", "non-stream", high)]
    return [round(100 * (1 - b / a), 1) for a, b in zip(off, on, strict=False) if a > 0]


def summarize(results: list[Result], concurrency: list[int]) -> dict[str, Any]:
    """Ratios against the targets, per mode, from the lowest and highest concurrency."""
    by = {(r.target, r.mode, r.concurrency): r for r in results}
    low, high = min(concurrency), max(concurrency)
    summary: dict[str, Any] = {}
    for mode in ("non-stream", "stream"):
        entry: dict[str, Any] = {}
        ragate_hi, litellm_hi = by.get(("ragate", mode, high)), by.get(("litellm", mode, high))
        if ragate_hi and litellm_hi and litellm_hi.rps > 0:
            ratio = ragate_hi.rps / litellm_hi.rps
            entry["throughput_ratio_ragate_over_litellm"] = round(ratio, 2)
            entry["throughput_target_met"] = ratio >= 20
        for proxy in ("ragate", "litellm"):
            backend_lo, proxy_lo = by.get(("backend", mode, low)), by.get((proxy, mode, low))
            if backend_lo and proxy_lo:
                entry[f"{proxy}_added_p50_ms"] = round(proxy_lo.p50_ms - backend_lo.p50_ms, 3)
        if "ragate_added_p50_ms" in entry:
            entry["latency_target_met"] = entry["ragate_added_p50_ms"] <= 1.0
        if ragate_hi and ragate_hi.cpu_ms_per_req is not None:
            entry["ragate_cpu_ms"] = ragate_hi.cpu_ms_per_req
        off_hi, on_hi = ragate_hi, by.get(("ragate-tenants", mode, high))
        off_lo, on_lo = by.get(("ragate", mode, low)), by.get(("ragate-tenants", mode, low))
        if off_hi and on_hi and off_hi.rps > 0:
            entry["tenants_throughput_cost_pct"] = round(100 * (1 - on_hi.rps / off_hi.rps), 1)
        if off_lo and on_lo:
            entry["tenants_added_p50_ms"] = round(on_lo.p50_ms - off_lo.p50_ms, 3)
        nginx_hi = by.get(("nginx", mode, high))
        if ragate_hi and nginx_hi and ragate_hi.rps > 0:
            entry["throughput_ratio_nginx_over_ragate"] = round(nginx_hi.rps / ragate_hi.rps, 1)
        backend_lo, nginx_lo = by.get(("backend", mode, low)), by.get(("nginx", mode, low))
        if backend_lo and nginx_lo:
            entry["nginx_added_p50_ms"] = round(nginx_lo.p50_ms - backend_lo.p50_ms, 3)
        one, two = by.get(("ragate-w1", mode, high)), by.get(("ragate-w2", mode, high))
        if one and two and one.rps > 0:
            entry["workers_2_over_1"] = round(two.rps / one.rps, 2)
        one, two = by.get(("replicas-1", mode, high)), by.get(("replicas-2", mode, high))
        if one and two and one.rps > 0:
            entry["replicas_2_over_1"] = round(two.rps / one.rps, 2)
        keyed_hi = by.get(("litellm-key", mode, high))
        if on_hi and keyed_hi and keyed_hi.rps > 0:
            entry["tenants_ratio_over_litellm_key"] = round(on_hi.rps / keyed_hi.rps, 1)
        if entry:
            summary[mode] = entry
    summary["concurrency_low"], summary["concurrency_high"] = low, high
    return summary


def summary_lines(summary: dict[str, Any]) -> list[str]:
    low, high = summary["concurrency_low"], summary["concurrency_high"]
    lines = []
    for mode in ("non-stream", "stream"):
        entry = summary.get(mode)
        if not entry:
            continue
        label = "non-streamed" if mode == "non-stream" else "streamed"
        if "throughput_ratio_ragate_over_litellm" in entry:
            ratio = entry["throughput_ratio_ragate_over_litellm"]
            verdict = "met" if ratio >= 20 else f"MISSED by {20 / ratio:.1f}x"
            lines.append(f"- {label}: ragate / LiteLLM throughput at c={high}: {ratio:.1f}x "
                         f"(target >= 20x: {verdict})")
        if "ragate_added_p50_ms" in entry:
            added = entry["ragate_added_p50_ms"]
            verdict = "met" if added <= 1.0 else f"MISSED by {added - 1.0:.2f} ms"
            strict = "met" if added <= 0.3 else "MISSED"
            lines.append(f"- {label}: ragate added p50 at c={low}: {added:.2f} ms "
                         f"(target <= 1 ms: {verdict}; hot-path target <= 0.3 ms: {strict})")
        if ragate_cpu := entry.get("ragate_cpu_ms"):
            target = 0.3 if mode == "non-stream" else 0.5  # a stream: 12 events to relay
            verdict = "met" if ragate_cpu <= target else "MISSED"
            lines.append(f"- {label}: ragate CPU per request at c={high}: {ragate_cpu:.3f} ms "
                         f"(target <= {target} ms: {verdict})")
        if "nginx_added_p50_ms" in entry:
            lines.append(f"- {label}: nginx added p50 at c={low}: "
                         f"{entry['nginx_added_p50_ms']:.2f} ms")
        if "throughput_ratio_nginx_over_ragate" in entry:
            lines.append(f"- {label}: nginx / ragate throughput at c={high}: "
                         f"{entry['throughput_ratio_nginx_over_ragate']:.1f}x")
        if "workers_2_over_1" in entry:
            lines.append(f"- {label}: ragate --workers 2 / --workers 1 throughput at c={high} "
                         f"(shared Redis, unpinned): {entry['workers_2_over_1']:.2f}x")
        if "replicas_2_over_1" in entry:
            lines.append(f"- {label}: two replicas / one behind nginx, throughput at c={high} "
                         f"(shared Redis, unpinned): {entry['replicas_2_over_1']:.2f}x")
        if "litellm_added_p50_ms" in entry:
            lines.append(f"- {label}: LiteLLM added p50 at c={low}: "
                         f"{entry['litellm_added_p50_ms']:.2f} ms")
        if "tenants_throughput_cost_pct" in entry:
            cost = entry["tenants_throughput_cost_pct"]
            verdict = "met" if cost <= 15 else "MISSED"
            store = summary.get("tenants_store", "redis")
            lines.append(f"- {label}: keys, grants and limits on ({store}) cost {cost:.1f} % "
                         f"of throughput at c={high} (target <= 15 %: {verdict})")
            if mode == "non-stream" and summary.get("tenants_cost_pct_per_round"):
                spread = ", ".join(f"{c:.1f}" for c in summary["tenants_cost_pct_per_round"])
                lines.append(f"  (median of {summary['rounds']} interleaved rounds; "
                             f"round by round: {spread} %)")
        if "tenants_ratio_over_litellm_key" in entry:
            lines.append(f"- {label}: ragate with keys and limits / LiteLLM with its master key "
                         f"and an rpm limit, throughput at c={high}: "
                         f"{entry['tenants_ratio_over_litellm_key']:.1f}x")
        if "tenants_added_p50_ms" in entry:
            added = entry["tenants_added_p50_ms"]
            verdict = "met" if added <= 0.3 else "MISSED"
            lines.append(f"- {label}: and add {added:.2f} ms to p50 at c={low} "
                         f"(target <= 0.3 ms: {verdict})")
    return lines


def environment(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    import importlib.metadata as md

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    git = ["git", "-C", str(REPO)]  # read-only: which code of gateway/ was measured
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "gateway"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(), "python": platform.python_version(),
        "cpus": sorted(os.sched_getaffinity(0)), "loadavg": os.getloadavg(),
        "pinning": {"under_test": sorted(layout.sut) if layout.sut else None,
                    "wrk_and_backend": sorted(layout.helpers) if layout.helpers else None},
        "duration_s": args.duration, "warmup_s": args.warmup,
        "ragate": version("ragate"), "commit": commit or None,
        "gateway_uncommitted_changes": bool(dirty), "uvicorn": version("uvicorn"),
        "httpx": version("httpx"), "fastapi": version("fastapi"),
        "litellm": None if args.skip_litellm else litellm_version(args.litellm_venv),
        "wrk": (wrk.stdout + wrk.stderr).splitlines()[0] if (wrk.stdout + wrk.stderr) else None,
        "request": REQUEST,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare the fake backend alone, ragate and LiteLLM in front of it.")
    parser.add_argument("--duration", type=float, default=10, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up, discarded")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--targets", nargs="+",
                        default=["backend", "nginx", "ragate", "litellm"],
                        choices=["backend", "nginx", "ragate", "ragate-tenants",
                                 "ragate-w1", "ragate-w2", "replicas-1", "replicas-2",
                                 "litellm", "litellm-key"])
    parser.add_argument("--skip-litellm", action="store_true", help="no LiteLLM run")
    parser.add_argument("--tenants-store", choices=["redis", "local"], default="redis",
                        help="ragate-tenants: keys and limits in Redis (replicas) or local")
    parser.add_argument("--no-stream", action="store_true", help="no streamed row group")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the targets this many times, interleaved; report medians")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--litellm-venv", type=Path, default=LITELLM_VENV,
                        help=f"LiteLLM's venv, created if missing (default {LITELLM_VENV})")
    parser.add_argument("--json", type=Path, metavar="OUT", help="save the raw numbers here")
    args = parser.parse_args(argv)
    if args.skip_litellm:
        args.targets = [t for t in args.targets if not t.startswith("litellm")]
    return args


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (e.g. from ``timeout``) unwinds through the ``finally`` blocks like Ctrl-C."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2
    layout = Layout.choose(not args.no_pin)
    modes = ["non-stream"] if args.no_stream else ["non-stream", "stream"]
    signal.signal(signal.SIGTERM, _interrupt)
    env = environment(args, layout)
    print(f"# gateway overhead: {args.duration:g} s per run after {args.warmup:g} s warm-up; "
          f"pinning {env['pinning']}; load average {env['loadavg'][0]:.2f}", file=sys.stderr)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="ragate-bench-") as tmp:
        workdir = Path(tmp)
        procs = Processes(workdir)
        try:
            # rounds interleave the targets, so a drift of the machine's load falls on all
            order = [target for _ in range(args.rounds) for target in args.targets]
            for target in order:
                with target_running(target, procs, workdir, layout, args) as (base, sut):
                    for mode in modes:
                        for concurrency in args.concurrency:
                            result = measure(procs, workdir, target, base, sut, mode,
                                             concurrency, args, layout.helpers)
                            print(f"  {target:8} {mode:10} c={concurrency:<3} "
                                  f"{result.rps:9,.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
                                  f"p99 {result.p99_ms:6.2f} ms  errors {result.errors}  "
                                  f"cpu {result.cpu_pct}% ({result.cpu_ms_per_req} ms/req)",
                                  file=sys.stderr, flush=True)
                            results.append(result)
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted: every process started here was stopped", file=sys.stderr)
            return 130
        finally:
            procs.stop_all()
    rounds = results
    results = medians(results)
    summary = summarize(results, args.concurrency)
    summary["tenants_store"] = args.tenants_store
    summary["rounds"] = args.rounds
    if args.rounds > 1:
        summary["tenants_cost_pct_per_round"] = per_round_costs(rounds, args)
    print(table(results))
    print()
    print("\n".join(summary_lines(summary)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"environment": env, "summary": summary,
                                         "results": [asdict(r) for r in results]}, indent=2))
        print(f"\nraw numbers: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
