"""Knowledge bases: store operations, dedupe by hash, updates, deletes, rebuilds, refresh;
each test on the local folders and on Milvus (milvus-lite, embedded), through one interface."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeEmbedder

from rag.errors import (
    DocumentNotFoundError,
    EmbedderMissingError,
    EmbeddingMismatchError,
    InvalidNameError,
    KnowledgeBaseExistsError,
    KnowledgeBaseNotFoundError,
)
from rag.ingest import ingest_files
from rag.knowledge_base import KnowledgeBaseStore
from rag.milvus_store import MilvusKnowledgeBaseStore
from rag.snapshot import ChunkingConfig
from rag.stores import KnowledgeStores

CITIES = {
    "beijing.txt": "北京是中华人民共和国的首都，也是全国的政治中心和文化中心。故宫位于北京市中心。",
    "shanghai.txt": "上海是中国最大的经济中心城市，外滩和东方明珠是上海的著名景点。",
    "faiss.md": "# FAISS\n\nFAISS is a library for efficient similarity search of dense vectors.",
}


def write_files(folder: Path, files: dict[str, str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return [folder / name for name in files]


@pytest.fixture(params=["local", "milvus"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    local = KnowledgeBaseStore(tmp_path / "kbs")
    if request.param == "local":
        yield local
        return
    milvus = MilvusKnowledgeBaseStore(str(tmp_path / "milvus.db"), tmp_path / "locks")
    yield KnowledgeStores(local, milvus, default="milvus")


def on_milvus(store: Any) -> bool:
    return isinstance(store, KnowledgeStores)


@pytest.mark.parametrize("name", ["../up", "a/b", "", ".hidden", "a..b", "-x", "x" * 65, "a\\b"])
def test_unsafe_names_are_refused(store: KnowledgeBaseStore, embedder, name: str):
    with pytest.raises(InvalidNameError):
        store.create(name, embedder)


def test_create_list_open_delete(store: KnowledgeBaseStore, embedder):
    store.create("产品手册", embedder)
    store.create("docs-v2", embedder, index_kind="hnsw")
    assert [i.name for i in store.list()] == ["docs-v2", "产品手册"]
    with pytest.raises(KnowledgeBaseExistsError):
        store.create("docs-v2", embedder)
    info = {i.name: i for i in store.list()}["docs-v2"]
    assert (info.embedding_model, info.dimension, info.index_kind) == ("fake-embedder", 64, "hnsw")
    store.delete("docs-v2")
    assert [i.name for i in store.list()] == ["产品手册"]
    with pytest.raises(KnowledgeBaseNotFoundError):
        store.open("docs-v2")
    assert not any(p.name.startswith(".") for p in store.root.iterdir())


def test_mismatched_embedder_is_refused(store: KnowledgeBaseStore, embedder):
    store.create("kb", embedder)
    with pytest.raises(EmbeddingMismatchError, match="fake-embedder.*64.*other.*32"):
        store.open("kb", FakeEmbedder("other", 32))
    with pytest.raises(EmbeddingMismatchError):
        store.open("kb", FakeEmbedder("fake-embedder", 32))


def test_ingest_search_and_sources(kb, tmp_path: Path):
    result = ingest_files(kb, write_files(tmp_path / "in", CITIES))
    assert result.status == "done" and sorted(result.added) == sorted(CITIES)
    assert kb.manifest.documents == 3
    hits = kb.search("上海的著名景点有哪些")
    assert hits[0].source == "shanghai.txt" and "外滩" in hits[0].text
    assert kb.search("similarity search of dense vectors")[0].source == "faiss.md"


def test_same_file_again_is_a_no_op(kb, embedder, tmp_path: Path):
    files = write_files(tmp_path / "in", CITIES)
    ingest_files(kb, files)
    version, calls = kb.version, embedder.calls
    again = ingest_files(kb, files)
    assert sorted(again.unchanged) == sorted(CITIES) and not again.added
    assert (kb.version, embedder.calls) == (version, calls)


def test_same_content_under_another_name_is_skipped(kb, tmp_path: Path):
    ingest_files(kb, write_files(tmp_path / "a", {"one.txt": CITIES["beijing.txt"]}))
    result = ingest_files(kb, write_files(tmp_path / "b", {"copy.txt": CITIES["beijing.txt"]}))
    assert result.duplicates == (("copy.txt", "one.txt"),)
    assert [d.source for d in kb.documents()] == ["one.txt"]


def test_updated_file_replaces_its_chunks(kb, tmp_path: Path):
    ingest_files(kb, write_files(tmp_path / "a", CITIES))
    result = ingest_files(kb, write_files(tmp_path / "b", {"beijing.txt": "北京有长城和颐和园。"}))
    assert result.replaced == ("beijing.txt",)
    assert kb.manifest.documents == 3
    texts = " ".join(p.text for p in kb.search("北京", top_k=5, mode="lexical"))
    assert "长城" in texts and "故宫" not in texts


def test_delete_document(kb, tmp_path: Path):
    ingest_files(kb, write_files(tmp_path / "a", CITIES))
    kb.delete_document("shanghai.txt")
    assert sorted(d.source for d in kb.documents()) == ["beijing.txt", "faiss.md"]
    assert all(p.source != "shanghai.txt" for p in kb.search("上海 外滩 东方明珠", top_k=5))
    with pytest.raises(DocumentNotFoundError):
        kb.delete_document("shanghai.txt")


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_ingest_and_delete(store, embedder, tmp_path: Path, kind: str):
    kb = store.create("approx", embedder, index_kind=kind, chunking=ChunkingConfig(60, 10))
    ingest_files(kb, write_files(tmp_path / "a", CITIES))
    kb.delete_document("beijing.txt")
    reopened = store.open("approx", embedder)
    assert reopened.manifest.index_kind == kind
    assert reopened.search("FAISS similarity search")[0].source == "faiss.md"


def test_rebuild_with_another_model(store, kb, tmp_path: Path):
    ingest_files(kb, write_files(tmp_path / "a", CITIES))
    other = FakeEmbedder("bigger-model", 128)
    kb.rebuild(other)
    assert (kb.manifest.embedding_model, kb.manifest.dimension) == ("bigger-model", 128)
    with pytest.raises(EmbeddingMismatchError):
        store.open("docs", FakeEmbedder())
    reopened = store.open("docs", other)
    assert reopened.search("dense vectors similarity")[0].source == "faiss.md"


def test_other_instances_see_new_versions_after_refresh(store, kb, embedder, tmp_path: Path):
    reader = store.open("docs", embedder)
    ingest_files(kb, write_files(tmp_path / "a", CITIES))
    # a local reader keeps its snapshot until it refreshes; Milvus' rows are on the server
    assert len(reader.documents()) == (3 if on_milvus(store) else 0)
    assert reader.refresh() is True and len(reader.documents()) == 3
    assert reader.refresh() is False


def test_lexical_search_needs_no_embedder(store, kb, tmp_path: Path):
    ingest_files(kb, write_files(tmp_path / "a", CITIES))
    bare = store.open("docs")
    assert bare.search("故宫", mode="lexical")[0].source == "beijing.txt"
    assert bare.search("故宫在哪里")[0].source == "beijing.txt"  # Chinese: lexical by default
    with pytest.raises(EmbedderMissingError):
        bare.search("dense vectors")
    result = ingest_files(bare, write_files(tmp_path / "b", {"x.txt": "新的文件。"}))
    assert result.status == "failed" and "EmbedderMissingError" in result.message


def test_old_snapshots_are_collected(store, kb, tmp_path: Path):
    if on_milvus(store):
        pytest.skip("Milvus keeps no snapshots")
    for i in range(4):
        ingest_files(kb, write_files(tmp_path / f"v{i}", {f"f{i}.txt": f"文件{i}的内容。" * 5}))
    snapshots = sorted(p.name for p in (kb.path / "snapshots").iterdir())
    assert snapshots == [f"v{kb.version - 1:06d}", f"v{kb.version:06d}"]


def test_a_local_base_migrates_to_milvus_without_parsing_or_embedding(
        tmp_path: Path, embedder: FakeEmbedder) -> None:
    stores = KnowledgeStores(KnowledgeBaseStore(tmp_path / "kbs"),
                             MilvusKnowledgeBaseStore(str(tmp_path / "m.db"), tmp_path / "locks"))
    kb = stores.create("docs", embedder, chunking=ChunkingConfig(120, 20))
    ingest_files(kb, write_files(tmp_path / "a", CITIES))
    before = {q: [(p.source, p.text) for p in kb.search(q)]
              for q in ("上海的著名景点有哪些", "similarity search of dense vectors", "故宫")}
    calls = embedder.calls
    seen: list[tuple[int, int]] = []
    manifest = stores.migrate("docs", on_progress=lambda done, total: seen.append((done, total)))
    assert embedder.calls == calls  # nothing embedded again
    assert stores.store_of("docs") == "milvus" and not stores.local.exists("docs")
    assert (manifest.documents, manifest.chunks) == (kb.manifest.documents, kb.manifest.chunks)
    assert seen[-1] == (kb.manifest.chunks, kb.manifest.chunks)
    moved = stores.open("docs", embedder)
    assert {q: [(p.source, p.text) for p in moved.search(q)] for q in before} == before
    result = ingest_files(moved, write_files(tmp_path / "b", {"new.txt": "杭州的西湖很美。"}))
    assert result.added == ("new.txt",) and moved.search("西湖")[0].source == "new.txt"
    with pytest.raises(KnowledgeBaseExistsError):
        stores.migrate("docs")


def test_milvus_keeps_each_terms_document_frequency_through_replace_and_delete(
        tmp_path: Path, embedder: FakeEmbedder) -> None:
    from rag.milvus_store import _iter_rows, read_counts, term_counts

    stores = KnowledgeStores(KnowledgeBaseStore(tmp_path / "kbs"),
                             MilvusKnowledgeBaseStore(str(tmp_path / "m.db"), tmp_path / "locks"),
                             default="milvus")
    kb = stores.create("docs", embedder, chunking=ChunkingConfig(60, 10))
    ingest_files(kb, write_files(tmp_path / "a", CITIES))
    ingest_files(kb, write_files(tmp_path / "b", {"beijing.txt": "北京有长城和颐和园。"}))
    kb.delete_document("faiss.md")

    def stored_and_recounted() -> tuple[dict[str, int], dict[str, int]]:
        rows = [r for batch in _iter_rows(kb.client, kb.collection, ["terms"]) for r in batch]
        truth = dict(term_counts(r["terms"] for r in rows))
        every = [r["term"] for batch in _iter_rows(kb.client, f"{kb.collection}_terms",
                                                    ["term"]) for r in batch]
        return read_counts(kb.client, f"{kb.collection}_terms", every), truth

    stored, truth = stored_and_recounted()
    assert stored == truth and truth  # replaced and deleted chunks' terms were taken off
    assert kb.search("长城", mode="lexical")[0].source == "beijing.txt"
    assert not any(p.source == "faiss.md" for p in kb.search("FAISS dense vectors"))


class WriterDied(Exception):
    """Stands for a writer process killed midway (nothing after it runs)."""


def milvus_base(tmp_path: Path, embedder: FakeEmbedder) -> tuple[KnowledgeStores, Any]:
    stores = KnowledgeStores(KnowledgeBaseStore(tmp_path / "kbs"),
                             MilvusKnowledgeBaseStore(str(tmp_path / "m.db"), tmp_path / "locks"),
                             default="milvus")
    return stores, stores.create("docs", embedder, chunking=ChunkingConfig(60, 10))


def consistent(kb: Any) -> None:
    """Every stored chunk is below next_row and counted, and the term counts are true."""
    from rag.milvus_store import _count, _iter_rows, read_counts, term_counts

    manifest = kb.store.manifest(kb.name)
    rows = [r for batch in _iter_rows(kb.client, kb.collection, ["row_id", "terms"])
            for r in batch]
    assert all(r["row_id"] < manifest.next_row for r in rows)
    assert manifest.chunks == len(rows)
    assert manifest.documents == _count(kb.client, f"{kb.collection}_docs")
    every = [r["term"] for batch in _iter_rows(kb.client, f"{kb.collection}_terms", ["term"])
             for r in batch]
    assert read_counts(kb.client, f"{kb.collection}_terms", every) == dict(
        term_counts(r["terms"] for r in rows))
    assert kb.store.read_intent(kb.name) is None


def test_a_milvus_write_that_died_before_its_commit_is_never_seen_and_is_undone(
        tmp_path: Path, embedder: FakeEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    stores, kb = milvus_base(tmp_path, embedder)
    ingest_files(kb, write_files(tmp_path / "a", CITIES))
    insert = kb.client.insert
    calls = []

    def dies_after_one_batch(collection: str, rows: Any) -> Any:
        if calls:
            raise WriterDied()
        calls.append(collection)
        return insert(collection, rows)

    monkeypatch.setattr("rag.milvus_store.INSERT_BATCH", 2)
    monkeypatch.setattr(kb.client, "insert", dies_after_one_batch)
    lake = "西湖位于杭州市西部，是中国著名的风景名胜区。" * 6
    with pytest.raises(WriterDied):
        kb.add([kb_prepared(kb, "hangzhou.txt", lake)])
    monkeypatch.undo()
    reader = stores.open("docs", embedder)  # another replica, reading meanwhile
    assert not any(p.source == "hangzhou.txt" for p in reader.search("西湖 杭州 风景"))
    assert "hangzhou.txt" not in [d.source for d in reader.documents()]
    # the next writer undoes it first; the file then goes in as new
    result = ingest_files(stores.open("docs", embedder),
                          write_files(tmp_path / "b", {"hangzhou.txt": lake}))
    assert result.added == ("hangzhou.txt",)
    consistent(kb)
    assert reader.refresh()  # what a replica does on each request
    assert reader.search("西湖 杭州 风景")[0].source == "hangzhou.txt"


def test_a_milvus_write_that_died_after_its_commit_is_finished_by_the_next_writer(
        tmp_path: Path, embedder: FakeEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    stores, kb = milvus_base(tmp_path, embedder)
    ingest_files(kb, write_files(tmp_path / "a", CITIES))

    def dies(*args: Any) -> None:
        raise WriterDied()

    monkeypatch.setattr(type(kb), "_finish", dies)
    with pytest.raises(WriterDied):  # the new Beijing is committed, the old one not gone
        kb.add([kb_prepared(kb, "beijing.txt", "北京有长城和颐和园。")])
    monkeypatch.undo()
    other = stores.open("docs", embedder)  # the next writer finishes it first
    other.delete_document("shanghai.txt")
    consistent(kb)
    assert [d.source for d in other.documents()] == ["beijing.txt", "faiss.md"]
    texts = [p.text for p in other.search("北京 故宫 长城", mode="lexical")]
    assert any("长城" in t for t in texts) and not any("故宫" in t for t in texts)
    # a delete that died after its commit is finished too
    monkeypatch.setattr(type(kb), "_finish", dies)
    with pytest.raises(WriterDied):
        other.delete_document("faiss.md")
    monkeypatch.undo()
    assert ingest_files(kb, write_files(tmp_path / "c", {"x.txt": "新的文件。"})).status == "done"
    consistent(kb)
    assert [d.source for d in kb.documents()] == ["beijing.txt", "x.txt"]


def test_a_rebuild_undoes_a_dead_writers_write_before_copying_the_rows(
        tmp_path: Path, embedder: FakeEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    stores, kb = milvus_base(tmp_path, embedder)
    ingest_files(kb, write_files(tmp_path / "a", CITIES))
    insert = kb.client.insert

    def dies_after_inserting(collection: str, rows: Any) -> Any:
        insert(collection, rows)
        raise WriterDied()

    monkeypatch.setattr(kb.client, "insert", dies_after_inserting)
    with pytest.raises(WriterDied):
        kb.add([kb_prepared(kb, "hangzhou.txt", "西湖位于杭州市西部。")])
    monkeypatch.undo()
    kb.rebuild(FakeEmbedder("fake-embedder", 64), index_kind="hnsw")
    consistent(kb)  # the dead write's rows were not copied into the new generation
    assert "hangzhou.txt" not in [d.source for d in kb.documents()]
    assert ingest_files(kb, write_files(tmp_path / "b", {"hangzhou.txt": "西湖位于杭州市西部。"})
                        ).added == ("hangzhou.txt",)


def kb_prepared(kb: Any, source: str, text: str) -> Any:
    from rag.ingest import prepare_path

    path = Path(kb.store.lock_root) / source
    path.write_text(text, encoding="utf-8")
    prepared, error = prepare_path(path, source, kb.splitter())
    assert error is None, error
    return prepared
