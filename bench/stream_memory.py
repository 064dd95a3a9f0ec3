"""Peak memory while streaming a large table through a session (identity map on, the default).

    python bench/stream_memory.py [--rows 1000000] [--batch 1000] [--backends sqlite,postgresql]

For each backend: fills a table with ``--rows`` rows, then, in a fresh process, streams it with
``session.query(M).stream(batch_size=...)`` and reports the resident set size before and at its
peak during the stream (sampled after every batch), plus the identity map's size at the end.
Bounded memory means the growth stays within a few batches whatever the row count.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

from ormkit import AsyncSession, Base, Mapped, create_engine, mapped_column

PG_URL = os.environ.get("ORMKIT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


class StreamRow(Base):
    __tablename__ = "bench_stream_rows"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    n: Mapped[int]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


async def fill(url: str, rows: int) -> None:
    engine = await create_engine(url)
    try:
        await engine.drop_all(StreamRow)
        await engine.create_all(StreamRow)
        session = AsyncSession(engine)
        chunk = 50_000
        for start in range(0, rows, chunk):
            await session.insert_all(
                [StreamRow(name=f"row {i:09d}", n=i) for i in range(start, min(rows, start + chunk))]
            )
    finally:
        await engine.dispose()


async def stream(url: str, rows: int, batch: int) -> dict[str, float]:
    """Runs in a process of its own, so that what filling the table allocated is not there."""
    engine = await create_engine(url)
    try:
        session = AsyncSession(engine)
        gc.collect()
        before = peak = rss_mb()
        seen = total = 0
        started = time.perf_counter()
        async for obj in session.query(StreamRow).order_by("id").stream(batch_size=batch):
            seen += 1
            total += obj.n
            if seen % batch == 0:
                peak = max(peak, rss_mb())
        elapsed = time.perf_counter() - started
        assert seen == rows and total == rows * (rows - 1) // 2, (seen, total)
        tracked = len(session._identity) if session._identity is not None else 0
        return {"before_mb": before, "peak_mb": peak, "growth_mb": peak - before, "seconds": elapsed, "map": tracked}
    finally:
        await engine.dispose()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--stream-only", metavar="URL", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stream_only:
        print(json.dumps(await stream(args.stream_only, args.rows, args.batch)))
        return
    for backend in args.backends.split(","):
        if backend == "sqlite":
            url = f"sqlite:///{tempfile.mkdtemp()}/stream.db"
        else:
            url = PG_URL + ("&" if "?" in PG_URL else "?") + "sslmode=disable"
        await fill(url, args.rows)
        cmd = [sys.executable, __file__, "--rows", str(args.rows), "--batch", str(args.batch), "--stream-only", url]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print(
            f"{backend}: {args.rows:,} rows, batch {args.batch}: RSS {r['before_mb']:.1f} MB before, "
            f"peak {r['peak_mb']:.1f} MB (+{r['growth_mb']:.1f} MB), {r['seconds']:.1f} s, "
            f"identity map entries at the end: {r['map']:,}"
        )
        engine = await create_engine(url)
        await engine.drop_all(StreamRow)
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
