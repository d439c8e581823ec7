"""`ray job submit` end to end, as a user does it: a `ray start --head` cluster on 127.0.0.1 (tests/ray_head.py,
stopped by ending only its own processes), the tiny pipeline submitted through `jobs/submit.sh` with the checkout
as the job's working_dir, then a Tune search as a second job into the same output dir.

The search scores its trials on a validation split, so its teacher, GAN and ratio net are its own (other data,
other cache keys); the final retrain of the chosen setting on the full training set, and the NOKD / BLKD /
oracle students it is compared with, are the pipeline job's cached artifacts, reused rather than retrained.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from ray_head import BIN, module_head  # noqa: F401  (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[1]
SUBMITTED = re.compile(r"Job '([\w-]+)' submitted successfully")
# the pipeline's artifacts the search's final retrain and comparison reuse
REUSED = ("teacher", "gan", "dre_features", "dre", "pool", "nokd", "blkd", "fm", "oracle")
# the tiny config's ratio net reads the teacher's features; these jobs train its own feature net (the one
# end-to-end run of the dre_features stage on Ray)
OWN_FEATURES = ("--set", "dre.feature_net.name=resnet8")
# Ray's warnings that come with a traceback and are harmless: Train's controller gives its autoscaling
# coordinator actor a fixed 5 s to answer, which an overloaded 2-core machine can miss ("safe to ignore");
# a trial that ASHA stops takes its Train workers down with it, and Ray's worker-group teardown then logs
# the dead worker's error under "Graceful shutdown of backend failed. This is expected if one of the
# workers has crashed." (seen once in CI; the job succeeded and the search's results are checked below).
HARMLESS = ("Failed to send resource request for", "Graceful shutdown of backend failed")


@dataclass
class Job:
    id: str
    submit: str  # what the blocking `ray job submit` printed (it streams the job's logs)
    status: str  # what `ray job status` printed
    logs: str  # `ray job logs`


def _text(s: str | bytes | None) -> str:
    return s.decode(errors="replace") if isinstance(s, bytes) else s or ""


def submit(head: tuple[str, dict[str, str]], *args: str, timeout: float) -> Job:
    """`jobs/submit.sh ARGS` (blocks until the job ends), then the job's status and logs from the jobs CLI."""
    address, env = head
    env = {**env, "RAY_ADDRESS": address}  # only the address: submit.sh asks the cluster for its auth mode

    def jobs_cli(*a: str) -> str:
        p = subprocess.run([str(BIN / "ray"), "job", *a], capture_output=True, text=True, env=env, timeout=120)
        return p.stdout + p.stderr

    try:
        p = subprocess.run([str(ROOT / "jobs" / "submit.sh"), *args], capture_output=True, text=True, env=env,
                           timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        out = _text(e.stdout) + _text(e.stderr)
        if m := SUBMITTED.search(out):
            jobs_cli("stop", "--no-wait", m[1])  # the driver first; the head fixture ends the rest
        pytest.fail(f"job did not end within {timeout:.0f} s:\n{out[-3000:]}")
    out = p.stdout + p.stderr
    m = SUBMITTED.search(out)
    assert m, out[-3000:]
    job = Job(m[1], out, jobs_cli("status", "--log-color=false", m[1]), jobs_cli("logs", m[1]))
    # the CLI's words for JobStatus.SUCCEEDED (others: "was stopped", "failed", "Status for job ...: RUNNING")
    assert p.returncode == 0 and f"Job '{job.id}' succeeded" in job.status, \
        f"{job.status}\n{job.logs[-3000:]}\n{out[-2000:]}"
    assert not tracebacks(job.logs), tracebacks(job.logs)
    return job


def tracebacks(logs: str) -> list[str]:
    """Each traceback in `logs` (from the line before it), but those of Ray's harmless warnings."""
    lines = logs.splitlines()
    return ["\n".join(lines[max(i - 1, 0):i + 20]) for i, line in enumerate(lines)
            if "Traceback" in line and not (i and any(h in lines[i - 1] for h in HARMLESS))]


def committed(out: Path, stage: str) -> set[str]:
    return {p.parent.name for p in (out / "artifacts" / stage).glob("*/_COMMITTED")}


@pytest.fixture(scope="module")
def pipeline_job(module_head, tmp_path_factory) -> tuple[Path, Job]:
    out = tmp_path_factory.mktemp("jobs") / "job"
    return out, submit(module_head, "run", "--config", "tiny", "--set", f"output_dir={out}", *OWN_FEATURES, timeout=420)


def test_the_tiny_pipeline_as_a_job(pipeline_job):
    out, job = pipeline_job
    # the run's closing lines: the results table and where it went
    for line in ("model ", "test_acc", "teacher ", "NOKD student", "cGAN-KD: + KD term on soft labels",
                 f"results in {out}"):
        assert line in job.logs, job.logs[-3000:]
    assert "total wall time" in job.submit  # the blocking submit streamed the same logs
    results = json.loads((out / "results.json").read_text())
    assert (out / "report.html").is_file() and results["output_dir"] == str(out)
    models = {r["model"]: r for r in results["rows"]}
    assert {"teacher", "NOKD student", "BLKD student"} <= set(models)
    for row in results["rows"]:  # every row's model is a committed artifact under the job's output dir
        assert not row["reused"] and 0 < row["test_acc"] <= 100
        assert Path(row["artifact"], "_COMMITTED").is_file() and Path(row["artifact"]).is_relative_to(out)
    assert models["teacher"]["test_acc"] > 80
    for stage in ("teacher", "gan", "dre", "pool", "nokd", "blkd", "fm", "oracle", "cgankd"):
        assert committed(out, stage), stage
    assert list((out / "artifacts" / "teacher").glob("teacher-*/model.safetensors"))
    assert list((out / "artifacts" / "gan").glob("gan-*/g_ema.safetensors"))
    assert len(committed(out, "cgankd")) >= 5  # the ablation's students


def test_a_tune_search_as_a_job_reuses_the_pipelines_artifacts(module_head, pipeline_job):
    out, _ = pipeline_job
    before = {stage: committed(out, stage) for stage in REUSED}
    job = submit(module_head, "tune", "--config", "tiny", "--set", f"output_dir={out}", *OWN_FEATURES,
                 "--set", "tune.trials=2",
                 "--set", "tune.searcher=random", "--set", "tune.m_per_class=[10,40]", timeout=480)
    done = json.loads((out / "tune-random.json").read_text())
    assert len(done["trials"]) == 2 and all(t["val_acc"] > 30 for t in done["trials"])
    assert all(0.1 <= t["rho"] <= 1 and 10 <= t["m"] <= 40 for t in done["trials"])
    assert done["chosen"] in [{k: t[k] for k in ("rho", "m")} for t in done["trials"]]
    assert len(done["final"]["chosen"]) == 1 and 50 < done["final"]["chosen"][0] <= 100
    assert "chosen on validation data" in job.logs, job.logs[-3000:]
    # the final retrain found the pipeline's artifacts: one "reusing" line names each of them ...
    for stage in REUSED:
        reused = set(re.findall(rf"\[{stage}\] reusing cached artifact {re.escape(str(out))}/artifacts/{stage}/"
                                rf"([\w-]+)", job.logs))
        assert reused and reused <= before[stage], (stage, reused, before[stage], job.logs[-3000:])
    # ... and only the search's validation-split teacher and GAN were trained (one each)
    trained = re.findall(r"\[teacher\] training .* on (train \d+, val \d+),", job.logs)
    assert len(trained) == 1 and job.logs.count("[teacher] training") == 1, job.logs[-3000:]
    assert job.logs.count("[gan] training") == 1, job.logs[-3000:]


def test_your_teacher_distilled_as_a_job(module_head, example, example_on_ray, tmp_path):
    """The quickstart's config (tests/test_your_teacher.py runs it embedded, tests/test_readme.py locally)
    through `ray job submit`: teacher.checkpoint names a package outside the job's working_dir and
    PYTHONPATH; the driver imports it from `modules`, the BLKD and cGAN-KD students' Train workers (the
    online teacher) from the py_modules rayflow adds to the job's runtime_env, without clashing with the
    job's working_dir. The embedded run's GAN, ratio net and fake pool are copied in first (the same keys:
    the job reuses them; the teacher is imported again), so the job trains the students only — to the same
    figures as the embedded run."""
    from test_your_teacher import example_sets, run_table

    on_ray, embedded = example_on_ray
    out = tmp_path / "out"
    for stage in ("gan", "dre", "pool", "view"):
        shutil.copytree(on_ray / "artifacts" / stage, out / "artifacts" / stage)
    job = submit(module_head, "distill", "--config", str(example / "config.yaml"), *example_sets(out), timeout=420)
    assert "[teacher] importing my_teacher.net:build" in job.logs and f"student: {out / 'student'}" in job.logs, \
        job.logs[-3000:]
    for stage in ("gan", "dre", "pool"):
        assert f"[{stage}] reusing cached artifact {out}/artifacts/{stage}/" in job.logs, (stage, job.logs[-3000:])
    assert "[gan] training" not in job.logs
    assert committed(out, "blkd") and committed(out, "cgankd")
    assert json.loads((out / "student" / "student.json").read_text())["input"]["channels"] == 3
    assert run_table(job.logs) == run_table(embedded), (job.logs[-3000:], embedded)

