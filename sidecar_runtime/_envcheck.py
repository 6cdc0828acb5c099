"""``sidecar-run check`` against the environment: a systemd unit, Kubernetes manifests, the proxy.

Each function returns warnings, one line each, naming the file, the setting and its value, what
goes wrong, and the value to use. Nothing here changes the config; ``check`` prints the lines and
``--strict`` turns them into exit status 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ._config import Config
from ._convert import format_duration
from ._errors import ConfigError
from ._plugins import PluginSpec
from ._timing import (
    STOP_MARGIN,
    SYSTEMD_DEFAULT_TIMEOUT,
    format_timespan,
    health_config,
    recovery_seconds,
    round_up,
    stop_budget,
    timeout_stop_sec,
    watchdog_sec,
)

__all__ = [
    "drain_warnings",
    "manifest_warnings",
    "parse_timespan",
    "read_unit",
    "unit_warnings",
]

#: Kubernetes' default terminationGracePeriodSeconds.
KUBERNETES_DEFAULT_GRACE = 30.0

_TIMESPAN_UNITS = {
    "us": 1e-6, "usec": 1e-6, "μs": 1e-6,
    "ms": 1e-3, "msec": 1e-3,
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "w": 604800.0, "week": 604800.0, "weeks": 604800.0,
}  # fmt: skip
_TIMESPAN_PART = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zμ]*)")


def parse_timespan(text: str) -> float:
    """Seconds for a systemd time span (``90``, ``1min 30s``, ``500ms``); inf for ``infinity``."""
    value = text.strip()
    if value == "infinity":
        return math.inf
    total, pos = 0.0, 0
    while pos < len(value):
        match = _TIMESPAN_PART.match(value, pos)
        if not match or match.end() == pos or match.group(2) not in (*_TIMESPAN_UNITS, ""):
            msg = f"invalid time span {text!r}"
            raise ValueError(msg)
        total += float(match.group(1)) * _TIMESPAN_UNITS.get(match.group(2), 1.0)
        pos = match.end()
    if not value:
        msg = "empty time span"
        raise ValueError(msg)
    return total


# -- reading a unit (for ``check --unit``) ---------------------------------------------------------


def read_unit(path: str) -> dict[str, dict[str, str]]:
    """The settings of a unit file by section (the last assignment wins; continuations joined)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        msg = f"--unit {path}: file not found"
        raise ConfigError(msg) from None
    except (OSError, UnicodeDecodeError) as err:
        msg = f"--unit {path}: cannot read the unit: {err}"
        raise ConfigError(msg) from None
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    pending = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = pending + raw.strip() if pending else raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if not sep or current is None:
            msg = f"--unit {path}:{number}: expected [Section] or Key=Value, got {raw.strip()!r}"
            raise ConfigError(msg)
        current[key.strip()] = value.strip()
    return sections


def _timespan_setting(
    service: dict[str, str], keys: Sequence[str], default: float, path: str, *, zero: float
) -> float:
    """The first of ``keys`` that is set, in seconds; ``zero`` stands for a value of 0."""
    for key in keys:
        if service.get(key):
            try:
                seconds = parse_timespan(service[key])
            except ValueError as err:
                msg = f"--unit {path}: {key}=: {err}"
                raise ConfigError(msg) from None
            return zero if seconds == 0 else seconds
    return default


def _seconds(value: float) -> str:
    return "infinity" if value == math.inf else format_duration(value)


def unit_warnings(
    config: Config, specs: Sequence[PluginSpec], unit: dict[str, dict[str, str]], path: str
) -> list[str]:
    """Where an existing unit and the config would act against each other."""
    service = unit.get("Service", {})
    warnings = []
    kind = service.get("Type", "simple")
    if kind not in ("notify", "notify-reload"):
        warnings.append(
            f"{path}: Type={kind}: systemd counts the service as started when it forks and "
            "ignores READY=1 and STATUS=; use Type=notify"
        )
    kill_mode = service.get("KillMode", "control-group")
    if kill_mode != "mixed":
        what = (
            "is the only signal, and processes left behind are never killed"
            if kill_mode == "none"
            else "reaches the app beside sidecar-run's own stop signal"
        )
        warnings.append(
            f"{path}: KillMode={kill_mode}: systemd's SIGTERM {what}; use KillMode=mixed"
        )
    budget = stop_budget(config)
    keys = ("TimeoutStopSec", "TimeoutSec")
    stop = _timespan_setting(service, keys, SYSTEMD_DEFAULT_TIMEOUT, path, zero=math.inf)
    if stop < budget:
        warnings.append(
            f"{path}: TimeoutStopSec={_seconds(stop)} is shorter than sidecar-run's worst-case "
            f"stop of {format_duration(budget)} (stop.timeout "
            f"{format_duration(config.stop.timeout)} + output drain + plugins): systemd's "
            f"SIGKILL cuts the shutdown short; use TimeoutStopSec={timeout_stop_sec(config)} or "
            "lower stop.timeout"
        )
    watchdog = _timespan_setting(service, ("WatchdogSec",), 0.0, path, zero=0.0)
    if 0 < watchdog < math.inf:
        health = health_config(specs)
        recovery = recovery_seconds(config)
        if health is None or not getattr(health, "watchdog", False):
            warnings.append(
                f"{path}: WatchdogSec={_seconds(watchdog)} but nothing sends WATCHDOG=1 (the "
                "health plugin or plugins.health.watchdog is off): systemd kills the service "
                "when it runs out"
            )
        elif watchdog / 2 < recovery:
            wanted = watchdog_sec(config, specs) or round_up(2 * recovery + 1)
            warnings.append(
                f"{path}: WatchdogSec={_seconds(watchdog)}: half of it is shorter than a "
                f"restart of the app in place ({format_duration(recovery)}), so systemd "
                "restarts the whole service while sidecar-run restarts the app; use "
                f"WatchdogSec={format_timespan(wanted)}"
            )
    policy = service.get("Restart", "no")
    if config.restart.policy != "never" and policy in ("on-failure", "always", "on-success"):
        when = {
            "on-failure": "after its restart policy gave up (FATAL)",
            "on-success": "after the app's success exit ended the run",
            "always": "after its restart policy gave up or the app's success exit ended the run",
        }[policy]
        warnings.append(
            f"{path}: Restart={policy} with restart.policy = {config.restart.policy!r}: systemd "
            f"starts sidecar-run again {when}, a second restart loop around the first; use "
            "Restart=on-abnormal"
        )
    return warnings


