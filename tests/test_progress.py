"""Progress lines: the end always, 10 % marks only when the last line is old enough, and time."""

from rayflow.progress import Progress, fmt_duration


def test_short_stage_prints_one_line_and_a_blink_none(capsys, monkeypatch):
    now = [0.0]
    monkeypatch.setattr("rayflow.progress.time.perf_counter", lambda: now[0])
    p = Progress("s", 150)
    for i in range(1, 151):
        now[0] += 0.02  # 3 s in all
        p.update(i, loss=0.5)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("[s] 150/150 steps (100 %)") and "loss 0.5" in out[0]
    assert "steps/s" in out[0] and "in 3s" in out[0]
    p = Progress("blink", 10)
    for i in range(1, 11):
        now[0] += 0.01
        p.update(i)
    assert capsys.readouterr().out == ""


def test_slow_stage_prints_ten_percent_marks_with_eta(capsys, monkeypatch):
    now = [0.0]
    monkeypatch.setattr("rayflow.progress.time.perf_counter", lambda: now[0])
    p = Progress("g", 100, unit="steps")
    for i in range(1, 101):
        now[0] += 0.5  # 50 s in all: 10 % marks are 5 s apart
        p.update(i)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 10 and out[0].startswith("[g] 10/100 steps (10 %)") and "ETA 45s" in out[0]
    assert out[-1].endswith("in 50s")


def test_quiet_stretch_prints_every_ten_seconds(capsys, monkeypatch):
    now = [0.0]
    monkeypatch.setattr("rayflow.progress.time.perf_counter", lambda: now[0])
    p = Progress("x", 10_000, every_frac=1.0)
    for i in range(1, 40):
        now[0] += 1.0
        p.update(i)
    assert len(capsys.readouterr().out.strip().splitlines()) == 3  # at 10, 20, 30 s


def test_durations_read_naturally():
    assert fmt_duration(5) == "5s" and fmt_duration(125) == "2m05s" and fmt_duration(7300) == "2h01m"
