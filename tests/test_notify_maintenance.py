"""Maintenance windows: parsing with exact errors, and matching in time zones."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from monitor.config import ConfigError, load_config
from monitor.notify.maintenance import Window, in_maintenance, parse_window


def parse_windows(raw: list[object]) -> list[Window]:
    """The windows of a `maintenance:` list, each as the config parser builds it."""
    return [parse_window(item, f"maintenance[{i}]") for i, item in enumerate(raw)]


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_one_off_window_for_some_targets():
    windows = parse_windows(
        [
            {
                "targets": ["rt", "duma"],
                "start": "2026-03-01T02:00:00Z",
                "end": "2026-03-01T04:00:00Z",
            }
        ]
    )
    assert windows == [
        Window(frozenset({"rt", "duma"}), start=ts(2026, 3, 1, 2), end=ts(2026, 3, 1, 4))
    ]
    assert in_maintenance(windows, "rt", ts(2026, 3, 1, 2))
    assert in_maintenance(windows, "duma", ts(2026, 3, 1, 3, 59, 59))
    assert not in_maintenance(windows, "rt", ts(2026, 3, 1, 4))  # the end is exclusive
    assert not in_maintenance(windows, "rt", ts(2026, 3, 1, 1, 59, 59))
    assert not in_maintenance(windows, "kremlin", ts(2026, 3, 1, 3))


def test_one_off_times_from_yaml_datetimes_and_local_times():
    windows = parse_windows(
        [
            {
                "start": datetime(2026, 3, 1, 2, tzinfo=UTC),
                "end": datetime(2026, 3, 1, 3, tzinfo=UTC),
            },
            {
                "start": "2026-03-02T05:00:00",
                "end": "2026-03-02T06:00",
                "timezone": "Europe/Moscow",
            },
        ]
    )
    assert in_maintenance(windows, "any", ts(2026, 3, 1, 2, 30))  # omitted targets: all
    assert (windows[1].start, windows[1].end) == (ts(2026, 3, 2, 2), ts(2026, 3, 2, 3))


def test_recurring_window_in_its_time_zone():
    # Sundays 03:00-05:00 Moscow time (UTC+3 all year): 00:00-02:00 UTC.
    windows = parse_windows(
        [{"cron": "0 3 * * SUN", "duration": "2h", "timezone": "Europe/Moscow"}]
    )
    assert windows[0].duration == 7200.0
    assert in_maintenance(windows, "rt", ts(2026, 3, 1, 0, 0))  # 2026-03-01 is a Sunday
    assert in_maintenance(windows, "rt", ts(2026, 3, 1, 1, 59, 59))
    assert not in_maintenance(windows, "rt", ts(2026, 3, 1, 2, 0))
    assert not in_maintenance(windows, "rt", ts(2026, 2, 28, 23, 59, 59))
    assert not in_maintenance(windows, "rt", ts(2026, 3, 2, 0, 30))  # Monday
    assert in_maintenance(windows, "rt", ts(2026, 3, 8, 1))  # next Sunday


def test_recurring_window_follows_daylight_saving_time():
    # New York moves from UTC-5 to UTC-4 on 2026-03-08: 03:00 local is 08:00, then 07:00 UTC.
    windows = parse_windows(
        [{"cron": "0 3 * * *", "duration": "30m", "timezone": "America/New_York"}]
    )
    assert in_maintenance(windows, "rt", ts(2026, 3, 7, 8, 10))
    assert not in_maintenance(windows, "rt", ts(2026, 3, 7, 7, 10))
    assert in_maintenance(windows, "rt", ts(2026, 3, 9, 7, 10))
    assert not in_maintenance(windows, "rt", ts(2026, 3, 9, 8, 10))


def test_recurring_window_longer_than_its_period_and_default_utc():
    windows = parse_windows([{"targets": "rt", "cron": "0 * * * *", "duration": 5400}])
    assert in_maintenance(windows, "rt", ts(2026, 3, 1, 12, 59))
    assert not in_maintenance(windows, "duma", ts(2026, 3, 1, 12, 59))


def test_no_windows():
    assert not in_maintenance([], "rt", 0.0)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (["x"], "maintenance[0]: must be a mapping"),
        (
            [{"cron": "0 3 * * SUN", "duration": "2h", "every": 1}],
            "maintenance[0].every: unknown setting",
        ),
        (
            [{"cron": "0 3 * * FUNDAY", "duration": "2h"}],
            "maintenance[0].cron: not a valid cron expression: '0 3 * * FUNDAY'",
        ),
        ([{"cron": "0 3 * * SUN"}], "maintenance[0].duration: required"),
        (
            [{"cron": "0 3 * * SUN", "duration": "soon"}],
            "maintenance[0].duration: must be a duration like 10s",
        ),
        (
            [{"cron": "0 3 * * SUN", "duration": 0}],
            "maintenance[0].duration: must be more than zero",
        ),
        ([{"duration": "2h"}], "maintenance[0].cron: required"),
        (
            [{"cron": "0 3 * * SUN", "duration": "2h", "timezone": "Mars/Olympus"}],
            "maintenance[0].timezone: unknown time zone 'Mars/Olympus'",
        ),
        ([{"start": "2026-03-01T02:00:00Z"}], "maintenance[0].end: required"),
        (
            [{"start": "yesterday", "end": "2026-03-01T02:00:00Z"}],
            "maintenance[0].start: not an ISO 8601 time such as 2026-03-01T02:00:00Z: 'yesterday'",
        ),
        (
            [{"start": "2026-03-01T04:00:00Z", "end": "2026-03-01T02:00:00Z"}],
            "maintenance[0].end: must be after start",
        ),
        (
            [{"start": "2026-03-01T02:00:00Z", "end": "2026-03-01T04:00:00Z", "cron": "0 3 * * *"}],
            "maintenance[0]: use either start and end, or cron and duration",
        ),
        ([{"targets": ["rt"]}], "maintenance[0]: needs start and end, or cron and duration"),
        (
            [{"targets": [], "cron": "0 3 * * *", "duration": "1h"}],
            "maintenance[0].targets: must be a non-empty list of target names",
        ),
        (
            [{}, {"targets": ["rt", 5], "cron": "0 3 * * *", "duration": "1h"}],
            "maintenance[0]: needs start and end, or cron and duration",
        ),
        (
            [
                {"cron": "* * * * *", "duration": "1m"},
                {"targets": ["rt", 5], "cron": "0 3 * * *", "duration": "1h"},
            ],
            "maintenance[1].targets[1]: must be a target name",
        ),
        (
            [{"cron": "0 3 30 2 *", "duration": "1h"}],
            "maintenance[0].cron: never fires: '0 3 30 2 *'",
        ),
    ],
)
def test_invalid_windows(raw, message):
    with pytest.raises(ValueError) as caught:
        parse_windows(raw)
    assert str(caught.value) == message


def test_a_leap_day_window_is_valid():
    (window,) = parse_windows([{"cron": "0 0 29 2 *", "duration": "1d"}])
    assert window.covers(ts(2028, 2, 29, 12))
    assert not window.covers(ts(2027, 3, 1, 12))


def test_window_errors_name_their_line(tmp_path):
    path = tmp_path / "monitor.yaml"
    path.write_text(
        "targets: [{name: rt, url: 'http://127.0.0.1:9/'}]\n"
        "maintenance:\n"
        "  - {cron: '0 3 * * SUN', duration: 1h}\n"
        "  - cron: '0 3 30 2 *'\n"
        "    duration: 1h\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.errors == [f"{path}:4: maintenance[1].cron: never fires: '0 3 30 2 *'"]
