"""The explorer page in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium): it
loads, a generation completes and its image appears, cancel stops one, two tabs generate at once, the t slider
changes the picture, an out-of-range input shows an error on the page, and files outside the run are refused.

Skips, with the reason, where Selenium, chromium or chromedriver is missing (scripts/install_browser.sh installs
the browser where it can)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any, Callable
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'kuosan[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install 'kuosan[serve]'")
pytest.importorskip("selenium", reason="selenium is not installed (it is in kuosan's test extra)")

from serve_helpers import serve_cli  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("no headless browser: Debian's chromium and chromium-driver are not installed "
                "(bash scripts/install_browser.sh installs them where apt-get can)", allow_module_level=True)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,1600"]
WAIT = 60.0  # seconds for anything on a loaded 2-core machine


@pytest.fixture(scope="module")
def run_with_leak(digits_run, secret, tmp_path_factory):
    """A copy of the digits run holding a link out of it (to the secret)."""
    root = tmp_path_factory.mktemp("browser") / "run"
    shutil.copytree(digits_run, root)
    os.symlink(secret, root / "leak.txt")
    return root


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("out")


@pytest.fixture(scope="module")
def url(run_with_leak, out_dir):
    with serve_cli(run_with_leak, out_dir) as u:
        yield u


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try to download a driver
    profile = tempfile.mkdtemp(prefix="kuosan-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in (*FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(f)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    except WebDriverException as e:
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"headless chromium did not start: {e.msg}")
    driver.set_script_timeout(WAIT)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def until(what: Callable[[], Any], timeout: float = WAIT, message: str = "") -> Any:
    """Poll ``what()`` until it is truthy; returns it (or fails naming ``message``)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = what()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {message or what}")


def by_id(driver, name: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, name)


def load(driver, url: str) -> None:
    driver.get(url)
    until(lambda: driver.execute_script("return document.body.dataset.ready === '1'"), message="the page's info")


def set_value(driver, name: str, value: str) -> None:
    el = by_id(driver, name)
    el.clear()
    el.send_keys(value)


def test_page_loads(browser, url):
    load(browser, url)
    assert browser.title == "kuosan explorer"
    assert "digits" in by_id(browser, "about").text and "1×8×8" in by_id(browser, "about").text
    options = browser.execute_script("return [...document.querySelectorAll('#sampler option')].map(o => o.value)")
    assert "ddim" in options and "ddpm" in options and "bespoke" not in options
    assert not by_id(browser, "error").is_displayed()


def test_generation_completes_and_its_image_appears(browser, url):
    load(browser, url)
    set_value(browser, "steps", "12")
    set_value(browser, "n", "16")
    by_id(browser, "generate").click()
    job = until(lambda: by_id(browser, "result").get_attribute("data-job"), message="the samples' image")
    natural = browser.execute_script("const i = document.getElementById('result'); "
                                     "return [i.complete, i.naturalWidth, i.naturalHeight]")
    assert natural == [True, 222, 222]  # 4×4 digits of 8×8, 1-pixel gaps, enlarged ×6
    assert by_id(browser, "result").get_attribute("src").endswith(f"/files/out/{job}.png")
    assert by_id(browser, "status").text.startswith("done: 12 steps")
    assert browser.execute_script("return document.getElementById('progress').value") == 12
    assert until(lambda: browser.execute_script("return document.getElementById('preview').naturalWidth"))
    assert not by_id(browser, "error").is_displayed()


def test_cancel_button(browser, url):
    from selenium.webdriver.support.ui import Select

    load(browser, url)
    Select(by_id(browser, "sampler")).select_by_value("pc")
    set_value(browser, "steps", "1000")
    set_value(browser, "n", "64")
    by_id(browser, "generate").click()
    until(lambda: by_id(browser, "status").text.startswith("step "), message="the first steps")
    by_id(browser, "cancel").click()
    until(lambda: by_id(browser, "status").text.startswith("cancelled after step"), message="the cancellation")
    assert by_id(browser, "result").get_attribute("src") in (None, "")


