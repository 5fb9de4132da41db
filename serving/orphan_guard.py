"""Run a Python module, and exit when the process that started it is gone.

    python -m serving.orphan_guard PARENT_PID MODULE [ARGS...]

A model server started by the gateway must not outlive it, even when the gateway is
killed with SIGKILL. Linux's PR_SET_PDEATHSIG is no answer: it fires when the *thread*
that spawned the child exits, so a server started from a worker thread would die at once.
Instead a daemon thread here checks once a second whether the parent still exists.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time


def _watch(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:  # reparented: the parent died
            os._exit(0)


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit("usage: python -m serving.orphan_guard PARENT_PID MODULE [ARGS...]")
    parent, module = int(sys.argv[1]), sys.argv[2]
    threading.Thread(target=_watch, args=(parent,), daemon=True).start()
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
