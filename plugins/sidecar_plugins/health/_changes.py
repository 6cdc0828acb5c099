"""What a reloaded ``[plugins.health]`` table changes, probe by probe (pure).

Probes are matched by name (their own, or the default ``<kind>-<target kind>``). Each new probe
is one of:

* ``kept``: the same table; it goes on probing with its state.
* ``retimed``: the same kind and target (what is checked and what counts as a success), only
  ``initial_delay``, ``period``, ``timeout`` or the thresholds differ; it keeps its status and
  its counts, and its loop resumes with the new timing.
* ``replaced``: a new kind or target under the same name; it starts over as a new probe.
* ``added``: a name that was not there.

and every old name that is gone is ``removed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from ._config import ProbeConfig

__all__ = ["TIMING_KEYS", "Change", "ProbeChanges", "diff_probes", "same_target"]

Change = Literal["kept", "retimed", "replaced", "added"]
_CHANGES: tuple[Change, ...] = ("kept", "retimed", "replaced", "added")

#: The keys that change when and how often a probe checks, not what it checks.
TIMING_KEYS = ("initial_delay", "period", "timeout", "success_threshold", "failure_threshold")


def _what(probe: ProbeConfig) -> dict[str, Any]:
    fields = msgspec.structs.asdict(probe)
    for key in (*TIMING_KEYS, "name"):
        del fields[key]
    return fields


def same_target(a: ProbeConfig, b: ProbeConfig) -> bool:
    """Same kind and the same check: target, method, headers, expected status, body, TLS."""
    return _what(a) == _what(b)


class ProbeChanges(msgspec.Struct, frozen=True):
    """The probes of a reload by what happens to them (names in the new config's order)."""

    changes: dict[str, Change]
    removed: tuple[str, ...]

    def names(self, change: Change) -> list[str]:
        return [name for name, c in self.changes.items() if c == change]

    @property
    def summary(self) -> dict[str, list[str]]:
        """For the ``health_reloaded`` log event: every non-empty group of names."""
        groups: dict[str, list[str]] = {}
        for change in _CHANGES:
            names = self.names(change)
            if names:
                groups[change] = names
        if self.removed:
            groups["removed"] = list(self.removed)
        return groups


def diff_probes(old: Mapping[str, ProbeConfig], new: Mapping[str, ProbeConfig]) -> ProbeChanges:
    """Classify each probe of ``new`` against ``old`` (both keyed by probe name)."""
    changes: dict[str, Change] = {}
    for name, probe in new.items():
        before = old.get(name)
        if before is None:
            changes[name] = "added"
        elif _what(before) != _what(probe):
            changes[name] = "replaced"
        elif any(getattr(before, k) != getattr(probe, k) for k in TIMING_KEYS):
            changes[name] = "retimed"
        else:
            changes[name] = "kept"
    removed = tuple(name for name in old if name not in new)
    return ProbeChanges(changes, removed)
