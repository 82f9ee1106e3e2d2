"""The page in a real browser: Debian's headless Chromium driven by Selenium.

Nothing is downloaded: the browser and its driver are the Debian packages the Makefile
installs (``chromium``, ``chromium-driver``), given to Selenium by path so that Selenium
Manager never runs. The microphone is Chromium's fake capture device playing a GRID voice.
"""

import base64
import io
import logging
import time
from pathlib import Path

import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.serve.conftest import RunningServer, tiny_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 30
log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def browser(grid_wav):
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make test "
                    "installs them when run as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,1100", "--use-fake-ui-for-media-stream",
                     "--use-fake-device-for-media-stream",
                     f"--use-file-for-fake-audio-capture={grid_wav}"):
        options.add_argument(argument)
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    assert driver.service.path == str(CHROMEDRIVER)  # Debian's driver, not a downloaded one
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser, tiny_models, tmp_path_factory):
    settings = tiny_settings(tiny_models, tmp_path_factory.mktemp("browser"))
    with RunningServer(settings) as server:
        browser.get(server.url)
        wait_for(browser, lambda d: d.find_element(By.TAG_NAME, "body")
                 .get_attribute("data-ready") == "true")
        yield browser


def wait_for(driver, condition):
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(condition)


def shown(driver, element_id):
    element = driver.find_element(By.ID, element_id)
    return element if element.is_displayed() else False


def face_png(driver) -> Image.Image:
    source = driver.find_element(By.ID, "face").get_attribute("src")
    assert source.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
    assert image.format == "PNG"
    return image


def heard_s(driver) -> float:
    """Return the seconds of audio the page says the server decoded."""
    return float(driver.find_element(By.ID, "audio-info").text.split(" s heard")[0])


def test_a_text_file_shows_the_reason_on_the_page(page, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not audio\n" * 50)
    page.find_element(By.ID, "audio-file").send_keys(str(notes))
    error = wait_for(page, lambda d: shown(d, "error") if d.find_element(By.ID, "error")
                     .text else False)
    assert "notes.txt:" in error.text and "[422]" in error.text
    assert not page.find_element(By.ID, "result").is_displayed()


def test_enrol_a_person_from_a_photo(page, grid_photo):
    page.find_element(By.ID, "enrol-name").send_keys("Grid Speaker")
    page.find_element(By.ID, "enrol-face").send_keys(str(grid_photo))
    page.find_element(By.ID, "enrol-submit").click()
    wait_for(page, lambda d: "Grid Speaker" in d.find_element(By.ID, "people").text)
    assert page.find_element(By.ID, "enrol-error").text == ""


def test_upload_a_grid_voice_and_see_the_face_and_the_nearest_people(page, grid_wav):
    page.find_element(By.ID, "audio-file").send_keys(str(grid_wav))
    wait_for(page, lambda d: shown(d, "result"))
    assert face_png(page).size == (256, 256)
    assert len(page.find_elements(By.CSS_SELECTOR, "#nearest-faces li")) == 5
    assert page.find_element(By.ID, "closest").text.startswith("The closest among these is ")
    assert len(page.find_elements(By.CSS_SELECTOR, "#emotions img")) == 4
    assert heard_s(page) == pytest.approx(3.0, abs=0.05)  # a GRID clip is 3 s long


def test_record_from_the_fake_microphone_and_get_a_face(page, tmp_path_factory):
    page.find_element(By.ID, "record").click()
    wait_for(page, lambda d: d.find_element(By.ID, "record-status").text == "recording…")
    time.sleep(2.0)
    page.find_element(By.ID, "record").click()
    wait_for(page, lambda d: shown(d, "result"))
    assert page.find_element(By.ID, "error").text == ""
    assert face_png(page).size == (256, 256)
    assert 1.5 < heard_s(page) < 4.0  # the recording's own length (~2 s), not the file's
    assert len(page.find_elements(By.CSS_SELECTOR, "#nearest-faces li")) == 5
    screenshot = tmp_path_factory.mktemp("screenshots") / "serve.png"
    page.save_screenshot(str(screenshot))
    assert Image.open(screenshot).size[0] > 0
    log.warning("screenshot: %s", screenshot)
