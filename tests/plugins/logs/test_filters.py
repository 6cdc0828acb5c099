"""drop/keep rules and redaction, built from config tables as a run builds them."""

from __future__ import annotations

from typing import Any

import pytest
from sidecar_plugins.logs._filters import BUILTIN_RULES, RedactRule
from sidecar_plugins.logs._processors import ProcessorConfig, build_chain

from sidecar_runtime import ConfigError
from sidecar_runtime._config import decode_struct


def processor(table: dict[str, Any]) -> Any:
    config = decode_struct(table, ProcessorConfig, prefix=".plugins.logs.processors[1]")
    return build_chain([config])[0]


def rec(message: str = "m", **fields: Any) -> dict[str, Any]:
    return {"message": message, "time": 1.0, "stream": "stdout", **fields}


# drop / keep -----------------------------------------------------------------------------


def test_drop_by_regex_equality_in_and_exists() -> None:
    """Each kind of rule drops what it matches and passes the rest untouched."""
    by_regex = processor({"drop": {"matches": "^GET /healthz"}})
    assert by_regex(rec("GET /healthz 200")) is None
    assert by_regex(rec("GET /api 200")) == rec("GET /api 200")
    by_level = processor({"drop": {"field": "level", "in": ["debug", "trace"]}})
    assert by_level(rec(level="debug")) is None
    assert by_level(rec(level="info")) is not None
    assert by_level(rec()) is not None  # no field: no match
    by_flag = processor({"drop": {"field": "truncated", "exists": True}})
    assert by_flag(rec(truncated=True)) is None
    assert by_flag(rec()) is not None
    unless = processor({"drop": {"field": "trace_id", "exists": False}})
    assert unless(rec()) is None
    assert unless(rec(trace_id="abc")) is not None


def test_values_compare_as_json_text() -> None:
    """``equals = 200`` matches 200 and "200"; regexes see numbers and booleans as JSON text."""
    step = processor({"drop": {"field": "status", "equals": 200}})
    assert step(rec(status=200)) is None
    assert step(rec(status="200")) is None
    assert step(rec(status=2000)) is not None
    assert step(rec(status=True)) is not None
    flag = processor({"drop": {"field": "ok", "equals": True}})
    assert flag(rec(ok=True)) is None
    assert flag(rec(ok=1)) is not None
    server_errors = processor({"drop": {"field": "status", "matches": "^5\\d\\d$"}})
    assert server_errors(rec(status=503)) is None
    assert server_errors(rec(status=None)) is not None


def test_nested_fields_and_any_of_a_list() -> None:
    """``a.b`` reads nested maps (a literal ``"a.b"`` key first); a list drops on any rule."""
    step = processor(
        {
            "drop": [
                {"field": "kubernetes.namespace_name", "equals": "kube-system"},
                {"field": "http.path", "matches": "^/metrics"},
            ]
        }
    )
    assert step(rec(kubernetes={"namespace_name": "kube-system"})) is None
    assert step(rec(**{"http.path": "/metrics"})) is None
    assert step(rec(http={"path": "/metrics"})) is None
    assert step(rec(http={"path": "/orders"}, kubernetes="flat")) is not None


def test_keep_keeps_only_matches() -> None:
    """``keep`` drops every record that matches none of its rules."""
    step = processor({"keep": [{"field": "level", "in": ["warn", "error", "fatal"]}]})
    assert step(rec(level="error")) == rec(level="error")
    assert step(rec(level="info")) is None
    assert step(rec()) is None
    assert step.name == "keep"


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"drop": {"field": "a"}}, "exactly one of matches, equals, in or exists (found: none)"),
        ({"drop": {"matches": "x", "equals": "y"}}, "(found: matches, equals)"),
        ({"drop": {"matches": "(unclosed"}}, "matches: invalid regex '(unclosed'"),
        ({"drop": {"field": "", "exists": True}}, "field: must not be empty"),
        ({"keep": []}, "keep: expected a rule or a non-empty list of rules"),
        ({"drop": {"equal": 1}}, "unknown key"),
    ],
)
def test_bad_rules(table: dict[str, Any], expected: str) -> None:
    """Bad rules are one line naming the processor's table."""
    with pytest.raises(ConfigError) as caught:
        processor(table)
    assert "plugins.logs.processors[1]" in str(caught.value)
    assert expected in str(caught.value)


# redact ----------------------------------------------------------------------------------


