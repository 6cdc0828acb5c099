"""Enrichment: fields the app did not write (static, environment, host, Kubernetes), and levels
brought to one vocabulary.

``enrich`` (:class:`EnrichConfig`) adds fields computed once when the chain is built: ``fields``
(static values), ``env`` (``{field = "ENV_NAME"}``; an unset variable adds nothing), ``host``
(``socket.gethostname()``, under ``host`` or the name given) and ``kubernetes``: a sub-map under
``kubernetes`` with Fluent Bit's key names, from the Downward-API variables a pod spec sets:

========================  =====================================================================
``pod_name``              ``POD_NAME``, ``KUBERNETES_POD_NAME``, ``MY_POD_NAME``; in a pod
                          (``KUBERNETES_SERVICE_HOST`` set) else ``HOSTNAME``
``namespace_name``        ``POD_NAMESPACE``, ``KUBERNETES_NAMESPACE``, ``MY_POD_NAMESPACE``, else
                          the service account's ``namespace`` file
``host`` (the node)       ``NODE_NAME``, ``KUBERNETES_NODE_NAME``, ``MY_NODE_NAME``
``container_name``        ``CONTAINER_NAME``, ``KUBERNETES_CONTAINER_NAME``
``pod_ip``                ``POD_IP``, ``KUBERNETES_POD_IP``, ``MY_POD_IP``
``pod_id``                ``POD_UID``, ``KUBERNETES_POD_UID``, ``MY_POD_UID``
========================  =====================================================================

Fields the record already has win (the app's own ``host`` stays) unless ``overwrite = true``.

``level`` (:class:`LevelConfig`) maps the first of its fields present to ``trace``, ``debug``,
``info``, ``warn``, ``error`` or ``fatal`` under ``target``: names and abbreviations in any case
(``WARNING``, ``W``, ``ERRO``, ``crit``, ``severe``, ...), syslog severities 0-7 and Python's
10-50 (or bunyan/pino's 10-60 with ``numbers = "bunyan"``). Unknown values are left alone. With
``from_message``, a record without the field gets its level from the start of ``message``
(``ERROR: ...``, ``[warn] ...``, ``WARNING:root:...``, klog's ``E0102 ...``), an upper-case
level word in its first 80 characters (``2024-05-01 12:00:00 ERROR ...``), or a stack trace's
first line (``Traceback ...``, ``Exception in thread ...``, ``java.io.IOException: ...``: error).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from ._filters import MISSING, Step, field_getter
from ._model import Record
from ._parsers import PIPELINE_KEYS

__all__ = [
    "LEVELS",
    "Enrich",
    "EnrichConfig",
    "Level",
    "LevelConfig",
    "kubernetes_fields",
    "normalize_level",
]

SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
_K8S_ENV = {
    "pod_name": ("POD_NAME", "KUBERNETES_POD_NAME", "MY_POD_NAME"),
    "namespace_name": ("POD_NAMESPACE", "KUBERNETES_NAMESPACE", "MY_POD_NAMESPACE"),
    "host": ("NODE_NAME", "KUBERNETES_NODE_NAME", "MY_NODE_NAME"),
    "container_name": ("CONTAINER_NAME", "KUBERNETES_CONTAINER_NAME"),
    "pod_ip": ("POD_IP", "KUBERNETES_POD_IP", "MY_POD_IP"),
    "pod_id": ("POD_UID", "KUBERNETES_POD_UID", "MY_POD_UID"),
}


def _field_name(key: str, name: str) -> None:
    if not name:
        msg = f"{key}: field names must not be empty"
        raise ValueError(msg)
    if name in PIPELINE_KEYS:
        msg = f"{key}: {name!r} belongs to the pipeline ({', '.join(PIPELINE_KEYS)})"
        raise ValueError(msg)


class EnrichConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``enrich = {...}`` adds fields to every record, computed once at start: ``fields``
    (static values), ``env`` (``{field = "ENV_NAME"}``; unset variables add nothing and are
    logged), ``host = true`` (the host name under ``host``, or under the name given) and
    ``kubernetes = true`` (``pod_name``, ``namespace_name``, ``host`` (the node),
    ``container_name``, ``pod_ip``, ``pod_id`` under ``kubernetes``, from the Downward-API
    variables ``POD_NAME``, ``POD_NAMESPACE``, ``NODE_NAME``, ``CONTAINER_NAME``, ``POD_IP``,
    ``POD_UID`` or their ``KUBERNETES_*``/``MY_*`` spellings). Fields a record already has are
    kept unless ``overwrite = true``.
    """

    fields: dict[str, str | int | float | bool] = {}
    env: dict[str, str] = {}
    host: bool | str = False
    kubernetes: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        for name in self.fields:
            _field_name("fields", name)
        for name, var in self.env.items():
            _field_name("env", name)
            if not var or "=" in var or "\0" in var:
                msg = f"env: {name} = {var!r} is not an environment variable name"
                raise ValueError(msg)
        if isinstance(self.host, str):
            _field_name("host", self.host)
        if not (self.fields or self.env or self.host or self.kubernetes):
            msg = "nothing to add: give fields, env, host or kubernetes"
            raise ValueError(msg)


