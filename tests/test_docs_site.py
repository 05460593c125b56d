"""The documentation site: ``mkdocs build --strict`` passes, and its pages read in headless Chromium.

Strict mode fails the build on a broken link, a missing page or an API reference that does not resolve.
``LAMBDA_ML_SERVE_SITE_SCREENSHOTS=DIR`` also keeps the screenshots of the pages checked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytest_plugins = ["browser_fixtures"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    mkdocs = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)]
    result = subprocess.run(mkdocs, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def test_every_nav_page_and_generated_part_is_built(site):
    for page in ("index.html", "getting-started/index.html", "guides/batch/index.html", "architecture/index.html"):
        assert (site / page).is_file(), page
    cli = (site / "reference/cli/index.html").read_text(encoding="utf-8")
    # Rendered from click: every command, with options the hand-written pages never listed in full.
    for command in ("lambda-ml-serve build", "lambda-ml-serve batch", "lambda-ml-serve predict", "--chunk-rows"):
        assert command in cli, command
    api = (site / "reference/python-api/index.html").read_text(encoding="utf-8")
    for name in ("ModelSpec", "register_models", "ModelFunction", "grant_invoke_url", "FunctionUrlClient"):
        assert name in api, name
    openapi = (site / "reference/openapi/index.html").read_text(encoding="utf-8")
    assert "/v2/models/{name}/infer" in openapi and "&quot;3.1.0&quot;" in openapi
    assert (site / "architecture/layers.svg").read_text(encoding="utf-8").startswith("<svg")


def test_home_page_and_a_guide_read_in_chromium(site, browser, tmp_path):
    from selenium.webdriver.common.by import By

    shots = []
    browser.set_window_size(1400, 1000)  # wide enough for Material's navigation sidebar
    browser.get((site / "index.html").as_uri())
    assert browser.find_element(By.TAG_NAME, "h1").text == "lambda-ml-serve"
    nav = browser.find_element(By.CSS_SELECTOR, "nav.md-nav--primary").text
    for section in ("Getting started", "Guides", "Reference", "Architecture", "Benchmarks"):
        assert section in nav, section
    shots.append(tmp_path / "home.png")
    browser.save_screenshot(str(shots[-1]))

    browser.get((site / "guides/batch/index.html").as_uri())
    assert browser.find_element(By.TAG_NAME, "h1").text == "Score a big table"
    headings = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "article h2")]
    assert headings, "the guide has sections"
    # Navigation.sections shows the guide's place in the site.
    active = browser.find_elements(By.CSS_SELECTOR, "nav.md-nav--primary .md-nav__link--active")
    assert "Score a big table" in [link.text for link in active]
    shots.append(tmp_path / "guide.png")
    browser.save_screenshot(str(shots[-1]))

    browser.get((site / "architecture/index.html").as_uri())
    diagram = browser.find_element(By.CSS_SELECTOR, "article img[src$='layers.svg']")
    assert browser.execute_script("return arguments[0].naturalWidth", diagram) > 0, "the diagram loads"

    # Nothing was fetched from elsewhere (no fonts, no CDN): the site reads offline.
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(r.startswith("file://") for r in resources), [r for r in resources if not r.startswith("file://")]
    if target := os.environ.get("LAMBDA_ML_SERVE_SITE_SCREENSHOTS"):
        for shot in shots:
            shutil.copyfile(shot, Path(target) / shot.name)