def test_two_tabs_generate_at_once(browser, url):
    first = browser.current_window_handle
    tabs = [first]
    browser.switch_to.new_window("tab")
    tabs.append(browser.current_window_handle)
    for i, tab in enumerate(tabs):
        browser.switch_to.window(tab)
        load(browser, url)
        set_value(browser, "steps", "40")
        set_value(browser, "seed", str(i))
        by_id(browser, "generate").click()
    jobs = []
    for tab in tabs:
        browser.switch_to.window(tab)
        jobs.append(until(lambda: by_id(browser, "result").get_attribute("data-job"), message="a tab's samples"))
        assert by_id(browser, "status").text.startswith("done: 40 steps")
    assert len(set(jobs)) == 2
    browser.switch_to.window(tabs[1])
    browser.close()
    browser.switch_to.window(first)


def test_t_slider_changes_the_picture(browser, url):
    from selenium.webdriver.common.keys import Keys

    load(browser, url)
    img = by_id(browser, "forward")
    until(lambda: img.get_attribute("data-state") == "loaded", message="the forward picture")
    before, info = img.screenshot_as_png, by_id(browser, "forward-info").text
    assert img.get_attribute("data-u") == "0.1"
    by_id(browser, "t").send_keys(*[Keys.ARROW_RIGHT] * 40)  # 0.10 -> 0.50 in steps of 0.01
    until(lambda: img.get_attribute("data-u") == "0.5" and img.get_attribute("data-state") == "loaded",
          message="the picture at t = 0.5")
    assert by_id(browser, "t-value").text == "0.50"
    assert img.screenshot_as_png != before and by_id(browser, "forward-info").text != info


def test_out_of_range_input_shows_an_error(browser, url):
    load(browser, url)
    set_value(browser, "steps", "5000")
    by_id(browser, "generate").click()
    err = by_id(browser, "error")
    until(err.is_displayed, message="the error line")
    assert "steps" in err.text and "1000" in err.text
    set_value(browser, "steps", "10")
    set_value(browser, "seed", "-3")
    by_id(browser, "generate").click()
    until(lambda: "seed" in err.text, message="the seed's error")
    set_value(browser, "seed", "0")
    set_value(browser, "fseed", "-1")
    by_id(browser, "fseed").send_keys("\t")  # change event
    until(lambda: by_id(browser, "forward-error").is_displayed(), message="the forward panel's error")
    assert "seed" in by_id(browser, "forward-error").text


@pytest.mark.parametrize("path", ["files/run/" + "..%2f" * 12 + "etc%2fpasswd", "files/run/leak.txt",
                                  "files/run/%2fetc%2fpasswd", "files/run/{up_to_secret}",
                                  "files/out/{out_to_run}"])
def test_files_outside_the_run_are_refused(browser, url, secret, run_with_leak, out_dir, path):
    """Encoded slashes keep the ``..`` from the browser's own URL clean-up, so the server sees them."""
    up_to_secret = quote(os.path.relpath(secret, run_with_leak), safe="")  # ..%2F..%2Foutside0%2Fsecret.txt
    out_to_run = quote(os.path.relpath(run_with_leak / "config.toml", out_dir), safe="")
    assert (out_dir / os.path.relpath(run_with_leak / "config.toml", out_dir)).is_file()  # exists: only refused
    path = path.format(up_to_secret=up_to_secret, out_to_run=out_to_run)
    browser.get(url + path)
    body = browser.find_element("tag name", "body").text
    assert secret.read_text() not in body and "root:" not in body and "no such file" in body
    status = browser.execute_async_script("const done = arguments[arguments.length - 1]; "
                                          "fetch(arguments[0]).then(r => done(r.status))", url + path)
    assert status == 404
    browser.get(url + "files/run/samples.png")  # while a file inside is served
    assert browser.execute_script("const i = document.querySelector('img'); return i && i.naturalWidth") > 0
