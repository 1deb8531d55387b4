"""results.json and a static HTML report of a calibration run (stdlib only).

What to use when:

- :func:`write_results`: the results dict as ``results.json`` (non-finite numbers as null,
  numpy values as plain numbers).
- :func:`write_report`: the same dict as ``report.html``, one page with no scripts and no
  external files other than its own figures and links; write it last, so that the files it
  links to exist.
- :func:`check_report`: the problems of a written report (missing or broken images and
  links, tables without header or rows); an empty list when it is sound.
- :func:`format_measurement`: ``value ± error`` to the two significant digits of the error,
  as the tables (and the figure legends) show it.

The results dict (keys optional unless said): ``calocoffea_version``, ``command``, ``date``,
``machine``, ``geometry``; ``title``; ``summary`` (rows with ``variant``, ``a``, ``a_error``, ``c``,
``c_error``, ``max_linearity_deviation``, ``energies_fitted``); ``scans`` ({variant: scan
dict}, see :func:`calocoffea.plotting.resolution_figure`); ``calibration`` ({method:
{key: value}}); ``figures`` (``name``, ``title``, ``png``, ``pdf``, ``caption``, paths
relative to the report's directory); ``checks`` (rows with ``check``, ``value``, ``passed``);
``inputs``, ``constants`` and ``steps`` (lists of dicts).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from calocoffea.io import atomic_write

__all__ = [
    "ReportParser",
    "check_report",
    "format_measurement",
    "jsonable",
    "parse_report",
    "render_report",
    "write_report",
    "write_results",
]

#: Shown for a missing (None) value.
MISSING = "—"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Files the report links to when they are in its directory.
LINKED_FILES = ("results.json", "histograms.root")

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ccc; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: 0.6rem 0 1.2rem; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left;
         vertical-align: top; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.unused { color: #999; } td { overflow-wrap: anywhere; }
code { font-size: 0.9em; word-break: break-all; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.92rem; color: #444; }
"""


# --------------------------------------------------------------------------- formatting


def format_measurement(value: float | None, error: float | None, *, scale: float = 1.0) -> str:
    """``value ± error`` (both times ``scale``) with the decimals of two significant digits
    of the error; the value alone (4 significant digits) when the error is not positive."""
    if value is None or not math.isfinite(value):
        return MISSING
    value *= scale
    if error is None or not (math.isfinite(error) and error > 0):
        return f"{value:.4g}"
    error *= scale
    decimals = max(0, 1 - math.floor(math.log10(error)))
    return f"{value:.{decimals}f} ± {error:.{decimals}f}"


def _percent(fraction: Any, digits: int = 2) -> str:
    if not isinstance(fraction, int | float) or not math.isfinite(fraction):
        return MISSING
    return f"{100.0 * fraction:.{digits}f} %"


def _fixed(value: Any, decimals: int) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return MISSING
    return f"{value:.{decimals}f}"


def _text(value: Any) -> str:
    """A value as plain text: numbers to 4 significant digits, dicts as 'k: v, k: v'."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else MISSING
    if isinstance(value, Mapping):
        return ", ".join(f"{key}: {_text(item)}" for key, item in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_text(item) for item in value)
    return str(value)


def _td(text: str, *classes: str) -> str:
    """A table cell of (unescaped) ``text`` with the CSS ``classes`` that are not empty."""
    names = " ".join(name for name in classes if name)
    attribute = f' class="{names}"' if names else ""
    return f"<td{attribute}>{escape(text)}</td>"


def _cell(value: Any, css: str = "") -> str:
    """A table cell of any value; numbers are right-aligned."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return _td(_text(value), "num" if numeric else "", css)


def _slug(text: Any) -> str:
    """``text`` as an id: lower case letters, digits and dashes."""
    return "-".join("".join(c if c.isalnum() else " " for c in str(text).lower()).split())


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], table_id: str = "") -> str:
    """A table with the (unescaped) ``header`` names and rows of ready ``<td>`` cells."""
    head = "".join(f"<th>{escape(name)}</th>" for name in header)
    body = "".join(f"<tr>{''.join(row)}</tr>" for row in rows)
    attribute = f' id="{escape(table_id)}"' if table_id else ""
    return f"<table{attribute}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --------------------------------------------------------------------------- sections


def _title(results: Mapping[str, Any]) -> str:
    if results.get("title"):
        return _text(results["title"])
    geometry = results.get("geometry")
    return "calocoffea report" + (f": {_text(geometry)}" if geometry else "")


