"""A py-spy profile of ragate under load, the way bench/overhead.py measures it.

    . .venv/bin/activate
    python bench/flamegraph.py --out bench/profiles/ragate-c32-json.svg
    python bench/flamegraph.py --stream --out bench/profiles/ragate-c32-sse.svg
    python bench/flamegraph.py --tenants --format raw --out /tmp/tenants.txt

The fake backend and wrk on CPU 1, ragate (one worker) on CPU 0; wrk warms up for 2 s,
then py-spy (the ``py-spy`` of the dev extra) samples ragate at 500 Hz while wrk keeps 32
connections busy. ``--format flamegraph`` writes an SVG; ``raw`` writes collapsed stacks
(one line per stack and its count) to read with any flame graph tool. Async stacks show
from the coroutine that was resumed, so a frame's width is its own share of CPU, not the
whole request's.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.overhead import (  # noqa: E402 (after the path: run as a script)
    CHAT_PATH,
    REQUEST,
    TENANT_KEY,
    Layout,
    Processes,
    run_wrk,
    start_backend,
    start_ragate,
    start_redis,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--format", choices=["flamegraph", "raw", "speedscope"],
                        default="flamegraph")
    parser.add_argument("--stream", action="store_true", help="streamed requests")
    parser.add_argument("--tenants", action="store_true",
                        help="a key with grants and limits in Redis (as ragate-tenants)")
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    if shutil.which("py-spy") is None or shutil.which("wrk") is None:
        print("needs py-spy (pip install py-spy) and wrk (apt-get install wrk)",
              file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ragate-profile-") as tmp:
        workdir = Path(tmp)
        procs = Processes(workdir)
        layout = Layout.choose(True)
        try:
            _, backend = start_backend(procs, layout.helpers)
            redis_url = start_redis(procs, layout.helpers)[1] if args.tenants else None
            ragate, base = start_ragate(procs, workdir, backend, layout.sut,
                                        tenants="redis" if args.tenants else None,
                                        redis_url=redis_url)
            body = {**REQUEST, "stream": True} if args.stream else REQUEST
            key = TENANT_KEY if args.tenants else None
            run_wrk(procs, workdir, base + CHAT_PATH, body, 32, 2, layout.helpers, key)
            spy = subprocess.Popen(
                ["py-spy", "record", "--pid", str(ragate.popen.pid), "--rate", "500",
                 "--format", args.format, "-o", str(args.out),
                 "--duration", str(args.seconds), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            result = run_wrk(procs, workdir, base + CHAT_PATH, body, 32, args.seconds,
                             layout.helpers, key)
            spy.wait(timeout=args.seconds + 30)
        finally:
            procs.stop_all()
    rps = result["requests"] / (result["duration_us"] / 1e6)
    print(f"{rps:,.0f} req/s while sampled (py-spy slows the process a little); "
          f"profile: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
