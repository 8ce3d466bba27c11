"""The documentation site: it builds with `mkdocs build --strict` (every link and anchor resolves), its generated
pages list what the code has, the README's links lead somewhere, and every command a page marks as runnable
(`<!-- runs in tests -->` before a ```bash block) runs, in nav order, in one workspace."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from cnnmode.config import all_keys
from tests.conftest import run_cli, write_tree

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUNNABLE = re.compile(r"<!-- runs in tests -->\n```bash\n(.*?)```", re.S)


def nav_pages() -> list[str]:
    """The pages of mkdocs.yml's nav, in order."""
    def walk(items):
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            yield from (walk(value) if isinstance(value, list) else [value])
    return list(walk(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]))


def runnable_commands() -> list[tuple[str, str]]:
    """(page, command line) for every line of every runnable block, `train` first: the others use its run."""
    pages = sorted(nav_pages(), key=lambda page: page != "commands/train.md")
    return [(page, line) for page in pages for block in RUNNABLE.findall((DOCS / page).read_text())
            for line in block.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once with --strict (a broken link, anchor or generated block fails the build)."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1",
                                                                           "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_the_site_builds_strict_and_every_page_is_in_the_nav(site):
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages == set(nav_pages())
    assert (site / "commands" / "serve" / "index.html").exists()


def test_the_config_reference_lists_every_key_and_each_verb_page_its_help(site):
    config = (site / "reference" / "config" / "index.html").read_text()
    missing = [key for key in all_keys() if f"<code>{key}</code>" not in config]
    assert not missing, f"config reference lacks {missing}"
    assert "usage: cnnmode data split" in (site / "commands" / "data" / "index.html").read_text()
    licences = (site / "licences" / "index.html").read_text()
    assert "torchvision" in licences and "not stated" not in licences


def test_every_link_in_the_readme_leads_to_a_file():
    readme = (ROOT / "README.md").read_text()
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)]+)\)", readme) if not t.startswith("http")]
    assert targets and all((ROOT / t).exists() for t in targets), [t for t in targets if not (ROOT / t).exists()]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """What the runnable examples name: `shapes/` (class folders with train/ and test/), `photos/` (three
    JPEGs) and `clip.avi` (a few seconds of video)."""
    ws = tmp_path_factory.mktemp("docs-examples")
    write_tree(ws / "shapes", {"train": 20, "test": 6})
    (ws / "photos").mkdir()
    rng = np.random.default_rng(0)
    for name in ("cat", "dog", "ship"):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(ws / "photos" / f"{name}.jpg")
    writer = cv2.VideoWriter(str(ws / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    for i in range(30):
        writer.write(np.full((32, 32, 3), i * 8, dtype=np.uint8))
    writer.release()
    yield ws
    shutil.rmtree(ws, ignore_errors=True)


COMMANDS = runnable_commands()


@pytest.mark.parametrize("page, command", COMMANDS, ids=[f"{Path(page).stem}: {line[8:60]}" for page, line in COMMANDS])
def test_a_runnable_command_of_the_docs_runs(workspace, page, command):
    words = command.split("#")[0].split()
    assert words[0] == "cnnmode", f"{page}: a runnable block holds cnnmode commands only: {command}"
    done = run_cli(*words[1:], cwd=workspace)
    assert done.returncode == 0, f"{page}: `{command}` exited {done.returncode}: {done.stderr[-2000:]}"
