"""The review page in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by selenium)
against a real daemon and the review server `dedupctl review` starts: the token, the cards, the compare view,
"keep this, trash the others" into the real trash, and `dedupctl undo` bringing the group back.

Screenshots of the group list and of the compare view are written to `$DEDUPD_SCREENSHOTS` (default: the
test's tmp dir) for a person to look at.
"""

import json
import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

WAIT_S = 60.0


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip("the review page tests need Debian's chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1500,1100", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def stop_review_servers(user: Any) -> Iterator[None]:
    """The review server runs detached until idle: stop the ones this test started."""
    yield
    for state in (user.home / "run" / "dedupd-review").glob("*.json"):
        pid = json.loads(state.read_text())["pid"]
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)


def _until[T](condition: Callable[[], T], what: str, timeout: float = WAIT_S) -> T:
    """Poll a condition of the page until it holds (the page loads and re-renders asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("DEDUPD_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    assert driver.save_screenshot(str(path))
    return path


def _images_loaded(driver: Any, selector: str) -> bool:
    return bool(driver.execute_script(
        "const images = [...document.querySelectorAll(arguments[0])];"
        "return images.length > 0 && images.every((i) => i.complete && i.naturalWidth > 0);", selector))


def _cards(driver: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, ".card"))


def _click_in_card(driver: Any, member: Path, selector: str) -> None:
    """Click `selector` inside the card that lists `member`, looking the card up afresh if the page re-rendered
    it between the lookup and the click (the list refreshes itself while the server relists the groups)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def clicked() -> bool:
        try:
            card = next((card for card in _cards(driver) if str(member) in card.text), None)
            if card is None:
                return False
            card.find_element(By.CSS_SELECTOR, selector).click()
            return True
        except StaleElementReferenceException:
            return False

    _until(clicked, f"{selector} in the card of {member.name}")


def test_review_page_token_cards_compare_trash_and_undo(daemon_factory: Any, user: Any, tmp_path: Path,
                                                        photos: list[Path], browser: Any,
                                                        stop_review_servers: None) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    root = tmp_path / "library"
    daemon, files = user.started(daemon_factory, root, photos)
    url = daemon.ctl("review", "--print-url").stdout.strip()
    base, _, token = url.partition("?token=")
    assert base.startswith("http://127.0.0.1:") and len(token) >= 32

    browser.get(base)
    assert "needs its token" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(f"{base}?token=not-{token}")
    assert "needs its token" in browser.find_element(By.TAG_NAME, "body").text

    forged = urllib.request.Request(f"{base}api/undo?token={token}", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:  # an action needs the header another site cannot send
        urllib.request.urlopen(forged, timeout=30)
    assert refused.value.code == 403

    browser.get(url)
    _until(lambda: len(_cards(browser)) == 2, "two group cards")
    _until(lambda: _images_loaded(browser, ".member .thumb img"), "the thumbnails")
    page = browser.find_element(By.ID, "groups").text
    for member in ("a", "a_copy", "b", "b_small"):
        assert str(files[member]) in page
    assert str(files["c"]) not in page
    assert "KEEP" in page and "320 × " in page and "JPEG" in page and "exact distance 0" in page
    assert "most pixels" in page  # why the keep policy keeps it
    assert "a_copy.jpg.xmp" in page  # the copy's sidecar, attached to it: it goes along with it
    assert "2 groups" in browser.find_element(By.ID, "summary").text
    assert (user.home / ".cache" / "dedupd" / "thumbnails").is_dir()  # made in the pool, cached for the user
    _screenshot(browser, tmp_path, "review-groups.png")

    _click_in_card(browser, files["b"], ".compare")
    _until(lambda: browser.find_element(By.ID, "compare").is_displayed(), "the compare view")
    _until(lambda: _images_loaded(browser, "#compare .pane img"), "the compared images")
    left = browser.find_element(By.CSS_SELECTOR, "#left figcaption").text
    browser.find_element(By.TAG_NAME, "body").send_keys("s")  # swap
    _until(lambda: browser.find_element(By.CSS_SELECTOR, "#right figcaption").text == left, "the swap")
    browser.find_element(By.TAG_NAME, "body").send_keys("+")  # zoom in
    assert "width: 150%" in browser.find_element(By.CSS_SELECTOR, "#left img").get_attribute("style")
    _screenshot(browser, tmp_path, "review-compare.png")
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    _until(lambda: not browser.find_element(By.ID, "compare").is_displayed(), "the compare view to close")

    _click_in_card(browser, files["b"], f".member[data-path='{files['b']}'] .keep-this")
    _until(lambda: len(_cards(browser)) == 1, "the resolved group to disappear")
    assert not files["b_small"].exists() and files["b"].exists()
    in_trash = user.trashed()
    assert list(in_trash) == [str(files["b_small"])]
    assert Path(in_trash[str(files["b_small"])]).is_file()
    assert str(files["b"]) not in browser.find_element(By.ID, "groups").text
    assert "press u to undo" in browser.find_element(By.ID, "message").text

    browser.find_element(By.CSS_SELECTOR, "button.tier[data-tier='similar']").click()
    _until(lambda: "No similar groups." in browser.find_element(By.ID, "groups").text, "the similar view")
    browser.find_element(By.CSS_SELECTOR, "button.tier[data-tier='duplicates']").click()
    _until(lambda: len(_cards(browser)) == 1, "the duplicates view again")

    daemon.ctl("undo")
    assert files["b_small"].exists() and user.trashed() == {}
    daemon.wait_idle()
    browser.refresh()
    _until(lambda: len(_cards(browser)) == 2, "the group to come back")
    assert str(files["b_small"]) in browser.find_element(By.ID, "groups").text


def test_the_review_server_is_reused_and_stops_when_idle(daemon_factory: Any, user: Any, tmp_path: Path,
                                                         photos: list[Path], stop_review_servers: None) -> None:
    daemon, _ = user.started(daemon_factory, tmp_path / "library", photos)
    first = daemon.ctl_json("review", "--print-url", "--idle-timeout", "3")
    again = daemon.ctl_json("review", "--print-url")
    assert first["started"] and not again["started"] and again["url"] == first["url"]
    with urllib.request.urlopen(first["url"], timeout=30) as page:
        assert b"dedupd review" in page.read()

    def stopped() -> bool:
        try:
            os.kill(first["pid"], 0)
        except ProcessLookupError:
            return True
        return False

    _until(stopped, "the idle review server to stop")
    assert daemon.ctl_json("review", "--print-url")["started"]  # on demand again
