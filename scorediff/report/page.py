"""The report page: one self-contained HTML document (images embedded as data: URIs, no script, a
Content-Security-Policy that forbids any external resource)."""

from __future__ import annotations

import base64
import html

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _table(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; }
table { border-collapse: collapse; font-size: .9em; } td, th { border: 1px solid #ccc; padding: .25em .6em; }
th { background: #f0f0f0; } td { text-align: right; } td:first-child { text-align: left; }
.grids { display: flex; flex-wrap: wrap; gap: 1em; } .grids figure { margin: 0; }
.grids img { max-width: 300px; image-rendering: pixelated; } img { max-width: 100%; } .note { color: #666; font-size: .9em; }
"""


def render(sections: list[tuple[str, str]], title: str) -> str:
    """The page: a title and (heading, HTML body) sections; no script, nothing fetched."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for heading, body in sections:
        parts.append(f"<section><h2>{html.escape(heading)}</h2>{body}</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
