"""CPU time of the processes a benchmark phase uses, read before and after the phase.

A component is a named set of processes: a server or worker LocalStack started (Popen with start_new_session,
so a process group of its own), or this benchmark process itself. A group's processes are those in its process
group plus all their descendants by parent pid: Postgres backends and Celery prefork children are children of
the group leader, and Postgres backends call setsid(), leaving the group.

A process's CPU is read from its process-wide CPU clock (clock_gettime on the clock id Linux derives from the
pid: user + system time of all its threads, exited ones included, in nanoseconds), falling back to
/proc/<pid>/stat utime + stime (clock ticks) if that fails. Children that exited during the phase and were reaped
by a process of the set are counted through the reaper's cutime + cstime (/proc/<pid>/stat, clock ticks), where
the kernel adds them on reaping; so a short-lived Postgres backend is not lost.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
SELF = "bench"
METHOD = (
    "per process: clock_gettime of its process CPU clock (user + system, all threads, ns), or /proc/<pid>/stat "
    "utime + stime when that fails; plus cutime + cstime from /proc/<pid>/stat for children it reaped; summed over "
    "each service's process group and its descendants, read before and after the phase"
)


@dataclass(frozen=True)
class Stat:
    pid: int
    ppid: int
    pgid: int
    own_ticks: int  # utime + stime
    reaped_ticks: int  # cutime + cstime: children this process waited for


def read_stat(pid: int) -> Stat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses itself.
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5): field n is fields[n - 3].
    return Stat(pid, int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12]),
                int(fields[13]) + int(fields[14]))  # fmt: skip


def all_stats() -> dict[int, Stat]:
    out = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := read_stat(int(entry.name))) is not None:
            out[stat.pid] = stat
    return out


def group_members(leader: int, stats: Mapping[int, Stat]) -> set[int]:
    """Every process in `leader`'s process group, and every descendant of those."""
    members = {pid for pid, s in stats.items() if s.pgid == leader}
    children: dict[int, list[int]] = {}
    for pid, s in stats.items():
        children.setdefault(s.ppid, []).append(pid)
    todo = list(members)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in members:
                members.add(child)
                todo.append(child)
    return members


def process_cpu_s(pid: int, stat: Stat | None = None) -> float | None:
    """User + system CPU seconds of one process (all its threads), not counting reaped children."""
    try:
        # Linux's MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED); reading another process's clock needs no privilege.
        return time.clock_gettime_ns(((~pid) << 3) | 2) / 1e9
    except OSError:
        stat = stat or read_stat(pid)
        return None if stat is None else stat.own_ticks / CLK_TCK


def group_cpu_s(leader: int, stats: Mapping[int, Stat]) -> float:
    total = 0.0
    for pid in group_members(leader, stats):
        own = process_cpu_s(pid, stats[pid])
        if own is not None:
            total += own + stats[pid].reaped_ticks / CLK_TCK
    return total


class Sampler:
    """CPU seconds per component between start() and stop(); `groups` maps a component to its group leader's
    pid. This process is the component `bench` (own threads only: the stack's servers are its children too)."""

    def __init__(self, groups: Mapping[str, int]) -> None:
        self.groups = dict(groups)
        self._before: dict[str, float] = {}
        self._wall = 0.0

    def add(self, name: str, leader: int) -> None:
        self.groups[name] = leader

    def _groups_now(self) -> dict[str, float]:
        stats = all_stats()
        return {name: group_cpu_s(leader, stats) for name, leader in self.groups.items()}

    def start(self) -> None:
        # The /proc scan costs this process CPU: take its own clock after the scan here, before it in stop().
        self._before = self._groups_now()
        self._wall = time.perf_counter()
        self._before[SELF] = time.process_time()

    def stop(self) -> Window:
        own = time.process_time()
        wall = time.perf_counter() - self._wall
        after = self._groups_now() | {SELF: own}
        return Window(wall, {k: (after[k] - self._before[k]) * 1000 for k in after if k in self._before})


@dataclass(frozen=True)
class Window:
    wall_s: float
    cpu_ms: dict[str, float]  # component -> CPU milliseconds spent during the window

    def total_ms(self, components: Iterable[str]) -> float:
        return sum(self.cpu_ms.get(c, 0.0) for c in components)


def stack_groups(procs: Mapping[str, Any]) -> dict[str, int]:
    """LocalStack.procs (name -> Popen, each the leader of its own process group) as Sampler groups."""
    return {name: int(proc.pid) for name, proc in procs.items() if proc.poll() is None}


def redis_counters(
    commandstats: Mapping[str, Any], cpu: Mapping[str, Any], command: str = "FT.SEARCH"
) -> dict[str, float]:
    """From INFO commandstats and INFO cpu: `command`'s calls and microseconds (Redis times each call on its main
    thread), and the server's CPU seconds, all threads and main thread only."""
    wanted = f"cmdstat_{command}".lower()
    stats: Mapping[str, Any] = next((v for k, v in commandstats.items() if k.lower() == wanted), {})
    return {
        "calls": float(stats.get("calls", 0)),
        "usec": float(stats.get("usec", 0)),
        "cpu_s": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        "main_thread_cpu_s": float(cpu.get("used_cpu_sys_main_thread", 0.0))
        + float(cpu.get("used_cpu_user_main_thread", 0.0)),
    }


def counters_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before}
