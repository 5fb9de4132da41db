"""Where ingestion jobs wait and report: in this process, or in Redis for every replica.

A job is queued as a spec (its base and its staged files, on the volume the replicas and
workers share), taken by one runner (an API process, or ``ragate worker``), and its
progress is written back as it runs, so any replica answers ``GET /jobs/{id}``.

A runner in Redis holds each job it took in a list of its own and renews a heartbeat
key while it lives; every board reaps the jobs of a runner whose heartbeat expired,
marking them failed with the reason (never left at "running"). A final status (done or
failed) is never overwritten: a runner stalled past its heartbeat and reaped cannot
report "done" afterwards over the "failed" the client already saw.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Protocol

import redis.asyncio as aioredis

from gateway.redis_client import guarded, redis_client
from gateway.settings import Settings, StoreKind

Spec = dict[str, Any]  # {"job_id", "knowledge_base", "files": [[filename, path], …]}
Progress = dict[str, Any]  # rag.IngestProgress.to_dict()

FINAL = ("done", "failed")
KEEP_S = 7 * 24 * 3600  # a finished job's report stays readable this long


def worker_died(worker: str) -> str:
    return (f"the worker running this job ({worker}) stopped before it finished (its "
            "heartbeat expired); nothing of the job was stored: upload the files again")


STOPPED_HERE = ("the gateway stopped before this job finished: upload the files again "
                "(those already stored read as unchanged)")


def handed_back(worker: str) -> str:
    return (f"the worker running this job ({worker}) stopped before it finished; queued "
            "again for the next worker")


def failed(progress: Progress, message: str) -> Progress:
    return {**progress, "status": "failed", "message": message, "finished_at": time.time(),
            "files": [{**f, "stage": "failed", "reason": f.get("reason") or message}
                      if f.get("stage") not in ("indexed", "unchanged", "duplicate", "failed")
                      else f for f in progress.get("files", [])]}


class JobBoard(Protocol):
    shared: bool  # do other processes see these jobs (may the API leave them to workers)

    async def open(self) -> JobBoard: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise a GatewayError when the board does not answer (for /ready)."""
        ...

    async def submit(self, spec: Spec, progress: Progress) -> None:
        """Queue ``spec`` and publish its first (queued) report."""
        ...

    async def take(self, worker: str) -> Spec | None:
        """The oldest queued job, now held by ``worker``; None when the queue is empty."""
        ...

    async def report(self, progress: Progress) -> bool:
        """Publish a job's progress; False if it was already final (the report is dropped)."""
        ...

    async def release(self, worker: str, job_id: str) -> None:
        """``worker`` is done with the job it took (whatever its outcome)."""
        ...

    async def hand_back(self, worker: str, spec: Spec, progress: Progress) -> bool:
        """``worker`` stops before the job ends: publish ``progress`` (queued again) and put
        the job back at the head of the queue, for the next runner to take whole; False
        if no other runner can take it (the job is failed instead)."""
        ...

    async def get(self, job_id: str) -> Progress | None: ...

    async def beat(self, worker: str, ttl_s: float) -> None:
        """``worker`` is alive for another ``ttl_s`` seconds."""
        ...

    async def reap(self) -> list[Spec]:
        """Fail the jobs held by runners whose heartbeat expired; return their specs."""
        ...


class LocalJobBoard:
    """The embedded default: jobs live and run in this process (a restart forgets them)."""

    shared = False

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Spec] = asyncio.Queue()
        self._reports: dict[str, Progress] = {}

    async def open(self) -> LocalJobBoard:
        return self

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def submit(self, spec: Spec, progress: Progress) -> None:
        self._reports[spec["job_id"]] = progress
        self._queue.put_nowait(spec)

    async def take(self, worker: str) -> Spec | None:
        return None if self._queue.empty() else self._queue.get_nowait()

    async def report(self, progress: Progress) -> bool:
        current = self._reports.get(progress["job_id"])
        if current is not None and current["status"] in FINAL:
            return False
        self._reports[progress["job_id"]] = progress
        return True

    async def release(self, worker: str, job_id: str) -> None:
        pass

    async def hand_back(self, worker: str, spec: Spec, progress: Progress) -> bool:
        # this board dies with its process, and the runner with it: nobody would take it
        await self.report(failed(progress, STOPPED_HERE))
        return False

    async def get(self, job_id: str) -> Progress | None:
        return self._reports.get(job_id)

    async def beat(self, worker: str, ttl_s: float) -> None:
        pass

    async def reap(self) -> list[Spec]:
        return []  # a runner here dies with the process that would reap it


# KEYS: the job's report; ARGV: the new report, its status, seconds to keep it
_REPORT = """
local current = redis.call('GET', KEYS[1])
if current then
  local status = cjson.decode(current)['status']
  if status == 'done' or status == 'failed' then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


# KEYS: a runner's heartbeat, its held list, the runners' set; ARGV: the runner. Atomic, so
# two reapers never fail one job twice and a runner beating again is never reaped.
_REAP = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {} end
local held = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
return held
"""


