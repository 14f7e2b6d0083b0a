"""Self-contained HTML reports: text, tables and figures, written atomically."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from rsnflow import __version__
from rsnflow.io import write_text

__all__ = ["Report"]

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em}
th{background:#f2f2f2}.warn{color:#a40}.ok{color:#070}img{max-width:100%}
footer{margin-top:3em;font-size:.8em;color:#777}
"""


class Report:
    """Build an HTML page section by section, then :meth:`write` it.

    Figures are embedded as base64 PNG so the page can be moved or uploaded
    (KFP HTML artifact, MLflow) without its folder.
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self._parts: list[str] = []

    def heading(self, text: str) -> Report:
        self._parts.append(f"<h2>{html.escape(text)}</h2>")
        return self

    def text(self, text: str, css: str | None = None) -> Report:
        cls = f' class="{css}"' if css else ""
        self._parts.append(f"<p{cls}>{html.escape(text)}</p>")
        return self

    def items(self, lines: list[str]) -> Report:
        lis = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
        self._parts.append(f"<ul>{lis}</ul>")
        return self

    def table(self, frame: pd.DataFrame) -> Report:
        self._parts.append(frame.to_html(index=False, escape=True, border=0))
        return self

    def figure(self, png: str | Path, caption: str = "") -> Report:
        data = base64.b64encode(Path(png).read_bytes()).decode()
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">{cap}</figure>'
        )
        return self

    def link(self, href: str, text: str) -> Report:
        self._parts.append(f'<p><a href="{html.escape(href)}">{html.escape(text)}</a></p>')
        return self

    def render(self) -> str:
        body = "\n".join(self._parts)
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>\n{body}\n"
            f"<footer>rsnflow {__version__}</footer></body></html>\n"
        )

    def write(self, path: str | Path) -> Path:
        return write_text(self.render(), path)
