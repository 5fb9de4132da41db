"""Splitting into ordered, overlapping chunks that respect Chinese and English sentences."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from rag.documents import Chunk, ChunkMetadata, Document, chunk_id
from rag.loaders.tables import table_spans

# Coarse to fine: paragraphs, lines, Chinese sentence ends, Latin sentence ends, clause
# marks, words, characters. Separators stay at the end of the piece they close, so a
# chunk ends with its "。" instead of the next one starting with it.
SEPARATORS: tuple[str, ...] = (
    "\n\n",
    "\n",
    "。",
    "！",
    "？",
    "；",
    "! ",
    "? ",
    ". ",
    "; ",
    "：",
    ": ",
    "，",
    ", ",
    "、",
    " ",
    "",
)

Unit = Literal["chars", "tokens"]


class TextSplitter:
    """Recursive character splitting (langchain-text-splitters) with positions kept.

    ``chunk_size`` and ``chunk_overlap`` count characters (``unit="chars"``) or whatever
    ``length_function`` counts (``unit="tokens"``, e.g. the embedding model's tokens).
    """

    def __init__(
        self,
        chunk_size: int = 300,
        chunk_overlap: int = 60,
        *,
        unit: Unit = "chars",
        length_function: Callable[[str], int] | None = None,
        separators: Sequence[str] = SEPARATORS,
    ) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if not 0 <= chunk_overlap < chunk_size:
            raise ValueError(
                f"chunk_overlap must be in [0, chunk_size), got {chunk_overlap} for {chunk_size}"
            )
        if unit not in ("chars", "tokens"):
            raise ValueError(f"unit must be 'chars' or 'tokens', got {unit!r}")
        if unit == "tokens" and length_function is None:
            raise ValueError("unit='tokens' needs a length_function that counts tokens")
        if unit == "chars" and length_function is not None:
            raise ValueError("length_function is only used with unit='tokens'")
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.unit = unit
        self._splitter = RecursiveCharacterTextSplitter(
            separators=list(separators),
            keep_separator="end",
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            length_function=length_function or len,
        )

    def split_text(self, text: str) -> list[tuple[str, int]]:
        """Chunks of ``text`` with their start offsets in it (-1 if a chunk was altered)."""
        pieces = self._splitter.split_text(text)
        out: list[tuple[str, int]] = []
        cursor = 0
        for piece in pieces:
            start = text.find(piece, cursor)
            if start < 0:
                start = text.find(piece)
            out.append((piece, start))
            if start >= 0:
                # The next chunk starts after this one's start and, in character units,
                # overlaps it by at most chunk_overlap: searching from there keeps
                # repetitive text from matching an earlier copy of the next chunk.
                cursor = start + 1
                if self.unit == "chars":
                    cursor = max(cursor, start + len(piece) - self.chunk_overlap)
        return out

    def split_documents(self, documents: Sequence[Document], doc_id: str) -> list[Chunk]:
        """Chunks of one file's documents (its pages, in order), numbered across pages.

        Markdown tables are cut between rows only (rows are lines, and the splitter cuts
        at line ends before anything finer), and a chunk that starts inside a table
        repeats the table's header and separator rows first: such a chunk is longer
        than ``chunk_size`` by its header, and its ``start``/``end`` span only the rows
        taken from the page (``len(text) - (end - start)`` is the repeated header).
        """
        chunks: list[Chunk] = []
        for document in documents:
            tables = table_spans(document.text) if "|" in document.text else []
            for piece, start in self.split_text(document.text):
                end = start + len(piece) if start >= 0 else -1
                text = piece
                if start >= 0 and tables:
                    text, start = _with_table_header(piece, start, tables)
                ordinal = len(chunks)
                meta = ChunkMetadata(document.source, document.page, start, end)
                chunks.append(Chunk(chunk_id(doc_id, ordinal), doc_id, ordinal, text, meta))
        return chunks


def _with_table_header(piece: str, start: int, tables: Sequence[tuple[int, int, str]]
                       ) -> tuple[str, int]:
    """The chunk's text and start: unchanged, unless it starts inside a table's body or
    its header lines, then the header first and the rows the page holds after it."""
    for table_start, table_end, header in tables:
        if table_start < start < table_end:
            skip = max(0, table_start + len(header) - start)  # a partial header: drop it
            body = piece[skip:]
            return (header + body, start + skip) if body.strip() else (piece, start)
    return piece, start


def merge_overlapping(texts: Sequence[str], spans: Sequence[tuple[int | None, int, int]]) -> str:
    """Join consecutive chunks of one document without repeating their overlap.

    ``spans`` holds ``(page, start, end)`` per chunk. On the same page with known offsets
    the overlap is exactly ``previous end - next start``; otherwise fall back to the
    longest suffix of the text so far that is a prefix of the next chunk.
    """
    if len(texts) != len(spans):
        raise ValueError("texts and spans differ in length")
    if not texts:
        return ""
    merged = texts[0]
    for i in range(1, len(texts)):
        text = texts[i]
        (page_a, _, end_a), (page_b, start_b, end_b) = spans[i - 1], spans[i]
        if start_b >= 0 and end_b >= 0 and len(text) > end_b - start_b:
            text = text[len(text) - (end_b - start_b):]  # a repeated table header
        if page_a == page_b and start_b >= 0 and end_a >= 0:
            overlap = end_a - start_b
            if overlap > 0:
                merged += text[overlap:]
            else:
                merged += _gap(merged, text) + text
            continue
        overlap = _suffix_prefix_overlap(merged, text)
        merged += text[overlap:] if overlap else _gap(merged, text) + text
    return merged


def _gap(left: str, right: str) -> str:
    from rag.cleaning import is_cjk

    if not left or not right:
        return ""
    if left[-1] == "|" or right[0] == "|":  # a table's rows are lines, and it is a block
        return "\n" if left[-1] == right[0] == "|" else "\n\n"
    return "" if is_cjk(left[-1]) or is_cjk(right[0]) else " "


def _suffix_prefix_overlap(left: str, right: str, minimum: int = 8) -> int:
    limit = min(len(left), len(right))
    for size in range(limit, minimum - 1, -1):
        if left.endswith(right[:size]):
            return size
    return 0


def token_length_function(tokenizer_json: str) -> Callable[[str], int]:
    """A token counter from a Hugging Face ``tokenizer.json`` (no special tokens counted)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return count