def kubernetes_fields(
    environ: Mapping[str, str], namespace_file: str = SA_NAMESPACE_FILE
) -> dict[str, str]:
    """The pod's identity from Downward-API variables (see the module doc); empty outside a pod."""
    found: dict[str, str] = {}
    for key, names in _K8S_ENV.items():
        for name in names:
            if environ.get(name):
                found[key] = environ[name]
                break
    if "pod_name" not in found and environ.get("KUBERNETES_SERVICE_HOST"):
        hostname = environ.get("HOSTNAME")
        if hostname:
            found["pod_name"] = hostname
    if "namespace_name" not in found:
        try:
            with open(namespace_file, encoding="utf-8") as file:
                namespace = file.read(256).strip()
        except (OSError, UnicodeDecodeError):
            namespace = ""
        if namespace:
            found["namespace_name"] = namespace
    return found


class Enrich(Step):
    """Adds the fields of an :class:`EnrichConfig`, computed once at construction."""

    __slots__ = ("_items", "_k8s", "_overwrite", "_static", "missing_env")

    def __init__(
        self,
        name: str,
        config: EnrichConfig,
        *,
        environ: Mapping[str, str] | None = None,
        namespace_file: str = SA_NAMESPACE_FILE,
    ) -> None:
        super().__init__(name)
        env = os.environ if environ is None else environ
        static: dict[str, Any] = dict(config.fields)
        #: ``env`` variables that were not set (the chain builder logs them once).
        self.missing_env = [var for var in config.env.values() if var not in env]
        static.update({k: env[v] for k, v in config.env.items() if v in env})
        if config.host:
            static["host" if config.host is True else str(config.host)] = socket.gethostname()
        self._k8s = kubernetes_fields(env, namespace_file) if config.kubernetes else None
        if not self._k8s:
            self._k8s = None
        self._static = static
        self._items = tuple(static.items())
        self._overwrite = config.overwrite

    def __call__(self, record: Record) -> Record | None:
        if self._overwrite:
            record.update(self._static)
            if self._k8s is not None:
                record["kubernetes"] = dict(self._k8s)
            return record
        for key, value in self._items:
            if key not in record:
                record[key] = value
        if self._k8s is not None and "kubernetes" not in record:
            record["kubernetes"] = dict(self._k8s)
        return record


# Levels -----------------------------------------------------------------------------------

LEVELS = ("trace", "debug", "info", "warn", "error", "fatal")
_NAMES = {
    "trace": "t trc trac trce finest finer verbose v",
    "debug": "d dbg debu dbug fine config",
    "info": "i inf information informational notice ntc n",
    "warn": "w wrn warning",
    "error": "e err erro eror severe",
    "fatal": "f ftl fata crit critical crt alert emerg emergency panic pani dpanic a",
}
_LEVEL_NAMES = {name: level for level, names in _NAMES.items() for name in (level, *names.split())}
_SYSLOG = ("fatal", "fatal", "fatal", "error", "warn", "info", "info", "debug")
_MSG_LEVEL = re.compile(
    r"^\W{0,3}(?i:(trace|debug|info|notice|warn|warning|error|err|crit|critical|fatal"
    r"|panic|emerg|alert|severe))\b"
    r"|\b(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|CRIT|CRITICAL|FATAL|PANIC|SEVERE)\b"
    r"|^([IWEF])\d{4} "
    # A stack trace joined by multiline: Python's, or a JVM exception header.
    r"|^(Traceback \(most recent call last\):|  \+ Exception Group Traceback|Exception in thread "
    r"|(?:[A-Za-z_$][\w$]*\.)+[\w$]*(?:Exception|Error|Throwable)\b)"
)
_KLOG = {"I": "info", "W": "warn", "E": "error", "F": "fatal"}


