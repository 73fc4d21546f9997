"""The page at `/` of `mprnet serve`, in a real headless browser (Debian's chromium).

Selenium drives /usr/bin/chromium through /usr/bin/chromedriver (`.ci/run` installs both):
pick a task, set the strength and ensemble, pick a file, wait for the before/after view,
click the download link, and compare the downloaded file with what the API returns for the
same options. Skipped only outside CI when chromium is not installed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra: pip install 'mprnet-cli[serve]'")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from mprnet_cli.api import Restorer  # noqa: E402
from mprnet_cli.serve.engine import Lane  # noqa: E402
from mprnet_cli.settings import RestoreSettings  # noqa: E402
from mprnet_cli.tasks import Task  # noqa: E402
from tests.helpers import WAIT, eventually, png_bytes, request, server  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture()
def browser(tmp_path: Path):  # type: ignore[no-untyped-def]
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        if os.environ.get("CI"):
            pytest.fail("CI must have chromium and chromium-driver: see .ci/run")
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install ...)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.slow
def test_upload_and_download_through_the_page(
    browser,  # type: ignore[no-untyped-def]
    checkpoint: Path,
    tmp_path: Path,
) -> None:
    network = RestoreSettings(weights=checkpoint, device="cpu", threads=1)
    lanes = {
        task: Lane(task, lambda task=task: Restorer(task, settings=network, quiet=True), 2)
        for task in (Task.DERAIN, Task.DENOISE)
    }
    photo = tmp_path / "street.png"
    photo.write_bytes(png_bytes((48, 40), seed=5))
    with server(lanes) as (port, _):
        eventually(lambda: request(port, "GET", "/readyz")[0] == 200, "readiness")
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, WAIT)
        wait.until(lambda d: d.find_elements(By.ID, "task-denoise"))
        browser.find_element(By.ID, "task-denoise").click()
        browser.execute_script(
            "const s = document.getElementById('strength'); s.value = '0.5';"
            "s.dispatchEvent(new Event('input'));"
        )
        Select(browser.find_element(By.ID, "ensemble")).select_by_value("2")
        browser.find_element(By.ID, "file").send_keys(str(photo))
        wait.until(lambda d: d.find_element(By.ID, "download").is_displayed())
        status = browser.find_element(By.ID, "status").text
        assert status.startswith("done in"), status
        assert browser.find_element(By.ID, "slider").is_displayed()
        assert browser.find_element(By.ID, "after").get_attribute("src").startswith("blob:")
        browser.find_element(By.ID, "download").click()
        saved = browser.downloads / "street_denoised.png"
        eventually(saved.exists, "the download")
        expected = request(
            port, "POST", "/v1/denoise?strength=0.5&ensemble=2&name=street.png", photo.read_bytes()
        )
    assert expected[0] == 200
    # The page sent the task and options chosen, and saved the server's answer unchanged.
    assert saved.read_bytes() == expected[2]


@pytest.mark.slow
def test_page_shows_the_servers_error(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.helpers import gated_lane

    lane, gate = gated_lane()
    gate.gate.set()
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image")
    with server({Task.DERAIN: lane}) as (port, _):
        eventually(lambda: lane.ready, "the lane")
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, WAIT)
        wait.until(lambda d: d.find_elements(By.ID, "task-derain"))
        browser.find_element(By.ID, "file").send_keys(str(bad))
        wait.until(
            lambda d: "error" in (d.find_element(By.ID, "status").get_attribute("class") or "")
        )
        text = browser.find_element(By.ID, "status").text
    assert text == "notes.png: not an image file, or a format Pillow cannot read"
    assert gate.calls == 0
