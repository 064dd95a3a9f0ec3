"""OrmKit's side-by-side benchmark: every library in its own process, taking turns at timed work.

    python bench/run.py [--rounds 5] [--backends sqlite,postgresql] [--libs ormkit,sqlalchemy,...] [--quick]

Writes ``bench/results/latest.{md,json,png}`` (``quick.*`` with ``--quick``) and prints the tables.
PostgreSQL: ``--pg-dsn`` / ``$ORMKIT_BENCH_PG`` (default postgresql://postgres@127.0.0.1:5432/ormkit_bench);
the database is created if missing, and each worker process works in a schema of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import WORKLOADS, Iters, ormkit_build  # noqa: E402
from libs import LIBS  # noqa: E402

DEFAULT_PG = os.environ.get("ORMKIT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/ormkit_bench")
BACKEND_TITLES = {
    "sqlite": "SQLite (file in a temp dir; journal_mode=WAL, synchronous=NORMAL, foreign_keys=ON)",
    "postgresql": "PostgreSQL (localhost, TCP, TLS off)",
}
UNIT_LABEL = {"us": "µs/call", "ms": "ms"}


# ---------------------------------------------------------------- PostgreSQL set-up


async def _prepare_pg(dsn: str) -> str:
    """Creates the benchmark database if needed and drops schemas left by killed workers.
    Returns the server version. Uses asyncpg (the ``bench`` extra), or OrmKit without it."""
    try:
        import asyncpg
    except ImportError:
        return await _prepare_pg_ormkit(dsn)

    parts = urlsplit(dsn)
    dbname = parts.path.lstrip("/")
    try:
        conn = await asyncpg.connect(dsn, ssl=False, timeout=5)
    except asyncpg.InvalidCatalogNameError:
        last: Exception | None = None
        for admin_db in ("postgres", "test", "template1"):
            try:
                admin = await asyncpg.connect(urlunsplit(parts._replace(path="/" + admin_db)), ssl=False, timeout=5)
                break
            except Exception as e:
                last = e
        else:
            raise RuntimeError(f"cannot connect to create database {dbname}: {last}")
        try:
            await admin.execute(f'CREATE DATABASE "{dbname}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(dsn, ssl=False, timeout=5)
    try:
        for (name,) in await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench\\_%'"):
            m = re.fullmatch(r"bench_[a-z0-9]+_(\d+)", name)
            if m and not _alive(int(m.group(1))):
                await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
        return await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()


async def _prepare_pg_ormkit(dsn: str) -> str:
    from ormkit import OperationalError, create_engine

    dsn = dsn.split("?")[0]
    parts = urlsplit(dsn)
    dbname = parts.path.lstrip("/")
    try:
        eng = await create_engine(dsn + "?sslmode=disable")
    except OperationalError:
        admin = await create_engine(urlunsplit(parts._replace(path="/postgres")) + "?sslmode=disable")
        try:
            await admin.execute(f'CREATE DATABASE "{dbname}"')
        finally:
            await admin.dispose()
        eng = await create_engine(dsn + "?sslmode=disable")
    try:
        rows = (await eng.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench\\_%'")).tuples()
        for (name,) in rows:
            m = re.fullmatch(r"bench_[a-z0-9]+_(\d+)", name)
            if m and not _alive(int(m.group(1))):
                await eng.execute(f'DROP SCHEMA "{name}" CASCADE')
        return (await eng.execute("SHOW server_version")).scalar()
    finally:
        await eng.dispose()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import sqlite3

    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite_stdlib": sqlite3.sqlite_version,
    }
    try:
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0]
        info["memory"] = f"{int(mem.split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    try:
        load = os.getloadavg()
        info["loadavg_at_start"] = " ".join(f"{x:.2f}" for x in load)
    except OSError:
        pass
    try:
        rev = subprocess.run(
            ["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        info["ormkit_commit"] = rev or "?"
    except (OSError, subprocess.SubprocessError):
        pass
    info["ormkit_engine"] = ormkit_build()
    return info


# ---------------------------------------------------------------- running


def worker_cmd(lib: str, backend: str, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, str(HERE / "worker.py"), "--lib", lib, "--backend", backend, "--pg-dsn", args.pg_dsn]
    if args.quick:
        cmd.append("--quick")
    if args.workloads:
        cmd += ["--workloads", args.workloads]
    return [*cmd, "--turns"]


class Worker:
    """One library's worker process in a round, speaking the turn protocol: it prints TURN and
    waits for a line on stdin before each unit of timed work, and its JSON report last."""

    def __init__(self, lib: str, backend: str, args: argparse.Namespace) -> None:
        self.lib, self.backend = lib, backend
        self.err = tempfile.TemporaryFile(mode="w+")  # a file: a full stderr pipe would stall it
        self.proc = subprocess.Popen(
            worker_cmd(lib, backend, args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
            text=True,
            cwd=str(HERE.parent),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.started = time.perf_counter()
        self.report: dict[str, Any] | None = None
        self.error: str | None = None
        self.at_end = False

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_turn(self, deadline: float) -> bool:
        """Until the worker stops before timed work (True), or at its clean-up or its end (False)."""
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                self.error = "timed out"
                self.proc.kill()
                return False
            if line is None:
                return False
            if line.strip() == "TURN":
                return True
            if line.strip() == "TURN end":
                self.at_end = True
                return False
            if line.startswith("{"):
                self.report = json.loads(line)

    def go(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("GO\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass

    def finish(self, log: Any, deadline: float) -> dict[str, Any]:
        if self.at_end:
            self.go()
            self.wait_turn(deadline)  # its report, then the end of its output
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
            self.error = self.error or "timed out"
        elapsed = time.perf_counter() - self.started
        self.err.seek(0)
        stderr = self.err.read()
        self.err.close()
        log.write(f"\n===== {self.lib} / {self.backend}: exit {code}, {elapsed:.1f}s\n{stderr}\n")
        log.flush()
        if self.error or code != 0 or self.report is None:
            tail = "\n".join(stderr.strip().splitlines()[-15:])
            why = self.error or f"worker exited with {code}"
            return {"lib": self.lib, "backend": self.backend, "error": why, "stderr_tail": tail}
        rep = self.report
        rep["wall_s"] = round(elapsed, 2)
        return rep


def run_round(backend: str, libs: list[str], args: argparse.Namespace, log: Any) -> list[dict[str, Any]]:
    """One round of one backend: every library's worker starts at once (set-up, data load and
    checks run side by side, untimed), then they take turns, one unit of timed work each, in
    an order that rotates, so that neighbouring units of different libraries share the
    machine's state of the moment. Only the worker whose turn it is runs."""
    deadline = time.perf_counter() + args.timeout
    workers = [Worker(lib, backend, args) for lib in libs]
    waiting = [w for w in workers if w.wait_turn(deadline)]  # everyone set up before any timing
    turn = 0
    while waiting:
        order = waiting[turn % len(waiting) :] + waiting[: turn % len(waiting)]
        turn += 1
        # A worker done timing waits at its clean-up ("TURN end") until the others are done.
        waiting = [w for w in order if (w.go(), w.wait_turn(deadline))[1]]
    return [w.finish(log, deadline) for w in workers]


