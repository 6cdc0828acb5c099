"""Rendering one template with Jinja2, recording every file and directory the render read.

The engine is Jinja2's sandbox (``jinja2.sandbox.SandboxedEnvironment``) with
``StrictUndefined``: a missing variable is an error unless the template gives a default
(``{{ env.PORT | default("8080") }}``). No HTML escaping; ``trim_blocks`` (a block tag eats its
newline, as in Ansible); a trailing newline is kept. The template sees:

- ``env``: sidecar-run's environment when the plugin started (``env.HOME``, ``env["HOME"]``);
- ``file(path, default=...)``: a file's text (a Kubernetes ConfigMap or Secret key);
- ``files(dir, default=...)``: a ConfigMap-style directory as ``{name: text}``, without dot
  entries (``..data``, ``..2026_...``) and subdirectories;
- ``json(path, default=...)`` and ``yaml(path, default=...)``: a file's data;
- the template's own ``vars`` from the config, by name.

Every path read goes into :class:`Sources` with its status *before* the read, so the watcher
knows what to watch and a change that raced the render is still noticed. jinja2 is imported
only when a template is rendered, never by ``sidecar-run -- true``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import jinja2

__all__ = [
    "RenderError",
    "Rendered",
    "SourceError",
    "Sources",
    "check_syntax",
    "dir_stamp",
    "file_stamp",
    "render",
]

Stamp = tuple[int, int, int, int, int] | None
DirStamp = tuple[tuple[str, Stamp], ...] | None
_NO_DEFAULT: Any = object()


class SourceError(Exception):
    """Raised by ``file()``, ``files()``, ``json()`` and ``yaml()`` when a source cannot be used."""


class RenderError(Exception):
    """Raised by :func:`render` when the template cannot be rendered.

    The message is one line: ``FILE:LINE: what went wrong`` when the line is known.
    ``sources`` holds what the render read until it failed (to watch for a fix).
    """

    def __init__(self, message: str, sources: Sources) -> None:
        super().__init__(message)
        self.sources = sources


def file_stamp(path: str) -> Stamp:
    """What identifies a file's content without reading it (symlinks followed); None if absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def dir_stamp(path: str) -> DirStamp:
    """The stamps of a directory's visible entries; None if it cannot be listed."""
    try:
        names = sorted(n for n in os.listdir(path) if not n.startswith("."))
    except OSError:
        return None
    return tuple((name, file_stamp(os.path.join(path, name))) for name in names)


class Sources:
    """The files and directories one render read, each with its stamp from before the read."""

    def __init__(self) -> None:
        self.files: dict[str, Stamp] = {}
        self.dirs: dict[str, DirStamp] = {}

    def add_file(self, path: str) -> None:
        absolute = os.path.abspath(path)
        if absolute not in self.files:
            self.files[absolute] = file_stamp(absolute)

    def add_dir(self, path: str) -> None:
        absolute = os.path.abspath(path)
        if absolute not in self.dirs:
            self.dirs[absolute] = dir_stamp(absolute)

    def changed(self) -> bool:
        """Whether any source differs now from when the render read it."""
        return any(file_stamp(p) != s for p, s in self.files.items()) or any(
            dir_stamp(p) != s for p, s in self.dirs.items()
        )


class Rendered(NamedTuple):
    """A render's output and what it read."""

    text: str
    sources: Sources


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _read_text(call: str, path: str) -> str:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        msg = f"{call}: no such file (give default= to allow that)"
        raise SourceError(msg) from None
    except OSError as err:
        msg = f"{call}: {err.strerror or err}"
        raise SourceError(msg) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        msg = f"{call}: not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start})"
        raise SourceError(msg) from None


