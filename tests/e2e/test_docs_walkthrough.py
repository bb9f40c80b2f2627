"""The docs run as written: docs/api.md's shell blocks in one bash session against a fresh
`punchcard serve --demo`, each answer held to the one the page shows, and the story in
docs/scenarios.md passing with the lines the page shows. A figure the code changes fails here."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from .conftest import PUNCHCARD, free_port, stop
from .doc_answers import Segment, blocks, differences, parse, segments, text_matches

ROOT = Path(__file__).resolve().parents[2]
API_DOC = ROOT / "docs" / "api.md"
SCENARIOS_DOC = ROOT / "docs" / "scenarios.md"
STORY = Path("examples/scenarios/lunch.yaml")  # where docs/scenarios.md saves its story
END = "@@end of segment@@"
SHELL_ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


@dataclass(frozen=True)
class DemoServer:
    port: int
    banner: str  # what it printed on stdout


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[DemoServer]:
    """A fresh `punchcard serve --demo` on a new SQLite file and a free port, its stdout kept."""
    port = free_port()
    out = tmp_path / "serve.out"
    database = f"sqlite:///{tmp_path}/walkthrough.sqlite3"
    command = [PUNCHCARD, "serve", "--demo", "--host", "127.0.0.1", "--port", str(port)]
    with out.open("wb") as stdout, (tmp_path / "serve.err").open("wb") as stderr:
        process = subprocess.Popen(
            [*command, "--database", database, "--log-level", "warning"],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=stdout,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 60
        while not _ready(port):
            assert process.poll() is None, (tmp_path / "serve.err").read_text()
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.1)
        yield DemoServer(port, out.read_text())
    finally:
        stop(process)


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _setup(segment: Segment, url: str, key: str) -> Segment:
    """The page's first block with the URL and sandbox key this server printed in its place."""
    code, urls = re.subn(r"^URL=\S+", f"URL={url}", segment.code, flags=re.MULTILINE)
    code, keys = re.subn(r"^KEY=\S+", f"KEY={key}", code, flags=re.MULTILINE)
    assert (urls, keys) == (1, 1), f"line {segment.line}: the first block sets URL and KEY once"
    return Segment(code, segment.line, segment.answer)


def run_in_one_shell(
    parts: list[Segment], cwd: Path
) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """Each segment's output, from one bash session that stops at the first failing command."""
    script = "set -euo pipefail\n" + "".join(
        f"{part.code}\nprintf '\\n{END}\\n'\n" for part in parts
    )
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", script],
        cwd=cwd,
        env=SHELL_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return [out.strip() for out in done.stdout.split(f"\n{END}\n")[:-1]], done


def test_api_walkthrough_runs_top_to_bottom_as_written(
    demo_server: DemoServer, tmp_path: Path
) -> None:
    page = API_DOC.read_text()
    banner = next(block for block in blocks(page) if block.lang == "")
    shown_banner = banner.text.replace("127.0.0.1:8000", f"127.0.0.1:{demo_server.port}")
    assert text_matches(shown_banner, demo_server.banner), (
        f"docs/api.md line {banner.first}: serve --demo printed\n{demo_server.banner}"
    )
    url = re.search(r"^Punchcard is starting at (\S+)", demo_server.banner, re.MULTILINE)
    key = re.search(r"^  sandbox key: (\S+)$", demo_server.banner, re.MULTILINE)
    assert url and key
    assert url[1] == f"http://127.0.0.1:{demo_server.port}"

    parts = segments(page)
    parts[0] = _setup(parts[0], url[1], key[1])
    outputs, done = run_in_one_shell(parts, tmp_path)
    assert done.returncode == 0, (
        f"docs/api.md line {parts[len(outputs)].line}: the command failed\n{done.stderr}"
    )
    assert len(outputs) == len(parts) >= 15  # the walkthrough, not a page the parser misread

    problems: list[str] = []
    for part, output in zip(parts, outputs, strict=True):
        where = f"docs/api.md line {part.line}"
        if part.answer is None:
            if output:
                problems.append(f"{where}: prints {output!r} but the page shows no answer")
            continue
        try:
            seen = json.loads(output)
        except ValueError:
            problems.append(f"{where}: answered {output!r}, not JSON")
            continue
        problems += [f"{where}: {diff}" for diff in differences(parse(part.answer), seen)]
    assert problems == []


def test_scenarios_doc_story_passes_with_the_lines_it_shows(tmp_path: Path) -> None:
    page = blocks(SCENARIOS_DOC.read_text())
    at = next(index for index, block in enumerate(page) if block.lang == "yaml")
    story, command, printed = page[at : at + 3]
    assert (command.lang, printed.lang) == ("sh", ""), "story, then its command and its output"
    (tmp_path / STORY).parent.mkdir(parents=True)
    (tmp_path / STORY).write_text(story.text + "\n")
    program = Path(os.path.normpath(STORY.parent / yaml.safe_load(story.text)["program"]))
    (tmp_path / program).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / program, tmp_path / program)

    outputs, done = run_in_one_shell([Segment(command.text, command.first, None)], tmp_path)
    assert (done.returncode, done.stderr, outputs) == (0, "", [printed.text])
    assert printed.text.splitlines()[-1] == "1 passed, 0 failed"


def test_a_changed_figure_or_key_is_a_difference() -> None:
    """What the page shows binds: a figure, a key left out without `...`, or a prefix."""
    shown = parse('{"points":190,"token":"eyJ...","id":"...","nested":{"a":1,...}}')
    seen = {"points": 190, "token": "eyJabc", "id": 7, "nested": {"a": 1, "b": 2}}
    assert differences(shown, seen) == []
    assert differences(shown, {**seen, "points": 180}) == ["$.points: shown 190, seen 180"]
    assert differences(shown, {**seen, "extra": True}) == ["$.extra: seen, not shown"]
    assert differences(shown, {**seen, "token": "xyz"}) == ["$.token: shown 'eyJ...', seen 'xyz'"]
    assert differences(shown, {**seen, "nested": {"b": 2}}) == ["$.nested.a: shown, not seen"]
    assert parse('{"s":"say \\"...\\"","t":[1,2]}') == {"s": 'say "..."', "t": [1, 2]}
