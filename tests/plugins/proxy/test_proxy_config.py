"""The ``[plugins.proxy]`` table and the ``--proxy``/``--tls-*`` flags: what is accepted, what
is refused with which message, and what the flags turn into."""

from __future__ import annotations

from typing import Any

import pytest
from sidecar_plugins.proxy import ProxyConfig
from sidecar_plugins.proxy._router import Route

from sidecar_runtime import ConfigError
from sidecar_runtime._cli import parse_run_args
from sidecar_runtime._config import decode_struct, load_config

BASE: dict[str, Any] = {
    "listeners": [{"address": "127.0.0.1:8443"}],
    "upstreams": {"app": {"endpoints": ["127.0.0.1:8080"]}},
}


def decode(**extra: Any) -> ProxyConfig:
    return decode_struct({**BASE, **extra}, ProxyConfig, prefix=".plugins.proxy")


def test_defaults_follow_the_issue() -> None:
    """Upstream idle 4 s (below app servers' 5 s), hold 10 s, drain 5 s, 64 KiB heads, slowloris
    10 s; no routes means everything goes to ``app``."""
    config = decode()
    assert config.upstreams["app"].idle_timeout == 4.0
    assert (config.hold_timeout, config.drain_timeout) == (10.0, 5.0)
    assert config.limits.max_header_bytes == 65536
    assert config.limits.header_read_timeout == 10.0
    assert [r.upstream for r in config.effective_routes(config.listeners[0])] == ["app"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"routes": [{"upstream": "app"}, {"upstream": "db"}]},
            "plugins.proxy: routes[1].upstream: unknown upstream 'db' (upstreams: app)",
        ),
        ({"upstreams": {}}, "routes: none given, and no upstream named 'app'"),
        ({"listeners": []}, "listeners: at least one listener is needed"),
        (
            {"listeners": [{"address": "nope"}]},
            "plugins.proxy.listeners[0]: address: invalid address 'nope'",
        ),
        (
            {"upstreams": {"app": {"endpoints": ["127.0.0.1:0"]}}},
            "endpoints: invalid endpoint '127.0.0.1:0'",
        ),
        (
            {"routes": [{"match": {"regex": "("}}]},
            "plugins.proxy.routes[0].match: regex: invalid regular expression '('",
        ),
        (
            {"routes": [{"match": {"prefix": "/a", "path": "/b"}}]},
            "use only one of prefix, path or regex",
        ),
        (
            {"routes": [{"rewrite_prefix": "/v2"}]},
            "rewrite_prefix: needs a match.prefix to replace",
        ),
        (
            {"routes": [{"request_headers_add": {"X-A": "1\r\nX-B: 2"}}]},
            "request_headers_add: header 'X-A' has a line break",
        ),
        ({"limits": {"max_header_bytes": 10}}, "plugins.proxy.limits.max_header_bytes"),
        ({"access_log": {"sample": 2}}, "sample: must be within 0..1, got 2.0"),
        ({"timeouts": {"connect": 0}}, "plugins.proxy.timeouts: connect: must be > 0"),
        ({"bogus": 1}, "plugins.proxy.bogus: unknown key"),
    ],
)
def test_bad_tables_name_their_key(extra: dict[str, Any], message: str) -> None:
    """Every bad value is one ConfigError line naming the key path."""
    with pytest.raises(ConfigError) as info:
        decode(**extra)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_route_matching_rules() -> None:
    """Prefix is by characters (as Envoy), rewrite replaces the prefix without doubling '/',
    host matches ignore the port, ``*.`` matches subdomains."""
    config = decode(
        routes=[
            {"match": {"prefix": "/api/", "host": "*.example.com"}, "rewrite_prefix": "/"},
        ]
    )
    cluster: Any = object()
    route = Route(config.routes[0], 0, cluster, default_retry=config.retry, default_timeout=15)
    assert route.rewrite_path("/api/users") == "/users"
    assert route.name == "route0"


def test_proxy_flags_become_listeners_and_upstreams() -> None:
    """``--proxy`` makes one listener per flag and one upstream per target; loopback and unix
    targets are the app (held while unready), an https target originates TLS."""
    _, overrides = parse_run_args(
        [
            "--proxy",
            "0.0.0.0:8443=http://127.0.0.1:8080",
            "--proxy",
            "unix:/run/app.sock=http://127.0.0.1:8080",
            "--proxy",
            "127.0.0.1:9000=https://api.example.com:443",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
            "--",
            "app",
        ]
    )
    assert overrides["plugins.proxy.upstreams.app"] == {
        "endpoints": ["127.0.0.1:8080"],
        "app": True,
    }
    assert overrides["plugins.proxy.upstreams.app2"] == {
        "endpoints": ["api.example.com:443"],
        "app": False,
        "tls": {},
    }
    listeners = overrides["plugins.proxy.listeners"]
    assert [x["address"] for x in listeners] == [
        "0.0.0.0:8443",
        "unix:/run/app.sock",
        "127.0.0.1:9000",
    ]
    assert [x["routes"] for x in listeners] == [
        [{"upstream": "app"}],
        [{"upstream": "app"}],
        [{"upstream": "app2"}],
    ]
    assert listeners[0]["tls"] == {"cert": "c.pem", "key": "k.pem", "client_ca": "ca.pem"}
    config = load_config(overrides=overrides, environ={})
    decoded = decode_struct(config.plugins["proxy"], ProxyConfig, prefix=".plugins.proxy")
    assert decoded.listeners[0].tls is not None
    assert decoded.listeners[0].tls.client_ca == "ca.pem"


def test_no_plugins_drops_the_proxy() -> None:
    """--no-plugins wins over --proxy, as over every plugin flag."""
    _, overrides = parse_run_args(
        ["--no-plugins", "--proxy", "127.0.0.1:1=http://127.0.0.1:2", "--", "app"]
    )
    assert overrides["plugins"] == {}
    assert not any(key.startswith("plugins.proxy") for key in overrides)
