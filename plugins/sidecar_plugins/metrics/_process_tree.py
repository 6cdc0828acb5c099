"""The app's process metrics: its main process, and sums over its whole process tree.

One scrape walks the tree once and reads each process once (see ``_procfs``); every series of
the scrape comes from that one snapshot. Nothing runs between scrapes.

Tree counters must never go down, or ``rate()`` reads a counter reset and shows a spike.
Summing the live processes alone would drop whenever a child exits. :class:`TreeAccount` keeps
them monotonic and, as long as parents wait for their children, exact:

- each process contributes its own counts plus what its waited-for children used: the kernel
  adds a reaped child's CPU time and page faults to its parent's ``cutime``/``cstime``/``c*flt``
  and its I/O to the parent's ``/proc/<pid>/io``;
- each scrape adds, per process (pid and start time), the growth since the previous scrape, or
  all of it for a process seen for the first time;
- a process that vanished and whose nearest surviving ancestor is still in the tree has been
  reaped into that ancestor, whose growth now includes all of it: what was already counted
  for it is taken off again;
- a negative balance (a child that no one waited for, e.g. under ``SIGCHLD`` ignored, or one
  reaped between two reads of a scrape) is carried into the next scrapes, never exported.

Context switches are not passed to parents by the kernel: exited processes keep what was
counted for them and nothing is taken off.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from . import _procfs
from ._catalog import SPECS, Spec, by_name

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ._selfstats import SelfStats

__all__ = ["AppProcessCollector", "TreeAccount"]

Key = tuple[int, int]  # (pid, start time in clock ticks): a pid reused later is another process

#: Order of the tree counters in a vector.
FIELDS = (
    "cpu_user",
    "cpu_system",
    "minor_faults",
    "major_faults",
    "io_read",
    "io_write",
    "storage_read",
    "storage_write",
    "ctx_voluntary",
    "ctx_involuntary",
)
#: Whether the kernel hands a reaped child's count to its parent, per field.
ABSORBED = (True, True, True, True, True, True, True, True, False, False)
_N = len(FIELDS)
T = TypeVar("T")


class Seen(NamedTuple):
    """One process in one scrape: its counter vector and its parent's key (None outside)."""

    counts: tuple[float, ...]
    parent: Key | None


class TreeAccount:
    """Monotonic counters over a changing set of processes (see the module docstring)."""

    def __init__(self) -> None:
        self.totals = [0.0] * _N
        self._carry = [0.0] * _N
        self._prev: dict[Key, Seen] = {}

    def update(self, now: Mapping[Key, Seen]) -> None:
        prev = self._prev
        delta = [0.0] * _N
        for key, seen in now.items():  # a list per process, not a loop per field: a hot path
            old = prev.get(key)
            if old is None:
                delta = [d + value for d, value in zip(delta, seen.counts, strict=True)]
            else:
                delta = [
                    d + (value - before) if value > before else d
                    for d, value, before in zip(delta, seen.counts, old.counts, strict=True)
                ]
        vanished = prev.keys() - now.keys()
        for key in vanished:
            if self._absorbed(key, vanished, now):
                for i, before in enumerate(prev[key].counts):
                    if ABSORBED[i]:
                        delta[i] -= before
        for i in range(_N):
            balance = self._carry[i] + delta[i]
            if balance >= 0:
                self.totals[i] += balance
                self._carry[i] = 0.0
            else:
                self._carry[i] = balance
        self._prev = dict(now)

    def _absorbed(self, key: Key, vanished: set[Key], now: Mapping[Key, Seen]) -> bool:
        """Whether ``key``'s nearest surviving ancestor (as last seen) is still in the tree."""
        parent = self._prev[key].parent
        hops = 0
        while parent is not None and parent in vanished and hops < 1024:
            parent = self._prev[parent].parent
            hops += 1
        return parent is not None and parent in now


