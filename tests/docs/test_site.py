"""The manual: ``mkdocs build --strict`` builds docs/ with no warning (every page in the nav, every
link and anchor found), ``mkdocs serve`` serves it, and the README stays a short front page that
links each page and keeps the install and test commands CI runs (.ci/run)."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from harness import manual_pages

ROOT = Path(__file__).resolve().parents[2]
# Material for MkDocs prints a notice about MkDocs 2 on every build; it is no warning of the build.
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def nav_pages() -> list[str]:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    return [next(iter(entry.values())) for entry in config["nav"]]


def test_the_site_builds_with_no_warning(tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "WARNING" not in output, output
    for page in nav_pages():
        html = site / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        assert html.is_file(), page
    assert (site / "sweep_runs.png").is_file() and (site / "eval_fan_chart.png").is_file()
    assert not (site / "gen_config_reference.py").exists()


def test_every_page_under_docs_is_in_the_nav():
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert set(nav_pages()) == pages


def test_mkdocs_serve_serves_the_manual():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mkdocs", "serve", "--no-livereload", "-a", f"127.0.0.1:{port}"],
                            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, pages = time.time() + 120, None
        while pages is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/reference/config/", timeout=5) as answer:
                    pages = answer.read().decode()
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "mkdocs serve did not come up"
                time.sleep(0.5)
        assert "data.max_train_windows" in pages
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _slug(heading: str) -> str:
    """The anchor Markdown gives a heading (Python-Markdown's toc, as MkDocs and GitHub make it)."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    return re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", text))


def test_the_readme_is_a_short_front_page_linking_every_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    for marker in ("ci:install", "ci:test"):  # what .ci/run extracts and runs
        assert re.search(rf"<!-- {marker} -->\n```sh\n[^\n]+\n```\n<!-- /{marker} -->", readme), marker
    links = re.findall(r"\]\((docs/[^)#]+)(?:#([^)]+))?\)", readme)
    linked = {path for path, _ in links}
    assert {f"docs/{p}" for p in nav_pages()} <= linked
    pages = manual_pages()
    for path, anchor in links:
        assert (ROOT / path).is_file(), path
        if anchor and path.endswith(".md"):
            headings = re.findall(r"^#+ (.+)$", pages[path], re.M)
            assert anchor in {_slug(h) for h in headings}, f"{path}#{anchor}"