class RedisJobBoard:
    """    {p}:kbjobs:queue            specs waiting (LPUSH in, LMOVE out: oldest first)
    {p}:kbjobs:held:{worker}    specs a runner took and has not released
    {p}:kbjobs:workers          the runners that beat (a set; a runner beats before it takes)
    {p}:kbjobs:alive:{worker}   a runner's heartbeat, expiring after its TTL
    {p}:kbjob:{id}              a job's latest report (JSON), kept KEEP_S"""

    shared = True

    def __init__(self, client: aioredis.Redis, prefix: str = "ragate") -> None:
        self.redis = client
        self.prefix = prefix
        self.queue = f"{prefix}:kbjobs:queue"
        self.workers = f"{prefix}:kbjobs:workers"
        self._report = client.register_script(_REPORT)
        self._reap = client.register_script(_REAP)

    @classmethod
    def from_url(cls, url: str, prefix: str = "ragate") -> RedisJobBoard:
        return cls(redis_client(url), prefix)

    def _held(self, worker: str) -> str:
        return f"{self.prefix}:kbjobs:held:{worker}"

    def _alive(self, worker: str) -> str:
        return f"{self.prefix}:kbjobs:alive:{worker}"

    def _job(self, job_id: str) -> str:
        return f"{self.prefix}:kbjob:{job_id}"

    async def _call(self, call: Any) -> Any:
        return await guarded(call, "ingestion job board")

    async def open(self) -> RedisJobBoard:
        await self._call(self.redis.ping())
        return self

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> None:
        await self._call(self.redis.ping())

    async def submit(self, spec: Spec, progress: Progress) -> None:
        # the report first: a runner may take the spec the moment it is queued
        await self._call(self.redis.set(self._job(spec["job_id"]), json.dumps(progress),
                                        ex=KEEP_S))
        await self._call(self.redis.lpush(self.queue, json.dumps(spec)))

    async def take(self, worker: str) -> Spec | None:
        # ``worker`` is in the runners' set already: a runner beats before it takes
        raw = await self._call(self.redis.lmove(self.queue, self._held(worker), "RIGHT", "LEFT"))
        return json.loads(raw) if raw else None

    async def report(self, progress: Progress) -> bool:
        call = self._report(keys=[self._job(progress["job_id"])],
                            args=[json.dumps(progress), KEEP_S])
        return bool(await self._call(call))

    async def release(self, worker: str, job_id: str) -> None:
        for raw in await self._call(self.redis.lrange(self._held(worker), 0, -1)):
            if json.loads(raw)["job_id"] == job_id:
                await self._call(self.redis.lrem(self._held(worker), 1, raw))

    async def hand_back(self, worker: str, spec: Spec, progress: Progress) -> bool:
        # the report first: the next runner's "running" must not be overwritten by it
        if not await self.report(progress):
            return False  # final already (reaped while stalled): nothing to run again
        for raw in await self._call(self.redis.lrange(self._held(worker), 0, -1)):
            if json.loads(raw)["job_id"] == spec["job_id"]:
                pipe = self.redis.pipeline(transaction=True)
                pipe.lrem(self._held(worker), 1, raw)
                pipe.rpush(self.queue, raw)  # RIGHT is where LMOVE takes from: next
                await self._call(pipe.execute())
                return True
        return False  # reaped meanwhile: the reaper failed it

    async def get(self, job_id: str) -> Progress | None:
        raw = await self._call(self.redis.get(self._job(job_id)))
        return json.loads(raw) if raw else None

    async def beat(self, worker: str, ttl_s: float) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self._alive(worker), json.dumps({"ttl_s": ttl_s, "at": time.time()}),
                 px=int(ttl_s * 1000))
        pipe.sadd(self.workers, worker)
        await self._call(pipe.execute())

    async def reap(self) -> list[Spec]:
        reaped: list[Spec] = []
        for worker in await self._call(self.redis.smembers(self.workers)):
            call = self._reap(keys=[self._alive(worker), self._held(worker), self.workers],
                              args=[worker])
            for raw in await self._call(call):
                spec = json.loads(raw)
                current = await self.get(spec["job_id"]) or {
                    "job_id": spec["job_id"], "knowledge_base": spec["knowledge_base"]}
                await self.report(failed(current, worker_died(worker)))
                reaped.append(spec)
        return reaped


def job_board(settings: Settings) -> JobBoard:
    """Redis when the config shares state there (any replica answers any job), else here."""
    if settings.jobs_store is StoreKind.REDIS:
        return RedisJobBoard.from_url(settings.jobs_redis_url,
                                      prefix=settings.conversations.key_prefix)
    return LocalJobBoard()
