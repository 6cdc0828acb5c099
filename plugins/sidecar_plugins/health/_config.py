"""``[plugins.health]``: probes with Kubernetes' field names and defaults, decoded strictly.

A probe is a table with a ``kind`` (``startup``, ``liveness``, ``readiness``) and exactly one
target: ``http`` (a URL), ``tcp`` (``HOST:PORT``), ``exec`` (an argv list) or ``process = true``
(the app's process is alive). ``--probe readiness=http://...`` produces the same tables. Every
check here is pure, so a bad table is an error that names its key before anything starts.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from sidecar_runtime import Duration, parse_address
from sidecar_runtime import format_duration as format_seconds

__all__ = [
    "MIN_PERIOD",
    "HealthConfig",
    "ProbeConfig",
    "ProbeKind",
    "format_seconds",
    "liveness_warnings",
    "parse_status_ranges",
    "probe_names",
]

ProbeKind = Literal["startup", "liveness", "readiness"]
#: The shortest period allowed: short enough for tests, long enough to never spin.
MIN_PERIOD = 0.01
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_METHOD_RE = re.compile(r"[A-Z]+")
_HTTP_DEFAULTS: dict[str, object] = {
    "method": "GET",
    "headers": {},
    "expect_status": "200-399",
    "body_contains": None,
    "tls_verify": True,
}


def parse_status_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """``"200-399"``, ``"200"`` or ``"200,204,300-399"`` → ranges; ValueError otherwise."""
    ranges = []
    for part in text.split(","):
        low, sep, high = part.strip().partition("-")
        try:
            lo = int(low)
            hi = int(high) if sep else lo
        except ValueError:
            msg = (
                f"expect_status: expected codes or ranges like '200-399' or '200,204', got {text!r}"
            )
            raise ValueError(msg) from None
        if not 100 <= lo <= hi <= 599:
            msg = f"expect_status: codes must be within 100-599, low before high, got {text!r}"
            raise ValueError(msg)
        ranges.append((lo, hi))
    return tuple(ranges)


class ProbeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One probe: a ``kind``, exactly one target, and Kubernetes' timing fields."""

    kind: ProbeKind
    name: str | None = None
    http: str | None = None
    tcp: str | None = None
    exec: list[str] | None = None
    process: bool | None = None
    method: str = "GET"
    headers: dict[str, str] = {}
    expect_status: str = "200-399"
    body_contains: str | None = None
    tls_verify: bool = True
    initial_delay: Duration = Duration(0.0)
    period: Duration = Duration(10.0)
    timeout: Duration = Duration(1.0)
    success_threshold: Annotated[int, msgspec.Meta(ge=1)] = 1
    failure_threshold: Annotated[int, msgspec.Meta(ge=1)] = 3

    def __post_init__(self) -> None:
        targets = [k for k in ("http", "tcp", "exec", "process") if getattr(self, k) is not None]
        if len(targets) != 1:
            found = ", ".join(targets) if targets else "none"
            msg = f"a probe needs exactly one of http, tcp, exec or process (found: {found})"
            raise ValueError(msg)
        self._check_target()
        if self.http is None:
            extra = [k for k, v in _HTTP_DEFAULTS.items() if getattr(self, k) != v]
            if extra:
                msg = f"{', '.join(extra)}: only http probes take these keys"
                raise ValueError(msg)
        if self.name is not None and not _NAME_RE.fullmatch(self.name):
            msg = (
                f"name: use 1-63 letters, digits, '_', '.' or '-', starting with a letter or "
                f"digit, got {self.name!r}"
            )
            raise ValueError(msg)
        if not _METHOD_RE.fullmatch(self.method):
            msg = f"method: expected an HTTP method in capitals like 'GET', got {self.method!r}"
            raise ValueError(msg)
        parse_status_ranges(self.expect_status)
        for key, value in self.headers.items():
            if not key or any(c in key for c in ":\r\n ") or "\n" in value or "\r" in value:
                msg = f"headers: invalid header {key!r}: {value!r}"
                raise ValueError(msg)
        if self.period < MIN_PERIOD:
            msg = (
                f"period: must be at least {format_seconds(MIN_PERIOD)}, "
                f"got {format_seconds(self.period)}"
            )
            raise ValueError(msg)
        if not 0 < self.timeout < self.period:
            msg = (
                f"timeout: must be more than 0 and less than period "
                f"({format_seconds(self.period)}), got {format_seconds(self.timeout)}"
            )
            raise ValueError(msg)
        if self.kind != "readiness" and self.success_threshold != 1:
            msg = (
                f"success_threshold: must be 1 for {self.kind} probes (as in Kubernetes), "
                f"got {self.success_threshold}"
            )
            raise ValueError(msg)

    def _check_target(self) -> None:
        if self.http is not None:
            try:
                url = urlsplit(self.http)
                port = url.port
            except ValueError as err:
                msg = f"http: invalid URL {self.http!r}: {err}"
                raise ValueError(msg) from None
            if url.scheme not in ("http", "https") or not url.hostname:
                msg = f"http: expected a URL like 'http://127.0.0.1:8080/health', got {self.http!r}"
                raise ValueError(msg)
            if port == 0:
                msg = f"http: port 0 cannot be probed, got {self.http!r}"
                raise ValueError(msg)
        elif self.tcp is not None:
            try:
                address = parse_address(self.tcp.removeprefix("tcp://"))
            except ValueError as err:
                msg = f"tcp: {err}"
                raise ValueError(msg) from None
            if address.kind != "tcp" or not address.port:
                msg = f"tcp: expected HOST:PORT with a port in 1..65535, got {self.tcp!r}"
                raise ValueError(msg)
        elif self.exec is not None:
            if not self.exec or not self.exec[0]:
                msg = f"exec: expected a command as a list, e.g. ['pg_isready'], got {self.exec!r}"
                raise ValueError(msg)
        elif self.process is not True:
            msg = "process: must be true (or leave it out)"
            raise ValueError(msg)

    @property
    def target_kind(self) -> str:
        """``http``, ``tcp``, ``exec`` or ``process``."""
        if self.http is not None:
            return "http"
        if self.tcp is not None:
            return "tcp"
        return "exec" if self.exec is not None else "process"

    @property
    def target(self) -> str:
        """The target as a person reads it (for logs and warnings)."""
        if self.http is not None:
            return self.http
        if self.tcp is not None:
            return f"tcp://{self.tcp.removeprefix('tcp://')}"
        if self.exec is not None:
            return "exec:" + " ".join(self.exec)
        return "process"


class HealthConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[plugins.health]``."""

    probes: list[ProbeConfig] = []
    watchdog: bool = True
    max_response_bytes: Annotated[int, msgspec.Meta(ge=0)] = 10240

    def __post_init__(self) -> None:
        seen: dict[str, int] = {}
        for index, name in enumerate(probe_names(self.probes)):
            if name in seen:
                msg = f"probes[{index}].name: {name!r} is already the name of probes[{seen[name]}]"
                raise ValueError(msg)
            seen[name] = index
        if self.max_response_bytes == 0 and any(p.body_contains for p in self.probes):
            msg = "max_response_bytes: must be more than 0 when a probe uses body_contains"
            raise ValueError(msg)


def probe_names(probes: list[ProbeConfig]) -> list[str]:
    """Each probe's name: its own, or ``<kind>-<target kind>`` (``-2``, ``-3`` for repeats)."""
    names: list[str] = []
    counts: dict[str, int] = {}
    for probe in probes:
        if probe.name is not None:
            names.append(probe.name)
            continue
        base = f"{probe.kind}-{probe.target_kind}"
        counts[base] = counts.get(base, 0) + 1
        names.append(base if counts[base] == 1 else f"{base}-{counts[base]}")
    return names


def _same_target(a: ProbeConfig, b: ProbeConfig) -> bool:
    return a.target == b.target and (a.method, a.headers) == (b.method, b.headers)


def liveness_warnings(config: HealthConfig) -> list[str]:
    """Liveness probes as strict as a readiness probe on the same target.

    Such a liveness probe fails whenever readiness does (e.g. a slow database behind the
    health page), so every replica restarts at once instead of only leaving the rotation.
    """
    warnings = []
    names = probe_names(config.probes)
    for i, live in enumerate(config.probes):
        if live.kind != "liveness":
            continue
        for j, ready in enumerate(config.probes):
            if ready.kind != "readiness" or not _same_target(live, ready):
                continue
            live_window = live.failure_threshold * live.period
            ready_window = ready.failure_threshold * ready.period
            if live_window <= ready_window and live.timeout <= ready.timeout:
                warnings.append(
                    f"plugins.health.probes[{i}] (liveness {names[i]!r}) is as strict as "
                    f"probes[{j}] (readiness {names[j]!r}) on the same target {live.target}: "
                    "a slow dependency then restarts every replica instead of taking them out "
                    "of rotation; give liveness a higher failure_threshold, period or timeout, "
                    "or a cheaper target"
                )
    return warnings
