"""Named processor steps; the ones that drop records (``drop``, ``keep``) or hide secrets
(``redact``).

Every built-in processor is a :class:`Step`: a callable ``record -> record | None`` with a
``name``, which the chain uses as the drop reason (``dropped{reason=<name>}``) and the error
label (``errors{processor=<name>}``). Steps mutate and return the record they get.

``drop``/``keep`` take :class:`MatchRule` tables; a list of rules means *any* of them. A rule
reads one field (``field``, default ``message``; ``a.b`` reads ``record["a"]["b"]`` when the
record has no key ``"a.b"``) and tests it with exactly one of ``matches`` (a regex, searched),
``equals``, ``in`` (a list) or ``exists``. Values that are not strings are compared as their JSON
text, so ``equals = 200`` matches both ``200`` and ``"200"``, ``equals = true`` matches ``true``
and ``"true"``.

``redact`` takes rules ``{pattern, replacement = "***", fields = ["message"]}`` (``fields =
["*"]``: every top-level string field) or names of built-in rules (:data:`BUILTIN_RULES`). The
replacement may refer to groups (``\\1``, ``\\g<name>``). Each rule costs one regex scan per field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from ._model import Processor, Record

__all__ = [
    "BUILTIN_RULES",
    "MISSING",
    "Drop",
    "Keep",
    "MatchRule",
    "Redact",
    "RedactRule",
    "Step",
    "as_text",
    "field_getter",
]

#: What :func:`field_getter` returns for a missing field.
MISSING: Any = object()
_Scalar = str | int | float | bool


class Step:
    """A named built-in processor; the chain counts its errors and logs its first one."""

    __slots__ = ("errors", "log", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.errors = 0
        self.log: Any = None

    def __call__(self, record: Record) -> Record | None:
        raise NotImplementedError

    def function(self) -> Processor:
        """The callable the chain calls per record (a bound method: cheaper than ``self``)."""
        return self.__call__

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def as_text(value: Any) -> str:
    """A field value as text: strings as they are, anything else as its JSON text."""
    if type(value) is str:
        return value
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, ValueError, OverflowError):
        return str(value)


def field_getter(field: str) -> Callable[[Record], Any]:
    """``record -> value`` for ``field`` (a missing field gives a private sentinel).

    ``a.b`` reads the key ``"a.b"`` if the record has it, else ``record["a"]["b"]``.
    """
    if "." not in field:
        return lambda record: record.get(field, MISSING)
    parts = field.split(".")

    def get(record: Record) -> Any:
        value = record.get(field, MISSING)
        if value is not MISSING:
            return value
        node: Any = record
        for part in parts:
            if not isinstance(node, dict):
                return MISSING
            node = node.get(part, MISSING)
            if node is MISSING:
                return MISSING
        return node

    return get


class MatchRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A test on one ``field`` (default ``message``; ``a.b`` reads nested maps) with exactly one
    of ``matches`` (a regex, searched), ``equals`` (a value), ``in`` (a list of values) or
    ``exists`` (true or false). Non-string values compare as their JSON text, so ``equals =
    200`` matches ``200`` and ``"200"``. ``drop`` and ``keep`` take one rule or a list (any).
    """

    field: str = "message"
    matches: str | None = None
    equals: _Scalar | None = None
    one_of: list[_Scalar] | None = msgspec.field(default=None, name="in")
    exists: bool | None = None

    def __post_init__(self) -> None:
        given = [
            k
            for k, v in (
                ("matches", self.matches),
                ("equals", self.equals),
                ("in", self.one_of),
                ("exists", self.exists),
            )
            if v is not None
        ]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            msg = f"a rule needs exactly one of matches, equals, in or exists (found: {found})"
            raise ValueError(msg)
        if not self.field:
            msg = "field: must not be empty"
            raise ValueError(msg)
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as err:
                msg = f"matches: invalid regex {self.matches!r}: {err}"
                raise ValueError(msg) from None

    def test(self) -> Callable[[Record], bool]:
        """``record -> bool``: whether the rule matches the record."""
        get = field_getter(self.field)
        if self.exists is not None:
            want = self.exists
            return lambda record: (get(record) is not MISSING) is want
        if self.matches is not None:
            search = re.compile(self.matches).search

            def matches(record: Record) -> bool:
                value = get(record)
                if value is MISSING or value is None:
                    return False
                return search(value if type(value) is str else as_text(value)) is not None

            return matches
        texts = frozenset(map(as_text, [self.equals] if self.one_of is None else self.one_of))

        def equals(record: Record) -> bool:
            value = get(record)
            if value is MISSING:
                return False
            return (value if type(value) is str else as_text(value)) in texts

        return equals


class Drop(Step):
    """Drops the records that match any rule."""

    __slots__ = ("_tests",)

    def __init__(self, name: str, rules: Sequence[MatchRule]) -> None:
        super().__init__(name)
        self._tests = tuple(rule.test() for rule in rules)

    def __call__(self, record: Record) -> Record | None:
        for test in self._tests:
            if test(record):
                return None
        return record


class Keep(Step):
    """Keeps only the records that match any rule; drops the rest."""

    __slots__ = ("_tests",)

    def __init__(self, name: str, rules: Sequence[MatchRule]) -> None:
        super().__init__(name)
        self._tests = tuple(rule.test() for rule in rules)

    def __call__(self, record: Record) -> Record | None:
        for test in self._tests:
            if test(record):
                return record
        return None


