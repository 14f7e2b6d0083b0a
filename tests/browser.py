"""Open pages in headless Chromium the way a person does, through the DevTools protocol.

``Browser().check(page, screenshot)`` loads a local HTML file, waits for it to
load, and returns what a reader would notice: whether it rendered as a page (not
as source text in a ``<pre>``), every ``href``/``src`` that does not resolve,
console errors and uncaught exceptions, resources that failed to load; it saves
a full-page screenshot. Chromium comes from Debian (``make tools`` installs it).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from websockets.sync.client import connect

_LINKS_JS = """(() => {
  const out = [];
  const anchors = [];
  for (const el of document.querySelectorAll('[href], [src]')) {
    const v = el.getAttribute('href') ?? el.getAttribute('src');
    if (v && v.startsWith('#')) anchors.push([v, document.getElementById(v.slice(1)) !== null]);
    else if (v && !v.startsWith('data:')) out.push([v, el.href ?? el.src]);
  }
  return JSON.stringify({
    contentType: document.contentType,
    title: document.title,
    onlyPre: document.body !== null && document.body.children.length === 1
             && document.body.firstElementChild.tagName === 'PRE',
    images: [...document.images].map(
      i => [i.getAttribute('src').slice(0, 40), i.complete && i.naturalWidth > 0]),
    links: out,
    anchors: anchors,
  });
})()"""


def find_chromium() -> str | None:
    """The Chromium executable on PATH (Debian's ``chromium``), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageCheck:
    """What a reader of one page would notice."""

    page: Path
    rendered_as_html: bool = False
    title: str = ""
    broken_links: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    links: list[Path] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        out = [] if self.rendered_as_html else ["shown as source text, not as a page"]
        out += [f"link does not resolve: {h}" for h in self.broken_links]
        out += [f"image not shown: {s}" for s in self.broken_images]
        out += [f"console: {m}" for m in self.console_errors]
        return out


class Browser:
    """One headless Chromium for a set of pages (bound to 127.0.0.1, its own profile folder)."""

    def __init__(self, executable: str | None = None, width: int = 1280) -> None:
        exe = executable or find_chromium()
        if exe is None:
            raise RuntimeError("chromium not found on PATH: `make tools` installs Debian's chromium")
        self._profile = tempfile.TemporaryDirectory(prefix="rsnflow-chromium-")
        self._proc = subprocess.Popen(
            [
                exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                f"--user-data-dir={self._profile.name}", f"--window-size={width},900",
                "--allow-file-access-from-files", "about:blank",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._ids = itertools.count(1)
        self.width = width
        url = self._devtools_url()
        self._ws = connect(url, max_size=2**28, open_timeout=30)
        targets = self._call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self._session = self._call("Target.attachToTarget", targetId=page["targetId"], flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log"):
            self._call(f"{domain}.enable", session=True)

    def _devtools_url(self) -> str:
        assert self._proc.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self._proc.stderr.readline()
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            if match:
                return match.group(1)
            if not line and self._proc.poll() is not None:
                break
        raise RuntimeError(f"chromium did not start (exit {self._proc.poll()})")

    def _send(self, method: str, session: bool, **params: Any) -> int:
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self._session
        self._ws.send(json.dumps(msg))
        return msg_id

    def _call(self, method: str, session: bool = False, events: list | None = None, **params: Any) -> Any:
        msg_id = self._send(method, session, **params)
        while True:
            msg = json.loads(self._ws.recv(timeout=120))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if events is not None and "method" in msg:
                events.append(msg)

    def _wait_for(self, event: str, events: list, timeout: float = 60) -> None:
        if any(e["method"] == event for e in events):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self._ws.recv(timeout=timeout))
            if "method" in msg:
                events.append(msg)
                if msg["method"] == event:
                    return
        raise TimeoutError(f"no {event} within {timeout} s")

    def check(self, page: Path, screenshot: Path | None = None) -> PageCheck:
        """Load ``page`` (a local file), inspect it as a reader would, save a full-page screenshot."""
        events: list[dict[str, Any]] = []
        self._call("Page.navigate", session=True, events=events, url=page.resolve().as_uri())
        self._wait_for("Page.loadEventFired", events)
        result = self._call(
            "Runtime.evaluate", session=True, events=events, expression=_LINKS_JS, returnByValue=True
        )
        info = json.loads(result["result"]["value"])
        out = PageCheck(page, info["contentType"] == "text/html" and not info["onlyPre"], info["title"])
        for raw, resolved in info["links"]:
            parsed = urlparse(resolved)
            if parsed.scheme != "file":
                continue  # an external link: not this test's business
            target = Path(unquote(parsed.path))
            if target.is_file():
                out.links.append(target)
            else:
                out.broken_links.append(raw)
        out.broken_links += [anchor for anchor, found in info["anchors"] if not found]  # no such id here
        out.broken_images = [src for src, shown in info["images"] if not shown]
        for e in events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                out.console_errors.append(p["exceptionDetails"].get("text", "exception"))
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") == "error":
                out.console_errors.append(" ".join(str(a.get("value", "")) for a in p.get("args", [])))
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.console_errors.append(p["entry"]["text"])
        if screenshot is not None:
            shot = self._call(
                "Page.captureScreenshot",
                session=True,
                events=events,
                format="png",
                captureBeyondViewport=True,
            )
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        return out

    def close(self) -> None:
        try:
            self._ws.close()
        finally:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
