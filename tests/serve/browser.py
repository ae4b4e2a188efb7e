"""Debian's headless chromium driven by selenium, with the driver path given (nothing is
downloaded); shared by the page test and the screenshot script."""

from __future__ import annotations

import os
from typing import Any

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
MISSING = ("the page test needs Debian's chromium and its driver: apt-get install chromium "
           "chromium-driver (as root)")


def missing() -> str | None:
    """Why no browser can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the page test needs selenium (the dev extra)"
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        return MISSING
    return None


def chromium(width: int = 900, height: int = 700) -> Any:
    """A headless chromium WebDriver (quit it when done)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def ask(driver: Any, url: str, question: str, timeout: float = 60) -> dict[str, Any]:
    """Open the page, type `question`, press Ask, wait for the answer; what the page shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    driver.find_element(By.ID, "question").send_keys(question)
    driver.find_element(By.ID, "ask").click()
    WebDriverWait(driver, timeout).until(
        ec.visibility_of_element_located((By.ID, "summary")))
    spans = driver.find_elements(By.CSS_SELECTOR, "#answer .tok")
    shown = {k: driver.find_element(By.ID, k).text
             for k in ("p", "epistemic", "aleatoric", "total", "verdict", "error")}
    shown["tokens"] = [(s.get_attribute("textContent"), s.value_of_css_property("background-color"),
                        s.get_attribute("title")) for s in spans]
    shown["answer"] = driver.find_element(By.ID, "answer").get_attribute("textContent")
    return shown
