"""`make bench`: every benchmark, repeated, as one table of medians beside the plain-torch figures.

Each script runs `--repeats` times in a fresh process and writes its rows as JSON (common.record).
Every headline figure is computed within one run (Ray and its plain-torch/local baseline come from
the same process tree, minutes apart), then the median over the runs is taken: a ratio of
medians would pair a fast Ray run with a slow baseline run. Writes `benchmarks/results/latest.md`
and `latest.json` with the machine they ran on.

    python benchmarks/run_all.py [--repeats 3] [--only synth,train] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> command-line arguments of its script (the sizes the targets are stated at)
BENCHES = {
    "train": ["train_throughput.py", "--n", "5000"],
    "synth": ["synth_throughput.py", "--m", "10000,100000", "--executors", "local,ray"],
    "student_memory": ["student_memory.py", "--m", "10000,100000"],
    "tune": ["tune_overhead.py"],
    "render": ["render_throughput.py"],
    "kd_memory": ["kd_memory.py"],
    "kd_online": ["kd_online_teacher.py", "--config", "quality", "--repeats", "1", "--steps", "100"],
    "cluster": ["cluster_scaling.py", "--m", "5000"],
    "folder": ["folder_memory.py", "--n", "10000,100000"],
    "predict": ["predict_throughput.py", "--n", "100000"],
}
# --quick: the same scripts at smoke-test sizes (does every benchmark still run? not for figures)
QUICK = {
    "train": ["--n", "640"], "synth": ["--m", "2000,4000"], "student_memory": ["--m", "1000,4000", "--steps", "20"],
    "tune": ["--steps", "30", "--trials", "1"], "render": ["--models", "1", "--yaws", "4", "--size", "32", "--builtin"],
    "kd_memory": ["--steps", "3"], "kd_online": ["--config", "tiny", "--steps", "10"], "cluster": ["--m", "1000"],
    "folder": ["--n", "1000,4000"], "predict": ["--n", "2000"],
}


def _row(rows: list[dict], **match) -> dict:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    raise KeyError(f"no row with {match}")


def _h(what: str, ray: float | list[float], base: float | list[float] | None, unit: str,
       ratio: float | None = None, target: tuple[str, float] | None = None) -> dict:
    """One figure; `ray` / `base` may be [at the small size, at the large size] (memory growth)."""
    return dict(what=what, ray=ray, base=base, unit=unit, ratio=ratio, op=target[0] if target else None,
                target=target[1] if target else None)


def headlines(run: dict) -> list[dict]:
    """The figures of one run of one benchmark that the README table shows (`ray` is the Ray path,
    `base` the plain-torch or local figure of the same run, `ratio` as the target states it)."""
    rows, b = run["rows"], run["bench"]
    MB = 2**20
    if b == "train":
        plain = _row(rows, path="plain torch loop")
        out = []
        for w in ("1 worker", "2 workers"):
            r = _row(rows, path=f"Ray Train, {w}")
            out.append(_h(f"Ray Train epoch, {w} (after start-up)", r["epoch_s"], plain["epoch_s"], "s",
                          r["epoch_s"] / plain["epoch_s"], ("<=", 1.2)))
        r = _row(rows, path="Ray Train, 1 worker")
        return out + [_h("Ray Train fixed start-up per fit", r["fixed_s"], plain["fixed_s"], "s")]
    if b in ("synth", "student_memory"):
        ms = sorted({r["m"] for r in rows})
        lo, hi = ms[0], ms[-1]
        stage = "synth stage" if b == "synth" else "student on M fakes"
        out = []
        if b == "synth":
            for m in ms:
                ray, loc = _row(rows, executor="ray", m=m), _row(rows, executor="local", m=m)
                out.append(_h(f"synth stage samples/s, M = {m:,}", m / ray["wall_s"], m / loc["wall_s"], "samples/s",
                              loc["wall_s"] / ray["wall_s"], (">=", 0.9) if m == hi else None))
        # Ray: the stage's own processes (driver + actors / Train worker), the local executor: its process
        ray = [_row(rows, executor="ray", m=m)["stage_pss"] / MB for m in (lo, hi)]
        loc = [_row(rows, executor="local", m=m)["driver_rss"] / MB for m in (lo, hi)]
        out.append(_h(f"{stage} peak memory, M = {lo:,} → {hi:,} (growth: Ray's)", ray, loc, "MB", ray[1] / ray[0],
                      ("<=", 1.10)))
        return out
    if b == "tune":
        plain = _row(rows, path="plain torch loop (baseline)")
        r = _row(rows, path="Tune trial, Ray Train fit inside")
        t = _row(rows, path="Tune trial, plain loop inside")
        return [_h("Tune trial running a Ray Train fit", r["s_per_trial"], plain["s_per_trial"], "s/trial",
                   r["s_per_trial"] / plain["s_per_trial"]),
                _h("Tune's own cost per trial", t["s_per_trial"] - plain["s_per_trial"], 0.0, "s/trial")]
    if b == "render":
        loop = _row(rows, path="plain Python loop")
        r = _row(rows, path="executor: ray (Ray Data actor pool)")
        return [_h("chair renders through Ray Data", r["images_per_s"], loop["images_per_s"], "images/s",
                   r["images_per_s"] / loop["images_per_s"])]
    if b == "kd_memory":
        blkd, crd = _row(rows, variant="blkd"), _row(rows, variant="crd")
        return [_h("cGAN-KD + CRD student peak RSS (vs BLKD)", crd["peak_rss_mb"], blkd["peak_rss_mb"], "MB",
                   crd["peak_rss_mb"] / blkd["peak_rss_mb"], ("<=", 1.5))]
    if b == "kd_online":
        plain, online = rows
        return [_h(f"{online['path']} (vs stored logits)", online["ms_per_step"], plain["ms_per_step"], "ms/step",
                   online["vs_plain"])]
    if b == "cluster":
        return [_h(f"{r['path']} (overhead/contention on 2 cores, not scaling)", r["wall_s"], r["base_wall_s"], "s",
                   r["wall_s"] / r["base_wall_s"]) for r in rows]
    if b == "folder":
        ns = sorted({r["n"] for r in rows})
        out = []
        # held (anonymous + shared) memory, judged; peak PSS beside it (it also counts the cache's mapped
        # pages: page cache, reclaimed under pressure). Runs recorded before peak_held: PSS only.
        key = "peak_held" if all("peak_held" in r for r in rows) else "peak_pss"
        for ex in ("ray", "local"):
            if any(r["executor"] == ex for r in rows):
                mem = [_row(rows, executor=ex, n=n)[key] / MB for n in (ns[0], ns[-1])]
                pss = [_row(rows, executor=ex, n=n)["peak_pss"] / MB for n in (ns[0], ns[-1])]
                what = "held memory (anon + shm)" if key == "peak_held" else "peak memory (PSS)"
                out.append(_h(f"image folder to a student's first batch, {ex}: {what}, N = {ns[0]:,} → "
                              f"{ns[-1]:,}", mem, None, "MB", mem[1] / mem[0], ("<=", 1.2)))
                if key == "peak_held":
                    out.append(_h(f"the same, {ex}: peak PSS incl. the cache's mapped pages", pss, None, "MB",
                                  pss[1] / pss[0]))
        return out
    if b == "predict":
        loop = _row(rows, path="in-process loop (executor: local)")
        r = _row(rows, path="Ray Data actor pool (executor: ray)")
        return [_h(f"rayflow predict through Ray Data, N = {r['n']:,} (Ray start-up included)", r["images_per_s"],
                   loop["images_per_s"], "images/s", r["images_per_s"] / loop["images_per_s"], (">=", 0.9))]
    raise KeyError(f"unknown benchmark {b!r}")


def median_headlines(runs: list[dict]) -> list[dict]:
    """Per headline figure: the median over runs of each number, `met` judged on the median ratio."""
    per_run = [headlines(r) for r in runs]
    out = []
    for same in zip(*per_run):
        h = dict(same[0], runs=len(same))
        for k in ("ray", "base", "ratio"):
            vals = [x[k] for x in same if x[k] is not None]
            if vals and isinstance(vals[0], list):
                h[k] = [statistics.median(v) for v in zip(*vals)]
            else:
                h[k] = statistics.median(vals) if vals else None
        h["spread"] = [min(x["ratio"] for x in same), max(x["ratio"] for x in same)] if h["ratio"] is not None else None
        h["met"] = None if h["op"] is None else (h["ratio"] <= h["target"] if h["op"] == "<=" else h["ratio"] >= h["target"])
        out.append(h)
    return out


def _num(v: float | list[float] | None) -> str:
    if v is None:
        return ""
    if isinstance(v, list):
        return " → ".join(_num(x) for x in v)
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def markdown(table: list[dict], machine: dict) -> str:
    lines = [f"Benchmarks, {machine['date']}: {machine['cpu']} ({machine['cores']} cores), {machine['ram_gb']} GB RAM, "
             f"torch {machine['torch']}, Ray {machine['ray']}; medians of {machine['repeats']} runs "
             f"(`make bench`, {machine['minutes']:.0f} min"
             + (f"; re-run on their own since: {', '.join(machine['rerun'])}" if machine.get("rerun") else "") + ").", "",
             "| figure | Ray | plain torch / local | ratio (min–max over runs) | target | met |",
             "|---|---:|---:|---:|---|---|"]
    for h in table:
        ratio = "" if h["ratio"] is None else f"{h['ratio']:.2f}× ({h['spread'][0]:.2f}–{h['spread'][1]:.2f})"
        target = "" if h["op"] is None else f"{h['op']} {h['target']}×"
        met = "" if h["met"] is None else ("yes" if h["met"] else "**no**")
        lines.append(f"| {h['what']} | {_num(h['ray'])} {h['unit']} | {_num(h['base'])} {h['unit'] if h['base'] is not None else ''}"
                     f" | {ratio} | {target} | {met} |")
    return "\n".join(lines) + "\n"


def machine_info(repeats: int, minutes: float) -> dict:
    import ray
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return dict(date=dt.date.today().isoformat(), cpu=cpu, cores=os.cpu_count(), ram_gb=round(ram),
                torch=torch.__version__, ray=ray.__version__, repeats=repeats, minutes=minutes,
                python=platform.python_version())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(BENCHES))
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--quick", action="store_true", help="smoke-test sizes (figures mean nothing)")
    ap.add_argument("--table-only", action="store_true", help="rebuild latest.md from latest.json, run nothing")
    args = ap.parse_args()
    if args.table_only:
        saved = json.loads((Path(args.out) / "latest.json").read_text())
        table = [h for n in saved["runs"] for h in median_headlines(saved["runs"][n])]
        (Path(args.out) / "latest.md").write_text(markdown(table, saved["machine"]))
        saved["table"] = table
        (Path(args.out) / "latest.json").write_text(json.dumps(saved, indent=1, default=float))
        print(markdown(table, saved["machine"]))
        return 0
    names = [n for n in BENCHES if not args.only or n in args.only.split(",")]
    unknown = set(filter(None, args.only.split(","))) - set(BENCHES)
    if unknown:
        ap.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(BENCHES)}")
    t0 = time.perf_counter()
    runs: dict[str, list[dict]] = {n: [] for n in names}
    out = Path(args.out)
    # each run's figures are kept beside the table (`runs/`, not versioned: latest.json holds them once the
    # table is written): a long session stopped part-way still has the runs it finished
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    for i in range(args.repeats):
        for n in names:
            path = runs_dir / f"{n}-{i}.json"
            print(f"== {n}, run {i + 1} of {args.repeats} ({(time.perf_counter() - t0) / 60:.1f} min so far)",
                  flush=True)
            env = dict(os.environ, RAYFLOW_BENCH_JSON=str(path))
            extra = QUICK[n] if args.quick else []
            subprocess.run([sys.executable, str(HERE / BENCHES[n][0]), *BENCHES[n][1:], *extra], env=env, check=True)
            runs[n].append(json.loads(path.read_text()))
    machine = machine_info(args.repeats, (time.perf_counter() - t0) / 60)
    if args.only and (out / "latest.json").is_file():  # re-ran some: the others' runs stay in the table
        prev = json.loads((out / "latest.json").read_text())
        runs = {n: runs.get(n) or prev["runs"][n] for n in BENCHES if n in runs or n in prev["runs"]}
        machine["rerun"] = sorted(set(names) | set(prev["machine"].get("rerun", [])))
    table = [h for n in runs for h in median_headlines(runs[n])]
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(table, machine)
    (out / "latest.md").write_text(text)
    (out / "latest.json").write_text(json.dumps({"machine": machine, "table": table, "runs": runs}, indent=1,
                                                default=float))
    print("\n" + text + f"\n(written to {out}/latest.md and latest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