class _Proc(NamedTuple):
    stat: _procfs.ProcStat
    ctx: tuple[int, int] | None
    io: _procfs.IOCounters | None
    fds: int | None
    mem: _procfs.Memory | None

    def counts(self) -> tuple[float, ...]:
        st, io, ctx = self.stat, self.io, self.ctx
        return (
            st.utime + st.cutime,
            st.stime + st.cstime,
            st.minflt + st.cminflt,
            st.majflt + st.cmajflt,
            *(io if io is not None else (0, 0, 0, 0)),
            *(ctx if ctx is not None else (0, 0)),
        )


class AppProcessCollector:
    """A prometheus_client collector for the ``app``, ``app_tree`` and ``app_pss_uss`` groups."""

    def __init__(
        self,
        pid: Callable[[], int | None],
        stats: SelfStats,
        *,
        main: bool = True,
        tree: bool = True,
        pss_uss: bool = False,
        fs: _procfs.ProcFS | None = None,
        finder: _procfs.TreeFinder | None = None,
    ) -> None:
        self._pid = pid
        self._stats = stats
        self.main, self.tree, self.pss_uss = main, tree, pss_uss
        self._name = "app_tree" if tree else "app"
        self._fs = fs or _procfs.ProcFS()
        self._finder = finder or _procfs.TreeFinder(self._fs)
        self.account = TreeAccount()
        self._denied: set[str] = set()

    def describe(self) -> list[Metric]:
        return [
            spec.family() for spec in SPECS if _enabled(spec, self.main, self.tree, self.pss_uss)
        ]

    def close(self) -> None:
        """Close the ``/proc`` files kept open between scrapes."""
        self._fs.close()

    def collect(self) -> list[Metric]:
        self._denied = set()
        try:
            families = self._collect()
        except Exception as err:  # a /proc surprise must cost these series, not the scrape
            self._stats.failed(self._name, f"{type(err).__name__}: {err}")
            return []
        finally:
            self._fs.end_scrape()
        if self._denied:
            self._stats.failed(
                self._name,
                f"permission denied reading /proc/<pid>/{{{','.join(sorted(self._denied))}}}",
                hint="run sidecar-run as the app's user, or as root",
            )
        else:
            self._stats.succeeded(self._name)
        return families

    def _guarded(
        self, reader: Callable[[int], T | None], pid: int, what: str
    ) -> tuple[T | None, bool]:
        """(value, vanished): None without vanishing when the file may not be read."""
        try:
            value = reader(pid)
        except PermissionError:
            self._denied.add(what)
            return None, False
        return value, value is None

    def _read(self, st: _procfs.ProcStat) -> _Proc | None:
        """Everything about one process, or None if it vanished meanwhile."""
        pid, fs = st.pid, self._fs
        io = fds = mem = None
        try:  # the common case, in one go (a hot path); file by file if one may not be read
            ctx = fs.ctx_switches(pid)
            gone = ctx is None
            if not gone:
                io = fs.io(pid)
                gone = io is None
            if not gone:
                fds = fs.fd_count(pid)
                gone = fds is None
        except PermissionError:
            ctx, gone = self._guarded(fs.ctx_switches, pid, "status")
            if not gone:
                io, gone = self._guarded(fs.io, pid, "io")
            if not gone:
                fds, gone = self._guarded(fs.fd_count, pid, "fd")
        if not gone and self.pss_uss and st.state != "Z":  # a zombie has no memory map left
            mem, gone = self._guarded(fs.smaps, pid, "smaps_rollup")
        if gone:
            self._stats.process_vanished(pid)
            return None
        return _Proc(st, ctx, io, fds, mem)

    def _collect(self) -> list[Metric]:
        root = self._pid()
        procs: list[_Proc] = []
        if root is not None:
            if self.tree:
                found = self._finder.find(root)
                for pid in self._finder.vanished:
                    self._stats.process_vanished(pid)
            else:
                one = self._fs.stat(root)
                found = [one] if one is not None else []
            for st in found:
                proc = self._read(st)
                if proc is not None:
                    procs.append(proc)
        families: list[Metric] = []
        if self.main and procs and procs[0].stat.pid == root:
            families += self._main_families(procs[0])
        if self.tree:
            families += self._tree_families(procs)
        return families

    def _main_families(self, proc: _Proc) -> list[Metric]:
        st = proc.stat
        out = _Families("sidecar_app_")
        out.pair("cpu_seconds_total", ("user", st.utime), ("system", st.stime))
        out.one("resident_memory_bytes", st.rss)
        out.one("virtual_memory_bytes", st.vsize)
        out.one("threads", st.threads)
        if proc.fds is not None:
            out.one("open_fds", proc.fds)
        limit, _ = self._guarded(self._fs.max_fds, st.pid, "limits")
        if limit is not None:
            out.one("max_fds", limit)
        if proc.io is not None:
            out.io(proc.io)
        if proc.ctx is not None:
            voluntary, involuntary = proc.ctx
            out.pair(
                "context_switches_total", ("voluntary", voluntary), ("involuntary", involuntary)
            )
        out.pair("page_faults_total", ("minor", st.minflt), ("major", st.majflt))
        if proc.mem is not None:
            out.memory(proc.mem)
        return out.families

    def _tree_families(self, procs: list[_Proc]) -> list[Metric]:
        keys = {p.stat.pid: (p.stat.pid, p.stat.start_ticks) for p in procs}
        self.account.update(
            {keys[p.stat.pid]: Seen(p.counts(), keys.get(p.stat.ppid)) for p in procs}
        )
        t = dict(zip(FIELDS, self.account.totals, strict=True))
        out = _Families("sidecar_app_tree_")
        out.one("processes", len(procs))
        out.one("zombie_processes", sum(1 for p in procs if p.stat.state == "Z"))
        out.pair("cpu_seconds_total", ("user", t["cpu_user"]), ("system", t["cpu_system"]))
        out.one("resident_memory_bytes", sum(p.stat.rss for p in procs))
        out.one("virtual_memory_bytes", sum(p.stat.vsize for p in procs))
        out.one("threads", sum(p.stat.threads for p in procs))
        out.one("open_fds", sum(p.fds or 0 for p in procs))
        out.one("io_read_bytes_total", t["io_read"])
        out.one("io_write_bytes_total", t["io_write"])
        out.one("storage_read_bytes_total", t["storage_read"])
        out.one("storage_write_bytes_total", t["storage_write"])
        out.pair(
            "context_switches_total",
            ("voluntary", t["ctx_voluntary"]),
            ("involuntary", t["ctx_involuntary"]),
        )
        out.pair("page_faults_total", ("minor", t["minor_faults"]), ("major", t["major_faults"]))
        if self.pss_uss:
            mems = [p.mem for p in procs if p.mem is not None]
            out.memory(
                _procfs.Memory(
                    sum(m.pss for m in mems), sum(m.uss for m in mems), sum(m.swap for m in mems)
                )
            )
        return out.families