class _Functions:
    """The functions a template calls; each records what it reads in ``sources``."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def file(self, path: str, default: Any = _NO_DEFAULT) -> Any:
        call = f"file({path!r})"
        self.sources.add_file(path)
        if default is not _NO_DEFAULT and not os.path.exists(path):
            return default
        return _read_text(call, path)

    def files(self, path: str, default: Any = _NO_DEFAULT) -> Any:
        call = f"files({path!r})"
        self.sources.add_dir(path)
        if not os.path.isdir(path):
            if default is not _NO_DEFAULT:
                return default
            what = "not a directory" if os.path.exists(path) else "no such directory"
            msg = f"{call}: {what} (give default= to allow that)"
            raise SourceError(msg)
        try:
            names = sorted(os.listdir(path))
        except OSError as err:
            msg = f"{call}: {err.strerror or err}"
            raise SourceError(msg) from None
        found: dict[str, str] = {}
        for name in names:
            full = os.path.join(path, name)
            if name.startswith(".") or not os.path.isfile(full):
                continue
            found[name] = _read_text(f"{call}: key {name!r}", full)
        return found

    def json(self, path: str, default: Any = _NO_DEFAULT) -> Any:
        import json

        text = self.file(path, default)
        if text is default and default is not _NO_DEFAULT:
            return default
        try:
            return json.loads(text)
        except ValueError as err:
            msg = f"json({path!r}): invalid JSON: {err}"
            raise SourceError(msg) from None

    def yaml(self, path: str, default: Any = _NO_DEFAULT) -> Any:
        import yaml

        text = self.file(path, default)
        if text is default and default is not _NO_DEFAULT:
            return default
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            msg = f"yaml({path!r}): invalid YAML: {_one_line(str(err))}"
            raise SourceError(msg) from None


class _Environ(dict[str, str]):
    """``env``: a missing variable is undefined, so it fails unless the template defaults it."""

    def __init__(self, data: Mapping[str, str], undefined: Callable[..., Any]) -> None:
        super().__init__(data)
        self._undefined = undefined

    def _missing(self, name: str) -> Any:
        hint = f"environment variable {name!r} is not set (use env.{name} | default(...))"
        return self._undefined(hint=hint, obj=self, name=name)

    def __missing__(self, key: str) -> Any:
        return self._missing(key)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]


class _Loaded(set[str]):
    """The template files a render opened, as Jinja names them in tracebacks."""


def _environment(directory: str, sources: Sources, loaded: _Loaded) -> jinja2.Environment:
    import jinja2
    from jinja2.loaders import split_template_path
    from jinja2.sandbox import SandboxedEnvironment

    class RecordingLoader(jinja2.FileSystemLoader):
        """Loads from the template's directory and records every file it opens (or misses)."""

        def get_source(
            self, environment: jinja2.Environment, template: str
        ) -> tuple[str, str, Callable[[], bool]]:
            path = os.path.join(directory, *split_template_path(template))
            sources.add_file(path)
            try:
                found = super().get_source(environment, template)
            except jinja2.TemplateNotFound:
                msg = f"template {template!r}: no such file {path!r}"
                raise SourceError(msg) from None
            loaded.add(found[1])
            return found

    return SandboxedEnvironment(
        loader=RecordingLoader(directory, encoding="utf-8"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        cache_size=0,
        auto_reload=False,
    )


def _where(tb: TracebackType | None, templates: set[str]) -> str:
    """``FILE:LINE: `` of the innermost template frame of a traceback, or ``""``."""
    found = ""
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename in templates:
            found = f"{code.co_filename}:{tb.tb_lineno}: "
        tb = tb.tb_next
    return found


def _describe(err: Exception, templates: set[str]) -> str:
    import jinja2

    if isinstance(err, jinja2.TemplateSyntaxError):
        where = f"{err.filename or err.name}:{err.lineno}: " if err.lineno else ""
        return _one_line(f"{where}syntax error: {err.message}")
    if isinstance(err, SourceError | jinja2.UndefinedError | jinja2.exceptions.SecurityError):
        text = str(err)
    elif isinstance(err, OSError):
        text = err.strerror or str(err)
    else:
        text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return _one_line(_where(err.__traceback__, templates) + text)


def _split(source: str) -> tuple[str, str]:
    directory, name = os.path.split(source)
    return directory or ".", name


def render(source: str, variables: Mapping[str, Any], environ: Mapping[str, str]) -> Rendered:
    """Render the template file ``source``; raise :class:`RenderError` on any failure."""
    import jinja2

    sources, loaded = Sources(), _Loaded()
    directory, name = _split(source)
    environment = _environment(directory, sources, loaded)
    functions = _Functions(sources)
    context: dict[str, Any] = {
        **variables,
        "env": _Environ(environ, jinja2.StrictUndefined),
        "file": functions.file,
        "files": functions.files,
        "json": functions.json,
        "yaml": functions.yaml,
    }
    try:
        text = environment.get_template(name).render(context)
    except RecursionError:
        msg = f"{source}: recursion too deep (a macro or include that calls itself?)"
        raise RenderError(msg, sources) from None
    except Exception as err:  # the engine raises many kinds; each becomes one line
        raise RenderError(_describe(err, loaded), sources) from err
    return Rendered(text, sources)


def check_syntax(source: str) -> str | None:
    """One line describing the syntax error of ``source`` (not its includes), or None."""
    import jinja2

    directory, name = _split(source)
    try:
        _environment(directory, Sources(), _Loaded()).get_template(name)
    except (jinja2.TemplateSyntaxError, SourceError) as err:
        return _describe(err, set())
    return None
