"""``python -m tidekv.chaos.skewed_node serve ...``: ``tide serve`` with a movable wall clock.

The node's HLC reads its physical time from :func:`tidekv.node.replica.wall_ms`. This
launcher replaces that one function with the real wall clock plus an offset read from
the file named by ``$TIDE_CHAOS_CLOCK_FILE`` (seconds, e.g. ``-30.5``; re-read when the
file changes, checked at most every 100 ms), then runs the ordinary command line. The
monotonic clock (Raft ticks, timers) is untouched, so a clock-jump fault moves only what
a real wall-clock step (NTP, a VM resume) would move for the HLC.

libfaketime would need no launcher, but it cannot shift only the wall clock here: with
``DONT_FAKE_MONOTONIC=1`` (0.9.10, Debian 12) Python's ``time.sleep`` fails with EINVAL
(its ``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`` is mangled), and without it the
monotonic clock jumps too, stalling every asyncio timer for the size of the jump.
"""

from __future__ import annotations

import os
import time


def _install(path: str) -> None:
    import tidekv.node.replica as replica

    state = {"checked": 0.0, "mtime": -1.0, "offset_ms": 0}

    def skewed_wall_ms() -> int:
        now = time.monotonic()
        if now - state["checked"] >= 0.1:
            state["checked"] = now
            try:
                st = os.stat(path)
                if st.st_mtime != state["mtime"]:
                    with open(path) as f:
                        state["offset_ms"] = int(float(f.read().strip() or 0) * 1000)
                    state["mtime"] = st.st_mtime
            except (OSError, ValueError):
                pass
        return time.time_ns() // 1_000_000 + int(state["offset_ms"])

    replica.wall_ms = skewed_wall_ms


def main() -> None:
    path = os.environ.get("TIDE_CHAOS_CLOCK_FILE")
    if path:
        _install(path)
    from tidekv.cli_node import main as tide_main

    tide_main()


if __name__ == "__main__":
    main()
