"""GET /docs in a real browser: headless Chromium loads the page from ``serve`` and sends the example.

Needs Debian's ``chromium`` and ``chromium-driver`` (see ``browser_fixtures``).
``LAMBDA_ML_SERVE_SCREENSHOT=docs/docs-page.png`` also writes the screenshot of the HTTP reference page.
"""

from __future__ import annotations

import io
import json
import os
import shutil

from served import serving

from lambda_ml_serve.runtime.app import App

pytest_plugins = ["browser_fixtures"]


def test_docs_page_sends_the_example_and_shows_field_errors(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    app = App.load("wine_quality", log_stream=io.StringIO())
    example = {"instances": app.examples["instances"]["instances"]}
    expected = app.predict(example)["predictions"]
    wait = WebDriverWait(browser, 30)

    with serving() as url:
        browser.get(f"{url}/docs")
        assert browser.title == f"wine_quality {app.spec.version}"
        page = browser.find_element(By.TAG_NAME, "body").text
        assert app.spec.description in page
        metrics = browser.find_element(By.ID, "metrics").text
        assert "rmse" in metrics
        fields = {
            row.find_elements(By.TAG_NAME, "td")[0].text: row.text
            for row in browser.find_elements(By.CSS_SELECTOR, "#fields tr")[1:]
        }
        assert list(fields) == list(app.spec.feature_names)
        assert "≤ 14" in fields["pH"] and "≥ 0.9, ≤ 1.1" in fields["density"]
        body = browser.find_element(By.ID, "body")
        assert json.loads(body.get_property("value")) == app.examples["instances"]

        browser.find_element(By.ID, "send").click()
        shown = wait.until(ec.visibility_of_element_located((By.ID, "predictions")))
        assert json.loads(shown.text) == expected
        assert browser.find_element(By.ID, "status").text == "200: predictions"
        screenshot = tmp_path / "docs-page.png"
        browser.save_screenshot(str(screenshot))
        if target := os.environ.get("LAMBDA_ML_SERVE_SCREENSHOT"):
            shutil.copyfile(screenshot, target)

        bad = json.loads(json.dumps(example))
        bad["instances"][1]["pH"] = 15
        body.clear()
        body.send_keys(json.dumps(bad))
        browser.find_element(By.ID, "send").click()
        details = wait.until(ec.visibility_of_element_located((By.ID, "details")))
        cells = [td.text for td in details.find_elements(By.CSS_SELECTOR, "tr:nth-child(2) td")]
        assert cells == ["1", "pH", "Input should be less than or equal to 14"]
        assert browser.find_element(By.ID, "status").text.startswith("422 validation_error: 1 invalid value(s)")
        assert browser.find_elements(By.ID, "predictions") == []

        # Everything the page loaded came from serve itself.
        resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert resources and all(r.startswith(url) for r in resources)


def test_docs_page_charts_the_example_contributions_beside_the_prediction(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    app = App.load("wine_quality", log_stream=io.StringIO())
    explained = app.explain({"instances": app.examples["instances"]["instances"]})
    wait = WebDriverWait(browser, 30)

    with serving() as url:
        browser.get(f"{url}/docs")
        browser.find_element(By.ID, "explain").click()
        first = wait.until(ec.visibility_of_element_located((By.ID, "explanation-0")))
        assert browser.find_element(By.ID, "status").text.startswith("200: predictions and explanations")
        verdict = first.find_element(By.CLASS_NAME, "verdict").text
        assert f"{explained['predictions'][0]:.4g}"[:4] in verdict and "expected value" in verdict
        bars = first.find_elements(By.CLASS_NAME, "bar")
        contributions = explained["explanations"][0]["contributions"]
        # One bar per field, largest first; the widest fills half the track, each side of the zero line.
        assert [b.get_attribute("data-field") for b in bars] == sorted(
            contributions, key=lambda f: -abs(contributions[f])
        )
        widths = [b.find_element(By.TAG_NAME, "i").size["width"] for b in bars]
        assert widths == sorted(widths, reverse=True) and widths[0] > 0
        sign = {b.get_attribute("data-field"): b.find_element(By.TAG_NAME, "i").get_attribute("class") for b in bars}
        assert all(sign[f] == ("up" if v >= 0 else "down") for f, v in contributions.items())
        assert len(browser.find_elements(By.CSS_SELECTOR, ".explained")) == len(explained["explanations"])
        browser.save_screenshot(str(tmp_path / "explain.png"))
        if target := os.environ.get("LAMBDA_ML_SERVE_EXPLAIN_SCREENSHOT"):
            shutil.copyfile(tmp_path / "explain.png", target)
        resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert resources and all(r.startswith(url) for r in resources)
