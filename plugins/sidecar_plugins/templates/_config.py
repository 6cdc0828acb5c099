"""``[plugins.templates]``: which templates to render into which files, and what to do on a change.

Decoded strictly before anything starts. A template's ``source`` must exist, its ``target`` must
not be a directory or another template's target, ``mode`` must be a valid permission mode and
``owner``/``group`` must exist on this machine; each mistake is a one-line error naming the key,
e.g. ``plugins.templates.templates[1]: target: '/etc/app.ini' is also the target of
templates[0]``. Relative paths are relative to sidecar-run's working directory.
"""

from __future__ import annotations

import grp
import keyword
import os
import pwd
import re
from typing import Any

import msgspec

from sidecar_runtime import Duration, Signal

__all__ = [
    "DEFAULT_MODE",
    "MIN_POLL_INTERVAL",
    "RESERVED_NAMES",
    "ActionConfig",
    "TemplateConfig",
    "TemplatesConfig",
    "format_mode",
    "parse_mode",
    "resolve_group",
    "resolve_owner",
    "template_names",
]

#: The mode of a new target when ``mode`` is not set (an existing target keeps its own).
DEFAULT_MODE = 0o644
#: The shortest polling interval: short enough for tests, long enough to never spin.
MIN_POLL_INTERVAL = 0.01
#: Names a template sees besides its ``vars``; a var may not shadow them.
RESERVED_NAMES = frozenset(
    {"env", "file", "files", "json", "yaml", "range", "dict", "lipsum", "cycler", "joiner"}
    | {"namespace", "true", "false", "none", "True", "False", "None", "loop", "self", "varargs"}
    | {"kwargs", "caller"}
)
_MODE_RE = re.compile(r"(?:0o?)?([0-7]{3,4})")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}")
_EXEC_TIMEOUT = 30.0


def parse_mode(value: str | int) -> int:
    """``"0640"``, ``"640"``, ``"0o640"`` or an int up to ``0o777`` → the mode; ValueError else.

    A bare integer above 511 is rejected: ``mode = 644`` in YAML is decimal 644 (``0o1204``),
    never what was meant.
    """
    if isinstance(value, bool):
        msg = f'expected a mode like "0640", got {value!r}'
        raise ValueError(msg)
    if isinstance(value, int):
        if 0 <= value <= 0o777:
            return value
        if 0 <= value <= 7777 and _MODE_RE.fullmatch(str(value)):
            msg = f'{value} is read as a decimal number; write the mode as a string: "0{value}"'
            raise ValueError(msg)
        msg = f'expected a mode like "0640", got {value!r}'
        raise ValueError(msg)
    match = _MODE_RE.fullmatch(value.strip())
    if match is None:
        msg = f'expected octal permissions like "0640" or "0644", got {value!r}'
        raise ValueError(msg)
    return int(match.group(1), 8)


def format_mode(mode: int) -> str:
    """``0o640`` → ``"0640"``."""
    return f"{mode:04o}"


def resolve_owner(owner: str | int) -> int:
    """A user name or uid → uid; ValueError for an unknown name or a negative id."""
    if isinstance(owner, int) and not isinstance(owner, bool):
        if owner < 0:
            msg = f"expected a user name or a uid of 0 or more, got {owner!r}"
            raise ValueError(msg)
        return owner
    text = str(owner).strip()
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        msg = f"unknown user {owner!r} on this machine"
        raise ValueError(msg) from None


def resolve_group(group: str | int) -> int:
    """A group name or gid → gid; ValueError for an unknown name or a negative id."""
    if isinstance(group, int) and not isinstance(group, bool):
        if group < 0:
            msg = f"expected a group name or a gid of 0 or more, got {group!r}"
            raise ValueError(msg)
        return group
    text = str(group).strip()
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        msg = f"unknown group {group!r} on this machine"
        raise ValueError(msg) from None


class ActionConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``on_change``: exactly one of ``signal``, ``exec`` or ``restart = true``."""

    signal: Signal | None = None
    exec: list[str] | None = None
    restart: bool | None = None
    timeout: Duration = Duration(_EXEC_TIMEOUT)

    def __post_init__(self) -> None:
        chosen = [k for k in ("signal", "exec", "restart") if getattr(self, k) is not None]
        if len(chosen) != 1:
            found = ", ".join(chosen) if chosen else "none"
            msg = f"on_change: give exactly one of signal, exec or restart (found: {found})"
            raise ValueError(msg)
        if self.signal is not None and self.signal == 0:
            msg = "on_change.signal: 0 is not a signal"
            raise ValueError(msg)
        if self.exec is not None and (not self.exec or not self.exec[0]):
            msg = (
                "on_change.exec: expected a command as a list, e.g. "
                f"['nginx', '-s', 'reload'], got {self.exec!r}"
            )
            raise ValueError(msg)
        if self.restart is False:
            msg = "on_change.restart: must be true (or leave on_change out)"
            raise ValueError(msg)
        if self.exec is None and self.timeout != _EXEC_TIMEOUT:
            msg = "on_change.timeout: only exec actions take a timeout"
            raise ValueError(msg)
        if self.exec is not None and self.timeout <= 0:
            msg = "on_change.timeout: must be more than 0"
            raise ValueError(msg)

    @property
    def kind(self) -> str:
        """``signal``, ``exec`` or ``restart`` (the ``action`` label of the metrics)."""
        if self.signal is not None:
            return "signal"
        return "exec" if self.exec is not None else "restart"

    def describe(self) -> str:
        """The action as a person reads it: ``signal HUP``, ``exec nginx -s reload``."""
        if self.signal is not None:
            return f"signal {self.signal.name}"
        if self.exec is not None:
            return "exec " + " ".join(self.exec)
        return "restart"


class TemplateConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One entry of ``templates``: render ``source`` into ``target``."""

    source: str
    target: str
    name: str | None = None
    mode: str | int | None = None
    owner: str | int | None = None
    group: str | int | None = None
    vars: dict[str, Any] = {}
    on_change: ActionConfig | None = None

    def __post_init__(self) -> None:
        if not self.source:
            msg = "source: expected a template file path, got ''"
            raise ValueError(msg)
        if not os.path.exists(self.source):
            msg = f"source: no such file {self.source!r} (relative to {os.getcwd()})"
            raise ValueError(msg)
        if not os.path.isfile(self.source):
            msg = f"source: {self.source!r} is not a regular file"
            raise ValueError(msg)
        if not self.target or self.target.endswith("/"):
            msg = f"target: expected a file path, got {self.target!r}"
            raise ValueError(msg)
        if os.path.isdir(self.target):
            msg = f"target: {self.target!r} is a directory; name the file to write"
            raise ValueError(msg)
        if _same_file(self.source, self.target):
            msg = f"target: {self.target!r} is the template itself"
            raise ValueError(msg)
        if self.name is not None and not _NAME_RE.fullmatch(self.name):
            msg = (
                f"name: use 1-128 letters, digits, '_', '.', ':', '/' or '-', starting with a "
                f"letter or digit, got {self.name!r}"
            )
            raise ValueError(msg)
        for key, convert in (
            ("mode", parse_mode),
            ("owner", resolve_owner),
            ("group", resolve_group),
        ):
            value = getattr(self, key)
            if value is not None:
                try:
                    convert(value)
                except ValueError as err:
                    msg = f"{key}: {err}"
                    raise ValueError(msg) from None
        for var in self.vars:
            if not var.isidentifier() or keyword.iskeyword(var):
                msg = f"vars: {var!r} is not a valid template variable name"
                raise ValueError(msg)
            if var in RESERVED_NAMES:
                msg = f"vars: {var!r} would hide the built-in {var!r}; choose another name"
                raise ValueError(msg)

    @property
    def label(self) -> str:
        """The template's name in logs and metrics: ``name``, else the target path."""
        return self.name if self.name is not None else self.target

    @property
    def mode_bits(self) -> int | None:
        return None if self.mode is None else parse_mode(self.mode)

    @property
    def uid(self) -> int | None:
        return None if self.owner is None else resolve_owner(self.owner)

    @property
    def gid(self) -> int | None:
        return None if self.group is None else resolve_group(self.group)


class TemplatesConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[plugins.templates]``."""

    templates: list[TemplateConfig] = []
    debounce: Duration = Duration(0.2)
    force_polling: bool = False
    poll_interval: Duration = Duration(1.0)

    def __post_init__(self) -> None:
        if not self.templates:
            msg = (
                "templates: no templates to render; add at least one, e.g. "
                'templates = [{ source = "app.ini.tmpl", target = "/etc/app/app.ini" }]'
            )
            raise ValueError(msg)
        targets: dict[str, int] = {}
        names: dict[str, int] = {}
        for index, template in enumerate(self.templates):
            key = _target_key(template.target)
            if key in targets:
                msg = (
                    f"templates[{index}].target: {template.target!r} is also the target of "
                    f"templates[{targets[key]}]"
                )
                raise ValueError(msg)
            targets[key] = index
            label = template.label
            if label in names:
                msg = (
                    f"templates[{index}].name: {label!r} is also the name of "
                    f"templates[{names[label]}]"
                )
                raise ValueError(msg)
            names[label] = index
        for index, template in enumerate(self.templates):
            for other, rival in enumerate(self.templates):
                if other != index and _same_file(rival.source, template.target):
                    msg = (
                        f"templates[{index}].target: {template.target!r} is the source of "
                        f"templates[{other}]; a template must not overwrite another"
                    )
                    raise ValueError(msg)
        if self.poll_interval < MIN_POLL_INTERVAL:
            msg = f"poll_interval: must be at least 10ms, got {self.poll_interval!r}"
            raise ValueError(msg)


def template_names(config: TemplatesConfig) -> list[str]:
    """Each template's label, in config order (unique by validation)."""
    return [t.label for t in config.templates]


def _target_key(path: str) -> str:
    """A target's identity: its directory resolved (symlinks too), then its own name."""
    absolute = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))


def _same_file(a: str, b: str) -> bool:
    return _target_key(a) == _target_key(b) or os.path.realpath(a) == os.path.realpath(b)