def _from_number(number: int, scheme: str) -> str:
    if scheme == "bunyan":  # pino/bunyan: 10 trace, 20 debug, ..., 60 fatal
        return LEVELS[min(max(number // 10 - 1, 0), 5)]
    if 0 <= number <= 7:
        return _SYSLOG[number]
    if number < 10:
        return "trace"
    return LEVELS[min(number // 10, 5)]  # Python: 10 debug, 20 info, ..., 50 critical


def normalize_level(value: Any, numbers: str = "python") -> str | None:
    """``"WARNING"`` → ``"warn"``, ``3`` → ``"error"`` (syslog), ``40`` → ``"error"``; else None."""
    kind = type(value)
    if kind is str:
        level = _LEVEL_NAMES.get(value.lower())
        if level is not None:
            return level
        text = value.strip().strip("[]<>():").lower()
        level = _LEVEL_NAMES.get(text)
        if level is not None or not text.isdigit():
            return level
        return _from_number(int(text), numbers)
    if kind is int or (kind is float and value == value and abs(value) < 1e6):
        return _from_number(int(value), numbers) if value >= 0 else None
    return None


def level_in_message(message: str) -> str | None:
    """The level a plain line starts with or shows in capitals near its start (a stack trace
    is ``error``); else None."""
    match = _MSG_LEVEL.search(message, 0, 80)
    if match is None:
        return None
    word, capital, klog, trace = match.groups()
    if klog:
        return _KLOG[klog]
    if trace:
        return "error"
    return _LEVEL_NAMES[(word or capital).lower()]


class LevelConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``level = true`` (or this table) writes the first of ``field`` present, normalised to
    ``trace``, ``debug``, ``info``, ``warn``, ``error`` or ``fatal``, under ``target``: names in
    any case and their abbreviations (``WARNING``, ``W``, ``ERRO``, ``crit``, ``severe``),
    syslog severities 0-7 and Python's 10-50 (``numbers = "bunyan"``: pino/bunyan's 10-60).
    Unknown values are left alone. ``from_message = true`` reads a level from the start of a
    plain line (``ERROR: ...``, ``[warn] ...``, klog's ``E0102 ...``), an upper-case level word
    in its first 80 characters, or a stack trace's first line (``error``) when the record has
    no level field.
    """

    field: str | list[str] = msgspec.field(
        default_factory=lambda: ["level", "severity", "lvl", "loglevel", "levelname", "log.level"]
    )
    target: str = "level"
    from_message: bool = False
    numbers: Literal["python", "bunyan"] = "python"

    def fields(self) -> tuple[str, ...]:
        return (self.field,) if isinstance(self.field, str) else tuple(self.field)

    def __post_init__(self) -> None:
        if not self.fields() or not all(self.fields()):
            msg = f"field: expected field names, got {self.field!r}"
            raise ValueError(msg)
        _field_name("target", self.target)


class Level(Step):
    """Writes the normalised level under ``target`` (see the module doc)."""

    __slots__ = ("_from_message", "_getters", "_numbers", "_target")

    def __init__(self, name: str, config: LevelConfig) -> None:
        super().__init__(name)
        self._getters = tuple(field_getter(f) for f in config.fields())
        self._target = config.target
        self._from_message = config.from_message
        self._numbers = config.numbers

    def __call__(self, record: Record) -> Record | None:
        for get in self._getters:
            value = get(record)
            if value is not MISSING and value is not None:
                level = normalize_level(value, self._numbers)
                if level is not None:
                    record[self._target] = level
                return record
        if self._from_message:
            message = record.get("message")
            if type(message) is str:
                level = level_in_message(message)
                if level is not None:
                    record[self._target] = level
        return record
