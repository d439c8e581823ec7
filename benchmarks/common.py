"""What every benchmark shares: its rows as JSON for `run_all.py`, and process-tree memory.

A benchmark prints its own table for a person; `record` also writes the same rows to the file
named by RAYFLOW_BENCH_JSON (set by `run_all.py`, which repeats each script and takes medians).
Memory is sampled from /proc over a child's whole process tree: with Ray, the work happens in
worker processes, so the driver's own RSS says little.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

__all__ = ["record", "tree_memory", "run_child", "growth_table", "STAGE_ACTORS"]

# The stage's own compute processes besides the driver: Ray Data's actors running map_batches
# UDFs and Ray Train's workers. Everything else in a Ray tree (GCS, raylet, agents, idle workers,
# Data coordinators) is Ray's fixed cost per node, whatever the workload.
STAGE_ACTORS = ("MapWorker", "MapBatches", "RayTrainWorker")


def record(bench: str, rows: list[dict], **info) -> None:
    """Writes `rows` (flat dicts: numbers and labels) where `run_all.py` asked for them."""
    path = os.environ.get("RAYFLOW_BENCH_JSON")
    if path:
        Path(path).write_text(json.dumps({"bench": bench, "rows": rows, **info}, default=float))


def tree_memory(root_pid: int) -> tuple[int, int, int, int, int]:
    """(sum RSS, sum PSS, RSS of root_pid, PSS of root_pid + the stage's actors, sum PSS of anonymous
    and shared memory) in bytes over root_pid and all its descendants. PSS splits shared pages
    (torch's libraries) between processes: the honest "RAM used" of a tree; RSS counts them once per
    process. The last figure leaves out file-backed pages (libraries, a memory-mapped cache's pages):
    clean page cache the kernel takes back under pressure; what stays is the memory a run holds
    (its arrays, Ray's object store in /dev/shm)."""
    from rayflow.watchdog import _cmdline, descendants, processes

    rss = pss = root = stage = held = 0
    for p in {root_pid} | descendants({root_pid}, processes()):
        mine = p == root_pid or any(s in _cmdline(p) for s in STAGE_ACTORS)
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        kb = int(line.split()[1]) * 1024
                        rss += kb
                        root += kb if p == root_pid else 0
                    elif line.startswith("Pss:"):
                        kb = int(line.split()[1]) * 1024
                        pss += kb
                        stage += kb if mine else 0
                    elif line.startswith(("Pss_Anon:", "Pss_Shmem:")):
                        held += int(line.split()[1]) * 1024
        except OSError:
            pass
    return rss, pss, root, stage, held


def run_child(cmd: list[str], label: str, echo=("Error", "Traceback")) -> dict:
    """Runs `cmd`, sampling its tree's memory every 0.25 s; returns the JSON of its `RESULT ` line
    plus the peaks of tree_memory's figures in bytes (peak_rss, peak_pss, driver_rss, stage_pss, peak_held).
    Lines containing `echo` are shown."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0, 0, 0, 0, 0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[:] = [max(a, b) for a, b in zip(peak, tree_memory(proc.pid))]
            stop.wait(0.25)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    result, tail = None, []
    for line in proc.stdout:
        tail = (tail + [line])[-30:]
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
        elif any(s in line for s in echo):
            print("   ", line.rstrip(), flush=True)
    proc.wait()
    stop.set()
    th.join()
    if proc.returncode != 0 or result is None:
        raise SystemExit(f"{label} failed (exit {proc.returncode}):\n" + "".join(tail))
    return dict(result, peak_rss=peak[0], peak_pss=peak[1], driver_rss=peak[2], stage_pss=peak[3],
                peak_held=peak[4])


MB = 2 ** 20


def growth_table(rows: list[dict], size: str, memory: str, columns: list[tuple[str, int, object]]) -> None:
    """Prints one row per (executor, size) with `columns` ((header, width, row -> text)) and the growth
    of `memory` against the executor's smallest size, which it also stores as row["growth"]."""
    first = {}
    for r in rows:
        first.setdefault(r["executor"], r)
    heads = [("executor", 9, lambda r: r["executor"]), (size, 7, lambda r: str(r[size])), *columns]
    print("\n" + " ".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (h, w, _) in enumerate(heads))
          + f" {'vs ' + size + '=' + str(rows[0][size]):>10}")
    for r in rows:
        r["growth"] = r[memory] / first[r["executor"]][memory]
        print(" ".join(f"{f(r):<{w}}" if i == 0 else f"{f(r):>{w}}" for i, (_, w, f) in enumerate(heads))
              + f" {r['growth']:>9.2f}x")