def test_pattern_rules_replace_in_the_named_fields() -> None:
    """A pattern's matches become the replacement (groups allowed) in the given fields only."""
    step = processor(
        {
            "redact": [
                {"pattern": r"session=\w+", "replacement": "session=<hidden>"},
                {"pattern": r"(user )\w+", "replacement": r"\1***", "fields": ["who", "message"]},
                {"pattern": r"\d{3}-\d{2}-\d{4}"},
            ]
        }
    )
    out = step(rec("login user ann session=abc123 ssn 123-45-6789", who="user bob", other="user x"))
    assert out == rec("login user *** session=<hidden> ssn ***", who="user ***", other="user x")


def test_star_redacts_every_top_level_string() -> None:
    """``fields = ["*"]`` covers all string fields; numbers and maps are left alone."""
    step = processor({"redact": {"pattern": "secret", "fields": ["*"]}})
    out = step(rec("a secret", note="secret!", n=5, nested={"k": "secret"}))
    assert out == rec("a ***", note="***!", n=5, nested={"k": "secret"})


@pytest.mark.parametrize(
    ("rule", "text", "expected"),
    [
        ("credit_card", "paid with 4111 1111 1111 1111 ok", "paid with *** ok"),
        ("credit_card", "card 5500-0000-0000-0004.", "card ***."),
        ("credit_card", "order 4111111111111112 (bad checksum)", None),
        ("credit_card", "ts=1714564800123 id=12345678901234", None),
        (
            "bearer_token",
            "Authorization: Bearer eyJhbGciOi.abc-def_123=",
            "Authorization: Bearer ***",
        ),
        ("basic_auth", "authorization: Basic dXNlcjpwYXNzd29yZA==", "authorization: Basic ***"),
        ("password_kv", "login password=hunter2 user=ann", "login password=*** user=ann"),
        ("password_kv", '{"db_password": "s3cr3t", "x": 1}', '{"db_password": "***", "x": 1}'),
        ("password_kv", "api_key: abc123, token='t0k'", "api_key: ***, token='***'"),
        ("password_kv", "passwords rotated", None),
        ("url_password", "dsn=postgres://app:pw123@db:5432/x", "dsn=postgres://app:***@db:5432/x"),
        ("jwt", "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-_x end", "t=*** end"),
        ("aws_access_key", "key AKIAIOSFODNN7EXAMPLE used", "key *** used"),
        ("email", "mail ann.lee+x@mail.example.com now", "mail *** now"),
        ("ipv4", "from 192.168.1.20:443 and 10.0.0.1", "from ***:443 and ***"),
        ("ipv4", "version 1.2.3.4.5 and 300.1.1.1", None),
    ],
)
def test_builtin_rules(rule: str, text: str, expected: str | None) -> None:
    """Built-in rules hide what they are named for and leave look-alikes alone."""
    step = processor({"redact": rule})
    assert step(rec(text))["message"] == (text if expected is None else expected)


def test_builtin_rule_table_with_fields() -> None:
    """``{rule = ..., fields = [...]}`` applies a built-in rule to other fields."""
    step = processor({"redact": {"rule": "email", "fields": ["user"]}})
    assert step(rec("ann@example.com", user="bob@example.org")) == rec(
        "ann@example.com", user="***"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ssn", "unknown built-in redact rule 'ssn' (built-in: credit_card, bearer_token"),
        ({"pattern": "(a"}, "pattern: invalid regex '(a'"),
        ({"pattern": "a", "replacement": "\\2"}, "replacement: invalid '\\\\2' for this pattern"),
        ({"pattern": "a", "rule": "email"}, "exactly one of pattern (a regex) or rule"),
        ({"rule": "email", "replacement": "x"}, "only rules with a pattern take a replacement"),
        ({"pattern": "a", "fields": []}, "fields: expected field names or ['*']"),
        ({"pattern": "a", "fields": ["*", "x"]}, "'*' (every string field) stands alone"),
        ([], "redact: expected at least one rule"),
    ],
)
def test_bad_redact_config(value: Any, expected: str) -> None:
    """Bad redaction rules are one keyed line."""
    with pytest.raises(ConfigError) as caught:
        processor({"redact": value})
    message = str(caught.value)
    assert "plugins.logs.processors[1]" in message
    assert expected in message
    assert "\n" not in message


def test_reference_lists_every_builtin_rule() -> None:
    """The documented built-in rules (the reference page's text) are exactly the built-ins."""
    doc = RedactRule.__doc__ or ""
    assert all(f"``{name}``" in doc for name in BUILTIN_RULES)
    assert len(BUILTIN_RULES) == 9
