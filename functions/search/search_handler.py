"""search function: `POST /v1/documents`, `GET /v1/documents`, `GET`/`DELETE /v1/documents/{id}`,
`POST /v1/search` behind API Gateway (Mangum)."""

from typing import Any, Literal

from fastapi import Query, Response
from pydantic import Field

from agent_patterns import snapstart
from agent_patterns.inputs import RequestBody
from agent_patterns.search import (
    DocumentInput,
    get_document,
    ingest,
    list_documents,
    parse_filter,
    remove_document,
    search,
)
from agent_patterns.web import CurrentTenant, create_app, lambda_handler


class ChunkIn(RequestBody):
    text: str = Field(min_length=1)
    embedding: list[float]


class DocumentIn(RequestBody):
    id: str | None = Field(None, min_length=1, max_length=256)
    text: str | None = None
    metadata: dict[str, Any] | None = None
    chunks: list[ChunkIn] | None = Field(None, description="precomputed chunks with their embeddings")


class DocumentsRequest(RequestBody):
    documents: list[DocumentIn]


class SearchRequest(RequestBody):
    query: str | None = None
    vector: list[float] | None = None
    limit: int = Field(10, ge=1, le=100)
    filter: dict[str, Any] | None = Field(None, description="metadata containment (jsonb @>)")
    mode: Literal["vector", "hybrid", "keyword"] = "vector"


app = create_app("search")


@app.post("/v1/documents")
async def add_documents(body: DocumentsRequest, who: CurrentTenant) -> dict[str, Any]:
    docs = [
        DocumentInput(
            text=d.text,
            id=d.id,
            metadata=d.metadata,
            chunks=[(c.text, c.embedding) for c in d.chunks] if d.chunks else None,
        )
        for d in body.documents
    ]
    return {"documents": await ingest(who.id, docs)}


@app.get("/v1/documents")
async def list_stored_documents(
    who: CurrentTenant,
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = Query(None, description="`next_cursor` of the previous page"),
    filter_json: str | None = Query(
        None, alias="filter", description='metadata containment (jsonb @>) as JSON, e.g. {"team": "eng"}'
    ),
) -> dict[str, Any]:
    page = await list_documents(who.id, limit=limit, cursor=cursor, metadata_filter=parse_filter(filter_json))
    return {"documents": page.documents, "next_cursor": page.next_cursor}


@app.get("/v1/documents/{document_id:path}")  # ids may hold "/" (URLs)
async def get_stored_document(document_id: str, who: CurrentTenant) -> dict[str, Any]:
    return await get_document(who.id, document_id)


@app.delete("/v1/documents/{document_id:path}", status_code=204)  # ids may hold "/" (URLs)
async def delete_document(document_id: str, who: CurrentTenant) -> Response:
    await remove_document(who.id, document_id)
    return Response(status_code=204)


@app.post("/v1/search")
async def search_chunks(body: SearchRequest, who: CurrentTenant) -> dict[str, Any]:
    matches = await search(
        who.id, query=body.query, vector=body.vector, limit=body.limit, metadata_filter=body.filter, mode=body.mode
    )
    return {
        "matches": [
            {
                "chunk_id": str(m.chunk_id),
                "document_id": m.document_id,
                "content": m.content,
                "similarity": m.similarity,
                "metadata": m.metadata,
                "score": m.score,
                "keyword_rank": m.keyword_rank,
            }
            for m in matches
        ]
    }


# SnapStart (template.yaml: SnapStart on the published versions behind the `live` alias).
# Before the snapshot: load what the first request would (the Redis and Postgres clients, the
# OpenAI SDK and its HTTP transport for query embeddings), so no restored environment pays for
# it. Nothing connects, nothing is sent, nothing unique is made. After a restore: sockets in the
# snapshot are dead, so the clients are dropped (never used) and made anew; the PRNG is reseeded
# so restored environments do not share retry jitter.
PRELOAD = (
    *snapstart.BACKEND_MODULES,
    "openai",
    "agent_patterns.llm.providers",
)


def _before_snapshot() -> None:
    snapstart.preload(PRELOAD)
    from openai import AsyncOpenAI

    # A throwaway client loads the HTTP transport and the embeddings resource; it sends nothing.
    AsyncOpenAI(api_key="snapshot", max_retries=0).embeddings  # noqa: B018


def _after_restore() -> None:
    from agent_patterns.llm.providers import reset_clients

    snapstart.reset_after_restore(reset_clients)


snapstart.register(_before_snapshot, _after_restore)

handler = lambda_handler(app)
