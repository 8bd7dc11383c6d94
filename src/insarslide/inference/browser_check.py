"""A map page checked in a real browser: headless Chromium opens an ``<event_id>_map.html`` offline, hovers a
polygon, and reports console errors, outside requests and what the page showed (docs/prediction.md).

``python -m insarslide.inference.browser_check PAGE [--screenshot PNG]``.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

class BrowserError(RuntimeError):
    """Headless Chromium could not be started or did not answer."""


def find_chromium() -> str | None:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class _DevTools:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: the
    browser reads JSON messages on its fd 3 and writes them on fd 4, each ended by a NUL byte), so no
    WebSocket library and no open port are needed."""

    def __init__(self, executable: str, profile_dir: Path, width: int, height: int, timeout_s: float):
        import subprocess

        self.timeout_s = timeout_s
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        flags = ["--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--no-default-browser-check", f"--user-data-dir={profile_dir}", f"--window-size={width},{height}",
                 # the network is off: no name resolves and every proxied request goes to a closed port
                 "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--disable-extensions",
                 "--disable-background-networking", "--disable-component-update", "about:blank"]
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}', "chromium", executable, *flags],
            pass_fds=(to_browser_r, from_browser_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        import select
        import time

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_browser], [], [], max(0.0, left))
            if not ready:
                raise BrowserError(f"chromium did not answer within {self.timeout_s} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise BrowserError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict[str, Any]:
        import time

        self._next_id += 1
        payload = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            payload["sessionId"] = session
        os.write(self._to_browser, json.dumps(payload).encode() + b"\0")
        deadline = time.monotonic() + self.timeout_s
        while True:
            message = self._read_message(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str) -> dict[str, Any]:
        import time

        deadline = time.monotonic() + self.timeout_s
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            message = self._read_message(deadline)
            self.events.append(message)
            if message.get("method") == method:
                return message

    def close(self) -> None:
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self.process.terminate()
        try:
            self.process.wait(10)
        except Exception:
            self.process.kill()
            self.process.wait()


def check_in_browser(page: str | os.PathLike, *, screenshot: str | os.PathLike | None = None,
                     hover_polygon: int | None = 0, width: int = 1200, height: int = 800,
                     executable: str | None = None, timeout_s: float = 60.0) -> dict[str, Any]:
    """Open a map page in headless Chromium with the network off and report what a reader would see.

    Returns ``errors`` (console errors and uncaught exceptions), ``requests``
    (every URL the page asked for that is not ``file:`` or ``data:``), the
    polygon counts the page drew, and, when ``hover_polygon`` is an index,
    the tooltip shown with the mouse on that predicted polygon (-1: the
    largest; at a point inside it, found by shapely). Writes a PNG of the window when asked.
    """
    import tempfile

    from shapely.geometry import Polygon

    executable = executable or find_chromium()
    if executable is None:
        raise BrowserError("no chromium found on PATH (Debian: apt-get install chromium)")
    page = Path(page).resolve()
    data = json.loads(re.search(r'<script id="map-data" type="application/json">(.*?)</script>',
                                page.read_text(encoding="utf-8"), re.S).group(1).replace("<\\/", "</"))
    with tempfile.TemporaryDirectory(prefix="insarslide-chromium-") as profile:
        browser = _DevTools(executable, Path(profile), width, height, timeout_s)
        try:
            target = next(t for t in browser.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
            session = browser.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})[
                "sessionId"]
            for domain in ("Runtime", "Log", "Network", "Page"):
                browser.send(f"{domain}.enable", session=session)
            browser.send("Network.emulateNetworkConditions", {"offline": True, "latency": 0, "downloadThroughput": -1,
                                                              "uploadThroughput": -1}, session=session)
            browser.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                                "deviceScaleFactor": 1, "mobile": False},
                         session=session)
            browser.events.clear()
            browser.send("Page.navigate", {"url": page.as_uri()}, session=session)
            browser.wait_for("Page.loadEventFired")

            def evaluate(expression: str) -> Any:
                result = browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                      session=session)
                if "exceptionDetails" in result:
                    raise BrowserError(f"{expression}: {result['exceptionDetails']}")
                return result["result"].get("value")

            report: dict[str, Any] = {"counts": evaluate("({polygons: window.insarslideMap.polygons, "
                                                         "inventory: window.insarslideMap.inventory})")}
            if hover_polygon is not None and data["polygons"]:
                if hover_polygon < 0:  # the largest
                    hover_polygon = max(range(len(data["polygons"])), key=lambda k: data["polygons"][k]["area_px"])
                rings = data["polygons"][hover_polygon]["rings"]
                polygon = Polygon(np.reshape(rings[0], (-1, 2)))
                point = polygon.representative_point()
                # hover where the whole scene shows it; under a panel or outside, pan it to the centre first
                x, y = evaluate(f"(() => {{ const [x, y] = window.insarslideMap.toScreen({point.x}, {point.y}); "
                                "return document.elementFromPoint(x, y) === document.getElementById('map') ? "
                                f"[x, y] : window.insarslideMap.centerOn({point.x}, {point.y}); }})()")
                browser.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y}, session=session)
                report["hover"] = evaluate("({display: getComputedStyle(document.getElementById('tooltip')).display, "
                                           "text: document.getElementById('tooltip').innerText, "
                                           "id: document.getElementById('tooltip').dataset.id, "
                                           "readout: document.getElementById('readout').innerText})")
            report["scalebar"] = evaluate("document.getElementById('scaletext').innerText")
            if screenshot is not None:
                shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)
                Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
            # collect what arrived meanwhile (late console messages, requests)
            evaluate("1")
        finally:
            browser.close()
    errors, requests = [], []
    for event in browser.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("exception", {}).get("description")
                          or params["exceptionDetails"].get("text"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            errors.append(params["entry"].get("text"))
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(("file:", "data:")):
                requests.append(url)
    report.update(errors=errors, requests=requests)
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m insarslide.inference.browser_check PAGE [--screenshot PNG]``: open a map in headless Chromium, offline,
    and print what it showed (exit 1 on console errors or outside requests)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m insarslide.inference.browser_check", description=main.__doc__)
    parser.add_argument("page", help="an <event_id>_map.html written by predict.py")
    parser.add_argument("--screenshot", help="write a PNG of the page here")
    parser.add_argument("--hover", type=int, default=0, help="index of the predicted polygon to hover (default 0; -1: the largest)")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=800)
    args = parser.parse_args(argv)
    report = check_in_browser(args.page, screenshot=args.screenshot, hover_polygon=args.hover, width=args.width,
                              height=args.height)
    print(json.dumps(report, indent=2))
    return 1 if report["errors"] or report["requests"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
