"""Vector search: ingest rate, index build time, recall@10 and latency for HNSW and IVFFlat.

100,000 clustered 1536-d vectors (seeded) and 1,000 queries near the clusters; NumPy exact
search gives the ground truth (and is the floor for exact search). Everything goes through
`agent_patterns.vectors` on the embedded Postgres (a bench-only data dir).

    uv run --with numpy python bench/vector_search.py [--rows 100000] [--queries 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

DIM = 1536


def dataset(rows: int, queries: int) -> tuple[Any, Any]:
    import numpy as np  # type: ignore[import-not-found,unused-ignore]

    rng = np.random.default_rng(42)
    centers = rng.normal(size=(200, DIM)).astype(np.float32)
    labels = rng.integers(0, len(centers), size=rows)
    data = centers[labels] + rng.normal(scale=0.6, size=(rows, DIM)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    q_labels = rng.integers(0, len(centers), size=queries)
    q = centers[q_labels] + rng.normal(scale=0.6, size=(queries, DIM)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return data, q


async def run(rows: int, queries: int) -> None:
    import numpy as np  # type: ignore[import-not-found,unused-ignore]
    from psycopg import sql

    from agent_patterns.backends import connection
    from agent_patterns.search import vectors

    data, qs = dataset(rows, queries)
    started = time.perf_counter()
    truth = np.argsort(-(qs @ data.T), axis=1)[:, :10]
    floor_ms = (time.perf_counter() - started) * 1000 / queries
    print(f"NumPy exact search (floor): {floor_ms:.2f} ms/query ({queries} queries, matrix product)")

    schema = "tenant_bench"
    async with connection() as db:
        await db.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        await db.execute("DELETE FROM agent_patterns.schema_versions WHERE scope = %s", (schema,))
        from agent_patterns.backends.migrations import forget_applied

        forget_applied()
        await vectors.create_tenant_schema(db, schema)
        s = sql.Identifier(schema)
        await db.execute(sql.SQL("DROP INDEX {}.embeddings_hnsw").format(s))  # load first, index after
        started = time.perf_counter()
        ids: list[Any] = []
        for start in range(0, rows, 2000):
            async with db.transaction():
                ids += await vectors.bulk_insert(
                    db, schema, [(f"chunk {i}", data[i].tolist(), None) for i in range(start, min(rows, start + 2000))]
                )
        ingest_s = time.perf_counter() - started
        print(f"ingest (binary COPY through vectors.bulk_insert): {rows / ingest_s:,.0f} vectors/s ({ingest_s:.1f} s)")
        await db.execute("SET maintenance_work_mem = '3GB'")
        await db.execute("SET max_parallel_maintenance_workers = 1")
        position = {str(cid): i for i, cid in enumerate(ids)}

        async def measure(label: str, settings: list[str]) -> None:
            latencies, recalls = [], []
            for qi in range(queries):
                q = qs[qi].tolist()
                async with db.transaction():
                    for stmt in settings:
                        await db.execute(stmt)
                    t = time.perf_counter()
                    cur = await db.execute(
                        sql.SQL("SELECT chunk_id FROM {}.embeddings ORDER BY embedding <=> %s LIMIT 10").format(s),
                        (vectors._vec(q),),
                        binary=True,
                    )
                    found = [position[str(r[0])] for r in await cur.fetchall()]
                    latencies.append((time.perf_counter() - t) * 1000)
                recalls.append(len(set(found) & set(truth[qi].tolist())) / 10)
            latencies.sort()
            p50, p95 = statistics.median(latencies), latencies[int(0.95 * (len(latencies) - 1))]
            print(
                f"  {label:24} recall@10 {statistics.mean(recalls):.3f}   p50 {p50:6.2f} ms   p95 {p95:6.2f} ms   "
                f"{1000 / statistics.mean(latencies):7.0f} q/s",
                flush=True,
            )

        started = time.perf_counter()
        await db.execute(
            sql.SQL("CREATE INDEX embeddings_hnsw ON {}.embeddings USING hnsw (embedding vector_cosine_ops)").format(s)
        )
        print(f"HNSW (m=16, ef_construction=64) build: {time.perf_counter() - started:.1f} s", flush=True)
        for ef in (40, 100, 200, 400):
            await measure(f"HNSW ef_search={ef}", [f"SET LOCAL hnsw.ef_search = {ef}"])
        await db.execute(sql.SQL("DROP INDEX {}.embeddings_hnsw").format(s))
        lists = max(1, rows // 1000)
        started = time.perf_counter()
        await db.execute(
            sql.SQL(
                "CREATE INDEX embeddings_ivf ON {}.embeddings USING ivfflat "
                "(embedding vector_cosine_ops) WITH (lists = {})"
            ).format(s, sql.Literal(lists))
        )
        print(f"IVFFlat (lists={lists}) build: {time.perf_counter() - started:.1f} s", flush=True)
        for probes in (1, int(lists**0.5), 20, 40):
            await measure(f"IVFFlat probes={probes}", [f"SET LOCAL ivfflat.probes = {probes}"])
        await db.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    from agent_patterns_dev import embedded
    from agent_patterns_dev.environment import export_backends

    try:
        export_backends(Path(tempfile.mkdtemp(prefix="vector-bench-")))
        asyncio.run(run(args.rows, args.queries))
    finally:
        embedded.stop()


if __name__ == "__main__":
    main()