def _luhn_card(match: re.Match[str]) -> str:
    """Mask a digit run only if it is a plausible card number (issuer digit, Luhn checksum)."""
    text = match.group(0)
    digits = [int(c) for c in text if c.isdigit()]
    if not 13 <= len(digits) <= 19 or digits[0] not in (2, 3, 4, 5, 6):
        return text
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return "***" if total % 10 == 0 else text


def _keep_quotes(match: re.Match[str]) -> str:
    value = match.group(2)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group(1)}{quote}***{quote}"


_SENSITIVE_NAMES = (
    r"password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|secret[_-]?key"
    r"|client[_-]?secret|auth[_-]?token|private[_-]?key"
)

#: name → (regex, replacement): the built-in ``redact`` rules.
BUILTIN_RULES: dict[str, tuple[str, str | Callable[[re.Match[str]], str]]] = {
    # 13-19 digits, optionally grouped by spaces or dashes, passing the Luhn check.
    "credit_card": (r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])", _luhn_card),
    # "Authorization: Bearer <token>" and the like.
    "bearer_token": (r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/-]+=*", r"\1***"),
    "basic_auth": (r"(?i)\b(basic\s+)[A-Za-z0-9+/]{8,}={0,2}", r"\1***"),
    # password=..., "token": "...", api_key: ... (the value, keeping its quotes).
    "password_kv": (
        rf"(?i)((?<![A-Za-z0-9])(?:{_SENSITIVE_NAMES})[\"']?\s*[=:]\s*)"
        r"(\"[^\"]*\"|'[^']*'|[^\s,;&\"']+)",
        _keep_quotes,
    ),
    # scheme://user:password@host
    "url_password": (r"(?i)(\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@/\s]+(@)", r"\1***\2"),
    "jwt": (r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*", "***"),
    "aws_access_key": (r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", "***"),
    "email": (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", "***"),
    "ipv4": (
        r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?!\d|\.\d)",
        "***",
    ),
}


def _check_fields(fields: list[str]) -> None:
    if not fields or any(not f for f in fields):
        msg = f"fields: expected field names or ['*'], got {fields!r}"
        raise ValueError(msg)
    if "*" in fields and len(fields) > 1:
        msg = f"fields: '*' (every string field) stands alone, got {fields!r}"
        raise ValueError(msg)


class RedactRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A redaction in string ``fields`` (default ``["message"]``; ``["*"]``: every top-level
    string field): ``pattern`` (a regex) replaced by ``replacement`` (default ``***``; may use
    ``\\1`` or ``\\g<name>``), or ``rule``, a built-in: ``credit_card`` (Luhn-checked),
    ``bearer_token``, ``basic_auth``, ``password_kv``, ``url_password``, ``jwt``,
    ``aws_access_key``, ``email``, ``ipv4``. ``redact = "email"`` or a list of names and tables
    is short for these tables.
    """

    pattern: str | None = None
    rule: str | None = None
    replacement: str | None = None
    fields: list[str] = msgspec.field(default_factory=lambda: ["message"])

    def __post_init__(self) -> None:
        if (self.pattern is None) == (self.rule is None):
            msg = "a redact rule needs exactly one of pattern (a regex) or rule (a built-in name)"
            raise ValueError(msg)
        _check_fields(self.fields)
        if self.rule is not None:
            _builtin(self.rule)
            if self.replacement is not None:
                msg = "replacement: only rules with a pattern take a replacement"
                raise ValueError(msg)
            return
        assert self.pattern is not None
        try:
            compiled = re.compile(self.pattern)
        except re.error as err:
            msg = f"pattern: invalid regex {self.pattern!r}: {err}"
            raise ValueError(msg) from None
        try:
            compiled.sub(self.replacement or "", "")  # compiles the template: bad \N refs fail
        except (re.error, IndexError) as err:
            msg = f"replacement: invalid {self.replacement!r} for this pattern: {err}"
            raise ValueError(msg) from None

    def substitution(self) -> Callable[[str], str]:
        """``text -> text`` with every match replaced."""
        if self.rule is not None:
            pattern, replacement = BUILTIN_RULES[self.rule]
        else:
            assert self.pattern is not None
            pattern = self.pattern
            replacement = "***" if self.replacement is None else self.replacement
        sub = re.compile(pattern).sub
        return lambda text: sub(replacement, text)


def _builtin(name: str) -> None:
    if name not in BUILTIN_RULES:
        known = ", ".join(BUILTIN_RULES)
        msg = f"unknown built-in redact rule {name!r} (built-in: {known})"
        raise ValueError(msg)


def redact_rules(value: str | RedactRule | list[str | RedactRule]) -> list[RedactRule]:
    """The ``redact`` value as rules: names become ``RedactRule(rule=name)``."""
    items = value if isinstance(value, list) else [value]
    if not items:
        msg = "expected at least one rule"
        raise ValueError(msg)
    rules = []
    for item in items:
        if isinstance(item, str):
            _builtin(item)
            rules.append(RedactRule(rule=item))
        else:
            rules.append(item)
    return rules


class Redact(Step):
    """Replaces what the rules match in string fields; other values are left alone."""

    __slots__ = ("_rules",)

    def __init__(self, name: str, rules: Sequence[RedactRule]) -> None:
        super().__init__(name)
        self._rules = tuple(
            (rule.substitution(), None if rule.fields == ["*"] else tuple(rule.fields))
            for rule in rules
        )

    def __call__(self, record: Record) -> Record | None:
        for sub, fields in self._rules:
            if fields is None:
                for key, value in list(record.items()):
                    if type(value) is str:
                        record[key] = sub(value)
                continue
            for key in fields:
                value = record.get(key)
                if type(value) is str:
                    record[key] = sub(value)
        return record
