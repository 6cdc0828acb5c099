"""Pure converters: durations, signals and listen addresses, with messages that quote the value."""

from __future__ import annotations

import math
import signal

import pytest

from sidecar_runtime import Address, Duration, Signal, parse_address, parse_duration, parse_signal
from sidecar_runtime._convert import format_duration, signal_name
from sidecar_runtime._types import dec_hook, enc_hook


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("1h2m3s", 3723.0),
        ("250us", 0.00025),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("1.5", 1.5),
        ("0", 0.0),
        (" 10s ", 10.0),
        (3, 3.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse_duration_accepts_units_and_numbers(text: str | float, seconds: float) -> None:
    """Durations with units, compound durations and bare numbers become seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("10 s", "invalid duration '10 s'"),
        ("1m 30s", "invalid duration '1m 30s'"),
        ("5x", "invalid duration '5x'"),
        ("s", "invalid duration 's'"),
        ("", "invalid duration ''"),
        ("ten seconds", "invalid duration 'ten seconds'"),
        ("-1", "must not be negative"),
        (-3, "must not be negative"),
        ("inf", "must be finite"),
        ("nan", "must be finite"),
        (math.inf, "must be finite"),
        ("1e400", "must be finite"),
        (True, "got True"),
        ([1], "got [1]"),
        (None, "got None"),
    ],
)
def test_parse_duration_rejects_bad_values_naming_them(value: object, fragment: str) -> None:
    """Invalid durations raise ValueError whose message quotes the value."""
    with pytest.raises(ValueError, match="duration") as err:
        parse_duration(value)
    assert fragment in str(err.value)


def test_parse_duration_huge_integer_is_a_value_error() -> None:
    """An integer too large for a float is rejected with ValueError like other bad durations."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(10**400)


@pytest.mark.parametrize("seconds", [0.0, 0.001, 0.25, 0.5, 1.0, 1.5, 10.0, 90.0, 3600.0])
def test_format_duration_round_trips(seconds: float) -> None:
    """format_duration renders text that parse_duration reads back to the same seconds."""
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_format_duration_uses_ms_below_one_second() -> None:
    """Sub-second durations render in milliseconds, others in seconds."""
    assert format_duration(0.25) == "250ms"
    assert format_duration(1.5) == "1.5s"
    assert format_duration(0) == "0s"
    assert format_duration(90) == "90s"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("TERM", signal.SIGTERM),
        ("SIGTERM", signal.SIGTERM),
        ("sigterm", signal.SIGTERM),
        ("hup", signal.SIGHUP),
        (" usr1 ", signal.SIGUSR1),
        ("15", signal.SIGTERM),
        (9, signal.SIGKILL),
        ("KILL", signal.SIGKILL),
    ],
)
def test_parse_signal_accepts_names_and_numbers(value: str | int, expected: signal.Signals) -> None:
    """Signals are read by name (any case, with or without SIG) or by number."""
    assert parse_signal(value) is expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("SIGFOO", "'SIGFOO' is not a valid signal name"),
        ("FOO", "'FOO' is not a valid signal name"),
        ("", "'' is not a valid signal name"),
        ("SIG", "'SIG' is not a valid signal name"),
        ("99", "99 is not a valid signal number"),
        (0, "0 is not a valid signal number"),
        (-1, "-1 is not a valid signal number"),
        (True, "True"),
        (1.5, "1.5"),
        (None, "None"),
    ],
)
def test_parse_signal_rejects_bad_values_naming_them(value: object, fragment: str) -> None:
    """Unknown signal names and numbers raise ValueError quoting the value."""
    with pytest.raises(ValueError, match="signal") as err:
        parse_signal(value)
    assert fragment in str(err.value)


def test_signal_name_strips_prefix_and_falls_back_to_number() -> None:
    """signal_name gives TERM for 15 and the number for signals without a name."""
    assert signal_name(15) == "TERM"
    assert signal_name(999) == "999"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9901", Address("tcp", host="127.0.0.1", port=9901)),
        ("localhost:0", Address("tcp", host="localhost", port=0)),
        (":9901", Address("tcp", host="0.0.0.0", port=9901)),
        ("[::1]:8080", Address("tcp", host="::1", port=8080)),
        ("unix:/run/a.sock", Address("unix", path="/run/a.sock")),
        ("/run/a.sock", Address("unix", path="/run/a.sock")),
    ],
)
def test_parse_address_accepts_tcp_and_unix(text: str, expected: Address) -> None:
    """TCP host:port (IPv6 in brackets, empty host = all) and unix paths parse."""
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("", "expected 'HOST:PORT'"),
        ("nope", "expected 'HOST:PORT'"),
        ("unix:", "needs a socket path"),
        ("::1:80", "brackets"),
        ("host:99999", "0..65535"),
        ("host:-1", "0..65535"),
        ("host:http", "0..65535"),
        ("[::1]:", "0..65535"),
    ],
)
def test_parse_address_rejects_bad_values_naming_them(text: str, hint: str) -> None:
    """Invalid addresses raise ValueError quoting the whole value, with a hint."""
    with pytest.raises(ValueError, match="invalid address") as err:
        parse_address(text)
    assert repr(text) in str(err.value)
    assert hint in str(err.value)


def test_parse_address_unicode_digit_port_names_the_value() -> None:
    """A port of non-ASCII digits is rejected with the usual message quoting the address."""
    with pytest.raises(ValueError, match=r"invalid address 'h:²'"):
        parse_address("h:²")


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (Address("tcp", host="127.0.0.1", port=1), "127.0.0.1:1"),
        (Address("tcp", host="::1", port=2), "[::1]:2"),
        (Address("unix", path="/a.sock"), "unix:/a.sock"),
    ],
)
def test_address_str_round_trips(address: Address, text: str) -> None:
    """str(Address) is the text parse_address reads back."""
    assert str(address) == text
    assert parse_address(text) == address


def test_duration_and_signal_types_decode_and_encode() -> None:
    """The msgspec hooks turn text into Duration/Signal and back into what a person writes."""
    duration = dec_hook(Duration, "1m30s")
    sig = dec_hook(Signal, "hup")
    assert isinstance(duration, Duration)
    assert duration == 90.0
    assert isinstance(sig, Signal)
    assert sig == int(signal.SIGHUP)
    assert sig.name == "HUP"
    assert sig.as_signals() is signal.SIGHUP
    assert enc_hook(duration) == "90s"
    assert enc_hook(Duration(0.5)) == "500ms"
    assert enc_hook(sig) == "HUP"
    assert repr(duration) == "Duration('90s')"
    assert repr(sig) == "Signal('HUP')"


def test_dec_hook_rejects_other_types() -> None:
    """The hooks refuse types they do not know with NotImplementedError."""
    with pytest.raises(NotImplementedError):
        dec_hook(complex, 1)
    with pytest.raises(NotImplementedError):
        enc_hook(object())
