"""One error hierarchy for sidecar-run.

Every error the runtime reports to a person derives from :class:`SidecarError`. Its message is one
line: what is wrong, where (a file, a config key path, a flag), and a hint where one helps.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "PluginError",
    "SidecarError",
    "SpawnError",
]


class SidecarError(Exception):
    """Root of every error sidecar-run raises on purpose.

    ``exit_code`` is the status the command exits with when the error ends the run.
    """

    exit_code: int = 1


class ConfigError(SidecarError):
    """Raised by the config loader or the CLI when a file, key, variable or flag is invalid.

    Nothing has been started when it is raised; the command exits 2.
    """

    exit_code = 2


class SpawnError(SidecarError):
    """Raised by the spawn API when a command cannot be executed.

    ``exit_code`` follows the shell's convention: 127 when the command is not found, 126 when it
    is found but cannot be executed.
    """

    def __init__(self, message: str, *, exit_code: int, errno: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.errno = errno


class PluginError(SidecarError):
    """Raised when a plugin cannot be found, configured or started during start-up."""

    exit_code = 2
