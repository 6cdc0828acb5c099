"""The logs sidecar's outputs: one driver per ``type``, built by :func:`make_output`.

=====================  ======================================================================
``stdout``/``stderr``  JSON lines on sidecar-run's own streams (``_stdout``)
``file``               JSON lines, rotated by size (``_file``)
``http``               any endpoint: JSON array or NDJSON per batch (``_http``)
``loki``               Grafana Loki push API (``_loki``)
``elasticsearch``      Elasticsearch/OpenSearch bulk API (``_elasticsearch``)
``fluentd_http``       Fluentd ``in_http`` (``_fluentd``)
``fluentd_forward``    Fluentd forward protocol over TCP/TLS (``_fluentd``)
=====================  ======================================================================

Config tables live in ``_config``, ``--log-output`` specs in ``_spec``, the shared HTTP client
and status policy in ``_transport``, the driver protocol and send errors in ``_base``.
Batching, retries and the spool are the delivery's job (``.._delivery``), not the drivers'.
"""

from __future__ import annotations

from typing import Any, assert_never

from ._base import Output, Rejected, RetryLater, error_kind
from ._config import (
    DeliveryFields,
    ElasticsearchConfig,
    FileConfig,
    FluentdForwardConfig,
    FluentdHttpConfig,
    HttpConfig,
    HttpFields,
    LokiConfig,
    OutputConfig,
    StderrConfig,
    StdoutConfig,
)
from ._spec import parse_output_spec

__all__ = [
    "DeliveryFields",
    "ElasticsearchConfig",
    "FileConfig",
    "FluentdForwardConfig",
    "FluentdHttpConfig",
    "HttpConfig",
    "HttpFields",
    "LokiConfig",
    "Output",
    "OutputConfig",
    "Rejected",
    "RetryLater",
    "StderrConfig",
    "StdoutConfig",
    "error_kind",
    "make_output",
    "parse_output_spec",
]


def make_output(name: str, config: OutputConfig, *, log: Any) -> Output:
    """The driver for ``config``'s type (HTTP drivers import aiohttp only when built)."""
    if isinstance(config, StdoutConfig | StderrConfig):
        from ._stdout import StreamOutput

        return StreamOutput(name, config, log=log)
    if isinstance(config, FileConfig):
        from ._file import FileOutput

        return FileOutput(name, config, log=log)
    if isinstance(config, HttpConfig):
        from ._http import HttpOutput

        return HttpOutput(name, config, log=log)
    if isinstance(config, LokiConfig):
        from ._loki import LokiOutput

        return LokiOutput(name, config, log=log)
    if isinstance(config, ElasticsearchConfig):
        from ._elasticsearch import ElasticsearchOutput

        return ElasticsearchOutput(name, config, log=log)
    if isinstance(config, FluentdHttpConfig):
        from ._fluentd import FluentdHttpOutput

        return FluentdHttpOutput(name, config, log=log)
    if isinstance(config, FluentdForwardConfig):
        from ._fluentd import FluentdForwardOutput

        return FluentdForwardOutput(name, config, log=log)
    assert_never(config)