class _Families:
    """Builds the families of one prefix from the catalog."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.families: list[Metric] = []

    def one(self, name: str, value: float) -> None:
        family = by_name(self.prefix + name).family()
        family.add_metric([], value)
        self.families.append(family)

    def pair(self, name: str, *values: tuple[str, float]) -> None:
        family = by_name(self.prefix + name).family()
        for label, value in values:
            family.add_metric([label], value)
        self.families.append(family)

    def io(self, io: _procfs.IOCounters) -> None:
        self.one("io_read_bytes_total", io.rchar)
        self.one("io_write_bytes_total", io.wchar)
        self.one("storage_read_bytes_total", io.read_bytes)
        self.one("storage_write_bytes_total", io.write_bytes)

    def memory(self, mem: _procfs.Memory) -> None:
        self.one("proportional_memory_bytes", mem.pss)
        self.one("unique_memory_bytes", mem.uss)
        self.one("swap_memory_bytes", mem.swap)


def _enabled(spec: Spec, main: bool, tree: bool, pss_uss: bool) -> bool:
    """Whether ``spec`` is exported with these collector groups on."""
    in_tree = spec.name.startswith("sidecar_app_tree_")
    if spec.collector == "app_pss_uss":
        return pss_uss and (tree if in_tree else main)
    return (spec.collector == "app" and main) or (spec.collector == "app_tree" and tree)
