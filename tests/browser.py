"""A real browser for tests: headless Chromium driven over the DevTools protocol.

`chromium_binary()` finds Debian's Chromium (installing it where this process may, else the test
skips saying why); `Browser` starts it with a fresh profile, optionally with no network, opens a
page, waits for a condition, evaluates JavaScript, reads the DOM, takes screenshots and records
every request the page made (and which failed). The protocol runs over a pipe
(`--remote-debugging-pipe`: file descriptors 3 and 4 of the browser), so no port is opened and no
websocket client is needed.

    with Browser(chromium_binary(), tmp_path / "profile", offline=True) as browser:
        browser.open(page.as_uri(), ready="document.querySelector('svg') !== null")
        browser.screenshot(tmp_path / "page.png")
        assert browser.failed == []
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         "--disable-default-apps", "--no-default-browser-check", "--hide-scrollbars",
         "--mute-audio", "--remote-debugging-pipe")
# Every request off this machine fails: through a proxy on the discard port, which nothing serves
# (loopback is still reached directly), and no host name resolves but localhost.
OFFLINE = ("--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost")


def chromium_binary() -> str:
    """Debian's Chromium; installed with apt-get where missing and this process is root, else the
    calling test skips with the reason."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for step in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"],
                     ["apt-get", "install", "-y", "-q", "chromium"]):  # again with fresh lists
            done = subprocess.run(step, capture_output=True, text=True, timeout=900, env=env)
            if done.returncode == 0 and step[1] == "install":
                break
        if done.returncode != 0:
            pytest.skip(f"chromium is missing and `apt-get install -y chromium` failed: "
                        f"{done.stderr[-300:]}")
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium is missing (Debian: apt-get install -y chromium) and this process "
                    "cannot install it")
    return found


def _high_fd(fd: int) -> int:
    """`fd` moved to 10 or above, so `3<&N 4>&M` cannot overwrite one with the other."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class Browser:
    """One headless Chromium with one page. `requests` lists every URL the page asked for since
    the last `open`, `failed` those that failed, as (url, error)."""

    def __init__(self, binary: str, profile: Path, *, offline: bool = True,
                 size: tuple[int, int] = (1280, 1000), timeout: float = 30) -> None:
        self.timeout = timeout
        to_browser, from_browser = os.pipe(), os.pipe()
        reads, writes = _high_fd(to_browser[0]), _high_fd(from_browser[1])
        self._send_fd, self._recv_fd = to_browser[1], from_browser[0]
        flags = [*FLAGS, *(OFFLINE if offline else ()), f"--user-data-dir={profile}",
                 f"--window-size={size[0]},{size[1]}"]
        # The browser reads commands from fd 3 and writes answers to fd 4: bash puts the
        # pipes there, then becomes the browser (no preexec_fn: tests run beside threads).
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{reads} 4>&{writes}', binary, *flags, "about:blank"],
            pass_fds=(reads, writes), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(reads)
        os.close(writes)
        self._buffer = b""
        self._sent = 0
        self.events: list[dict[str, Any]] = []
        self.requests: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self._urls: dict[str, str] = {}  # request id -> URL
        try:
            page = next(t for t in self.call("Target.getTargets", session=False)["targetInfos"]
                        if t["type"] == "page")
            self.session = self.call("Target.attachToTarget", session=False,
                                     targetId=page["targetId"], flatten=True)["sessionId"]
            for domain in ("Page", "Network", "Runtime"):
                self.call(f"{domain}.enable")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._recv_fd], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._recv_fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited (status {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        parsed = json.loads(message)
        params = parsed.get("params", {})
        if parsed.get("method") == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
            self._urls[params["requestId"]] = params["request"]["url"]
        elif parsed.get("method") == "Network.loadingFailed":
            self.failed.append((self._urls.get(params["requestId"], "?"), params["errorText"]))
        return parsed

    def call(self, method: str, *, session: bool = True, **params: Any) -> dict[str, Any]:
        """Send one DevTools command (to the page's session unless `session` is False) and
        return its result; events that arrive meanwhile are kept in `events`."""
        self._sent += 1
        message = {"id": self._sent, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._send_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._sent:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for_event(self, name: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == name:
                    return self.events.pop(i)
            self.events.append(self._receive(deadline))

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, *, ready: str = "true", dark: bool = False) -> None:
        """Load `url`, wait for its load event and then until the JavaScript `ready` is true
        (scripts that draw after load); `dark` asks for the dark colour scheme."""
        self.requests, self.failed, self._urls = [], [], {}
        self.call("Emulation.setEmulatedMedia", features=[
            {"name": "prefers-color-scheme", "value": "dark" if dark else "light"}])
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        self.call("Page.navigate", url=url)
        self.wait_for_event("Page.loadEventFired")
        deadline = time.monotonic() + self.timeout
        while not self.evaluate(f"Boolean({ready})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: not ready ({ready}) after {self.timeout} s; "
                                   f"failed requests: {self.failed}")
            time.sleep(0.1)

    def dom(self) -> str:
        """The document as it is now (after its scripts ran), as HTML."""
        return self.evaluate("document.documentElement.outerHTML")

    def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params |= {"captureBeyondViewport": True, "clip": {
                "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}}
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", **params)["data"]))
        return path

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        for fd in (self._send_fd, self._recv_fd):
            with contextlib.suppress(OSError):  # closed already
                os.close(fd)
        self._send_fd = self._recv_fd = -1
