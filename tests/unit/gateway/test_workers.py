"""When more than one worker process is safe, and how many a config gets by default."""

from __future__ import annotations

import os

import pytest

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


def test_an_embedded_milvus_folder_keeps_one_process(tmp_path) -> None:
    from gateway.knowledge.worker import WorkerConfigError, check_worker_settings

    root = {"root": str(tmp_path / "kb"), "jobs_store": "redis"}
    embedded = Settings(**SHARED, knowledge={**root, "store": "milvus"})
    reasons = blockers(embedded, knowledge_on=True)
    assert any("milvus-lite folder" in r and "milvus-lite server" in r for r in reasons)
    assert default_workers(embedded, knowledge_on=True) == 1
    with pytest.raises(WorkerConfigError, match="one process opens at a time"):
        check_worker_settings(embedded)
    # a base migrated into the embedded folder counts as well; a server URI does not
    (tmp_path / "kb" / "milvus.db").mkdir(parents=True)
    assert blockers(Settings(**SHARED, knowledge=root), knowledge_on=True) != []
    served = Settings(**SHARED, knowledge={**root, "milvus_uri": "http://127.0.0.1:19530"})
    assert blockers(served, knowledge_on=True) == []
    check_worker_settings(served)
