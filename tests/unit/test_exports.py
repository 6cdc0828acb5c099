"""The public API surface: exactly the documented names, all importable, nothing private."""

from __future__ import annotations

import importlib
import types
from importlib.metadata import version

import sidecar_runtime
import sidecar_runtime.testing

EXPECTED_PUBLIC = {
    "Address",
    "AppExited",
    "AppHandle",
    "AppStarted",
    "AppState",
    "AppStats",
    "CheckResult",
    "Child",
    "ConfigError",
    "Duration",
    "Event",
    "ExitStatus",
    "OutputLine",
    "Plugin",
    "PluginContext",
    "PluginError",
    "PluginInfo",
    "Readiness",
    "Request",
    "Response",
    "RuntimeStats",
    "ShutdownStarted",
    "Signal",
    "SidecarError",
    "SpawnError",
    "StateChanged",
    "Subscription",
    "__version__",
    "parse_address",
    "format_duration",
    "parse_duration",
    "parse_signal",
}


def test_all_is_the_expected_public_surface() -> None:
    """sidecar_runtime.__all__ lists exactly the public names (the parse_* helpers included)."""
    assert set(sidecar_runtime.__all__) == EXPECTED_PUBLIC


def test_all_has_no_duplicates_and_only_public_names() -> None:
    """__all__ has no duplicates and every name in it belongs to the public surface."""
    assert len(sidecar_runtime.__all__) == len(set(sidecar_runtime.__all__))
    assert set(sidecar_runtime.__all__) <= EXPECTED_PUBLIC
    missing = EXPECTED_PUBLIC - set(sidecar_runtime.__all__)
    assert missing <= {"parse_address", "parse_duration", "parse_signal"}


def test_every_public_name_is_importable() -> None:
    """Each public name resolves, and a star import provides everything in __all__."""
    module = importlib.import_module("sidecar_runtime")
    for name in EXPECTED_PUBLIC:
        assert getattr(module, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from sidecar_runtime import *", namespace)  # noqa: S102 - the star import is the test
    assert set(sidecar_runtime.__all__) - {"__version__"} <= set(namespace)


def test_no_private_module_leaks() -> None:
    """No private name or submodule is public; public objects come from private modules only."""
    for name in sidecar_runtime.__all__:
        assert not name.startswith("_") or name == "__version__", name
        value = getattr(sidecar_runtime, name)
        assert not isinstance(value, types.ModuleType), name
    public_attrs = {n for n in vars(sidecar_runtime) if not n.startswith("_")}
    leaked_modules = {
        n for n in public_attrs if isinstance(getattr(sidecar_runtime, n), types.ModuleType)
    }
    assert leaked_modules <= {"testing"}, leaked_modules
    assert public_attrs - {"testing"} <= EXPECTED_PUBLIC | {"annotations"}


def test_version_matches_the_distribution() -> None:
    """__version__ is the installed sidecar-run version."""
    assert sidecar_runtime.__version__ == version("sidecar-run")


def test_error_hierarchy() -> None:
    """Every public error derives from SidecarError; config and plugin errors exit 2."""
    for error in (sidecar_runtime.ConfigError, sidecar_runtime.PluginError):
        assert issubclass(error, sidecar_runtime.SidecarError)
        assert error.exit_code == 2
    assert issubclass(sidecar_runtime.SpawnError, sidecar_runtime.SidecarError)
    assert sidecar_runtime.SidecarError.exit_code == 1


def test_testing_module_exports() -> None:
    """sidecar_runtime.testing exports plugin_harness, python_app and PluginHarness."""
    assert set(sidecar_runtime.testing.__all__) == {"PluginHarness", "plugin_harness", "python_app"}
    for name in sidecar_runtime.testing.__all__:
        assert callable(getattr(sidecar_runtime.testing, name))
    argv = sidecar_runtime.testing.python_app("  print(1)\n")
    assert argv[1:] == ["-c", "print(1)\n"]
