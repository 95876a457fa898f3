"""Headless Chromium for the browser tests and measurements/web_ttfa.py: Debian's `chromium` and
`chromium-driver` (apt-get install -y chromium chromium-driver), driven by Selenium (the dev
extra). No browser is downloaded. Its microphone is a WAV file (handler/web/fake_mic.py), the
permission prompt is accepted, and audio plays without a user gesture."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

CHROMIUM = ("/usr/bin/chromium", "chromium")
DRIVER = ("/usr/bin/chromedriver", "chromedriver")
INSTALL = (
    "apt-get update && apt-get install -y chromium chromium-driver (and pip install -e '.[dev]' for Selenium)"
)


def _first(candidates: tuple[str, ...]) -> str | None:
    for c in candidates:
        found = c if Path(c).is_file() else shutil.which(c)
        if found:
            return found
    return None


def missing() -> str | None:
    """None when a headless browser can run here; otherwise what is missing and how to install it."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return f"Selenium is not installed: {INSTALL}"
    if _first(CHROMIUM) is None or _first(DRIVER) is None:
        return f"Chromium or chromedriver is not installed: {INSTALL}"
    return None


def chromium(
    mic_wav: Path | None = None, *, allow_mic: bool = True, width: int = 1200, height: int = 900
) -> Any:
    """A Selenium driver for a new headless Chromium (the caller quits it); with `allow_mic` False,
    the page's request for the microphone is denied, as a person's "Block" would."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _first(CHROMIUM) or CHROMIUM[0]
    for arg in (
        "--headless=new",
        "--no-sandbox",  # as root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        # the microphone prompt: accepted, or denied
        "--use-fake-ui-for-media-stream" if allow_mic else "--deny-permission-prompts",
        "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
        f"--window-size={width},{height}",
        *([f"--use-file-for-fake-audio-capture={mic_wav}"] if mic_wav else []),
    ):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(_first(DRIVER) or DRIVER[0]))
