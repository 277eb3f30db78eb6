"""Tenant-isolated knowledge search: ingest documents, search them by vector or hybrid query."""

from agent_patterns.search.documents import DocumentInput, ingest, remove_document, search
from agent_patterns.search.vectors import ChunkMatch

__all__ = ["ChunkMatch", "DocumentInput", "ingest", "remove_document", "search"]
