"""Drive the real app in headless Chromium: load the page, answer an example, take a screenshot.

    python tests/browser_check.py [--out outputs/app_screenshot.png] [-- --KEY=value ...]

Starts ``streamlit run app.py`` on 127.0.0.1 and a free port (the overrides after ``--`` go to
the app), opens it in Debian's /usr/bin/chromium through Selenium and /usr/bin/chromedriver
(no driver download), clicks "Answer" on the first test example, waits for the answer and the
verdict, and saves a full-page PNG. Exits 1 with the reason when any step fails. Used by
tests/test_app.py (screenshot into tmp) and by hand for the README's outputs/app_screenshot.png.
Install the browser with .ci/install_chromium.sh.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,2200", "--hide-scrollbars",
)


class BrowserCheckError(RuntimeError):
    """A step of the check failed; the message names it."""


def missing_browser() -> str | None:
    """Why the check cannot run here, or None when it can."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            return f"{path} not found: run .ci/install_chromium.sh (Debian packages chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -r requirements.txt"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(port: int, overrides: list[str], log_path: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
        "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--", *overrides,
    ]
    env = {key: value for key, value in os.environ.items() if key != "FINREASON_ARGS"}
    log = log_path.open("w")
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(port: int, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            raise BrowserCheckError(f"streamlit exited with code {process.returncode} before serving")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise BrowserCheckError(f"streamlit did not answer /_stcore/health within {timeout_s:.0f}s")


def drive(url: str, screenshot: Path, timeout_s: float, profile_dir: Path) -> dict[str, str]:
    """Open the page, click Answer, wait for the verdict, save the screenshot; return what was seen."""
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    seen: dict[str, str] = {}
    step = "open the page"
    try:
        driver.get(url)
        wait = WebDriverWait(driver, timeout_s)
        step = "wait for the model to load and the Answer button"
        button = wait.until(ec.element_to_be_clickable((By.XPATH, "//button[.//p[normalize-space()='Answer']]")))
        seen["caption"] = driver.find_element(By.XPATH, "//*[contains(., 'Model:') and @data-testid='stCaptionContainer']").text
        step = "click Answer"
        button.click()
        step = "wait for the answer and its verdict"
        wait.until(ec.presence_of_element_located((By.XPATH, "//*[@data-testid='stMetric']")))
        verdict = wait.until(ec.presence_of_element_located((By.XPATH, "//*[@data-testid='stAlert'][contains(., 'gold answer')]")))
        seen["verdict"] = verdict.text
        seen["answer"] = driver.find_element(By.XPATH, "//*[@data-testid='stMetric']").text
        time.sleep(1.0)  # let the last dataframes paint
        step = "save the screenshot"
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        height = driver.execute_script(
            "const m = document.querySelector('[data-testid=\"stMain\"]') || document.body;"
            "return Math.max(m.scrollHeight, document.body.scrollHeight);")
        driver.set_window_size(1400, min(max(int(height) + 120, 900), 6000))
        time.sleep(0.5)
        if not driver.save_screenshot(str(screenshot)):
            raise BrowserCheckError("chromium did not write the screenshot")
    except (TimeoutException, WebDriverException) as error:
        raise BrowserCheckError(f"failed to {step}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from None
    finally:
        driver.quit()
    return seen


def run_check(screenshot: Path, overrides: list[str], timeout_s: float = 600.0) -> dict[str, str]:
    """Start the app, drive it, always stop what was started; the app's log on failure."""
    reason = missing_browser()
    if reason:
        raise BrowserCheckError(reason)
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="finreason-browser-"))
    process = start_app(port, overrides, workdir / "streamlit.log")
    try:
        wait_healthy(port, process, timeout_s=120)
        return drive(f"http://127.0.0.1:{port}/", screenshot, timeout_s, workdir / "chromium-profile")
    except BrowserCheckError as error:
        log = (workdir / "streamlit.log").read_text(errors="replace")[-3000:]
        raise BrowserCheckError(f"{error}\n--- streamlit log (tail) ---\n{log}") from None
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "outputs" / "app_screenshot.png"), help="where the PNG goes")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the model and the answer")
    args = parser.parse_args(own)
    started = time.time()
    try:
        seen = run_check(Path(args.out), overrides, args.timeout)
    except BrowserCheckError as error:
        print(f"browser check FAILED: {error}", file=sys.stderr)
        return 1
    print(f"browser check ok in {time.time() - started:.0f}s: {seen.get('caption', '')!r}; "
          f"answer {seen.get('answer', '')!r}; {seen.get('verdict', '')!r}\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
