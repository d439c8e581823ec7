"""`rayflow tune` end to end on the tiny config: trials are graph nodes on validation data, a killed
search resumes where it stopped, and the chosen setting is retrained and tested once."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

TINY = ["--config", "tiny", "--set", "dre.feature_net.name=teacher", "--set", "tune.m_per_class=[10,40]",
        "--set", "tune.grid=[3,2]", "--set", "gan.steps=30", "--set", "teacher.train.steps=60"]


def _tune(out, *extra, **kw):
    return subprocess.Popen([sys.executable, "-m", "rayflow", "tune", *TINY, "--set", f"output_dir={out}", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_killed_local_search_resumes_and_completes(tmp_path):
    args = ("--executor", "local", "--set", "tune.trials=3", "--set", "tune.searcher=bound")
    p = _tune(tmp_path, *args)
    deadline = time.time() + 240
    state = None
    while time.time() < deadline and p.poll() is None:
        found = list(tmp_path.glob("ray_storage/tune-*/search.pkl"))
        if found and len(pickle.loads(found[0].read_bytes())["results"]) >= 1:
            state = found[0]
            break
        time.sleep(0.2)
    assert state is not None, p.communicate()
    p.send_signal(signal.SIGKILL)
    p.wait()
    first = pickle.loads(state.read_bytes())["results"]
    assert 1 <= len(first) < 3
    again = _tune(tmp_path, *args)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    done = json.loads((tmp_path / "tune-bound.json").read_text())
    assert len(done["trials"]) == 3 and done["trials"][:len(first)] == json.loads(json.dumps(first, default=float))
    assert "chosen on validation data" in stdout and done["chosen"] in [{k: t[k] for k in ("rho", "m")}
                                                                       for t in done["trials"]]
    # the choice is the best of all trials, the one resumed after the kill included (a resumed student's
    # final metrics carry no samples_seen; it was once left out of the choice for that)
    pick = next(t for t in done["trials"] if {k: t[k] for k in ("rho", "m")} == done["chosen"])
    best = max(done["trials"], key=lambda t: t["val_acc"])
    assert all(t["n"] > 0 and 0 <= t["se"] < 50 for t in done["trials"])  # each trial's SE over its images
    if done["choice_rule"] == "best":
        assert pick["val_acc"] == best["val_acc"], done["choice_why"]
    else:  # the one-SE rule kept the prior's setting: tied with the best
        assert done["choice_rule"] == "one_se" and best["val_acc"] - pick["val_acc"] <= best["se"]
        assert done["chosen"] in done["prior_settings"].values()
    assert done["finalists"] == []  # tiny: tune.finalists 0
    fm = done["fm"]  # the FM baseline's own search: as many validation trials, the hand-set alpha first
    assert len(fm["trials"]) == 3 and fm["trials"][0]["fm_alpha"] == 1.0
    assert all(t["n"] > 0 and 30 < t["val_acc"] <= 100 for t in fm["trials"])
    assert fm["chosen"] in [{"fm_alpha": t["fm_alpha"]} for t in fm["trials"]]
    assert len(done["final"]["FM, chosen"]) == 1 and 50 < done["final"]["FM, chosen"][0] <= 100
    assert "FM, chosen (FM alpha " in stdout, stdout
    assert len(done["final"]["chosen"]) == 1 and 50 < done["final"]["chosen"][0] <= 100  # retrained, tested once
    # the run's table (the oracle row too), and the chosen setting's student written as `distill` writes it
    assert "perfect generator (oracle)" in stdout and "{'rho'" not in stdout, stdout
    chosen_row = next(line for line in stdout.splitlines() if line.startswith("cGAN-KD, chosen ("))
    assert float(chosen_row[40:].split()[-3]) == pytest.approx(done["final"]["chosen"][0], abs=0.006)
    assert "cGAN-KD, hand-set (" in stdout and f"student: {tmp_path / 'student'}" in stdout
    contract = json.loads((tmp_path / "student" / "student.json").read_text())
    s = contract["settings"]
    assert (s["filter.rho"], s["synth.m_per_class"]) == (done["chosen"]["rho"], done["chosen"]["m"])
    from test_tracking import read_scalars, summary_writer_class

    if summary_writer_class() is not None:  # one TensorBoard point per trial, in trial order
        tb = next((tmp_path / "tensorboard").glob("tune-*"))
        assert [s for s, _ in read_scalars(tb)["trial/val_acc"]] == [0, 1, 2]


def test_ray_tune_search_runs_trials_as_graph_nodes(tmp_path):
    # a relative output_dir, as the packaged configs have: Tune runs trials in its own working directory,
    # and they must still find the validation-split teacher, GAN and pool the driver built
    p = _tune("out", "--set", "tune.trials=2", "--set", "tune.searcher=random", "--set", "runtime.num_cpus=2",
              cwd=tmp_path)
    stdout, stderr = p.communicate(timeout=600)
    assert p.returncode == 0, stderr[-3000:]
    out = tmp_path / "out"
    done = json.loads((out / "tune-random.json").read_text())
    assert len(done["trials"]) == 2 and all(t["val_acc"] > 30 for t in done["trials"])
    assert all(0.1 <= t["rho"] <= 1 and 10 <= t["m"] <= 40 for t in done["trials"])
    # every trial that ran to its last report has a committed student (ASHA never kills a trial there; it
    # may stop the other at an earlier rung when both run at once), and the final retrain adds the
    # chosen setting's (one seed) unless a trial had the hand-set setting
    finished = [t for t in done["trials"] if t["samples_seen"] == 150 * 64]
    assert finished and all("artifact" not in t for t in done["trials"] if t not in finished), done["trials"]
    committed = {p.parent.name for p in (out / "artifacts" / "cgankd").glob("cgankd-*/_COMMITTED")}
    assert all(t["artifact"].startswith(str(out / "artifacts" / "cgankd"))
               and t["artifact"].rstrip("/").rsplit("/", 1)[1] in committed for t in finished), done["trials"]
    assert len(committed) >= len(finished) + 1, committed
    assert "Train's placement-group cleaner needs it" in stderr  # ASHA-stopped trials free their CPUs
    # the validation-split GAN (before the trials) and the final retrain's: none trained inside a trial
    assert len(list((out / "artifacts" / "gan").glob("gan-*/_COMMITTED"))) == 2


def test_grid_records_every_dimension_and_leaves_out_what_the_draw_budget_cannot_serve(tmp_path):
    """`rayflow grid` over (rho, M, real share): each point is its own student (real share applied,
    not collapsed onto its (rho, M)), the bound prices the real share, and candidates the pool could
    serve only past `tune.max_draws_per_class` are left out before any student, never extended for."""
    argv = [sys.executable, "-m", "rayflow", "grid", *TINY, "--executor", "local", "--set", f"output_dir={tmp_path}",
            "--set", "tune.real_fraction=[0.25,0.75]", "--set", "tune.grid=[2,2,2]", "--set", "seeds=[0]",
            "--set", "tune.max_draws_per_class=200",  # = synth.pool_draws: the pool's first segment only
            "--set", "runtime.models_per_run=2"]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    grid = json.loads((tmp_path / "grid.json").read_text())
    rec = grid["recorded"]
    keys = {(r["rho"], r["m"], r["real_fraction"]) for r in rec}
    left = {(c["rho"], c["m"], c["real_fraction"]) for c in grid["left_out"]}
    assert len(keys) == len(rec) and not keys & left and len(keys | left) == 8
    assert (0.1, 40, 0.25) in left and (1.0, 10, 0.25) in keys  # the fewest kept at the most wanted: out
    assert "left out: its emptiest class keeps" in run.stderr
    students = list((tmp_path / "artifacts" / "cgankd").glob("cgankd-*/_COMMITTED"))
    assert len(students) == len(rec)  # one student per (rho, M, real share) ...
    assert run.stderr.count("training 2 models") == len(rec) // 2  # ... at most 2 per executor run
    for r in rec:  # the bound weighs the fakes by 1 - real share: more reals per batch, a different bound
        if (r["rho"], r["m"], 0.75) in keys and r["real_fraction"] == 0.25:
            twin = next(o for o in rec if (o["rho"], o["m"], o["real_fraction"]) == (r["rho"], r["m"], 0.75))
            assert twin["bound"] != r["bound"]
    assert not list((tmp_path / "artifacts" / "pool").glob("pool-*/_COMMITTED"))[1:]  # never extended
    assert {row["searcher"] for row in grid["replay"]} == {"grid", "random", "tpe", "bound"}
