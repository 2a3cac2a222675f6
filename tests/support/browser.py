"""Headless Chromium for tests: open a local page, run JavaScript in it, take screenshots.

The report test has to know whether a person opening `results/report.html` would see
every figure, and only a browser can tell (the report is a JavaScript app; its images are
data URIs it decodes and inserts itself). This drives Debian's `chromium` through the
DevTools protocol over a pipe (`--remote-debugging-pipe`: JSON messages separated by NUL
bytes on file descriptors 3 and 4), so it needs no Python package, no port and no
network.

    with Browser() as b:
        b.open(Path("report.html").resolve().as_uri())
        b.wait_for("document.querySelectorAll('img').length > 0")
        b.evaluate("[...document.images].map(i => i.naturalWidth)")
        b.screenshot("shot.png")

`install_chromium()` apt-gets `chromium` when it is missing (as root);
`skip_reason()` says why a machine cannot run it.

The one-shot command line, for looking at a page by hand:

    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \\
      --disable-background-networking --disable-component-update --disable-sync \\
      --user-data-dir=$(mktemp -d) --virtual-time-budget=10000 \\
      --window-size=1400,1000 --screenshot=/tmp/shot.png file:///abs/path/report.html
    # or --dump-dom instead of --screenshot=... to print the DOM after scripts ran
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")

FLAGS = (
    "--headless",
    "--no-sandbox",  # root in a container: the setuid/namespace sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",  # small /dev/shm in containers makes renderers crash
    "--mute-audio",
    "--hide-scrollbars",
)


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def install_chromium(timeout: float = 900) -> str:
    """Return Chromium's path, apt-get installing Debian's `chromium` first if needed."""
    path = find_chromium()
    if path:
        return path
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, timeout=timeout,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, check=True,
                   timeout=timeout, stdout=subprocess.DEVNULL)
    path = find_chromium()
    if path is None:
        raise RuntimeError("apt-get installed chromium but no chromium binary is on PATH")
    return path


def skip_reason() -> str | None:
    """Why this machine cannot run the browser tests, or None when it can (or can install)."""
    if find_chromium():
        return None
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "Chromium is not installed and installing it (apt-get install chromium) needs root"
    if shutil.which("apt-get") is None:
        return "Chromium is not installed and there is no apt-get to install it"
    return None


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with one page, driven over the DevTools pipe."""

    def __init__(self, width: int = 1400, height: int = 1000, timeout: float = 60):
        self.width, self.height, self.timeout = width, height, timeout
        self.proc: subprocess.Popen | None = None
        self._profile: tempfile.TemporaryDirectory | None = None
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict] = []
        self.console: list[str] = []
        self.session: str | None = None

    # -- process ---------------------------------------------------------------------
    def start(self) -> "Browser":
        exe = install_chromium()
        self._profile = tempfile.TemporaryDirectory(prefix="convergent-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire_pipes():
            # Chromium reads commands from fd 3 and writes answers to fd 4.
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self._stderr = open(Path(self._profile.name) / "stderr.log", "wb")
        self.proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={self._profile.name}", "--remote-debugging-pipe",
             f"--window-size={self.width},{self.height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr,
            pass_fds=(3, 4), preexec_fn=wire_pipes, start_new_session=True)
        os.close(to_child_r)
        os.close(from_child_w)
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Page.enable", session=True)
        self.send("Runtime.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride", session=True, width=self.width,
                  height=self.height, deviceScaleFactor=1, mobile=False)
        return self

    def close(self) -> None:
        if self.proc is not None:
            try:
                if self.proc.poll() is None:
                    self.send("Browser.close", timeout=10)
            except (BrowserError, OSError, TimeoutError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None
            for fd in (self._to_child, self._from_child):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._stderr.close()
        if self._profile is not None:
            self._profile.cleanup()
            self._profile = None

    def __enter__(self) -> "Browser":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    # -- protocol --------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from Chromium")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium closed the pipe:\n{self.stderr_tail()}")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, session: bool = False, timeout: float | None = None, **params):
        """Send one DevTools command and return its result (events seen meanwhile are kept)."""
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._note_event(reply)

    def _note_event(self, event: dict) -> None:
        self.events.append(event)
        method = event.get("method", "")
        params = event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            self.console.append(" ".join(str(a.get("value", a.get("description", "")))
                                         for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.console.append("exception: " + str(details.get("exception", {}).get(
                "description", details.get("text"))))

    def _wait_event(self, method: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        seen = len(self.events)
        for event in self.events[:seen]:
            if event.get("method") == method:
                self.events.remove(event)
                return event
        while True:
            event = self._read_message(deadline)
            if event.get("method") == method:
                return event
            self._note_event(event)

    # -- page ------------------------------------------------------------------------
    def open(self, url: str, timeout: float | None = None) -> None:
        """Navigate and wait for the load event (scripts may still be rendering after it)."""
        self.events.clear()
        result = self.send("Page.navigate", session=True, url=url)
        if result.get("errorText"):
            raise BrowserError(f"cannot open {url}: {result['errorText']}")
        self._wait_event("Page.loadEventFired", timeout or self.timeout)

    def evaluate(self, expression: str, timeout: float | None = None):
        """The JSON value of a JavaScript expression (awaited if it is a promise)."""
        result = self.send("Runtime.evaluate", session=True, timeout=timeout,
                           expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"JavaScript failed: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30, interval: float = 0.2):
        """Poll until `expression` is truthy and return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout}s: {expression}")
            time.sleep(interval)

    def images(self) -> list[dict]:
        """Every <img> on the page, once it finished loading: src head, size, loaded or not."""
        return self.evaluate("""
            Promise.all([...document.images].map(img => img.decode().then(() => true, () => false)
                .then(ok => ({src: (img.currentSrc || img.src).slice(0, 120),
                              alt: img.alt, loaded: ok && img.complete && img.naturalWidth > 0,
                              width: img.naturalWidth, height: img.naturalHeight}))))
        """)

    def screenshot(self, path: str | os.PathLike, full_page: bool = False) -> Path:
        params = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", session=True, **params)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path

    def stderr_tail(self, lines: int = 20) -> str:
        if self._profile is None:
            return ""
        log = Path(self._profile.name) / "stderr.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "index.html").resolve()
    with Browser() as browser:
        browser.open(target.as_uri())
        time.sleep(1)
        print(json.dumps(browser.images(), indent=1))
        print(browser.screenshot("/tmp/browser-shot.png"))
        print("\n".join(browser.console))
