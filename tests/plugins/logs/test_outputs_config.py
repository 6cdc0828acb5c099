"""Output tables and ``--log-output`` specs: defaults, drivers per type, one-line keyed errors."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from sidecar_plugins.logs.outputs import (
    ElasticsearchConfig,
    FileConfig,
    FluentdForwardConfig,
    FluentdHttpConfig,
    HttpConfig,
    LokiConfig,
    OutputConfig,
    StderrConfig,
    StdoutConfig,
    make_output,
    parse_output_spec,
)
from sidecar_plugins.logs.outputs._elasticsearch import ElasticsearchOutput
from sidecar_plugins.logs.outputs._file import FileOutput
from sidecar_plugins.logs.outputs._fluentd import FluentdForwardOutput, FluentdHttpOutput
from sidecar_plugins.logs.outputs._http import HttpOutput
from sidecar_plugins.logs.outputs._loki import LokiOutput, label_name, push_url
from sidecar_plugins.logs.outputs._stdout import StreamOutput

from sidecar_runtime import ConfigError
from sidecar_runtime._config import decode_struct
from sidecar_runtime._types import enc_hook

MiB = 1024 * 1024


def decode(table: dict[str, Any]) -> Any:
    """Decode a table as the config loader does (durations, strictness, keyed errors)."""
    return decode_struct(table, OutputConfig, prefix=".plugins.logs.outputs.main")  # type: ignore[arg-type]


def error(table: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        decode(table)
    text = str(err.value)
    assert "\n" not in text
    return text


SPECS: list[tuple[str, dict[str, Any], type, type]] = [
    ("stdout", {"type": "stdout"}, StdoutConfig, StreamOutput),
    ("stderr", {"type": "stderr"}, StderrConfig, StreamOutput),
    (
        "file:/var/log/app.jsonl",
        {"type": "file", "path": "/var/log/app.jsonl"},
        FileConfig,
        FileOutput,
    ),
    (
        "https://logs.example.com/in?k=v",
        {"type": "http", "url": "https://logs.example.com/in?k=v"},
        HttpConfig,
        HttpOutput,
    ),
    ("loki+http://loki:3100", {"type": "loki", "url": "http://loki:3100"}, LokiConfig, LokiOutput),
    (
        "elasticsearch+https://es:9200",
        {"type": "elasticsearch", "url": "https://es:9200"},
        ElasticsearchConfig,
        ElasticsearchOutput,
    ),
    (
        "es+http://es:9200",
        {"type": "elasticsearch", "url": "http://es:9200"},
        ElasticsearchConfig,
        ElasticsearchOutput,
    ),
    (
        "fluentd+http://fluentd:9880/app.logs",
        {"type": "fluentd_http", "url": "http://fluentd:9880", "tag": "app.logs"},
        FluentdHttpConfig,
        FluentdHttpOutput,
    ),
    (
        "fluentd+tcp://fluentd:24224/app/logs",
        {"type": "fluentd_forward", "host": "fluentd", "port": 24224, "tag": "app.logs"},
        FluentdForwardConfig,
        FluentdForwardOutput,
    ),
    (
        "fluentd+tls://fluentd",
        {"type": "fluentd_forward", "host": "fluentd", "tls": True},
        FluentdForwardConfig,
        FluentdForwardOutput,
    ),
]


@pytest.mark.parametrize(("spec", "table", "config_type", "driver"), SPECS)
def test_specs_become_tables_configs_and_drivers(
    spec: str, table: dict[str, Any], config_type: type, driver: type
) -> None:
    """Each --log-output form yields its table, which decodes and builds the right driver."""
    assert parse_output_spec(spec) == table
    config: Any = decode(table)
    assert type(config).__name__ == config_type.__name__
    assert config.type == table["type"]
    assert isinstance(make_output("main", config, log=None), driver)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "unknown output"),
        ("syslog", "unknown output"),
        ("file:", "expected file:PATH"),
        ("file:/var/log/", "expected file:PATH"),
        ("kafka+tcp://k:9092", "unknown scheme 'kafka+tcp'"),
        ("loki+ftp://x", "unknown scheme 'loki+ftp'"),
        ("http://", "expected a URL like"),
        ("http://host:99999/x", "invalid URL"),
        ("loki+http://loki:3100?x=1", "query strings are not supported"),
        ("fluentd+tcp:///tag", "expected fluentd+tcp://HOST:PORT/TAG"),
        ("fluentd+tcp://h:port/tag", "--log-output 'fluentd+tcp://h:port/tag'"),
    ],
)
def test_bad_specs_are_one_line_errors(spec: str, message: str) -> None:
    """Anything else is a ValueError with one line naming the spec and what is wrong."""
    with pytest.raises(ValueError, match=message.replace("?", r"\?").replace("+", r"\+")) as err:
        parse_output_spec(spec)
    assert "\n" not in str(err.value)


def test_delivery_defaults_are_the_documented_ones() -> None:
    """Batching 1000 records / 1 MiB / 1 s, backoff 0.5 s to 30 s unlimited, 8 MiB + 256 MiB."""
    config = decode({"type": "file", "path": "/tmp/x"})
    assert (config.batch_max_records, config.batch_max_bytes, config.batch_timeout) == (
        1000,
        MiB,
        1.0,
    )
    assert (config.retry_initial, config.retry_max, config.max_retries) == (0.5, 30.0, None)
    assert (config.buffer_max_bytes, config.spool_max_bytes, config.timeout) == (
        8 * MiB,
        256 * MiB,
        10.0,
    )
    assert (config.max_bytes, config.max_files, config.fsync) == (100 * MiB, 5, False)
    durations = decode({"type": "stdout", "batch_timeout": "250ms", "retry_max": "1m"})
    assert (durations.batch_timeout, durations.retry_max) == (0.25, 60.0)
    loki = decode({"type": "loki", "url": "http://l:3100"})
    assert loki.labels == {"job": "sidecar-run"}
    forward = decode({"type": "fluentd_forward"})
    assert (forward.mode, forward.require_ack, forward.time_format) == (
        "packed",
        True,
        "event_time",
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"type": "kafka"}, "plugins.logs.outputs.main.type: Invalid value 'kafka'"),
        ({"type": "stdout", "colour": True}, "plugins.logs.outputs.main.colour: unknown key"),
        ({"type": "file"}, "missing required field `path`"),
        ({"type": "stdout", "batch_max_records": 0}, "batch_max_records"),
        ({"type": "stdout", "retry_initial": "0s"}, "retry_initial: must be more than 0"),
        ({"type": "stdout", "retry_initial": "2s", "retry_max": "1s"}, "retry_max: must be >="),
        ({"type": "stdout", "timeout": "0s"}, "timeout: must be more than 0"),
        ({"type": "stdout", "max_retries": -1}, "max_retries"),
        ({"type": "stdout", "batch_timeout": "soon"}, "batch_timeout"),
        ({"type": "http", "url": "ftp://x"}, "url: expected a URL like"),
        ({"type": "http", "url": "http://x", "format": "xml"}, "format"),
        ({"type": "http", "url": "http://x", "headers": {"a b": "c"}}, "headers: invalid header"),
        ({"type": "http", "url": "http://x", "password": "p"}, "password: needs username"),
        (
            {"type": "http", "url": "http://x", "username": "u", "bearer_token": "t"},
            "bearer_token: use either",
        ),
        ({"type": "http", "url": "http://x", "key_file": "k.pem"}, "key_file: needs cert_file"),
        ({"type": "loki", "url": "http://l", "labels": {"bad-name": "x"}}, "invalid Loki label"),
        ({"type": "loki", "url": "http://l", "labels": {}}, "Loki needs at least one label"),
        ({"type": "elasticsearch", "url": "http://e", "index": "Logs-%Y"}, "index: Elasticsearch"),
        ({"type": "elasticsearch", "url": "http://e", "index": "_x"}, "do not start with"),
        ({"type": "elasticsearch", "url": "http://e", "index": "a b"}, "index:"),
        ({"type": "fluentd_http", "url": "http://f", "tag": "a b"}, "tag: use letters"),
        ({"type": "fluentd_forward", "port": 0}, "port"),
        ({"type": "fluentd_forward", "host": "a/b"}, "host: expected a host name"),
        ({"type": "fluentd_forward", "ca_file": "ca.pem"}, "tls: ca_file"),
        ({"type": "fluentd_forward", "username": "u"}, "needs shared_key"),
    ],
)
def test_bad_tables_name_the_key(table: dict[str, Any], message: str) -> None:
    """Config errors are one line, name the key and what is expected."""
    assert message in error(table)


def test_configs_are_frozen_and_re_encodable() -> None:
    """Decoded configs are immutable and encode back to their tables."""
    config = decode({"type": "loki", "url": "http://l:3100", "label_keys": ["stream"]})
    with pytest.raises(AttributeError):
        config.url = "http://other"
    encoded = msgspec.to_builtins(config, enc_hook=enc_hook)
    assert encoded["type"] == "loki"
    assert encoded["label_keys"] == ["stream"]
    assert encoded["timeout"] == "10s"


def test_loki_url_and_label_names() -> None:
    """The push path is added to a bare URL; record fields become Loki-safe label names."""
    assert push_url("http://loki:3100") == "http://loki:3100/loki/api/v1/push"
    assert push_url("http://loki:3100/") == "http://loki:3100/loki/api/v1/push"
    assert push_url("https://gw/loki/api/v1/push") == "https://gw/loki/api/v1/push"
    assert label_name("kubernetes.pod-name") == "kubernetes_pod_name"
    assert label_name("1st") == "_1st"