def aggregate(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """backend -> label -> workload -> {status, rounds: [round medians], median, min, max, ...}."""
    agg: dict[str, Any] = {}
    for rep in reports:
        if "error" in rep:
            continue
        for label, ws in rep["rows"].items():
            for w, entry in ws.items():
                cell = (
                    agg.setdefault(rep["backend"], {})
                    .setdefault(label, {})
                    .setdefault(w, {"status": "ok", "rounds": [], "p25": [], "p75": [], "unit": WORKLOADS[w]["unit"]})
                )
                if entry["status"] != "ok":
                    if cell["status"] == "ok":
                        cell["status"] = entry["status"]
                    continue
                s = entry["summary"]
                cell["rounds"].append(s["median"])
                cell["p25"].append(s["p25"])
                cell["p75"].append(s["p75"])
    for labels in agg.values():
        for ws in labels.values():
            for cell in ws.values():
                r = cell["rounds"]
                if r:
                    cell["median"] = statistics.median(r)
                    cell["min"] = min(r)
                    cell["max"] = max(r)
                    cell["iqr_within"] = [statistics.median(cell["p25"]), statistics.median(cell["p75"])]
                    if cell["status"] != "ok":  # some rounds failed: keep the numbers, flag it
                        cell["status"] = f"partly {cell['status']}"
    return agg


def cross_check(reports: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The count and the average must agree across every library and every round."""
    out: dict[str, list[str]] = {}
    for backend in {r["backend"] for r in reports if "error" not in r}:
        counts: dict[str, set] = {}
        avgs: dict[str, list[float]] = {}
        for rep in reports:
            if rep.get("backend") != backend or "error" in rep:
                continue
            for key, v in rep["values"].items():
                label, what = key.split(":")
                if what == "count":
                    counts.setdefault(label, set()).add(v)
                elif what == "avg":
                    avgs.setdefault(label, []).append(v)
        notes = []
        # A run without W6a / W6b has nothing to compare.
        if counts:
            all_counts = set().union(*counts.values())
            notes.append(
                f"count: {'equal' if len(all_counts) == 1 else 'MISMATCH'} across {len(counts)} libraries "
                f"({', '.join(f'{k}={sorted(v)}' for k, v in sorted(counts.items()))})"
            )
        if avgs:
            flat = [v for vs in avgs.values() for v in vs]
            same = all(math.isclose(v, flat[0], rel_tol=1e-9) for v in flat)
            notes.append(
                f"avg(age): {'equal' if same else 'MISMATCH'} across {len(avgs)} libraries "
                f"({', '.join(f'{k}={vs[0]:.6f}' for k, vs in sorted(avgs.items()))})"
            )
        out[backend] = notes
    return out


def label_order(agg_backend: dict[str, Any], libs: list[str]) -> list[str]:
    order = []
    for lib in ["ormkit", "sqlite3", "aiosqlite", "asyncpg", "sqlalchemy", "tortoise"]:
        if lib not in libs:
            continue
        order += sorted(
            (lab for lab in agg_backend if lab == lib or lab.startswith(lib + "-")), key=lambda x: (x != lib, x)
        )
    return [lab for lab in order if lab in agg_backend]


# ---------------------------------------------------------------- report


def fmt(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def short_status(status: str) -> str:
    if status.startswith("n/a"):
        return "n/a"
    return status.split(":", 1)[0]


def markdown(agg: dict[str, Any], meta: dict[str, Any], libs: list[str]) -> str:
    rounds = meta["rounds"]
    spread = "min–max of the round medians" if rounds > 1 else "p25–p75 of the calls / repetitions"
    lines = [
        "# OrmKit benchmark"
        + (" (quick run: 1 round, few iterations - a smoke test, not a measurement)" if meta["quick"] else ""),
        "",
        f"{meta['started']} · {rounds} round(s), libraries taking turns in each round · {meta['duration_s']:.0f} s",
        "",
        "## Machine",
        "",
    ]
    m = meta["machine"]
    for k in ("cpu", "cores", "memory", "os", "python", "loadavg_at_start", "ormkit_commit", "ormkit_engine"):
        if k in m:
            lines.append(f"- {k}: {m[k]}")
    by_version: dict[str, list[str]] = {}
    for lib, v in sorted(m.get("sqlite_by_lib", {}).items()):
        by_version.setdefault(v, []).append(lib)
    sqlite_desc = "; ".join(f"{v} ({', '.join(libs_)})" for v, libs_ in by_version.items())
    lines.append(
        f"- SQLite: {sqlite_desc or m['sqlite_stdlib']} "
        f"(Python's sqlite3 links {m['sqlite_stdlib']}; OrmKit bundles its own)"
    )
    if m.get("postgresql"):
        lines.append(f"- PostgreSQL server: {m['postgresql']}")
    lines.append(f"- library versions: {', '.join(f'{k} {v}' for k, v in sorted(m.get('versions', {}).items()))}")
    it = meta["iterations"]
    lines.append(
        f"- iterations per round: per-call workloads {it['call_warmup']} warm-up + {it['call_timed']} timed calls "
        f"(W7: {it['update_warmup']} + {it['update_timed']}); W2/W5 {it['bulk_warmup']} + {it['bulk_timed']} "
        f"repetitions; W3 {it['insert_warmup']} + {it['insert_timed']}"
    )
    lines.append("")
    notes: list[str] = []
    for backend in meta["backends"]:
        b = agg.get(backend)
        lines += [f"## {BACKEND_TITLES[backend]}", ""]
        if not b:
            lines += [f"No results ({meta.get('skipped', {}).get(backend, 'every worker failed')}).", ""]
            continue
        labels = label_order(b, libs)
        ws = [w for w in WORKLOADS if any(w in b[lab] for lab in labels)]
        head = "| workload | unit | " + " | ".join(labels) + " |"
        sep = "|---|---|" + "---:|" * len(labels)
        lines += [f"Time: median ({spread}); lower is better.", "", head, sep]
        for w in ws:
            row = [f"{w} {WORKLOADS[w]['title']}", UNIT_LABEL[WORKLOADS[w]["unit"]]]
            for lab in labels:
                c = b[lab].get(w)
                if c is None:
                    row.append("—")
                elif "median" not in c:
                    row.append(short_status(c["status"]))
                    notes.append(f"{backend} / {lab} / {w}: {c['status']}")
                else:
                    lo, hi = (c["min"], c["max"]) if rounds > 1 else c["iqr_within"]
                    extra = " ⚠" if c["status"] != "ok" else ""
                    if c["status"] != "ok":
                        notes.append(f"{backend} / {lab} / {w}: {c['status']}")
                    row.append(f"{fmt(c['median'])} [{fmt(lo)}–{fmt(hi)}]{extra}")
            lines.append("| " + " | ".join(row) + " |")
        lines += [
            "",
            "Ratio to OrmKit: library time / OrmKit time (above 1: OrmKit is faster; below 1: OrmKit is slower).",
            "",
            "| workload | " + " | ".join(labels) + " |",
            "|---|" + "---:|" * len(labels),
        ]
        for w in ws:
            base = b.get("ormkit", {}).get(w, {}).get("median")
            row = [f"{w} {WORKLOADS[w]['title']}"]
            for lab in labels:
                c = b[lab].get(w)
                if c is None:
                    row.append("—")
                elif "median" not in c:
                    row.append(short_status(c["status"]))
                elif base is None:
                    row.append("n/a")
                else:
                    row.append(f"{c['median'] / base:.2f}")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        for note in meta["cross_check"].get(backend, []):
            lines.append(f"- check: {note}")
        lines.append("")
    if notes or meta.get("failures") or meta.get("warnings"):
        lines += ["## Notes", ""]
        lines += [f"- WARNING: {w}" for w in meta.get("warnings", [])]
        lines += [f"- {n}" for n in notes]
        lines += [f"- {f}" for f in meta.get("failures", [])]
        lines.append("")
    lines += [
        "Every library's answers were checked before it was timed (10,000 objects of its class with the right",
        "values; 1,000 users x 10 posts attached; the 20 rows of W4 in order; count and avg equal to the",
        "expected values; the updated row changed; 10,000 rows inserted). A failed check shows FAIL and is not",
        "timed. See bench/README.md for the workloads.",
        "",
    ]
    return "\n".join(lines)


def chart(agg: dict[str, Any], meta: dict[str, Any], libs: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = [b for b in meta["backends"] if agg.get(b)]
    if not backends:
        return
    fig, axes = plt.subplots(len(backends), 1, figsize=(14, 5.5 * len(backends)), squeeze=False)
    cmap = plt.get_cmap("tab10")
    all_labels: list[str] = []
    for b in backends:
        for lab in label_order(agg[b], libs):
            if lab not in all_labels:
                all_labels.append(lab)
    colors = {lab: cmap(i % 10) for i, lab in enumerate(all_labels)}
    for ax, backend in zip(axes[:, 0], backends, strict=True):
        b = agg[backend]
        labels = label_order(b, libs)
        ws = [w for w in WORKLOADS if any(w in b[lab] for lab in labels)]
        width = 0.8 / max(1, len(labels))
        for i, lab in enumerate(labels):
            xs, ys, lo, hi = [], [], [], []
            for j, w in enumerate(ws):
                c = b[lab].get(w)
                if c and "median" in c:
                    xs.append(j - 0.4 + width * (i + 0.5))
                    ys.append(c["median"])
                    a, z = (c["min"], c["max"]) if meta["rounds"] > 1 else c["iqr_within"]
                    lo.append(max(0.0, c["median"] - a))
                    hi.append(max(0.0, z - c["median"]))
            if xs:
                ax.bar(xs, ys, width, label=lab, color=colors[lab], yerr=[lo, hi], capsize=2, error_kw={"lw": 0.8})
        ax.set_yscale("log")
        ax.set_xticks(range(len(ws)))
        ax.set_xticklabels(
            [f"{w}\n{WORKLOADS[w]['title']}\n({UNIT_LABEL[WORKLOADS[w]['unit']]})" for w in ws], fontsize=8
        )
        ax.set_ylabel("time (log scale; unit under each workload)")
        ax.set_title(BACKEND_TITLES[backend], fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8, ncol=min(4, len(labels)))
    title = "OrmKit benchmark - median per workload (lower is better)"
    if meta["quick"]:
        title += " - QUICK RUN (smoke test)"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 5; 1 with --quick)")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--libs", default=",".join(LIBS), help=f"comma-separated subset of {','.join(LIBS)}")
    ap.add_argument("--quick", action="store_true", help="1 round, few iterations: checks that the harness works")
    ap.add_argument("--workloads", default="", help="comma-separated subset, e.g. W1,W4 (default: all)")
    ap.add_argument("--pg-dsn", default=DEFAULT_PG)
    ap.add_argument("--out", default=str(HERE / "results"), help="directory for the report")
    ap.add_argument("--name", default=None, help="file stem of the report (default latest; quick with --quick)")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per round of one backend")
    args = ap.parse_args()

    rounds = args.rounds or (Iters.quick().rounds if args.quick else Iters.default().rounds)
    backends = [b for b in args.backends.split(",") if b]
    libs = [lib for lib in args.libs.split(",") if lib]
    for b in backends:
        if b not in BACKEND_TITLES:
            ap.error(f"unknown backend {b!r}")
    for lib in libs:
        if lib not in LIBS:
            ap.error(f"unknown library {lib!r}; choose from {', '.join(LIBS)}")
    if "ormkit" not in libs:
        print("note: ormkit is not in --libs, so the ratio tables stay empty", file=sys.stderr)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.name or ("quick" if args.quick else "latest")

    machine = machine_info()
    skipped: dict[str, str] = {}
    if "postgresql" in backends:
        try:
            machine["postgresql"] = asyncio.run(_prepare_pg(args.pg_dsn))
        except Exception as e:
            skipped["postgresql"] = f"PostgreSQL unavailable at {args.pg_dsn}: {type(e).__name__}: {e}"
            print(f"!!! {skipped['postgresql']} - the PostgreSQL half does NOT run", file=sys.stderr)
            backends = [b for b in backends if b != "postgresql"]

    started = dt.datetime.now().astimezone()
    t0 = time.perf_counter()
    reports: list[dict[str, Any]] = []
    failures: list[str] = []
    log_path = out_dir / f"{stem}.log"
    with open(log_path, "w") as log:
        for r in range(rounds):
            for backend in backends:
                round_libs = [lib for lib in libs if backend in LIBS[lib][1]]
                print(
                    f"[round {r + 1}/{rounds}] {backend:<10} {', '.join(round_libs)} ... ",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
                t_round = time.perf_counter()
                notes = []
                for rep in run_round(backend, round_libs, args, log):
                    rep["round"] = r + 1
                    reports.append(rep)
                    if "error" in rep:
                        failures.append(f"round {r + 1} {backend}/{rep['lib']}: {rep['error']}")
                        notes.append(f"{rep['lib']} FAILED: {rep['error']}\n{rep.get('stderr_tail', '')}")
                    else:
                        notes += [
                            f"{rep['lib']} {lab} {w}: {e['status']}"
                            for lab, ws in rep["rows"].items()
                            for w, e in ws.items()
                            if e["status"] != "ok"
                        ]
                print(f"{time.perf_counter() - t_round:6.1f} s", file=sys.stderr)
                for n in notes:
                    print(f"    {n}", file=sys.stderr)

    ok = [r for r in reports if "error" not in r]
    versions: dict[str, str] = {}
    sqlite_by_lib: dict[str, str] = {}
    for rep in ok:
        versions.update(rep["versions"])
        if rep["backend"] == "sqlite" and "sqlite_version" in rep["info"]:
            sqlite_by_lib[rep["lib"]] = rep["info"]["sqlite_version"]
        if rep["backend"] == "postgresql" and "server_version" in rep["info"]:
            machine.setdefault("postgresql", rep["info"]["server_version"])
    machine["versions"] = versions
    machine["sqlite_by_lib"] = sqlite_by_lib
    warnings: list[str] = []
    builds = sorted({rep["info"]["engine_build"] for rep in ok if "engine_build" in rep["info"]})
    if len(builds) > 1:
        warnings.append(f"the OrmKit engine changed while the suite ran; the workers loaded: {' | '.join(builds)}")
    elif builds:
        machine["ormkit_engine"] = builds[0]
    agg = aggregate(reports)
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": time.perf_counter() - t0,
        "rounds": rounds,
        "quick": args.quick,
        "backends": [b for b in args.backends.split(",") if b],
        "libs": libs,
        "iterations": vars(Iters.quick() if args.quick else Iters.default()),
        "machine": machine,
        "skipped": skipped,
        "failures": failures + [f"{b}: {why}" for b, why in skipped.items()],
        "warnings": warnings,
        "cross_check": cross_check(reports),
    }
    md = markdown(agg, meta, libs)
    (out_dir / f"{stem}.md").write_text(md)
    (out_dir / f"{stem}.json").write_text(
        json.dumps({"meta": meta, "results": agg, "reports": reports}, indent=1, default=str)
    )
    try:
        chart(agg, meta, libs, out_dir / f"{stem}.png")
    except ImportError as e:
        print(f"no chart ({e}); pip install matplotlib", file=sys.stderr)
    print(md)
    print(f"wrote {out_dir / stem}.md, .json, .png (worker logs: {log_path})", file=sys.stderr)
    mismatch = any("MISMATCH" in n for notes in meta["cross_check"].values() for n in notes)
    return 1 if failures or mismatch else 0


if __name__ == "__main__":
    sys.exit(main())