def _header(results: Mapping[str, Any]) -> str:
    rows = [
        (name, results[key])
        for name, key in (
            ("calocoffea version", "calocoffea_version"),
            ("Command", "command"),
            ("Date", "date"),
            ("Machine", "machine"),
            ("Geometry", "geometry"),
        )
        if results.get(key) is not None
    ]
    table = (
        _table(
            ("Run", "Value"),
            (
                [f"<th>{escape(name)}</th>", f"<td><code>{escape(_text(value))}</code></td>"]
                for name, value in rows
            ),
        )
        if rows
        else ""
    )
    return f"<h1>{escape(_title(results))}</h1>{table}"


def _summary(rows: Sequence[Mapping[str, Any]]) -> str:
    header = ("Variant", "a [%·√GeV]", "c [%]", "Max. linearity deviation", "Energies fitted")
    cells = [
        [
            _cell(row.get("variant")),
            _summary_cell(row, "a"),
            _summary_cell(row, "c"),
            _td(_percent(row.get("max_linearity_deviation")), "num"),
            _cell(row.get("energies_fitted")),
        ]
        for row in rows
    ]
    note = "<p>Resolution fit σ/E = a/√E ⊕ c, E in GeV; deviation from the linear fit.</p>"
    return f'<h2 id="summary">Summary</h2>{note}{_table(header, cells, "summary-table")}'


def _summary_cell(row: Mapping[str, Any], name: str) -> str:
    return _td(format_measurement(row.get(name), row.get(f"{name}_error"), scale=100.0), "num")


def _checks(checks: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            _cell(check.get("check")),
            _td(_text(check.get("value")), "num"),
            _cell("yes" if check.get("passed") else "NO"),
        ]
        for check in checks
    ]
    table = _table(("Target", "Measured", "Holds"), rows, "checks-table")
    return f'<h2 id="checks">Targets</h2>{table}'


def _scans(scans: Mapping[str, Mapping[str, Any]]) -> str:
    parts = ['<h2 id="scans">Energy points</h2>']
    for variant, scan in scans.items():
        parts.append(f"<h3>{escape(_text(scan.get('label', variant)))}</h3>")
        parts.append(_fit_line(scan))
        parts.append(_scan_table(variant, scan))
    return "".join(parts)


def _fit_line(scan: Mapping[str, Any]) -> str:
    resolution, linearity = scan.get("resolution") or {}, scan.get("linearity") or {}
    terms = []
    if resolution:
        a = format_measurement(resolution.get("a"), resolution.get("a_error"), scale=100.0)
        c = format_measurement(resolution.get("c"), resolution.get("c_error"), scale=100.0)
        valid = "" if resolution.get("valid", True) else " (fit not valid)"
        chi2 = _text(resolution.get("chi2_ndf"))
        terms.append(f"a = {a} %·√GeV, c = {c} %, χ²/ndf = {chi2}{valid}")
    if linearity:
        terms.append(
            f"slope {_fixed(linearity.get('slope'), 4)}, "
            f"offset {_text(linearity.get('offset'))} GeV, "
            f"max. deviation {_percent(linearity.get('max_deviation'))}"
        )
    return f"<p>{escape('; '.join(terms))}</p>" if terms else ""


def _scan_table(variant: str, scan: Mapping[str, Any]) -> str:
    energy = list(scan.get("energy_gev") or [])
    n = len(energy)

    def column(key: str, default: Any = None) -> list[Any]:
        values = list(scan.get(key) or [])
        return values + [default] * (n - len(values))

    mean, mean_error = column("mean_gev"), column("mean_error_gev")
    sigma, sigma_error = column("sigma_over_e"), column("sigma_over_e_error")
    clipped, used = column("clipped_fraction"), column("used_in_fit", True)
    header = ("Energy [GeV]", "Mean [GeV]", "σ/E [%]", "Clipped [%]", "Used in fit")
    rows = []
    for k in range(n):
        css = "" if used[k] else "unused"
        rows.append(
            [
                _cell(energy[k], css),
                _td(format_measurement(mean[k], mean_error[k]), "num", css),
                _td(format_measurement(sigma[k], sigma_error[k], scale=100.0), "num", css),
                _td(_percent(clipped[k]), "num", css),
                _cell(bool(used[k]), css),
            ]
        )
    return _table(header, rows, f"scan-{_slug(variant)}") if rows else "<p>No energy points.</p>"


def _reconstructions(reconstructions: Mapping[str, Any]) -> str:
    """The sum beside the shipped learned models, on the same calibrated events."""
    parts = ['<h2 id="reconstructions">Reconstruction models</h2>']
    for name, scan in (reconstructions.get("scans") or {}).items():
        model = f" ({scan['model']})" if scan.get("model") else ""
        parts.append(f"<h3>{escape(str(name) + model)}</h3>")
        parts.append(_fit_line(scan))
        parts.append(_scan_table(f"model-{name}", scan))
    for name, why in (reconstructions.get("not_shipped") or {}).items():
        parts.append(f"<p>{escape(str(name))}: not shown, {escape(str(why))}</p>")
    return "".join(parts)


