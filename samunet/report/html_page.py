"""The page: inline CSS, a few lines of script that sort a table by the clicked column, no external resource."""
from __future__ import annotations

import html
import math
import re
from datetime import datetime

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; vertical-align: middle; }
th { background: #f2f2f2; } td.text, th.text { text-align: left; }
table.sortable th { cursor: pointer; user-select: none; } table.sortable th:hover { background: #e4e4e4; }
th.asc::after { content: " \\25B2"; } th.desc::after { content: " \\25BC"; }
td.poor { background: #fbe3e0; } td.fair { background: #fdf3d9; } td.good { background: #e5f4e3; }
img.thumb { height: 72px; } .gallery figure { display: inline-block; margin: 0.6em; vertical-align: top; }
.gallery figcaption { font-size: 0.8em; max-width: 460px; } .note { color: #555; font-size: 0.85em; }
div.wide { overflow-x: auto; } img { max-width: 100%; }
"""

SORT_SCRIPT = """
function key(cell) {  // a cell's sort key: its data-value (numbers; "" when missing), else its text
  return cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent.trim();
}
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var ascending = !th.classList.contains("asc");
      table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(ascending ? "asc" : "desc");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a.cells[column]), y = key(b.cells[column]);
        if (x === "" || y === "") { return (x === "") - (y === ""); }  // missing values stay last
        var nx = Number(x), ny = Number(y);
        var order = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def number(value, digits: int) -> tuple[str, str]:
    """(shown text, sort key) of a figure; a missing one shows "n/a" and sorts last."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "n/a", ""
    if math.isnan(value):
        return "n/a", ""
    return f"{value:.{digits}f}", repr(value)


def dice_class(value) -> str:
    """A cell colour by Dice, so the eye finds the poor cases."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return ""
    if math.isnan(value):
        return ""
    return "poor" if value < 0.5 else "fair" if value < 0.8 else "good"


def cell(text: str, sort_key: str | None = None, css: str = "", raw: bool = False) -> str:
    """A ``<td>``; ``sort_key``: what a sort compares instead of the text (a number's full value, "" for none)."""
    key = f' data-value="{esc(sort_key)}"' if sort_key is not None else ""
    css_attribute = f' class="{css}"' if css else ""
    return f"<td{key}{css_attribute}>{text if raw else esc(text)}</td>"


def table(header: list[str], rows: list[list[str]], sortable: bool = True, text_columns: int = 1) -> str:
    """``rows`` are lists of ready ``<td>`` cells; the first ``text_columns`` headers align left."""
    heads = "".join(f'<th class="text">{esc(h)}</th>' if i < text_columns else f"<th>{esc(h)}</th>"
                    for i, h in enumerate(header))
    body = "\n".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    opening = '<table class="sortable">' if sortable else "<table>"
    # a wide table (many structures, the leaderboard) scrolls sideways instead of overflowing the page
    return f'<div class="wide">{opening}<thead><tr>{heads}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>'



def markdown_inline(text: str) -> str:
    """``**bold**`` and ``code`` of a Markdown line, the rest escaped."""
    out = esc(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def page(title: str, sections: list[str]) -> str:
    stamp = f"{datetime.now():%Y-%m-%d %H:%M}"
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>", f"<style>{STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>", f'<p class="note">samunet_report, {stamp}. Click a column header to sort.</p>',
        *sections, f"<script>{SORT_SCRIPT}</script>", "</body></html>", ""])
