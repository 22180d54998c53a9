#!/usr/bin/env python3
"""browser_serve.py - `graft serve` and its web page in a real browser.

Starts `graft serve` on the factpara model, drives headless Chromium through
selenium and checks the whole loop a user goes through: complete a prompt
(streamed), correct the answer, see the correction in the next completion,
undo it and see the original answer back.

Usage: browser_serve.py PATH/TO/graft
Exit: 0 passed, 1 failed, 77 skipped (no selenium, chromium, chromedriver or model).
Needs: Debian packages chromium, chromium-driver, python3-selenium.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_util import Server, ServeError, http, tail  # noqa: E402

SKIP = 77
ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "factpara"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PROMPT = "Toko Yasuda, the"
TARGETS = ["trumpet", "violin", "harp", "drums"]  # the first the model does not already say


def skip(msg):
    print("browser_serve: SKIP: " + msg, file=sys.stderr)
    sys.exit(SKIP)


class Failure(Exception):
    pass


def need(cond, msg):
    if not cond:
        raise Failure(msg)


try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:
    # Debian's python3-selenium lives in the system interpreter; CTest's
    # python3 may be another one (pyenv, venv). Try the system one once.
    syspy = "/usr/bin/python3"
    if (os.path.exists(syspy) and not os.environ.get("GRAFT_BROWSER_REEXEC")
            and os.path.realpath(sys.executable) != os.path.realpath(syspy)):
        os.environ["GRAFT_BROWSER_REEXEC"] = "1"
        os.execv(syspy, [syspy, os.path.abspath(__file__)] + sys.argv[1:])
    skip("python3 module selenium is missing (apt-get install python3-selenium)")


def browser(tmp):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1200,1000", "--user-data-dir=" + str(Path(tmp) / "chrome")):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(20)
    return d


def run(graft, tmp):
    log = Path(tmp) / "serve.log"
    driver = None
    try:
        srv = Server(graft, ["-m", MODEL, "--method", "grace", "--out", Path(tmp) / "run",
                             "--allow-unauthenticated-edits"], log)
    except ServeError as e:
        raise Failure(str(e))
    base = srv.base
    try:
        # The greedy answer, through the API, to pick a target it does not already give.
        status, r = http(base, "POST", "/v1/completions", {"prompt": PROMPT, "max_tokens": 16, "temperature": 0})
        need(status == 200, "POST /v1/completions: %d %r" % (status, r))
        api_text = r["choices"][0]["text"]
        target = next((t for t in TARGETS if not api_text.strip().startswith(t)), None)
        need(target, "the model already answers every candidate target: %r" % api_text)

        driver = browser(tmp)
        try:
            return steps(driver, base, api_text, target)
        except (Failure, TimeoutException, AssertionError) as e:
            for entry in driver.get_log("browser"):
                if entry.get("level") != "DEBUG":
                    print("browser console: %s %s" % (entry.get("level"), entry.get("message")),
                          file=sys.stderr)
            err = driver.find_elements(By.ID, "error")
            if err and err[0].get_attribute("textContent"):
                print("page #error: " + err[0].get_attribute("textContent"), file=sys.stderr)
            print("server log:\n" + tail(log), file=sys.stderr)
            if isinstance(e, TimeoutException):
                raise Failure("timed out: %s" % (e.msg or "waiting on the page"))
            raise
    finally:
        if driver is not None:
            driver.quit()
        srv.stop()


def steps(d, base, api_text, target):
    def by_id(i):
        return d.find_element(By.ID, i)

    def text(i):
        return by_id(i).get_attribute("textContent")

    def wait(cond, what, timeout=20):
        def safe(drv):
            try:
                return cond(drv)
            except StaleElementReferenceException:
                return False
        return WebDriverWait(d, timeout, poll_frequency=0.1).until(safe, "waiting for " + what)

    def complete(prompt):
        by_id("prompt").clear()
        by_id("prompt").send_keys(prompt)
        run0 = int(by_id("output").get_attribute("data-run") or 0)
        by_id("complete").click()
        wait(lambda _: int(by_id("output").get_attribute("data-run") or 0) > run0
             and by_id("output").get_attribute("data-state") in ("done", "error"),
             "the completion of %r to finish" % prompt, 30)
        need(by_id("output").get_attribute("data-state") == "done",
             "completion of %r failed; #error says: %r" % (prompt, text("error")))
        return text("output")

    def stat(name):
        return text("stat-" + name)

    d.get(base + "/")
    need("graft" in d.title, "GET / is not the graft page (title %r)" % d.title)
    for i in ("prompt", "max-tokens", "temperature", "complete", "output", "edit-prompt", "edit-target",
              "edit-submit", "edit-result", "edits", "stats", "error", "api-key"):
        need(d.find_elements(By.ID, i), "the page has no #" + i)
    need(by_id("max-tokens").get_attribute("value") == "16", "max_tokens should default to 16")
    need(by_id("temperature").get_attribute("value") == "0", "temperature should default to 0")
    wait(lambda _: stat("method") == "grace" and stat("edits") == "0",
         "#stats to show method grace and 0 live edits (shows %r)" % text("stats"))

    # 1. complete: the streamed answer is the API's greedy answer
    original = complete(PROMPT)
    need(original.strip(), "#output is empty after Complete")
    need(original == api_text, "streamed completion %r differs from the API's %r" % (original, api_text))
    need(not text("error"), "#error shows %r after a good completion" % text("error"))

    # 2. correct it: the prompt is prefilled; the edit is reproduced
    need(by_id("edit-prompt").get_attribute("value") == PROMPT,
         "#edit-prompt not prefilled with the last prompt (%r)" % by_id("edit-prompt").get_attribute("value"))
    by_id("edit-target").clear()
    by_id("edit-target").send_keys(target)
    by_id("edit-submit").click()
    wait(lambda _: by_id("edit-result").get_attribute("data-state") in ("done", "error"),
         "the edit to finish", 60)
    result = by_id("edit-result")
    need(result.get_attribute("data-state") == "done", "the edit failed; #error says: %r" % text("error"))
    need(result.get_attribute("data-reproduced") == "true",
         "the edit %r -> %r was not reproduced: %r" % (PROMPT, target, text("edit-result")))
    edit_id = result.get_attribute("data-id")
    need("reproduced yes" in text("edit-result"), "#edit-result does not say it was reproduced: %r" % text("edit-result"))

    item = '#edits li.edit[data-id="%s"]' % edit_id
    wait(lambda _: d.find_elements(By.CSS_SELECTOR, item), "edit #%s in the list" % edit_id)
    li = d.find_element(By.CSS_SELECTOR, item)
    need("undone" not in li.get_attribute("class").split(), "a fresh edit is marked undone")
    need(target in li.get_attribute("textContent"), "the list item does not show the target: %r"
         % li.get_attribute("textContent"))
    wait(lambda _: stat("edits") == "1", "#stats to show 1 live edit (shows %r)" % stat("edits"))

    # 3. the next completion gives the target
    edited = complete(PROMPT)
    need(edited.strip().startswith(target), "after the edit the completion is %r, not %r..." % (edited, target))

    # 4. undo: the item is marked undone, the original answer comes back
    d.find_element(By.CSS_SELECTOR, item + " button.undo").click()
    wait(lambda _: "undone" in d.find_element(By.CSS_SELECTOR, item).get_attribute("class").split(),
         "edit #%s to be marked undone" % edit_id)
    need(not d.find_elements(By.CSS_SELECTOR, item + " button.undo"), "an undone edit still has an Undo button")
    wait(lambda _: stat("edits") == "0", "#stats to show 0 live edits after undo (shows %r)" % stat("edits"))
    back = complete(PROMPT)
    need(back == original, "after undo the completion is %r, not the original %r" % (back, original))
    need(not text("error"), "#error shows %r" % text("error"))
    return 0


def main():
    if len(sys.argv) != 2:
        print("usage: browser_serve.py PATH/TO/graft", file=sys.stderr)
        return 1
    graft = os.path.abspath(sys.argv[1])
    if not os.access(graft, os.X_OK):
        print("browser_serve: FAIL: %s is not an executable" % graft, file=sys.stderr)
        return 1
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            skip("%s is missing (apt-get install %s)" % (path, pkg))
    if not (MODEL / "config.json").is_file():
        skip("model %s is missing" % MODEL)
    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="graft-browser-")
    try:
        run(graft, tmp)
    except Failure as e:
        print("browser_serve: FAIL: %s" % e, file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("browser_serve: ok (%.1f s)" % (time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