def _calibration(methods: Mapping[str, Mapping[str, Any]]) -> str:
    parts = ['<h2 id="calibration">Calibration</h2>']
    for method, values in methods.items():
        parts.append(f"<h3>{escape(str(method))}</h3>")
        if isinstance(values, Mapping) and values:
            rows = ([f"<th>{escape(str(key))}</th>", _cell(value)] for key, value in values.items())
            parts.append(_table(("Key", "Value"), rows, f"calibration-{_slug(method)}"))
        else:
            parts.append(f"<p>{escape(_text(values))}</p>")
    return "".join(parts)


def _figures(figures: Sequence[Mapping[str, Any]], directory: Path) -> str:
    parts = ['<h2 id="figures">Figures</h2>']
    for figure in figures:
        title = _text(figure.get("title") or figure.get("name") or "figure")
        caption = escape(_text(figure.get("caption") or title))
        if figure.get("pdf"):
            caption += f' (<a href="{escape(_href(figure["pdf"], directory))}">PDF</a>)'
        image = (
            f'<img src="{escape(_href(figure["png"], directory))}" alt="{escape(title)}">'
            if figure.get("png")
            else ""
        )
        name = figure.get("name")
        anchor = f' id="figure-{_slug(name)}"' if name else ""
        parts.append(f"<figure{anchor}>{image}<figcaption>{caption}</figcaption></figure>")
    return "".join(parts)


def _href(path: Any, directory: Path) -> str:
    """A file path as a URL path relative to the report's directory where it can be."""
    target = Path(str(path))
    if target.is_absolute() and target.is_relative_to(directory.absolute()):
        target = target.relative_to(directory.absolute())
    return target.as_posix()


def _records(title: str, anchor: str, records: Sequence[Mapping[str, Any]]) -> str:
    """A table of dicts with the union of their keys as columns, in order of appearance."""
    columns = list(dict.fromkeys(key for record in records for key in record))
    rows = [[_cell(record.get(key)) for key in columns] for record in records]
    body = _table(columns, rows, f"{anchor}-table") if columns else "<p>None.</p>"
    return f'<h3 id="{anchor}">{escape(title)}</h3>{body}'


def _provenance(results: Mapping[str, Any], directory: Path) -> str:
    parts = ['<h2 id="provenance">Provenance</h2>']
    if results.get("inputs"):
        parts.append(_records("Inputs", "inputs", results["inputs"]))
    if results.get("constants"):
        parts.append(_records("Constants", "constants", results["constants"]))
    if results.get("steps"):
        parts.append(_records("Steps and their wall time [s]", "steps", results["steps"]))
    links = [
        f'<li><a href="{escape(name)}">{escape(name)}</a></li>'
        for name in LINKED_FILES
        if (directory / name).is_file()
    ]
    if links:
        parts.append(f"<h3>Files</h3><ul>{''.join(links)}</ul>")
    return "".join(parts) if len(parts) > 1 else ""


def render_report(results: Mapping[str, Any], directory: Path) -> str:
    """The report page of ``results`` as an HTML string (links checked in ``directory``).

    The page shows what results.json holds: ``results`` goes through :func:`jsonable`."""
    results = jsonable(results)
    sections = [_header(results)]
    if results.get("summary"):
        sections.append(_summary(results["summary"]))
    if results.get("checks"):
        sections.append(_checks(results["checks"]))
    if results.get("figures"):
        sections.append(_figures(results["figures"], Path(directory)))
    if results.get("scans"):
        sections.append(_scans(results["scans"]))
    if results.get("calibration"):
        sections.append(_calibration(results["calibration"]))
    if results.get("reconstructions"):
        sections.append(_reconstructions(results["reconstructions"]))
    sections.append(_provenance(results, Path(directory)))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(_title(results))}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(section for section in sections if section)
        + "\n</body></html>\n"
    )


def write_report(directory: Path, results: Mapping[str, Any]) -> Path:
    """Write ``directory/report.html`` from ``results`` (atomically); return its path."""
    directory = Path(directory)
    target = directory / "report.html"
    page = render_report(results, directory)
    with atomic_write(target) as temporary:
        temporary.write_text(page, encoding="utf-8")
    return target


# --------------------------------------------------------------------------- results.json


def jsonable(value: Any, where: str = "results") -> Any:
    """``value`` with numpy scalars and arrays as Python numbers and lists, paths as
    strings and non-finite floats as None; TypeError naming the key for anything else."""
    if isinstance(value, Mapping):
        return {str(key): jsonable(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item, f"{where}[{k}]") for k, item in enumerate(value)]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
        return jsonable(value.tolist(), where)
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(
        f"{where} is a {type(value).__name__}, which JSON cannot hold; convert it to a "
        "number, string, list or dict"
    )


