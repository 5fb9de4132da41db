"""Knowledge bases across replicas: two gateway processes share a Redis of the test's own
and one knowledge root (the volume replicas share), the bases in its folders or in a
milvus-lite server of the test's own. An upload through one is found through the other;
its job is reported by either; a separate `ragate worker` runs the jobs, a job whose
worker was killed is failed with the reason, not left running, and a worker told to stop
hands its job back to the queue for the next one."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import (
    GatewayProcess,
    MilvusLiteServer,
    RedisServer,
    WorkerProcess,
)

pytestmark = pytest.mark.integration

HEARTBEAT_S = 2.0  # knowledge.job_heartbeat_s; the board reaps every 5 s
REAP_BOUND_S = HEARTBEAT_S + 5 + 3
FACT = "The Quillmoor ferry leaves the harbour at seven and carries forty bicycles."


def config(redis_url: str, root: Path, *, run_jobs: bool = True,
           milvus_uri: str | None = None) -> dict[str, Any]:
    store = {"store": "milvus", "milvus_uri": milvus_uri} if milvus_uri else {}
    return {
        "local_backends": [],
        "conversations": {"store": "redis", "redis_url": redis_url, "key_prefix": "kr"},
        "knowledge": {"enabled": True, "root": str(root), "ingest_workers": 0,
                      "run_jobs": run_jobs, "job_heartbeat_s": HEARTBEAT_S, **store},
        "models": [{"name": "m", "backends": [{"url": "http://127.0.0.1:9", "model": "m"}]}],
    }


def within(seconds: float, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, "not within the bound"
        time.sleep(0.1)


def job_of(client: httpx.Client, job_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/knowledge_bases/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def finished(client: httpx.Client, job_id: str, seconds: float = 120) -> dict[str, Any]:
    return within(seconds, lambda: (job := job_of(client, job_id))["status"]  # type: ignore[no-any-return]
                  in ("done", "failed") and job)


def upload(client: httpx.Client, base: str, files: dict[str, bytes]) -> str:
    r = client.post(f"/v1/knowledge_bases/{base}/documents",
                    files=[("files", (name, data, "text/plain")) for name, data in files.items()])
    assert r.status_code == 202, r.text
    return r.json()["job_id"]  # type: ignore[no-any-return]


def hits(client: httpx.Client, base: str, query: str) -> list[str]:
    r = client.post(f"/v1/knowledge_bases/{base}/search", json={"query": query})
    assert r.status_code == 200, r.text
    return [p["document"] for p in r.json()["data"]]


@pytest.fixture
def shared(own_redis: RedisServer, tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def replica(**options: Any) -> GatewayProcess:
        workdir = tmp_path / f"replica-{len(started)}"
        workdir.mkdir()
        gateway = GatewayProcess(config(own_redis.url, tmp_path / "kb", **options), workdir)
        started.append(gateway)
        return gateway.start()

    try:
        yield replica
    finally:
        for gateway in started:
            gateway.stop()


@pytest.mark.parametrize("store", ["local", "milvus"])
def test_an_upload_through_one_replica_is_found_and_reported_through_the_other(
        shared: Callable[..., GatewayProcess], own_redis: RedisServer, tmp_path: Path,
        store: str) -> None:
    milvus = MilvusLiteServer(tmp_path).start() if store == "milvus" else None
    try:
        uri = milvus.uri if milvus else None
        # only the first runs jobs: the second serves what another process wrote
        first, second = shared(milvus_uri=uri), shared(milvus_uri=uri, run_jobs=False)
        found_through_the_other(first, second, store)
        if milvus is not None:  # the knowledge store away: not ready
            milvus.stop()
            r = httpx.get(first.url + "/ready", timeout=30)
            assert r.status_code == 503 and r.json()["stores"]["knowledge"] != "ok"
        else:  # the job board away (here in the conversations' Redis): not ready
            own_redis.stop()
            r = httpx.get(first.url + "/ready", timeout=30)
            assert r.status_code == 503 and r.json()["stores"]["jobs"] != "ok"
            own_redis.start()
    finally:
        if milvus is not None:
            milvus.stop()


def found_through_the_other(first: GatewayProcess, second: GatewayProcess, store: str) -> None:
    with (httpx.Client(base_url=first.url, timeout=60) as one,
          httpx.Client(base_url=second.url, timeout=60) as two):
        assert one.post("/v1/knowledge_bases", json={"name": "harbour"}).status_code == 201
        stores = httpx.get(first.url + "/ready").json()["stores"]
        assert stores["knowledge"] == stores["jobs"] == "ok"
        listed = {b["name"]: b for b in two.get("/v1/knowledge_bases").json()["data"]}
        assert listed["harbour"]["store"] == store
        assert hits(two, "harbour", "ferry bicycles") == []  # loaded before the upload
        job_id = upload(one, "harbour", {"ferry.txt": FACT.encode()})
        job = finished(two, job_id)
        assert job["status"] == "done" and job["added"] == ["ferry.txt"], job
        # the other replica serves the new version from its next request on
        assert hits(two, "harbour", "When does the ferry leave?")[:1] == ["ferry.txt"]
        assert two.delete("/v1/knowledge_bases/harbour/documents/ferry.txt").status_code == 200
        assert hits(one, "harbour", "When does the ferry leave?") == []


def test_a_worker_runs_the_jobs_and_a_killed_workers_job_is_failed(
        shared: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    api = shared(run_jobs=False)
    other = shared(run_jobs=False)
    with (httpx.Client(base_url=api.url, timeout=60) as one,
          httpx.Client(base_url=other.url, timeout=60) as two):
        assert one.post("/v1/knowledge_bases", json={"name": "port"}).status_code == 201
        queued = upload(one, "port", {"ferry.txt": FACT.encode()})
        time.sleep(1.5)
        assert job_of(two, queued)["status"] == "queued"  # no API replica runs it
        worker = WorkerProcess(api.config_path, tmp_path).start()
        try:
            assert finished(two, queued)["status"] == "done"
            assert hits(two, "port", "ferry")[:1] == ["ferry.txt"]
            # a job long enough to be caught running: many files, each embedded
            many = {f"part-{n}.txt": ((f"Section {n}. " + FACT + " ") * 400).encode()
                    for n in range(40)}
            long_job = upload(one, "port", many)
            within(60, lambda: job_of(two, long_job)["status"] == "running")
            worker.kill()
            started = time.monotonic()
            job = finished(two, long_job, seconds=REAP_BOUND_S + 5)
            took = time.monotonic() - started
            assert job["status"] == "failed" and "heartbeat" in job["message"], job
            assert took <= REAP_BOUND_S, took
            assert "part-0.txt" not in [d["source"] for d in one.get(
                "/v1/knowledge_bases/port/documents").json()["data"]]
            # a new worker takes the next job
            worker = WorkerProcess(api.config_path, tmp_path, stop_grace_s=0.5).start()
            again = upload(one, "port", {"again.txt": b"The lighthouse keeper owns a cat."})
            assert finished(one, again)["status"] == "done"
            # told to stop (a rolling update), it hands the job in hand back to the queue
            # (a dozen files: seconds of embedding on a fast core, a minute on a slow one)
            dozen = {f"more-{n}.txt": ((f"Part {n}. " + FACT + " ") * 60).encode()
                     for n in range(12)}
            handed = upload(one, "port", dozen)
            within(60, lambda: job_of(two, handed)["status"] == "running")
            worker.stop()
            job = job_of(two, handed)
            assert job["status"] == "queued" and "queued again" in job["message"], job
            assert len(list((tmp_path / "kb" / ".uploads").iterdir())) == 1  # kept for it
            worker = WorkerProcess(api.config_path, tmp_path).start()
            job = finished(two, handed, seconds=300)
            # (a file the stopped worker had written just before would read as unchanged)
            assert job["status"] == "done", job
            assert sorted(job["added"] + job["unchanged"]) == sorted(dozen), job
            listed = [d["source"] for d in one.get(
                "/v1/knowledge_bases/port/documents").json()["data"]]
            assert set(dozen) <= set(listed)
        finally:
            worker.stop()
        staged = tmp_path / "kb" / ".uploads"
        assert not staged.exists() or list(staged.iterdir()) == []  # nothing left behind