# -- Kubernetes manifests --------------------------------------------------------------------------

_TEMPLATE_KINDS = {
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "ReplicationController",
}


def _pod_specs(doc: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(kind/name, pod spec)`` for every pod a manifest document describes."""
    if not isinstance(doc, dict):
        return
    kind = doc.get("kind")
    if kind == "List" or (isinstance(kind, str) and kind.endswith("List")):
        for item in doc.get("items") or ():
            yield from _pod_specs(item)
        return
    name = f"{str(kind).lower()}/{(doc.get('metadata') or {}).get('name', '?')}"
    spec = doc.get("spec") or {}
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
        kind = "Job"
    if kind == "Pod":
        pod = spec
    elif kind in _TEMPLATE_KINDS or kind == "PodTemplate":
        template = doc.get("template") if kind == "PodTemplate" else spec.get("template")
        pod = (template or {}).get("spec")
    else:
        return
    if isinstance(pod, dict):
        yield name, pod


def _pre_stop_sleep(pod: dict[str, Any]) -> float:
    """The longest ``lifecycle.preStop.sleep`` of the pod's containers: it runs before SIGTERM."""
    longest = 0.0
    for container in pod.get("containers") or ():
        hook = ((container or {}).get("lifecycle") or {}).get("preStop") or {}
        seconds = (hook.get("sleep") or {}).get("seconds")
        if isinstance(seconds, int | float) and not isinstance(seconds, bool):
            longest = max(longest, float(seconds))
    return longest


def manifest_warnings(config: Config, path: str) -> list[str]:
    """Pods whose ``terminationGracePeriodSeconds`` the stop budget does not fit in."""
    import yaml

    try:
        docs = list(yaml.safe_load_all(Path(path).read_text(encoding="utf-8")))
    except FileNotFoundError:
        msg = f"--manifest {path}: file not found"
        raise ConfigError(msg) from None
    except (OSError, UnicodeDecodeError) as err:
        msg = f"--manifest {path}: cannot read the manifest: {err}"
        raise ConfigError(msg) from None
    except yaml.YAMLError as err:
        msg = f"--manifest {path}: invalid YAML: " + " ".join(str(err).split())
        raise ConfigError(msg) from None
    pods = [found for doc in docs for found in _pod_specs(doc)]
    if not pods:
        msg = f"--manifest {path}: no Pod, Deployment, StatefulSet, DaemonSet, Job or CronJob"
        raise ConfigError(msg)
    budget = stop_budget(config)
    warnings = []
    for name, pod in pods:
        grace = pod.get("terminationGracePeriodSeconds", KUBERNETES_DEFAULT_GRACE)
        if not isinstance(grace, int | float) or isinstance(grace, bool) or grace < 0:
            msg = (
                f"--manifest {path}: {name}: terminationGracePeriodSeconds: expected a number "
                f"of seconds, got {grace!r}"
            )
            raise ConfigError(msg)
        pre_stop = _pre_stop_sleep(pod)
        if grace - pre_stop < budget:
            spent = f" after a {format_duration(pre_stop)} preStop sleep" if pre_stop else ""
            warnings.append(
                f"{path}: {name}: terminationGracePeriodSeconds {grace:g}{spent} leaves less "
                f"than sidecar-run's worst-case stop of {format_duration(budget)} (stop.timeout "
                f"{format_duration(config.stop.timeout)} + output drain + plugins): the "
                f"kubelet's SIGKILL cuts the shutdown short; use terminationGracePeriodSeconds: "
                f"{math.ceil(budget + pre_stop + STOP_MARGIN)} or lower stop.timeout"
            )
    return warnings


# -- the proxy -------------------------------------------------------------------------------------


def drain_warnings(config: Config, specs: Sequence[PluginSpec]) -> list[str]:
    """A proxy drain that does not fit in the stop deadline after the pre-stop delay.

    The drain runs as a shutdown hook after ``stop.pre_stop_delay``; the app gets its stop
    signal when the drain ends, and SIGKILL at ``stop.timeout``.
    """
    proxy = next((s.config for s in specs if s.name == "proxy"), None)
    drain = getattr(proxy, "drain_timeout", None)
    if proxy is None or not isinstance(drain, int | float):
        return []
    stop = config.stop
    if stop.pre_stop_delay + drain < stop.timeout:
        return []
    return [
        f"plugins.proxy.drain_timeout ({format_duration(drain)}) plus stop.pre_stop_delay "
        f"({format_duration(stop.pre_stop_delay)}) is not shorter than stop.timeout "
        f"({format_duration(stop.timeout)}): a slow drain holds the shutdown until the deadline "
        "and the app then gets SIGKILL without a chance to stop; lower the drain or raise "
        "stop.timeout"
    ]
