"""The supervisor's restart policy: the delay doubles while a server keeps dying soon
after its start, resets after one that lasted, and a restart that fails is reported and
tried again. (The integration test kills a real llama.cpp child; these servers are stand-ins
that die when told, so the policy can be watched over many restarts in a second.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from serving.errors import ServingError
from serving.supervisor import Supervisor, read_states


class StandIn:
    """Quacks like LlamaCppServer: ``running``, ``returncode``, ``pid``, ``url``, ``start``."""

    def __init__(self, lives_s: float = 0.0, fails: int = 0) -> None:
        self.url = "http://127.0.0.1:1"
        self.pid: int | None = 100
        self.returncode: int | None = None
        self.lives_s = lives_s
        self.fails = fails  # the next starts that raise
        self.starts: list[float] = []
        self._dies_at = time.monotonic() + lives_s
        self._lock = threading.Lock()

    def running(self) -> bool:
        with self._lock:
            if time.monotonic() >= self._dies_at:
                self.returncode = -9
                return False
            return True

    def start(self, timeout_s: float) -> None:
        with self._lock:
            self.starts.append(time.monotonic())
            if self.fails:
                self.fails -= 1
                raise ServingError("llama.cpp exited at start (code 1)\nmore detail")
            self.pid = 100 + len(self.starts)
            self.returncode = None
            self._dies_at = time.monotonic() + self.lives_s


def watch(server: StandIn, tmp_path: Path, starts: int, **options: float) -> Supervisor:
    supervisor = Supervisor({"local": server}, tmp_path / "state.json", interval_s=0.005,
                            **options).start()  # type: ignore[dict-item]
    deadline = time.monotonic() + 10
    while len(server.starts) < starts:
        assert time.monotonic() < deadline, server.starts
        time.sleep(0.005)
    supervisor.stop()
    return supervisor


def test_a_server_that_keeps_dying_waits_twice_as_long_each_time(tmp_path: Path) -> None:
    server = StandIn(lives_s=0.0)
    watch(server, tmp_path, starts=5, first_delay_s=0.04, max_delay_s=0.2, stable_s=60)
    gaps = [b - a for a, b in zip(server.starts, server.starts[1:], strict=False)]
    # each gap is at least its delay: 0.08, 0.16, then capped at 0.2
    for gap, delay in zip(gaps, (0.08, 0.16, 0.2, 0.2), strict=False):
        assert gap >= delay, gaps
    state = read_states(str(tmp_path / "state.json"))["local"]
    assert state["restarts"] >= 4 and state["last_exit"] == -9


def test_a_server_that_lasted_is_restarted_after_the_first_delay_again(tmp_path: Path
                                                                      ) -> None:
    server = StandIn(lives_s=0.15)
    supervisor = watch(server, tmp_path, starts=3, first_delay_s=0.02, max_delay_s=5,
                       stable_s=0.1)
    assert supervisor._delays["local"] == 0.04  # reset to the first, doubled once


def test_a_restart_that_fails_is_reported_and_tried_again(tmp_path: Path) -> None:
    server = StandIn(lives_s=0.0, fails=2)
    state_file = tmp_path / "state.json"
    # polled every 0.2 s, so the failed state stands that long before the next try
    supervisor = Supervisor({"local": server}, state_file, interval_s=0.2,  # type: ignore[dict-item]
                            first_delay_s=0.01, max_delay_s=0.02, stable_s=60).start()
    try:
        deadline = time.monotonic() + 10
        while read_states(str(state_file))["local"]["state"] != "failed":
            assert time.monotonic() < deadline
            time.sleep(0.002)
        failed = read_states(str(state_file))["local"]
        assert failed["last_error"] == "llama.cpp exited at start (code 1)"
        assert failed["pid"] is None
        while len(server.starts) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        supervisor.stop()
    assert server.starts[2:]  # tried again after each failure, and started
