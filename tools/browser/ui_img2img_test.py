"""A real-browser test of the web UI's sampler menu and init image (headless Chromium through Selenium).

Run from the repository root after a release build:
    python3 tools/browser/ui_img2img_test.py [path/to/sluice]
Starts the server on the tiny Stable Diffusion 1.5 fixture (five samplers, image to image), checks the
sampler menu lists them with the default first, picks DDIM, chooses a 48 × 32 init PNG and a strength,
generates, and checks the gallery item names the sampler and strength and is the init image's size.
Screenshots go to .build-screenshots/ (git-ignored). Exits non-zero on any failure.
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from serverlib import free_port, wait_ready

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHOTS = os.path.join(ROOT, ".build-screenshots")


def png(path, w, h):
    """An RGB gradient PNG, written with zlib alone."""
    rows = b"".join(b"\0" + bytes(v for x in range(w) for v in (x * 5 % 256, y * 7 % 256, (x + y) * 3 % 256)) for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".build", "release", "sluice")
    os.makedirs(SHOTS, exist_ok=True)
    work = tempfile.mkdtemp(prefix="sluice-ui-img2img-")
    init = os.path.join(work, "init.png")
    png(init, 48, 32)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([binary, "serve", "--model", os.path.join(ROOT, "Tests/Fixtures/models/sd15-tiny"),
                               "--port", str(port), "--gallery", os.path.join(work, "gallery")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    driver = None
    try:
        wait_ready(base)
        opts = Options()
        for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1100"]:
            opts.add_argument(a)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)
        wait = WebDriverWait(driver, 60)
        driver.get(base + "/")
        wait.until(lambda d: d.find_element(By.ID, "ready").text == "ready")
        wait.until(lambda d: d.find_element(By.ID, "sampler-row").is_displayed())
        menu = Select(driver.find_element(By.ID, "sampler"))
        names = [o.get_attribute("value") for o in menu.options]
        assert sorted(names) == sorted(["Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM"]), names
        assert "(default)" in menu.options[0].text, menu.options[0].text
        assert driver.find_element(By.ID, "init-row").is_displayed()
        driver.find_element(By.ID, "prompt").send_keys("a red fox")
        for field, value in (("steps", "4"), ("seed", "7"), ("guidance", "7")):
            e = driver.find_element(By.ID, field)
            e.clear()
            e.send_keys(value)
        menu.select_by_value("DDIM")
        driver.find_element(By.ID, "init").send_keys(init)
        wait.until(lambda d: d.find_element(By.ID, "init-text").text == "48 × 32")
        assert not driver.find_element(By.ID, "size").is_enabled(), "the size menu should give way to the image's size"
        driver.execute_script("const s = document.getElementById('strength'); s.value = '0.5'; s.dispatchEvent(new Event('input'));")
        assert driver.find_element(By.ID, "strength-value").text == "0.5"
        driver.save_screenshot(os.path.join(SHOTS, "img2img-0-form.png"))
        driver.find_element(By.ID, "submit").click()
        wait.until(lambda d: d.find_element(By.ID, "message").text == "done")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery .item img")) == 1)
        wait.until(lambda d: d.execute_script(
            "const i = document.querySelector('#gallery .item img'); return i.complete && i.naturalWidth === 48 && i.naturalHeight === 32;"))
        text = driver.find_element(By.CSS_SELECTOR, "#gallery .item .params").text
        assert "DDIM" in text and "strength 0.5" in text and "48×32" in text, text
        driver.save_screenshot(os.path.join(SHOTS, "img2img-1-done.png"))
        driver.set_window_size(390, 1000)
        overflow = driver.execute_script("return document.documentElement.scrollWidth > window.innerWidth + 1")
        driver.save_screenshot(os.path.join(SHOTS, "img2img-2-phone.png"))
        assert not overflow, "the page is wider than a phone screen"
        print("img2img browser test passed; screenshots in", SHOTS)
    finally:
        if driver:
            driver.quit()
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
