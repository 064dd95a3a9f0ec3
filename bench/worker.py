"""One library on one backend, in its own process: set up, check, time; JSON on stdout.

    python bench/worker.py --lib ormkit --backend sqlite [--quick] [--pg-dsn URL] [--workloads W1,W2]

Run by ``run.py``; useful on its own to debug one library. Everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import traceback
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (
    DDL,
    EXPECTED_AVG,
    EXPECTED_COUNT,
    EXPECTED_W4_AGES,
    N_EAGER_USERS,
    N_USERS,
    PG_AFTER_LOAD,
    POSTS,
    POSTS_BY_AUTHOR,
    POSTS_PER_USER,
    SEED,
    SQL_CLEANUP_W3,
    SQL_COUNT_W3,
    SQLITE_AFTER_LOAD,
    USERS,
    USERS_BY_ID,
    WORKLOADS,
    CheckFailed,
    Iters,
    bulk_rows,
    call,
    check_type,
    check_user,
    need,
    norm_user,
    parse_ts,
    random_ids,
    set_gate,
    time_bulk,
    time_calls,
    wait_turn,
)
from libs import LIBS, Env, Library, load_lib

DEFAULT_PG = os.environ.get("ORMKIT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/ormkit_bench")
W7_PK = 4242


# ---------------------------------------------------------------- checks (before any timing)


async def check(lib: Library, w: str, fn: Any, row_type: type) -> dict[str, Any]:
    """Runs workload ``w`` once through ``fn`` and verifies the answer. Returns extra values
    (count / avg) for the cross-library comparison."""
    out: dict[str, Any] = {}
    as_tuple = tuple if row_type is tuple else lib.as_tuple
    if w == "W1":
        for pk in (1, 2, 10, W7_PK, N_USERS):
            obj = await call(fn, pk)
            check_type(obj, row_type, f"W1 get({pk})")
            check_user(as_tuple(obj), f"W1 get({pk})")
    elif w == "W2":
        rows = await call(fn, None)
        need(len(rows) == N_USERS, f"W2: {len(rows)} rows, expected {N_USERS}")
        for r in rows:
            check_type(r, row_type, "W2")
        got = sorted((norm_user(as_tuple(r)) for r in rows), key=lambda t: t[0])
        need(got == USERS, "W2: the rows differ from the data loaded")
    elif w == "W4":
        rows = await call(fn, None)
        need(len(rows) == len(EXPECTED_W4_AGES), f"W4: {len(rows)} rows, expected {len(EXPECTED_W4_AGES)}")
        for r in rows:
            check_type(r, row_type, "W4")
            check_user(as_tuple(r), "W4")
        ts = [as_tuple(r) for r in rows]
        need(all(t[1].startswith("user1") for t in ts), "W4: a name does not start with user1")
        ages = [t[3] for t in ts]
        need(ages == EXPECTED_W4_AGES, f"W4: ages {ages}, expected {EXPECTED_W4_AGES} (ORDER BY age DESC, OFFSET 10)")
    elif w == "W5":
        res = await call(fn, None)
        pairs = lib.eager_pairs(res)
        need(len(pairs) == N_EAGER_USERS, f"W5: {len(pairs)} users, expected {N_EAGER_USERS}")
        for n, (u, posts) in enumerate(pairs, 1):
            check_type(u, row_type, "W5 user")
            t = as_tuple(u)
            check_user(t, "W5 user")
            need(t[0] == n, f"W5: user #{n} has id {t[0]} (ORDER BY id)")
            need(len(posts) == POSTS_PER_USER, f"W5: user {n} has {len(posts)} posts, expected {POSTS_PER_USER}")
            need(set(posts) == POSTS_BY_AUTHOR[n], f"W5: user {n}'s posts differ from the data loaded")
    elif w == "W6a":
        v = await call(fn, None)
        need(v == EXPECTED_COUNT, f"W6a: count {v!r}, expected {EXPECTED_COUNT}")
        out["count"] = int(v)
    elif w == "W6b":
        v = await call(fn, None)
        need(
            v is not None and math.isclose(float(v), EXPECTED_AVG, rel_tol=1e-9),
            f"W6b: avg {v!r}, expected {EXPECTED_AVG}",
        )
        out["avg"] = float(v)
    elif w == "W7":
        orig = USERS_BY_ID[W7_PK][3]
        await call(lib.prepare, "W7", [(W7_PK, 123), (W7_PK, orig)])
        for value in (123, orig):
            await call(fn, (W7_PK, value))
            got = await call(lib.scalar, "SELECT age FROM users WHERE id = ?", (W7_PK,))
            need(got == value, f"W7: after the update, age of {W7_PK} is {got!r}, expected {value!r}")
    elif w == "W3":
        rows = bulk_rows(0)
        res = await call(fn, rows)
        try:
            n = await call(lib.scalar, SQL_COUNT_W3)
            need(n == N_USERS, f"W3: {n} new rows, expected {N_USERS}")
            for i in (0, 1, 4999, N_USERS - 1):
                name, email, age, created = rows[i]
                got_age = await call(lib.scalar, "SELECT age FROM users WHERE email = ?", (email,))
                need(got_age == age, f"W3: row {email} has age {got_age!r}, expected {age!r}")
                got_ts = parse_ts(await call(lib.scalar, "SELECT created_at FROM users WHERE email = ?", (email,)))
                need(got_ts == created, f"W3: row {email} has created_at {got_ts!r}, expected {created!r}")
            if isinstance(res, list):  # libraries that hand back the inserted objects: keys filled in
                need(len(res) == N_USERS, f"W3: returned {len(res)} objects")
                ids = {as_tuple(o)[0] for o in res}
                need(None not in ids and len(ids) == N_USERS, "W3: the returned objects lack distinct ids")
                need(min(ids) > N_USERS, f"W3: returned ids start at {min(ids)}")
        finally:
            await call(lib.exec, SQL_CLEANUP_W3)
    return out


# ---------------------------------------------------------------- timing


async def measure(lib: Library, w: str, fn: Any, it: Iters, tag: int) -> Any:
    sync = lib.sync
    if w == "W1":
        return await time_calls(fn, random_ids(it.call_warmup + it.call_timed, SEED + 1), it.call_warmup, sync)
    if w in ("W4", "W6a", "W6b"):
        return await time_calls(fn, [None] * (it.call_warmup + it.call_timed), it.call_warmup, sync)
    if w == "W7":
        rng = random.Random(SEED + 7)
        ages = {u[0]: u[3] for u in USERS}
        args = []
        for pk in random_ids(it.update_warmup + it.update_timed, SEED + 2):
            cur = ages[pk] if ages[pk] is not None else 17
            new = 18 + (cur - 18 + 1 + rng.randrange(58)) % 60  # always a different value
            ages[pk] = new
            args.append((pk, new))
        await call(lib.prepare, "W7", args)
        return await time_calls(fn, args, it.update_warmup, sync)
    if w in ("W2", "W5"):
        return await time_bulk(
            fn, lambda i: None, it.bulk_warmup, it.bulk_timed, sync, before=lib.reset, after=lib.reset
        )
    if w == "W3":

        async def cleanup(_: int) -> None:
            await call(lib.exec, SQL_CLEANUP_W3)

        return await time_bulk(
            fn, lambda i: bulk_rows(tag * 1000 + i + 1), it.insert_warmup, it.insert_timed, sync, after=cleanup
        )
    raise ValueError(w)


# ---------------------------------------------------------------- main


def versions(lib: Library) -> dict[str, str]:
    try:
        v = lib.version()
    except Exception as e:  # pragma: no cover
        v = f"? ({e})"
    return {lib.name: v}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    it = Iters.quick() if args.quick else Iters.default()
    backend = args.backend
    tmpdir = None
    if backend == "sqlite":
        tmpdir = tempfile.mkdtemp(prefix=f"ormkit-bench-{args.lib}-")
        env = Env(backend, sqlite_path=os.path.join(tmpdir, "bench.db"))
    else:
        env = Env(backend, pg_dsn=args.pg_dsn.split("?")[0], pg_schema=f"bench_{args.lib}_{os.getpid()}")
    lib = load_lib(args.lib, env)
    wanted = [w for w in WORKLOADS if not args.workloads or w in args.workloads.split(",")]
    report: dict[str, Any] = {
        "lib": args.lib,
        "backend": backend,
        "quick": args.quick,
        "pid": os.getpid(),
        "python": platform.python_version(),
        "versions": versions(lib),
        "info": {},
        "rows": {},
        "values": {},
        "setup_s": None,
    }
    t0 = time.perf_counter()
    try:
        await call(lib.setup)
    except BaseException:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    try:
        if backend == "postgresql":
            await call(lib.exec, f"CREATE SCHEMA {env.pg_schema}")
        for ddl in DDL[backend]:
            await call(lib.exec, ddl)
        await call(lib.load, USERS, POSTS)
        for sql in PG_AFTER_LOAD if backend == "postgresql" else SQLITE_AFTER_LOAD:
            await call(lib.exec, sql)
        report["info"] = await call(lib.info)
        if backend == "postgresql":
            report["info"]["server_version"] = await call(lib.scalar, "SHOW server_version")
        report["setup_s"] = round(time.perf_counter() - t0, 3)

        # (label, workload, method, row type): the library's own row first, then its variants
        plan = []
        for w in wanted:
            plan.append((lib.name, w, getattr(lib, w.lower()), lib.row_type))
            for label, ws in lib.variants.items():
                if w in ws:
                    plan.append((label, w, getattr(lib, ws[w]), lib.variant_row_types.get(label, lib.row_type)))

        statuses: dict[tuple[str, str], str] = {}
        for label, w, fn, row_type in plan:  # every check before any timing
            try:
                report["values"].update({f"{label}:{k}": v for k, v in (await check(lib, w, fn, row_type)).items()})
                statuses[(label, w)] = "ok"
            except NotImplementedError as e:
                statuses[(label, w)] = f"n/a: {e}"
            except CheckFailed as e:
                statuses[(label, w)] = f"FAIL: {e}"
            except Exception as e:
                statuses[(label, w)] = f"ERROR: {type(e).__name__}: {e}"
                traceback.print_exc()
            await call(lib.reset)
            print(f"[{args.lib}/{backend}] check {label} {w}: {statuses[(label, w)]}", file=sys.stderr)

        for n, (label, w, fn, _) in enumerate(plan):
            entry: dict[str, Any] = {"status": statuses[(label, w)]}
            report["rows"].setdefault(label, {})[w] = entry
            if entry["status"] != "ok":
                continue
            try:
                timing = await measure(lib, w, fn, it, n)
                entry["summary"] = timing.summary(WORKLOADS[w]["unit"])
            except Exception as e:
                entry["status"] = f"ERROR: {type(e).__name__}: {e}"
                traceback.print_exc()
            await call(lib.reset)
            s = entry.get("summary")
            print(
                f"[{args.lib}/{backend}] {label} {w}: " + (f"{s['median']:.2f} {s['unit']}" if s else entry["status"]),
                file=sys.stderr,
            )
        wait_turn(last=True)  # the clean-up below waits until every worker of the round is done timing
    finally:
        try:
            if backend == "postgresql":
                await call(lib.exec, f"DROP SCHEMA IF EXISTS {env.pg_schema} CASCADE")
        finally:
            await call(lib.close)
            if tmpdir:
                shutil.rmtree(tmpdir, ignore_errors=True)
    report["total_s"] = round(time.perf_counter() - t0, 3)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", required=True, choices=sorted(LIBS))
    ap.add_argument("--backend", required=True, choices=["sqlite", "postgresql"])
    ap.add_argument("--quick", action="store_true", help="few iterations (smoke test)")
    ap.add_argument("--pg-dsn", default=DEFAULT_PG)
    ap.add_argument("--workloads", default="", help="comma-separated subset, e.g. W1,W4")
    ap.add_argument(
        "--turns",
        action="store_true",
        help="before each unit of timed work, print TURN and wait for a line on stdin (run.py's protocol)",
    )
    args = ap.parse_args()
    out = sys.stdout
    sys.stdout = sys.stderr  # libraries' chatter must not corrupt the JSON
    if args.turns:

        def gate(last: bool) -> None:
            out.write("TURN end\n" if last else "TURN\n")
            out.flush()
            if not sys.stdin.readline():  # the runner is gone
                raise SystemExit("run.py closed the turn pipe")

        set_gate(gate)
    report = asyncio.run(main_async(args))
    out.write(json.dumps(report, default=str) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
