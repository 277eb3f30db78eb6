"""Settings of the search function."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agent_patterns.config import FunctionSettings, settings_of


class SearchSettings(FunctionSettings):
    """Embeddings, chunking and request limits of document search."""

    embedding_dimensions: int = Field(1536, ge=1, le=2000, description="Vector size of tenant schemas.")
    embedding_storage: Literal["vector", "halfvec"] = Field(
        "vector",
        description="Column type of new tenants' embeddings: `halfvec` stores 2 bytes per dimension instead of 4"
        " (existing tenants keep theirs).",
    )
    embedding_model: str = Field("text-embedding-3-small", description="OpenAI embeddings model.")
    search_max_documents: int = Field(100, ge=1, description="Documents per `POST /v1/documents` (413 beyond).")
    search_max_document_chars: int = Field(200_000, ge=1, description="Characters per document (422 beyond).")
    search_max_metadata_bytes: int = Field(
        8192, ge=2, description="JSON bytes of one document's metadata, or of a search filter (422 beyond)."
    )
    search_max_query_chars: int = Field(8000, ge=1, description="Characters of a search query (422 beyond).")
    search_chunk_tokens: int = Field(400, ge=16, description="Approximate tokens per chunk.")
    search_chunk_overlap: int = Field(50, ge=0, description="Approximate tokens shared by neighbouring chunks.")


def search_settings() -> SearchSettings:
    return settings_of(SearchSettings)
