"""Ingestion jobs on the board: queued, taken once, reported, and failed when their runner dies."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.knowledge.jobs import JobBoard, LocalJobBoard, RedisJobBoard

REDIS = "redis://127.0.0.1:6379/0"


def spec(job_id: str) -> dict:
    return {"job_id": job_id, "knowledge_base": "kb", "files": [["a.txt", "/nowhere/a.txt"]]}


def report(job_id: str, status: str = "queued", stage: str = "queued") -> dict:
    return {"job_id": job_id, "knowledge_base": "kb", "status": status,
            "files": [{"source": "a.txt", "stage": stage, "reason": None}]}


@pytest.fixture(params=["local", "redis"])
async def board(request: pytest.FixtureRequest) -> AsyncIterator[JobBoard]:
    made: JobBoard = (LocalJobBoard() if request.param == "local"
                      else RedisJobBoard.from_url(REDIS, prefix=f"test-{uuid.uuid4().hex}"))
    await made.open()
    yield made
    if isinstance(made, RedisJobBoard):
        keys = [k async for k in made.redis.scan_iter(f"{made.prefix}:*")]
        if keys:
            await made.redis.delete(*keys)
    await made.close()


async def test_a_job_is_taken_once_in_order_and_its_reports_read_back(board: JobBoard
                                                                      ) -> None:
    for n in ("1", "2"):
        await board.submit(spec(n), report(n))
    assert (await board.get("1"))["status"] == "queued"
    assert (await board.take("w1"))["job_id"] == "1"  # oldest first
    assert (await board.take("w2"))["job_id"] == "2"
    assert await board.take("w1") is None
    assert await board.report(report("1", "running", "parsing"))
    assert (await board.get("1"))["files"][0]["stage"] == "parsing"
    assert await board.report(report("1", "done", "indexed"))
    # a final report is never overwritten (a stale "running" arriving late is dropped)
    assert not await board.report(report("1", "running", "embedding"))
    assert (await board.get("1"))["status"] == "done"
    await board.release("w1", "1")
    assert await board.get("nope") is None


async def test_the_job_of_a_runner_whose_heartbeat_expired_is_failed_with_the_reason(
) -> None:
    board = RedisJobBoard.from_url(REDIS, prefix=f"test-{uuid.uuid4().hex}")
    other = RedisJobBoard.from_url(REDIS, prefix=board.prefix)  # another replica
    await board.open()
    await other.open()
    try:
        await board.beat("dies", ttl_s=0.2)
        await board.beat("lives", ttl_s=30)
        for n in ("1", "2"):
            await board.submit(spec(n), report(n))
        assert (await board.take("dies"))["job_id"] == "1"
        assert (await board.take("lives"))["job_id"] == "2"
        await board.report(report("1", "running", "embedding"))
        assert await other.reap() == []  # both alive
        await asyncio.sleep(0.3)
        # two replicas reap at once: the job is failed once, by one of them
        reaped = await asyncio.gather(board.reap(), other.reap())
        assert sorted(s["job_id"] for r in reaped for s in r) == ["1"]
        failed = await other.get("1")
        assert failed["status"] == "failed"
        assert "dies" in failed["message"] and "heartbeat" in failed["message"]
        assert failed["files"][0]["stage"] == "failed"
        assert (await board.get("2"))["status"] == "queued"  # the live runner's is kept
        # the dead runner, come back, cannot turn the failure into a success
        assert not await board.report(report("1", "done", "indexed"))
        assert await board.reap() == []
    finally:
        keys = [k async for k in board.redis.scan_iter(f"{board.prefix}:*")]
        if keys:
            await board.redis.delete(*keys)
        await board.close()
        await other.close()


async def test_a_job_handed_back_is_taken_next_or_failed_where_nobody_else_runs(
        board: JobBoard) -> None:
    for n in ("1", "2"):
        await board.submit(spec(n), report(n))
    assert (await board.take("w1"))["job_id"] == "1"
    await board.report(report("1", "running", "embedding"))
    again = {**report("1"), "message": "queued again for the next worker"}
    queued = await board.hand_back("w1", spec("1"), again)
    if isinstance(board, LocalJobBoard):  # it dies with this process: failed, with a reason
        assert queued is False
        failed = await board.get("1")
        assert failed["status"] == "failed" and "upload the files again" in failed["message"]
        return
    assert queued is True
    assert (await board.get("1"))["status"] == "queued"
    assert await board.redis.llen(board._held("w1")) == 0
    assert (await board.take("w2"))["job_id"] == "1"  # ahead of the job queued after it
    assert (await board.take("w2"))["job_id"] == "2"
    # a job already final (reaped while its runner stalled) is not queued again
    await board.report(report("1", "failed", "failed"))
    assert await board.hand_back("w2", spec("1"), again) is False
    assert (await board.get("1"))["status"] == "failed"
