"""The processor chain: ``[[plugins.logs.processors]]`` tables → named callables → records.

Each table sets exactly one kind, in the order the records go through them::

    [[plugins.logs.processors]]
    parse = "json"              # or ["json", "logfmt"], or {format = "regex", pattern = '...'}
    [[plugins.logs.processors]]
    level = true                        # or {field = "severity", from_message = true}
    [[plugins.logs.processors]]
    timestamp = "ts"                    # or {field = "ts", format = "epoch_ms", keep = true}
    [[plugins.logs.processors]]
    enrich = {fields = {service = "api"}, env = {version = "APP_VERSION"}, kubernetes = true}
    [[plugins.logs.processors]]
    redact = ["credit_card", {pattern = 'session=\\w+', replacement = "session=***"}]
    [[plugins.logs.processors]]
    drop = {field = "level", in = ["trace", "debug"]}   # keep = {...} keeps only matches
    [[plugins.logs.processors]]
    custom = "mypackage.logs:scrub"     # or an entry point name
    options = {mask = "#"}              # with options the target is a factory

``custom`` names a callable ``record -> record | None`` as ``module:attribute`` or as the name of
an entry point in the group ``sidecar_runtime.log_processors``. With ``options`` (a table, may be
empty) or when the target is a class, the target is a factory: ``target(**options)`` returns the
processor. A processor's ``name`` attribute (a string) names it unless the table sets ``name``.
The reference is imported when the config is decoded, so ``sidecar-run check`` reports a missing
module or a target that is not callable, naming the table (``plugins.logs.processors[2]``).

Every processor has a name (``name = "..."``, else its kind, else the custom reference): the drop
reason and the error label. A processor that raises does not stop the pipeline: the record goes
on to the next processor as the failing one left it, with ``processor_error`` set to its name;
the error is counted (:func:`chain_errors`) and the first one per processor is logged.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

import msgspec

from sidecar_runtime import ConfigError

from ._enrich import Enrich, EnrichConfig, Level, LevelConfig
from ._filters import Drop, Keep, MatchRule, Redact, RedactRule, Step, redact_rules
from ._model import Processor, Record
from ._parsers import Parse, ParseConfig, parse_configs
from ._timestamps import Timestamp, TimestampConfig

__all__ = [
    "ENTRY_POINT_GROUP",
    "KINDS",
    "ProcessorConfig",
    "Step",
    "build_chain",
    "chain_errors",
    "processor_name",
    "resolve_reference",
    "run_chain",
    "run_chain_batch",
]

ENTRY_POINT_GROUP = "sidecar_runtime.log_processors"
KINDS = ("parse", "enrich", "redact", "drop", "keep", "level", "timestamp", "custom")
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,99}")


def _describe(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def resolve_reference(ref: str) -> Any:
    """``module:attr`` or an entry point name → the callable; ValueError says what is wrong."""
    if ":" in ref:
        module_name, _, attr = ref.partition(":")
        if not _DOTTED.fullmatch(module_name) or not _DOTTED.fullmatch(attr):
            msg = f"expected 'module:function' or an entry point name, got {ref!r}"
            raise ValueError(msg)
        try:
            target: Any = importlib.import_module(module_name)
        except Exception as err:
            msg = f"cannot import module {module_name!r} ({_describe(err)})"
            raise ValueError(msg) from None
        for part in attr.split("."):
            try:
                target = getattr(target, part)
            except AttributeError:
                msg = f"module {module_name!r} has no attribute {attr!r}"
                raise ValueError(msg) from None
    else:
        found = list(entry_points(group=ENTRY_POINT_GROUP, name=ref))
        if not found:
            names = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
            msg = (
                f"no entry point {ref!r} in group {ENTRY_POINT_GROUP} "
                f"(installed: {', '.join(names) or 'none'}; or write 'module:function')"
            )
            raise ValueError(msg)
        try:
            target = found[0].load()
        except Exception as err:
            msg = f"entry point {ref!r} ({found[0].value}) cannot be loaded ({_describe(err)})"
            raise ValueError(msg) from None
    if not callable(target):
        msg = f"{ref!r} is not callable (it is a {type(target).__name__})"
        raise ValueError(msg)
    return target


class ProcessorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One ``[[plugins.logs.processors]]`` table: exactly one of ``parse``, ``enrich``,
    ``redact``, ``drop``, ``keep``, ``level``, ``timestamp`` or ``custom`` (a ``module:function``
    or the name of an entry point in the group ``sidecar_runtime.log_processors``; with
    ``options``, or when it names a class, it is a factory called as ``target(**options)``).
    ``name`` names the processor in ``sidecar_logs_dropped_total{reason}`` and in errors
    (default: the custom reference, else the kind).
    """

    parse: str | ParseConfig | list[str | ParseConfig] | None = None
    enrich: EnrichConfig | None = None
    redact: str | RedactRule | list[str | RedactRule] | None = None
    drop: MatchRule | list[MatchRule] | None = None
    keep: MatchRule | list[MatchRule] | None = None
    level: bool | LevelConfig | None = None
    timestamp: str | TimestampConfig | None = None
    custom: str | None = None
    options: dict[str, Any] | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        kinds = [k for k in KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            msg = f"a processor sets exactly one of {', '.join(KINDS)} (found: {found})"
            raise ValueError(msg)
        kind = kinds[0]
        if self.options is not None and kind != "custom":
            msg = "options: only custom processors take options"
            raise ValueError(msg)
        if self.name is not None and not _NAME.fullmatch(self.name):
            msg = f"name: use 1-100 letters, digits and '_.:/-', got {self.name!r}"
            raise ValueError(msg)
        try:
            self._check(kind)
        except ValueError as err:
            msg = f"{kind}: {err}"
            raise ValueError(msg) from None

    def _check(self, kind: str) -> None:
        if kind == "parse":
            assert self.parse is not None
            parse_configs(self.parse)
        elif kind == "redact":
            assert self.redact is not None
            redact_rules(self.redact)
        elif kind == "custom":
            assert self.custom is not None
            resolve_reference(self.custom)
        elif kind in ("drop", "keep") and getattr(self, kind) == []:
            msg = "expected a rule or a non-empty list of rules"
            raise ValueError(msg)
        elif kind == "level" and self.level is False:
            msg = "false does nothing: remove the processor"
            raise ValueError(msg)
        elif kind == "timestamp" and isinstance(self.timestamp, str):
            TimestampConfig(field=self.timestamp)

    @property
    def kind(self) -> str:
        """Which processor this table configures."""
        return next(k for k in KINDS if getattr(self, k) is not None)

    def default_name(self) -> str:
        """``name``, else the custom reference, else the kind."""
        if self.name is not None:
            return self.name
        return self.custom if self.custom is not None else self.kind


class Custom(Step):
    """A user's processor under a name; the chain calls the target directly."""

    __slots__ = ("target",)

    def __init__(self, name: str, target: Processor) -> None:
        super().__init__(name)
        self.target = target

    def __call__(self, record: Record) -> Record | None:
        return self.target(record)

    def function(self) -> Processor:
        return self.target


def _build_custom(config: ProcessorConfig, key: str) -> Custom:
    ref = config.custom
    assert ref is not None
    try:
        target = resolve_reference(ref)
    except ValueError as err:
        msg = f"{key}.custom: {err}"
        raise ConfigError(msg) from None
    if config.options is not None or isinstance(target, type):
        try:
            target = target(**(config.options or {}))
        except Exception as err:
            msg = f"{key}.custom: {ref}(**options) failed ({_describe(err)})"
            raise ConfigError(msg) from None
        if not callable(target):
            msg = (
                f"{key}.custom: {ref}(**options) returned a {type(target).__name__}, not a callable"
            )
            raise ConfigError(msg)
    own = getattr(target, "name", None)
    name = config.name or (own if isinstance(own, str) and own else ref)
    return Custom(name, target)


def _build(config: ProcessorConfig, key: str) -> Step:
    name = config.default_name()
    if config.parse is not None:
        return Parse(name, parse_configs(config.parse))
    if config.enrich is not None:
        return Enrich(name, config.enrich)
    if config.redact is not None:
        return Redact(name, redact_rules(config.redact))
    if config.drop is not None:
        return Drop(name, config.drop if isinstance(config.drop, list) else [config.drop])
    if config.keep is not None:
        return Keep(name, config.keep if isinstance(config.keep, list) else [config.keep])
    if config.level is not None:
        level = config.level
        return Level(name, level if isinstance(level, LevelConfig) else LevelConfig())
    if config.timestamp is not None:
        timestamp = config.timestamp
        return Timestamp(
            name, TimestampConfig(field=timestamp) if isinstance(timestamp, str) else timestamp
        )
    return _build_custom(config, key)


def build_chain(
    configs: Sequence[ProcessorConfig], *, log: Any = None, key: str = "plugins.logs.processors"
) -> list[Processor]:
    """The processors of ``configs``, in order; ConfigError (naming ``key[i]``) if a custom
    factory fails. ``log`` (a structlog-style logger) gets each processor's first error."""
    chain: list[Processor] = []
    for i, config in enumerate(configs):
        step = _build(config, f"{key}[{i}]")
        step.log = log
        if isinstance(step, Enrich) and step.missing_env and log is not None:
            log.warning("log_enrich_env_unset", processor=step.name, variables=step.missing_env)
        chain.append(step)
    return chain


def processor_name(processor: Processor) -> str:
    """The drop reason and error label of a processor: its ``name``, else its ``__name__``."""
    name = getattr(processor, "name", None)
    if isinstance(name, str):
        return name
    return str(getattr(processor, "__name__", type(processor).__name__))


def chain_errors(chain: Sequence[Processor]) -> dict[str, int]:
    """Errors so far per processor name (processors built by :func:`build_chain`)."""
    errors: dict[str, int] = {}
    for step in chain:
        if isinstance(step, Step) and step.errors:
            errors[step.name] = errors.get(step.name, 0) + step.errors
    return errors


def _failed(processor: Processor, record: Record, err: Exception, log: Any) -> None:
    """Count and flag a processor's failure; log the first one per processor."""
    name = processor_name(processor)
    record["processor_error"] = name
    first = True
    if isinstance(processor, Step):
        processor.errors += 1
        first = processor.errors == 1
        log = log if log is not None else processor.log
    if first and log is not None:
        log.error("log_processor_failed", processor=name, error=_describe(err), exc_info=err)


def _not_a_record(value: object) -> TypeError:
    return TypeError(f"returned a {type(value).__name__}, not a record (dict) or None")


def run_chain(
    chain: Sequence[Processor], record: Record, *, log: Any = None
) -> tuple[Record | None, str | None]:
    """Run one record through the chain: ``(record, None)``, or ``(None, name)`` if dropped."""
    for processor in chain:
        try:
            out: object = processor(record)
        except Exception as err:
            _failed(processor, record, err, log)
            continue
        if out is None:
            return None, processor_name(processor)
        if type(out) is not dict and not isinstance(out, dict):  # a buggy custom processor
            _failed(processor, record, _not_a_record(out), log)
            continue
        record = out
    return record, None


def run_chain_batch(
    chain: Sequence[Processor], records: Sequence[Record], *, log: Any = None
) -> tuple[list[Record], dict[str, int]]:
    """Run records through the chain: the kept ones in order, and drops per processor name."""
    steps = [(p.function() if isinstance(p, Step) else p, p) for p in chain]
    kept: list[Record] = []
    keep = kept.append
    dropped: dict[str, int] = {}
    for record in records:
        for function, processor in steps:
            try:
                out: object = function(record)
            except Exception as err:
                _failed(processor, record, err, log)
                continue
            if out is None:
                name = processor_name(processor)
                dropped[name] = dropped.get(name, 0) + 1
                break
            if type(out) is not dict and not isinstance(out, dict):  # a buggy custom processor
                _failed(processor, record, _not_a_record(out), log)
                continue
            record = out
        else:
            keep(record)
    return kept, dropped
