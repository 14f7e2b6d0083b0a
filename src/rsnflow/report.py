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
    (KFP HTML artifact, MLflow) without its folder. The section methods return
    the report, so calls chain.

    Parameters
    ----------
    title : str
        Title of the page (``<title>`` and the top heading).

    Attributes
    ----------
    title : str
        Title of the page.
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self._parts: list[str] = []

    def heading(self, text: str) -> Report:
        """Add a section heading (``<h2>``).

        Parameters
        ----------
        text : str
            The heading, HTML-escaped.

        Returns
        -------
        Report
            This report.
        """
        self._parts.append(f"<h2>{html.escape(text)}</h2>")
        return self

    def text(self, text: str, css: str | None = None) -> Report:
        """Add a paragraph.

        Parameters
        ----------
        text : str
            The paragraph, HTML-escaped.
        css : str or None, default=None
            CSS class of the paragraph: ``"warn"`` or ``"ok"`` are styled.

        Returns
        -------
        Report
            This report.
        """
        cls = f' class="{css}"' if css else ""
        self._parts.append(f"<p{cls}>{html.escape(text)}</p>")
        return self

    def items(self, lines: list[str]) -> Report:
        """Add a bulleted list.

        Parameters
        ----------
        lines : list of str
            One item each, HTML-escaped.

        Returns
        -------
        Report
            This report.
        """
        lis = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
        self._parts.append(f"<ul>{lis}</ul>")
        return self

    def table(self, frame: pd.DataFrame, links: dict[str, list[str]] | None = None) -> Report:
        """Add a table (without the frame's index).

        Parameters
        ----------
        frame : pandas.DataFrame
            The table; cell values are HTML-escaped.
        links : dict of str to list of str, optional
            Column name to one ``href`` per row: those cells become links (to a
            figure's anchor ``#id``, another page).

        Returns
        -------
        Report
            This report.
        """
        if not links:
            self._parts.append(frame.to_html(index=False, escape=True, border=0))
            return self
        shown = frame.astype(str).map(html.escape)
        for column, hrefs in links.items():
            shown[column] = [
                f'<a href="{html.escape(h)}">{cell}</a>' for cell, h in zip(shown[column], hrefs, strict=True)
            ]
        self._parts.append(shown.to_html(index=False, escape=False, border=0))
        return self

    def figure(self, png: str | Path, caption: str = "", anchor: str | None = None) -> Report:
        """Add a PNG, embedded as base64, with an optional caption.

        Parameters
        ----------
        png : str or Path
            The PNG file, read now.
        caption : str, default=""
            Caption and alt text; no caption when empty.
        anchor : str, optional
            The figure's HTML ``id``, for links to it (``#anchor``).

        Returns
        -------
        Report
            This report.
        """
        data = base64.b64encode(Path(png).read_bytes()).decode()
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        ident = f' id="{html.escape(anchor)}"' if anchor else ""
        img = f'<img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
        self._parts.append(f"<figure{ident}>{img}{cap}</figure>")
        return self

    def link(self, href: str, text: str) -> Report:
        """Add a paragraph with a link.

        Parameters
        ----------
        href : str
            The link target, usually a file beside the page.
        text : str
            The link text.

        Returns
        -------
        Report
            This report.
        """
        self._parts.append(f'<p><a href="{html.escape(href)}">{html.escape(text)}</a></p>')
        return self

    def render(self) -> str:
        """The whole page as HTML.

        Returns
        -------
        str
            A self-contained HTML document: title, style, the sections in order and a
            footer with the rsnflow version.
        """
        body = "\n".join(self._parts)
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>\n{body}\n"
            f"<footer>rsnflow {__version__}</footer></body></html>\n"
        )

    def write(self, path: str | Path) -> Path:
        """Write the rendered page atomically.

        Parameters
        ----------
        path : str or Path
            Output HTML file.

        Returns
        -------
        Path
            The written file.
        """
        return write_text(self.render(), path)
