"""`make bench`'s table: every benchmark script is in it, figures are paired within a run, and a
missed target reads as missed. (The benchmarks themselves run in `make bench`, not in the suite.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import run_all  # noqa: E402


def test_every_benchmark_script_is_in_the_table():
    scripts = {p.name for p in BENCH.glob("*.py")} - {"common.py", "run_all.py"}
    assert scripts == {args[0] for args in run_all.BENCHES.values()}
    assert set(run_all.QUICK) == set(run_all.BENCHES)
    for name, args in run_all.BENCHES.items():  # under the name the table looks its figures up by
        assert f'record("{name}"' in (BENCH / args[0]).read_text(), f"{args[0]} never records its rows as {name!r}"


def synth_run(local_100k: float, ray_100k: float, pss_10k: float, pss_100k: float) -> dict:
    mb = 2**20
    rows = [dict(executor="local", m=10_000, wall_s=40.0, stage_pss=600 * mb, driver_rss=700 * mb),
            dict(executor="ray", m=10_000, wall_s=60.0, stage_pss=pss_10k * mb, driver_rss=650 * mb),
            dict(executor="local", m=100_000, wall_s=local_100k, stage_pss=700 * mb, driver_rss=800 * mb),
            dict(executor="ray", m=100_000, wall_s=ray_100k, stage_pss=pss_100k * mb, driver_rss=700 * mb)]
    return {"bench": "synth", "rows": rows}


def test_ratios_are_paired_within_a_run_then_medianed():
    # run 1: both slow (busy box), run 2: both fast, run 3: Ray a little slower than local
    runs = [synth_run(400, 400, 1600, 1700), synth_run(200, 200, 1600, 1700), synth_run(200, 210, 1600, 1700)]
    table = run_all.median_headlines(runs)
    speed = next(h for h in table if h["what"] == "synth stage samples/s, M = 100,000")
    assert speed["ratio"] == pytest.approx(1.0)  # median of 1.0, 1.0, 0.952: not 200/210 or 300/270
    assert speed["spread"] == [pytest.approx(200 / 210), pytest.approx(1.0)]
    assert speed["met"] is True and speed["runs"] == 3
    assert speed["ray"] == pytest.approx(100_000 / 210)  # median samples/s of the Ray runs
    mem = next(h for h in table if h["what"].startswith("synth stage peak memory"))
    assert mem["ratio"] == pytest.approx(1700 / 1600) and mem["met"] is True
    assert mem["ray"] == [pytest.approx(1600), pytest.approx(1700)] and mem["base"] == [700, 800]
    ten_k = next(h for h in table if h["what"] == "synth stage samples/s, M = 10,000")
    assert ten_k["met"] is None  # no target at 10k


def test_missed_targets_read_as_missed():
    runs = [synth_run(200, 260, 1600, 1900)] * 3
    table = run_all.median_headlines(runs)
    text = run_all.markdown(table, dict(date="2026-12-03", cpu="cpu", cores=2, ram_gb=8, torch="t", ray="r",
                                        repeats=3, minutes=1.0))
    speed = next(ln for ln in text.splitlines() if "M = 100,000" in ln)
    assert "0.77×" in speed and "**no**" in speed
    mem = next(ln for ln in text.splitlines() if "memory" in ln)
    assert "1.19×" in mem and "**no**" in mem and "1,600 → 1,900 MB" in mem


def test_unknown_row_names_the_row():
    with pytest.raises(KeyError, match="executor"):
        run_all.headlines({"bench": "synth", "rows": [dict(executor="local", m=1, wall_s=1.0)]})


def test_predict_headline_pairs_ray_with_the_loop_of_its_own_run():
    def run(loop: float, ray: float) -> dict:
        return {"bench": "predict", "rows": [
            dict(path="in-process loop (executor: local)", n=100_000, images_per_s=loop),
            dict(path="Ray Data actor pool (executor: ray)", n=100_000, images_per_s=ray)]}

    (h,) = run_all.median_headlines([run(1000, 950), run(500, 400), run(800, 760)])
    assert h["what"].startswith("rayflow predict through Ray Data, N = 100,000")
    assert h["ratio"] == pytest.approx(0.95) and h["met"] is True and h["spread"] == [0.8, 0.95]


def test_folder_memory_is_judged_on_held_memory_with_pss_beside_it():
    """A memory-mapped cache's pages count in PSS once touched (page cache, reclaimed under pressure):
    the growth target is judged on anonymous + shared memory, PSS reported beside it."""
    mb = 2**20
    rows = [dict(executor="local", n=10_000, peak_pss=250 * mb, peak_held=200 * mb),
            dict(executor="local", n=100_000, peak_pss=670 * mb, peak_held=230 * mb)]
    held, pss = run_all.headlines({"bench": "folder", "rows": rows})
    assert "held memory" in held["what"] and held["ratio"] == pytest.approx(1.15) and held["target"] == 1.2
    assert "peak PSS" in pss["what"] and pss["ratio"] == pytest.approx(2.68) and pss["target"] is None
    old = [{k: v for k, v in r.items() if k != "peak_held"} for r in rows]  # runs recorded before peak_held
    (only,) = run_all.headlines({"bench": "folder", "rows": old})
    assert "PSS" in only["what"] and only["ratio"] == pytest.approx(2.68) and only["target"] == 1.2
