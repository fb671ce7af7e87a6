"""Optional sampling profile of a server under load with py-spy (not installed by the project).

`run.py --profile PY_SPY` attaches `py-spy record --format raw` to each server process for the
whole run and writes a summary: where the process spends its samples, by own time (the frame that
was running) and by inclusive time (any frame on the stack), with idle waits removed.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess

IDLE_MARKERS = ("epoll_wait", "select (", "poll (", "_wait_for_tstate_lock", "wait (threading.py",
                "_worker (concurrent", "get (queue.py", "doPoll (twisted", "work (twisted/_threads",
                "_sleep", "acquire (")


class Profiler:
    def __init__(self, py_spy: str, pid: int, out_path: str, rate: int = 200, gil: bool = True) -> None:
        self.out_path = out_path
        self.proc = subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--format", "raw", "--output", out_path,
             "--rate", str(rate), "--nonblocking", "--threads", *(["--gil"] if gil else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def summarize(raw_path: str, top: int = 25) -> str:
    """Own and inclusive sample shares per function from py-spy's collapsed-stack output."""
    if not os.path.exists(raw_path):
        return f"(no profile at {raw_path})"
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    busy = idle = 0
    with open(raw_path, errors="replace") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            frames = stack.split(";")
            leaf = frames[-1]
            if any(m in leaf for m in IDLE_MARKERS):
                idle += n
                continue
            busy += n
            own[_short(leaf)] += n
            for fr in set(_short(x) for x in frames[1:]):
                incl[fr] += n
    if not busy:
        return "(no busy samples)"
    lines = [f"busy samples {busy}, idle/waiting samples {idle}", "", "own time (the running frame):"]
    lines += [f"  {100.0 * n / busy:5.1f}%  {fn}" for fn, n in own.most_common(top)]
    lines += ["", "inclusive time (on the stack):"]
    lines += [f"  {100.0 * n / busy:5.1f}%  {fn}" for fn, n in incl.most_common(top * 2)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)" with the project-relative tail kept short
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    parts = path.split("/")
    for anchor in ("site-packages", "main", "lib"):
        if anchor in parts:
            parts = parts[parts.index(anchor) + 1:]
            break
    return f"{name} ({'/'.join(parts[-3:])})"
