"""Tests of calocoffea.report: results.json and the HTML report with every image, link and
table it references (check_report, reused by the demo test)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_plotting import FIGURES, make_scans

from calocoffea import plotting
from calocoffea.report import (
    PNG_MAGIC,
    check_report,
    format_measurement,
    parse_report,
    write_report,
    write_results,
)

HOSTILE_PATH = "/data/<script>alert('x')</script>/e-.root"
FIGURE_NAMES = ("resolution", "linearity", "profiles")


def make_results(directory: Path) -> dict[str, Any]:
    """A results dict as a calibration run writes it, figures saved under ``plots/``."""
    scans = make_scans()
    figures = []
    for name in FIGURE_NAMES:
        paths = plotting.save(FIGURES[name](), directory / "plots", name)
        figures.append(
            {
                "name": name,
                "title": f"{name.capitalize()} <of> all variants",
                "png": str(Path(paths["png"]).relative_to(directory)),
                "pdf": str(Path(paths["pdf"]).relative_to(directory)),
                "caption": f"{name} & more",
            }
        )
    summary = [
        {
            "variant": variant,
            "a": scan["resolution"]["a"],
            "a_error": scan["resolution"]["a_error"],
            "c": scan["resolution"]["c"],
            "c_error": scan["resolution"]["c_error"],
            "max_linearity_deviation": np.float64(scan["linearity"]["max_deviation"]),
            "energies_fitted": int(sum(scan["used_in_fit"])),
        }
        for variant, scan in scans.items()
    ]
    return {
        "calocoffea_version": "0.1.0",
        "command": "calocoffea calibrun --config run.toml",
        "date": "2025-01-01T12:00:00+00:00",
        "machine": "test machine, 4 cores",
        "geometry": "tile_24x24",
        "summary": summary,
        "scans": scans,
        "calibration": {
            "mip": {"cells": 576, "fell_back": 3, "rms": math.nan, "window": {"lo": 0.5, "hi": 3}},
            "pedestal": {"method": "mean", "entries": np.int64(1000)},
        },
        "figures": figures,
        "inputs": [
            {"name": "electrons", "path": HOSTILE_PATH, "events": 1000, "seed": 1},
            {"name": "muons", "path": "/data/mu.root", "producer": "simulate", "sha256": "ab" * 32},
        ],
        "constants": [{"method": "mip", "path": "constants/mip.json", "valid": True}],
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A written report; read-only (copy it to change it)."""
    directory = tmp_path_factory.mktemp("run")
    results = make_results(directory)
    (directory / "histograms.root").write_bytes(b"root")
    write_results(directory, results)
    return write_report(directory, results), results


def test_report_is_sound(report: tuple[Path, dict[str, Any]]) -> None:
    path, _ = report
    assert check_report(path) == []
    page = parse_report(path)
    assert len(page.images) == len(FIGURE_NAMES)
    for image in page.images:
        assert (path.parent / str(image["src"])).read_bytes().startswith(PNG_MAGIC)
    links = set(page.links)
    assert {"results.json", "histograms.root", "plots/resolution.pdf"} <= links
    assert len(page.tables) == 1 + 1 + 3 + 2 + 2  # run, summary, scans, calibration, provenance


def test_summary_matches_results_json(report: tuple[Path, dict[str, Any]]) -> None:
    path, _ = report
    results = json.loads((path.parent / "results.json").read_text())
    (table,) = [t for t in parse_report(path).tables if t["id"] == "summary-table"]
    header, *rows = table["rows"]
    columns = [text for _, text in header]
    a, c = columns.index("a [%·√GeV]"), columns.index("c [%]")
    assert len(rows) == len(results["summary"])
    for row, expected in zip(rows, results["summary"], strict=True):
        assert row[a][1] == format_measurement(expected["a"], expected["a_error"], scale=100.0)
        assert row[c][1] == format_measurement(expected["c"], expected["c_error"], scale=100.0)
    assert rows[1][a][1] == "21.00 ± 0.40"


def test_strings_are_escaped(report: tuple[Path, dict[str, Any]]) -> None:
    path, _ = report
    text = path.read_text()
    assert "<script>" not in text
    assert "&lt;script&gt;" in text
    assert "<of>" not in text
    paths = [
        cell
        for table in parse_report(path).tables
        for row in table["rows"]
        for _, cell in row
        if "alert" in cell
    ]
    assert paths == [HOSTILE_PATH]  # the text survives escaping unchanged


def test_results_json_has_no_nan(report: tuple[Path, dict[str, Any]]) -> None:
    path, _ = report
    text = (path.parent / "results.json").read_text()
    assert "NaN" not in text
    results = json.loads(text)
    assert results["calibration"]["mip"]["rms"] is None
    assert results["scans"]["calibrated"]["linearity"]["deviation"][-1] is None
    assert results["calibration"]["pedestal"]["entries"] == 1000


def test_check_report_finds_problems(report: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    shutil.copytree(report[0].parent, tmp_path / "run")
    path = tmp_path / "run" / "report.html"
    (path.parent / "plots" / "linearity.png").write_bytes(b"not a png" * 200)
    (path.parent / "plots" / "profiles.png").unlink()
    (path.parent / "histograms.root").unlink()
    page = path.read_text().replace("</body>", "<table><tr><th>x</th></tr></table></body>")
    path.write_text(page.replace("</body>", '<a href="#nowhere">x</a></body>'))
    problems = check_report(path)
    assert any("linearity.png' is not a PNG" in p for p in problems), problems
    assert any("profiles.png' does not exist" in p for p in problems), problems
    assert any("'histograms.root' does not exist" in p for p in problems), problems
    assert any("has a header but no rows" in p for p in problems), problems
    assert any("#nowhere" in p for p in problems), problems
    assert len(problems) == 5


def test_minimal_results(tmp_path: Path) -> None:
    """Every section is optional; links only to files that exist."""
    path = write_report(tmp_path, {"command": "calocoffea calibrun"})
    assert check_report(path) == []
    assert "results.json" not in path.read_text()


def test_absolute_figure_paths_become_relative(tmp_path: Path) -> None:
    paths = plotting.save(FIGURES["mip"](), tmp_path.absolute() / "plots", "mip")
    figure = {"name": "mip", "title": "MIP", **paths}
    path = write_report(tmp_path, {"figures": [figure]})
    assert check_report(path) == []
    (image,) = parse_report(path).images
    assert image["src"] == "plots/mip.png"


def test_write_results_rejects_objects(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"results\['scans'\]\[0\] is a object"):
        write_results(tmp_path, {"scans": [object()]})
    assert not (tmp_path / "results.json").exists()


def test_format_measurement() -> None:
    assert format_measurement(0.2103, 0.0034, scale=100.0) == "21.03 ± 0.34"
    assert format_measurement(1234.5, 56.0) == "1234 ± 56"
    assert format_measurement(0.5, 0.0) == "0.5"
    assert format_measurement(None, 0.1) == "—"
    assert format_measurement(math.nan, 0.1) == "—"
