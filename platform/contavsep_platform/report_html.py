"""The report as one self-contained HTML page: the ranking table and the views' PNGs embedded
(data URIs, so the page shows whole wherever it is opened: from disk, or as an MLflow artifact,
whose viewer resolves no relative links), and for a view that does not apply, the reason.

The page marks on ``<body>`` whether its images loaded (``data-images="loaded"`` when every
``<img>`` has decoded with a non-zero width, else ``data-images="missing: <files>"``): a headless
browser's rendered DOM then says whether the page is whole, without a screenshot.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from contavsep_platform.search_views import View

HTML_FILE = "report.html"

# Runs once the page (and every image) has loaded or failed: a DOM attribute says which.
_IMAGE_CHECK = """<script>
window.addEventListener("load", function () {
  var broken = Array.prototype.filter.call(document.images, function (img) {
    return !(img.complete && img.naturalWidth > 0);
  }).map(function (img) { return img.getAttribute("data-file"); });
  document.body.setAttribute("data-images", broken.length ? "missing: " + broken.join(" ") : "loaded");
});
</script>"""

_STYLE = """<style>
body { font-family: sans-serif; margin: 2em auto; max-width: 75em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; }
th { background: #f2f2f2; }
img { max-width: 100%; border: 1px solid #eee; }
.missing { color: #8a5a00; background: #fff6e0; padding: 0.5em; }
.caption { color: #555; font-size: 0.9em; }
</style>"""


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if c is None else str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _view(view: View) -> str:
    parts = [f"<section><h2>{html.escape(view.title)}</h2>"]
    if view.file is None:
        parts.append(f'<p class="missing">{html.escape(view.caption)}</p>')
    else:
        data = base64.b64encode(view.file.read_bytes()).decode("ascii")
        parts.append(
            f'<img src="data:image/png;base64,{data}" data-file="{html.escape(view.file.name)}"'
            f' alt="{html.escape(view.title)}">'
        )
        parts.append(f'<p class="caption">{html.escape(view.caption)}</p>')
    if view.findings:
        parts.append("<ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in view.findings) + "</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def write_html(
    out: Path,
    title: str,
    intro: Sequence[str],
    ranking: tuple[Sequence[str], Sequence[Sequence[object]]],
    views: Sequence[View],
) -> Path:
    """Write ``out/report.html`` (atomically) with ``intro`` lines, the ranking table and the views."""
    header, rows = ranking
    body = [f"<h1>{html.escape(title)}</h1>"]
    body += [f"<p>{html.escape(line)}</p>" for line in intro]
    body.append("<section><h2>Ranking (best configuration per method)</h2>")
    body.append(_table(header, rows) if rows else '<p class="missing">No configuration completed all its runs.</p>')
    body.append('<p class="caption">Full tables: <a href="report.md">report.md</a>.</p></section>')
    body += [_view(v) for v in views]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>{_STYLE}{_IMAGE_CHECK}</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    path = out / HTML_FILE
    tmp = out / f"{HTML_FILE}.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
