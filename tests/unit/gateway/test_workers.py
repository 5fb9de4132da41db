"""When more than one worker process is safe, and how many a config gets by default."""

from __future__ import annotations

import os

from gateway.settings import Settings
from gateway.workers import blockers, default_workers

SHARED = {"conversations": {"store": "redis"}, "auth": {"limits": {"store": "redis"}}}


def test_the_embedded_default_runs_one_worker_and_says_why() -> None:
    settings = Settings()
    reasons = blockers(settings, knowledge_on=True)
    assert any("conversations.store is sqlite" in r for r in reasons)
    assert any("knowledge.jobs_store is sqlite" in r for r in reasons)
    assert default_workers(settings, knowledge_on=True) == 1


def test_shared_state_gets_a_worker_per_core() -> None:
    settings = Settings(**SHARED)
    assert blockers(settings, knowledge_on=False) == []
    # the jobs follow the conversations into Redis: knowledge bases no longer block
    assert blockers(settings, knowledge_on=True) == []
    assert blockers(Settings(**SHARED, knowledge={"jobs_store": "sqlite"}),
                    knowledge_on=True) != []
    assert default_workers(settings, knowledge_on=False) == (os.cpu_count() or 1)


def test_limits_counted_in_process_block_more_workers_only_with_keys() -> None:
    keyed = Settings(conversations={"store": "redis"}, auth={
        "keys": [{"key": "sk-a", "owner": "a"}], "limits": {"store": "local"}})
    assert any("auth.limits.store is local" in r for r in blockers(keyed, knowledge_on=False))
    open_gateway = Settings(conversations={"store": "redis"})
    assert blockers(open_gateway, knowledge_on=False) == []
