"""Tenant-isolated knowledge search: ingest documents, read them back, search them by vector,
keyword or hybrid query."""

from agent_patterns.search.documents import (
    DocumentInput,
    DocumentPage,
    get_document,
    ingest,
    list_documents,
    parse_filter,
    remove_document,
    search,
)
from agent_patterns.search.vectors import ChunkMatch

__all__ = [
    "ChunkMatch",
    "DocumentInput",
    "DocumentPage",
    "get_document",
    "ingest",
    "list_documents",
    "parse_filter",
    "remove_document",
    "search",
]