def write_results(directory: Path, results: Mapping[str, Any]) -> Path:
    """Write ``directory/results.json`` (indent 2, atomically); return its path."""
    target = Path(directory) / "results.json"
    text = json.dumps(jsonable(results), indent=2, allow_nan=False)
    with atomic_write(target) as temporary:
        temporary.write_text(text + "\n", encoding="utf-8")
    return target


# --------------------------------------------------------------------------- checking


class ReportParser(HTMLParser):
    """Images, links, ids and tables of a page; each table is its ``id`` and its rows, a
    row a list of (``"th"`` or ``"td"``, text) cells."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[dict[str, str | None]] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.scripts = 0
        self.tables: list[dict[str, Any]] = []
        self._open: list[dict[str, Any]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids.add(str(attributes["id"]))
        if tag == "img":
            self.images.append(attributes)
        elif tag in ("a", "link") and attributes.get("href") is not None:
            self.links.append(str(attributes["href"]))
        elif tag in ("script", "iframe", "object", "embed"):
            self.scripts += 1
        elif tag == "table":
            self._open.append({"id": attributes.get("id"), "rows": []})
        elif tag == "tr" and self._open:
            self._open[-1]["rows"].append([])
        elif tag in ("th", "td") and self._open and self._open[-1]["rows"]:
            self._cell = []
            self._open[-1]["rows"][-1].append((tag, self._cell))

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td"):
            self._cell = None
        elif tag == "table" and self._open:
            table = self._open.pop()
            table["rows"] = [
                [(kind, " ".join("".join(text).split())) for kind, text in row]
                for row in table["rows"]
            ]
            self.tables.append(table)


def parse_report(path: Path) -> ReportParser:
    """The images, links, ids and tables of the HTML page at ``path``."""
    page = ReportParser()
    page.feed(Path(path).read_text(encoding="utf-8"))
    page.close()
    return page


def check_report(path: Path) -> list[str]:
    """Problems of the HTML report at ``path``; empty when every image exists and is a PNG
    (or another existing file), every relative link and #anchor resolves, every table has
    a header row and at least one data row of the same width, and there are no scripts."""
    path = Path(path)
    if not path.is_file():
        return [f"{path} does not exist"]
    page = parse_report(path)
    problems: list[str] = []
    if page.scripts:
        problems.append(f"{page.scripts} script/iframe/object elements; the report is static")
    for image in page.images:
        problems += _check_image(path.parent, image)
    for href in page.links:
        problems += _check_link(path.parent, href, page.ids)
    for number, table in enumerate(page.tables, start=1):
        problems += _check_table(number, table)
    return problems


def _local(directory: Path, url: str) -> Path | None:
    """The file a relative URL points to, None for external URLs and bare anchors."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not parts.path:
        return None
    return directory / unquote(parts.path)


def _check_image(directory: Path, image: Mapping[str, str | None]) -> list[str]:
    src = image.get("src") or ""
    if not image.get("alt"):
        problems = [f"image {src!r} has no alt text"]
    else:
        problems = []
    target = _local(directory, src)
    if target is None:
        return [*problems, f"image {src!r} is not a relative path to a file"]
    if not target.is_file():
        return [*problems, f"image {src!r} does not exist ({target})"]
    if target.suffix.lower() == ".png":
        with target.open("rb") as file:
            if file.read(len(PNG_MAGIC)) != PNG_MAGIC:
                problems.append(f"image {src!r} is not a PNG file")
        if target.stat().st_size < 1000:
            problems.append(f"image {src!r} is suspiciously small ({target.stat().st_size} B)")
    return problems


def _check_link(directory: Path, href: str, ids: set[str]) -> list[str]:
    parts = urlsplit(href)
    if not (parts.scheme or parts.netloc or parts.path):
        anchor = parts.fragment
        return [] if not anchor or anchor in ids else [f"link {href!r}: no element with that id"]
    target = _local(directory, href)
    if target is not None and not target.exists():
        return [f"link {href!r} does not exist ({target})"]
    return []


def _check_table(number: int, table: Mapping[str, Any]) -> list[str]:
    name = f"table {number}" + (f" ({table['id']})" if table.get("id") else "")
    rows = table["rows"]
    if not rows or not any(kind == "th" for kind, _ in rows[0]):
        return [f"{name} has no header row"]
    if len(rows) < 2:
        return [f"{name} has a header but no rows"]
    width = len(rows[0])
    return [
        f"{name}, row {k}: {len(row)} cells, the header has {width}"
        for k, row in enumerate(rows[1:], start=1)
        if len(row) != width
    ]
