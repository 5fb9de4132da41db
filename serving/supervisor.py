"""Keep the local llama.cpp servers running: restart one that died, with backoff.

A thread in the process that started them (``ragate serve``'s parent, which outlives
its workers) polls each server; a dead one is restarted on the same port, so the
gateway's backend entry stays valid and its health probe sees it come back. The delay
doubles after each restart that did not last ``stable_s`` (a model that crashes at once
is not restarted in a tight loop) and resets after one that did.

What happened is written to a small JSON file (``STATE_ENV`` names it), which every
gateway worker reads for ``/admin/backends``: the parent is not one of them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from serving.errors import ServingError
from serving.launcher import LlamaCppServer

log = logging.getLogger("ragate.supervisor")

STATE_ENV = "RAGATE_SUPERVISOR_STATE"


@dataclass
class ServerState:
    name: str  # the gateway's backend name for it
    url: str
    pid: int | None
    state: str = "running"  # running | restarting | failed (its restart did not start)
    restarts: int = 0
    last_exit: int | None = None
    last_exit_at: float | None = None
    last_error: str | None = None


class Supervisor:
    def __init__(self, servers: dict[str, LlamaCppServer], state_file: Path, *,
                 interval_s: float = 0.5, first_delay_s: float = 1.0, max_delay_s: float = 30.0,
                 stable_s: float = 60.0, startup_timeout_s: float = 120.0) -> None:
        self.servers = servers
        self.state_file = state_file
        self.interval_s = interval_s
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.stable_s = stable_s
        self.startup_timeout_s = startup_timeout_s
        self.states = {name: ServerState(name, s.url, s.pid) for name, s in servers.items()}
        self._delays = dict.fromkeys(servers, first_delay_s)
        self._started_at = dict.fromkeys(servers, time.monotonic())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def start(self) -> Supervisor:
        self._write()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (call before stopping the servers, or they come back)."""
        self._stop.set()
        self._thread.join(timeout=self.startup_timeout_s + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for name, server in self.servers.items():
                if not server.running():
                    self._restart(name, server)

    def _restart(self, name: str, server: LlamaCppServer) -> None:
        state = self.states[name]
        if state.state != "failed":  # a failed restart already noted its exit
            state.last_exit = server.returncode
            state.last_exit_at = time.time()
        lasted = time.monotonic() - self._started_at[name]
        if lasted >= self.stable_s:
            self._delays[name] = self.first_delay_s
        delay = self._delays[name]
        self._delays[name] = min(delay * 2, self.max_delay_s)
        state.state, state.pid = "restarting", None
        self._write()
        log.warning("local backend %s exited (code %s) after %.0f s; restarting in %.1f s",
                    name, state.last_exit, lasted, delay)
        if self._stop.wait(delay):
            return
        try:
            server.start(timeout_s=self.startup_timeout_s)
        except ServingError as exc:
            state.state, state.last_error = "failed", str(exc).splitlines()[0]
            log.error("local backend %s did not restart: %s", name, exc)
        else:
            state.state, state.pid, state.last_error = "running", server.pid, None
            state.restarts += 1
            log.warning("local backend %s is back (pid %s)", name, server.pid)
        self._started_at[name] = time.monotonic()
        self._write()

    def _write(self) -> None:
        data = {name: asdict(s) for name, s in self.states.items()}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.state_file)  # readers never see half a file


def read_states(path: str | None = None) -> dict[str, dict[str, Any]]:
    """What the supervisor last wrote (empty when nothing is supervised)."""
    path = path or os.environ.get(STATE_ENV)
    if not path:
        return {}
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
