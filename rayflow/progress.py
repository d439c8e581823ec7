"""One progress line format for every long stage, with rate and ETA: a line at least every
`every_s` seconds, at each 10 % of the work when the last line is `min_gap_s` old, and at the end (unless the
whole stage took under a second).
Why: a fixed "every 100 steps" printed one line for a 150-step stage and hundreds for a long GAN,
and a seconds-long stage needs one line, not ten."""

from __future__ import annotations

import time


def fmt_duration(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


class Progress:
    """`update(done, **fields)` prints `[name] done/total (p %)  fields  rate unit/s  ETA` when due."""

    def __init__(self, name: str, total: int, unit: str = "steps", *, every_s: float = 10.0,
                 every_frac: float = 0.1, min_gap_s: float = 5.0, enabled: bool = True, start: int = 0):
        self.name, self.total, self.unit = name, max(int(total), 1), unit
        self.every_s, self.min_gap_s, self.enabled = every_s, min_gap_s, enabled
        self.step_frac = max(1, int(self.total * every_frac))
        self.t0 = self.t_last = time.perf_counter()
        self.start = self.last = start
        self.lines = 0

    def due(self, done: int) -> bool:
        if not self.enabled:
            return False
        if done >= self.total:  # the end, unless the whole stage was over in a blink
            return self.lines > 0 or time.perf_counter() - self.t0 >= 1.0
        quiet_for = time.perf_counter() - self.t_last
        if done // self.step_frac > self.last // self.step_frac and quiet_for >= self.min_gap_s:
            return True
        return quiet_for >= self.every_s

    def update(self, done: int, **fields) -> bool:
        """Prints a line if one is due; returns whether it did."""
        if not self.due(done):
            return False
        now = time.perf_counter()
        rate = (done - self.start) / max(now - self.t0, 1e-9)
        parts = [f"[{self.name}] {done}/{self.total} {self.unit} ({100 * done / self.total:.0f} %)"]
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items()]
        if done > self.start:
            parts.append(f"{rate:.3g} {self.unit}/s")
            if done < self.total:
                parts.append(f"ETA {fmt_duration((self.total - done) / max(rate, 1e-9))}")
            else:
                parts.append(f"in {fmt_duration(now - self.t0)}")
        print("  ".join(parts), flush=True)
        self.t_last, self.last = now, done
        self.lines += 1
        return True
