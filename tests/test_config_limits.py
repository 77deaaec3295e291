"""What a config file may cost to read: a size cap and caps on YAML aliases (no YAML bombs)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from daemon import Daemon, sample
from servers import HttpServer

from monitor.config import (
    MAX_ALIAS_NODES,
    MAX_ALIASES,
    MAX_CONFIG_BYTES,
    MAX_DEPTH,
    ConfigError,
    load_config,
    parse_config,
)

ROOT = Path(__file__).resolve().parent.parent

# A "billion laughs": nine levels of nine aliases, 9^9 (387 million) strings once expanded.
LAUGHS = "\n".join(
    [
        '{indent}a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{{indent}}{name}: &{name} [{','.join([f'*{prev}'] * 9)}]"
            for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)
BOMB_MESSAGE = (
    "aliases add more than 1,000,000 nodes; write the values out instead (is it a YAML bomb?)"
)

IN_NOTIFIER = f"""\
targets:
  - {{name: a, url: "http://127.0.0.1:9/"}}
notifiers:
  ops:
    type: webhook
    url: http://127.0.0.1:9/
    headers:
{LAUGHS.format(indent="      ")}
"""
IN_MAINTENANCE = f"""\
targets:
  - {{name: a, url: "http://127.0.0.1:9/"}}
maintenance:
  - targets: [a]
{LAUGHS.format(indent="    ")}
"""


def test_the_bomb_is_small() -> None:
    assert len(IN_NOTIFIER) < 700
    assert MAX_ALIAS_NODES < 9**9


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (IN_NOTIFIER, "14: notifiers.ops.headers.g[0]"),
        (IN_MAINTENANCE, "11: maintenance[0].g[0]"),
    ],
    ids=["notifier", "maintenance"],
)
def test_validate_rejects_a_billion_laughs(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "validate", str(path)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )
    assert done.returncode == 1
    assert done.stdout == f"{path}:{where}: {BOMB_MESSAGE}\n1 error in the configuration\n"
    assert done.stderr == ""


def test_too_many_aliases() -> None:
    uses = ", ".join(["*s"] * MAX_ALIASES)
    text = f"targets: [{{name: a, url: 'http://x/'}}]\nx: &s v\ny: [{uses}, *s]\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml", {})
    assert caught.value.errors == [
        f"c.yaml:3: y[{MAX_ALIASES}]: more than 100,000 aliases; "
        "write the values out instead (is it a YAML bomb?)"
    ]


def test_nesting_deeper_than_the_cap() -> None:
    # Python code recurses once per level (a RecursionError would escape as a traceback).
    deep = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    text = f"targets: [{{name: a, url: 'http://x/'}}]\nmaintenance: {deep}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml", {})
    path = "maintenance" + "[0]" * (MAX_DEPTH - 1)
    assert caught.value.errors == [f"c.yaml:2: {path}: nested more than 64 levels deep"]
    shallower = text.replace("[]", "", 1)  # one level less: only the shape is wrong
    with pytest.raises(ConfigError) as caught:
        parse_config(shallower, "c.yaml", {})
    assert "nested" not in str(caught.value)


def test_nesting_beyond_what_libyaml_takes() -> None:
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(ConfigError) as caught:
        parse_config(f"targets: {deep}\n", "c.yaml", {})
    assert caught.value.errors == [
        "c.yaml:1: invalid YAML: exceeded maximum nesting depth (column 1009)"
    ]


def test_at_most_100_errors_are_listed() -> None:
    items = "".join(f"  - {i}\n" for i in range(250))
    text = f"targets: [{{name: a, url: 'http://x/'}}]\nmaintenance:\n{items}"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml", {})
    errors = caught.value.errors
    assert len(errors) == 101
    assert errors[0] == "c.yaml:3: maintenance[0]: must be a mapping, got a number"
    assert errors[99] == "c.yaml:102: maintenance[99]: must be a mapping, got a number"
    assert errors[100] == "c.yaml: 150 more errors; fix these first"


def test_ordinary_anchors_still_work() -> None:
    # Options shared through anchors: one alias use per target is far below the caps.
    first = "  - {name: t0, url: 'http://x/0', headers: &h {X-Api-Key: k}, labels: &l {team: web}}"
    rest = [f"  - {{name: t{i}, url: 'http://x/{i}', headers: *h, labels: *l}}"
            for i in range(1, 5000)]
    config = parse_config("\n".join(["targets:", first, *rest]) + "\n", "c.yaml", {})
    assert len(config.targets) == 5000
    assert all(t.labels == (("team", "web"),) for t in config.targets)


def test_a_file_over_the_size_cap_is_not_read_whole() -> None:
    # /dev/zero never ends: only a bounded read can answer.
    with pytest.raises(ConfigError) as caught:
        load_config("/dev/zero")
    assert caught.value.errors == [
        "/dev/zero: the file is larger than 16 MiB, the limit for a config file; check that "
        "it is the right file, or split the targets over several monitors"
    ]


def test_a_file_at_the_size_cap_is_read(tmp_path: Path) -> None:
    head = "targets: [{name: a, url: 'http://x/'}]\n"
    path = tmp_path / "big.yaml"
    path.write_text(head + "#" * (MAX_CONFIG_BYTES - len(head) - 1) + "\n")
    assert path.stat().st_size == MAX_CONFIG_BYTES
    assert [t.name for t in load_config(path).targets] == ["a"]


async def test_reload_rejects_a_bomb_and_keeps_the_old_config(tmp_path: Path) -> None:
    async with HttpServer() as web:
        config = tmp_path / "monitor.yaml"
        good = f"""\
location: test-lab
store: {{path: monitor.db}}
defaults: {{interval: 1s, timeout: 500ms}}
targets:
  - {{name: a, url: "{web.url("/ok")}"}}
"""
        config.write_text(good)
        async with Daemon(config) as daemon:
            await daemon.wait_for_log(r"a UP from test-lab since")
            config.write_text(IN_NOTIFIER.replace("http://127.0.0.1:9/", web.url("/ok")))
            mark = len(daemon.lines)
            daemon.send(signal.SIGHUP)
            line = await daemon.wait_for_log(r"config reload rejected", after=mark)
            assert line.endswith(f"{config}:14: notifiers.ops.headers.g[0]: {BOMB_MESSAGE}")
            text = await daemon.metrics()  # the daemon answers: it was not blocked
            assert sample(text, "monitor_config_reload_success") == 0
            # The old config keeps running: its target is still probed and judged.
            mark = len(daemon.lines)
            web.status = 503
            await daemon.wait_for_log(r"a DOWN from test-lab since .*HTTP 503", after=mark)
