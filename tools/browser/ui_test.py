"""A real-browser test of `sluice serve`'s web UI (headless Chromium through Selenium).

Run from the repository root after a release build:
    python3 tools/browser/ui_test.py [path/to/sluice]
Starts the server on the tiny fixture model with a fresh gallery and an API key (from the
environment, as a user would keep it out of `ps`), opens the page, logs in through its form as a
person would (the page then holds only an HttpOnly session cookie), submits a prompt, watches the
progress bar move, waits for the image in the gallery, reloads and checks it is still there, then
checks the page at phone width. Then, when $SLUICE_TEST_POSTGRES names a PostgreSQL server (required with
CI=true), all of it again through `serve --queue` with one `sluice worker` doing the work, and the status
line naming the worker. Screenshots go to .build-screenshots/ (git-ignored; queue-*.png for the second run).
Exits non-zero on any failure.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from serverlib import create_database, drop_database, free_port, queue_server, wait_ready

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHOTS = os.path.join(ROOT, ".build-screenshots")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".build", "release", "sluice")
    os.makedirs(SHOTS, exist_ok=True)
    run(binary)
    server_url = queue_server()
    if server_url:
        url, name = create_database(server_url, "sluice_ui_")
        try:
            run(binary, queue=url)
        finally:
            drop_database(server_url, name)


def run(binary, queue=None):
    model = os.path.join(ROOT, "Tests/Fixtures/models/z-image-tiny")
    shot = lambda name: os.path.join(SHOTS, ("queue-" if queue else "") + name)
    gallery = tempfile.mkdtemp(prefix="sluice-ui-gallery-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    key = "browser-test-key"
    server = subprocess.Popen([binary, "serve", "--model", model, "--port", str(port), "--gallery", gallery]
                              + (["--queue", queue] if queue else []), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=dict(os.environ, SLUICE_API_KEY=key))
    worker = subprocess.Popen([binary, "worker", "--queue", queue, "--model", model, "--name", "ui-worker", "--poll", "0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if queue else None
    driver = None
    try:
        wait_ready(base)
        opts = Options()
        for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]:
            opts.add_argument(a)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)
        wait = WebDriverWait(driver, 60)
        driver.get(base + "/")
        # The page asks for the key; a wrong one is refused, the right one opens a session.
        wait.until(lambda d: d.find_element(By.ID, "login").is_displayed())
        driver.find_element(By.ID, "key").send_keys("wrong")
        driver.find_element(By.ID, "login-submit").click()
        wait.until(lambda d: "not this server's key" in d.find_element(By.ID, "login-message").text)
        driver.save_screenshot(shot("0-login.png"))
        driver.find_element(By.ID, "key").send_keys(key)
        driver.find_element(By.ID, "login-submit").click()
        wait.until(lambda d: not d.find_element(By.ID, "login").is_displayed())
        cookie = driver.get_cookie("sluice_session")
        assert cookie and cookie.get("httpOnly") and cookie.get("sameSite") == "Strict", cookie
        assert key not in driver.execute_script("return JSON.stringify(localStorage) + document.cookie"), "the page holds the key"
        wait.until(lambda d: d.find_element(By.ID, "ready").text == "ready")
        if queue:
            wait.until(lambda d: "1 worker" in d.find_element(By.ID, "memory-text").text)
        driver.find_element(By.ID, "prompt").send_keys("a red fox in the snow")
        Select(driver.find_element(By.ID, "size")).select_by_value("64x64")
        steps = driver.find_element(By.ID, "steps")
        steps.clear()
        steps.send_keys("60")
        seed = driver.find_element(By.ID, "seed")
        seed.clear()
        seed.send_keys("7")
        driver.find_element(By.ID, "submit").click()
        # Progress: the bar moves and the text names a step.
        wait.until(lambda d: "step" in d.find_element(By.ID, "progress-text").text)
        driver.save_screenshot(shot("1-progress.png"))
        wait.until(lambda d: d.find_element(By.ID, "message").text == "done")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery .item img")) == 1)
        wait.until(lambda d: d.execute_script(
            "const i = document.querySelector('#gallery .item img'); return i.complete && i.naturalWidth === 64;"))
        # The memory panel draws the job's timeline once it has ended.
        wait.until(lambda d: d.find_element(By.ID, "memory-max").text.startswith("top"))
        driver.save_screenshot(shot("2-done.png"))
        text = driver.find_element(By.CSS_SELECTOR, "#gallery .item .params").text
        assert "a red fox in the snow" in text and "seed 7" in text, text
        # Reload: the gallery is on disk, not in the page.
        driver.refresh()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery .item img")) == 1)
        # "Reuse settings" fills the form back in.
        driver.find_element(By.CSS_SELECTOR, "#gallery .item .actions button").click()
        assert driver.find_element(By.ID, "prompt").get_attribute("value") == "a red fox in the snow"
        assert driver.find_element(By.ID, "seed").get_attribute("value") == "7"
        driver.save_screenshot(shot("3-reloaded.png"))
        # Phone width: one column, nothing wider than the screen.
        driver.set_window_size(390, 844)
        time.sleep(0.5)
        overflow = driver.execute_script("return document.documentElement.scrollWidth > window.innerWidth + 1")
        driver.save_screenshot(shot("4-phone.png"))
        assert not overflow, "the page is wider than a phone screen"
        print(("browser test through serve --queue and a worker" if queue else "browser test") + " passed; screenshots in", SHOTS)
    finally:
        if driver:
            driver.quit()
        if worker:
            worker.terminate()
            worker.wait(10)
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(gallery, ignore_errors=True)


if __name__ == "__main__":
    main()
