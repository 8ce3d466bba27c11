"""The web page in a real headless Chromium (Debian's package, driven by Playwright): upload an image, see the
predicted class and its top-k bars, then tick Grad-CAM and see the heatmap."""
import shutil

import pytest

from tests.conftest import make_image

CHROME_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_page_classifies_an_uploaded_image(server, tmp_path):
    browser_path = chromium()
    if browser_path is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright
    import numpy as np
    _, url = server
    rng = np.random.default_rng(3)
    paths = []
    for cls in (0, 2):
        path = tmp_path / f"shape{cls}.png"
        make_image(cls, rng).save(path)
        paths.append(str(path))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=CHROME_FLAGS)
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(f"{url}/")
        page.wait_for_function("document.getElementById('meta').textContent.includes('3 classes')")
        page.set_input_files("#files", paths)
        page.wait_for_selector(".row .label", timeout=30_000)
        labels = page.locator(".row .label").all_inner_texts()
        bars = page.locator(".row").first.locator(".bar").count()
        page.check("#gradcam")  # shown because the server runs a model.pt
        page.set_input_files("#files", paths[:1])
        page.wait_for_selector(".row img.heatmap", timeout=30_000)
        heatmap = page.locator(".row img.heatmap").first
        loaded = heatmap.evaluate("img => img.complete && img.naturalWidth")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()
    assert len(labels) == 2 and set(labels) <= {"circle", "square", "stripes"} and bars == 3
    assert loaded == 224  # the Grad-CAM overlay, enlarged from 32 px
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_page_asks_for_a_key_when_the_server_needs_one(served_run, tmp_path):
    browser_path = chromium()
    if browser_path is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    from tests.serve.conftest import start_server
    key = "page-key-0123456789abcdef"
    (tmp_path / "keys.txt").write_text(key + "\n")
    image = tmp_path / "one.png"
    import numpy as np
    make_image(1, np.random.default_rng(0)).save(image)
    proc, url = start_server(served_run, "--threads", "1", "--api-keys", str(tmp_path / "keys.txt"))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, args=CHROME_FLAGS)
            page = browser.new_page()
            page.goto(f"{url}/")
            page.wait_for_selector("#keybox", state="visible")
            page.fill("#key", "wrong-key-0123456789abcdef")
            page.click("#usekey")
            page.wait_for_function("document.getElementById('keyerr').textContent.includes('unknown API key')")
            page.fill("#key", key)
            page.click("#usekey")
            page.wait_for_function("document.getElementById('meta').textContent.includes('3 classes')")
            page.set_input_files("#files", [str(image)])
            page.wait_for_selector(".row .label", timeout=30_000)
            label = page.locator(".row .label").first.inner_text()
            browser.close()
    finally:
        proc.kill()
        proc.wait()
    assert label in {"circle", "square", "stripes"}
