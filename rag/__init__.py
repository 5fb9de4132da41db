"""rag: load, clean, split, embed, index and retrieve documents for knowledge bases."""

from rag.cleaning import clean_pages, clean_text, strip_headers_footers
from rag.documents import Chunk, ChunkMetadata, Document, DocumentMetadata, Passage
from rag.embeddings import (
    DEFAULT_MODEL_NAME,
    Embedder,
    SentenceTransformerEmbedder,
    default_embedding_model_path,
    load_embedder,
)
from rag.errors import (
    DocumentNotFoundError,
    EmbedderMissingError,
    EmbeddingMismatchError,
    InvalidNameError,
    KnowledgeBaseCorruptError,
    KnowledgeBaseExistsError,
    KnowledgeBaseLockedError,
    KnowledgeBaseNotFoundError,
    LoaderError,
    RagError,
    UploadLimitError,
)
from rag.evaluation import QAItem, RetrievalScores, evaluate, load_squad_style
from rag.index import DenseIndex, LexicalIndex
from rag.ingest import (
    FileError,
    IngestJob,
    IngestProgress,
    JobStatus,
    UploadLimits,
    check_upload_limits,
    ingest_files,
    prepare_file,
    sanitize_filename,
)
from rag.knowledge_base import (
    AddResult,
    KnowledgeBase,
    KnowledgeBaseInfo,
    KnowledgeBaseStore,
    PreparedFile,
    validate_kb_name,
)
from rag.loaders import SUPPORTED_EXTENSIONS, LoadedFile, load_bytes, load_file, load_files
from rag.retrieval import HybridRetriever, RetrievalConfig
from rag.snapshot import ChunkingConfig, DocumentInfo, Manifest
from rag.splitting import TextSplitter
from rag.tokenization import cjk_share, tokenize

__all__ = [
    "DEFAULT_MODEL_NAME",
    "SUPPORTED_EXTENSIONS",
    "AddResult",
    "Chunk",
    "ChunkMetadata",
    "ChunkingConfig",
    "DenseIndex",
    "Document",
    "DocumentInfo",
    "DocumentMetadata",
    "DocumentNotFoundError",
    "Embedder",
    "EmbedderMissingError",
    "EmbeddingMismatchError",
    "FileError",
    "HybridRetriever",
    "IngestJob",
    "IngestProgress",
    "InvalidNameError",
    "JobStatus",
    "KnowledgeBase",
    "KnowledgeBaseCorruptError",
    "KnowledgeBaseExistsError",
    "KnowledgeBaseInfo",
    "KnowledgeBaseLockedError",
    "KnowledgeBaseNotFoundError",
    "KnowledgeBaseStore",
    "LexicalIndex",
    "LoadedFile",
    "LoaderError",
    "Manifest",
    "Passage",
    "PreparedFile",
    "QAItem",
    "RagError",
    "RetrievalConfig",
    "RetrievalScores",
    "SentenceTransformerEmbedder",
    "load_embedder",
    "TextSplitter",
    "UploadLimitError",
    "UploadLimits",
    "check_upload_limits",
    "cjk_share",
    "clean_pages",
    "clean_text",
    "default_embedding_model_path",
    "evaluate",
    "ingest_files",
    "load_bytes",
    "load_file",
    "load_files",
    "load_squad_style",
    "prepare_file",
    "sanitize_filename",
    "strip_headers_footers",
    "tokenize",
    "validate_kb_name",
]
