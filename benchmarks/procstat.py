"""Where a benchmark's CPU goes: /proc CPU times of processes and their threads, and py-spy profiles.

`cpu_s` is how benchmarks count "per core" (user + system time of the processes doing the work, all
their threads included, FFmpeg's decoder threads too). `ThreadCpu` splits one window's CPU by thread
(name and id), which tells busy threads from idle ones where a sampling profiler cannot (a Python
frame parked in `time.sleep` or in Ray's task loop looks the same as one computing). `PySpy` records
a process's Python stacks over the window (`py-spy record --format raw`, no pausing of the process)
and `top_functions` ranks them by samples where the function itself ran.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _times(stat: str) -> tuple[str, float]:
    """(name, user + system seconds) from a /proc/.../stat line (fields 14 and 15)."""
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat.rsplit(")", 1)[1].split()
    return name, (int(fields[11]) + int(fields[12])) / _TICKS


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far, all its threads."""
    return _times(Path(f"/proc/{pid}/stat").read_text())[1]


def process_age_s(pid: int | None = None) -> float:
    """Seconds since process `pid` (default: this one) started: a benchmark's time including its imports."""
    stat = Path(f"/proc/{pid or os.getpid()}/stat").read_text()
    started = int(stat.rsplit(")", 1)[1].split()[19]) / _TICKS  # field 22: start time, ticks after boot
    return float(Path("/proc/uptime").read_text().split()[0]) - started


def _threads(pid: int) -> dict[str, tuple[str, float]]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[tid] = _times(Path(f"/proc/{pid}/task/{tid}/stat").read_text())
        except OSError:  # the thread ended between listing and reading
            continue
    return out


class ThreadCpu:
    """CPU seconds per thread of `pid` between `__init__` and `top()` (threads that ended are lost)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._start = _threads(pid)

    def top(self, n: int = 16) -> list[dict[str, object]]:
        end = _threads(self.pid)
        rows = [{"thread": f"{name} ({tid})", "cpu_s": round(cpu - self._start.get(tid, (name, 0.0))[1], 3)}
                for tid, (name, cpu) in end.items()]
        rows.sort(key=lambda r: -float(r["cpu_s"]))  # type: ignore[arg-type]
        return [r for r in rows[:n] if float(r["cpu_s"]) > 0]  # type: ignore[arg-type]


class PySpy:
    """`py-spy record` of one process for `seconds` into `out` (raw collapsed stacks); a no-op when
    py-spy is not installed (it is a dev tool, not a dependency)."""

    def __init__(self, pid: int, seconds: float, out: Path, rate: int = 100) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.out = out
        self._proc = None
        if Path(exe).exists():
            self._proc = subprocess.Popen([exe, "record", "-p", str(pid), "-d", str(max(1, round(seconds))),
                                           "-r", str(rate), "-f", "raw", "--nonblocking", "-o", str(out)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait(self) -> bool:
        """Wait for the recording; whether one was written."""
        if self._proc is not None:
            self._proc.wait(60)
        return self.out.exists()


def top_functions(raw: Path, n: int = 12) -> list[dict[str, object]]:
    """The `n` functions (file:line) with the most samples where they themselves ran, as fractions of all samples."""
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        own[stack.split(";")[-1]] += int(count)
    return [{"function": f, "share": round(c / total, 3)} for f, c in own.most_common(n)] if total else []
