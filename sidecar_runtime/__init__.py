"""sidecar-run: supervise an unmodified app and run its sidecars in one process.

The public API for plugin authors and embedders. Everything else lives in private modules.
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._context import AppHandle as AppHandle
from ._context import Plugin as Plugin
from ._context import PluginContext as PluginContext
from ._context import PluginInfo as PluginInfo
from ._context import RuntimeStats as RuntimeStats
from ._convert import Address as Address
from ._convert import format_duration as format_duration
from ._convert import parse_address as parse_address
from ._convert import parse_duration as parse_duration
from ._convert import parse_signal as parse_signal
from ._errors import ConfigError as ConfigError
from ._errors import PluginError as PluginError
from ._errors import SidecarError as SidecarError
from ._errors import SpawnError as SpawnError
from ._events import AppExited as AppExited
from ._events import AppStarted as AppStarted
from ._events import Event as Event
from ._events import OutputLine as OutputLine
from ._events import ShutdownStarted as ShutdownStarted
from ._events import StateChanged as StateChanged
from ._events import Subscription as Subscription
from ._http import Request as Request
from ._http import Response as Response
from ._readiness import CheckResult as CheckResult
from ._readiness import Readiness as Readiness
from ._reaper import Child as Child
from ._restart import ExitStatus as ExitStatus
from ._state import AppState as AppState
from ._supervisor import AppStats as AppStats
from ._types import Duration as Duration
from ._types import Signal as Signal

__all__ = [
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
    "SidecarError",
    "Signal",
    "SpawnError",
    "StateChanged",
    "Subscription",
    "__version__",
    "format_duration",
    "parse_address",
    "parse_duration",
    "parse_signal",
]
