"""Reproduce seed 000's cell-level (a, b) calibration on `cepc_ahcal` and record it in README.

Electrons at 80, 100 and 120 GeV (``--events`` per energy and sample, default 4000):

- MC_truth: the simulation (hit deposits in MIP of the layer);
- MC_digi: digitised with the nominal conditions at the design (a, b) = (0.05, 1) in every
  cell (the MC does not know each front end), beam spot centred, sigma 10 mm;
- data: independent events, digitised with the same conditions except per-cell (a, b) drawn
  around the design (seed 7): a with its default spread 0.01, b with 0.05 instead of 0.02 (at
  2 % the design constants already sit within 5 % of the truth and the cell spectra of data
  and MC_digi differ less than their statistics; 5 % makes the seed's effect visible); beam
  spot shifted by (5, -5) mm and wider (sigma 15 mm), as seed 000 describes;
- a second data run with the spot shifted by one cell (40 mm) for the robustness check.

`inverse_nonlinearity` is fitted on each data run against MC_digi (starting constants: the
MC's own); the scores use :func:`calocoffea.scoring.score_constants` over the cells with a fit
of their own (status 0: at least ``min_hits`` hits in both samples inside the overlap of the
beam profiles), and the energy-sum resolution sigma/E (half the 16-84 % interquantile range
over the median of the event sums [GeV]) of corrected data against MC_digi's, per energy.
The main data run is fitted a second time with the energy-prediction term filled by the
shipped ``cnn_lstm`` (``energy_prediction=cnn_lstm``, ``weight_prediction`` at its default 1:
the network's correction E_net / S frozen on a first fit without the term,
:mod:`calocoffea.models.prediction`); its a and b scores and sigma/E are compared with those
of the fit without the term (reported, no target).
Figures (``--figures DIR``): spectra of MC_truth, MC_digi, data and corrected data at 100 GeV,
layer 7, the central 4 x 4 cells.
Run: ``python reproduce/nonlinearity.py [--events N] [--no-readme] [--figures DIR]``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
from _readme import machine, write_block

from calocoffea import nonlinearity_fit as nl
from calocoffea.calibration import CalibrationSteps
from calocoffea.conditions import Conditions
from calocoffea.constants import Constants, nominal_constants
from calocoffea.geometry import get_geometry
from calocoffea.io import read_events
from calocoffea.methods import calibration_method
from calocoffea.runner import RunOptions, calibrate_files, digitize_files, fit_files
from calocoffea.scoring import score_constants

GEOMETRY = "cepc_ahcal"
ENERGIES_GEV = (80.0, 100.0, 120.0)
DATA_SEED = 7
SPREAD_A, SPREAD_B = 0.01, 0.05
#: beam spots (x, y, sigma) [mm]
SPOTS = {"mc": (0.0, 0.0, 10.0), "data": (5.0, -5.0, 15.0), "shifted": (40.0, 0.0, 15.0)}
SIM_SEEDS = {"mc": 101, "data": 102, "shifted": 103}
MIN_HITS = 1000
#: the shipped network of the energy-prediction run (option energy_prediction)
NETWORK = "cnn_lstm"
#: targets (issue 7)
TARGET_RMS = 0.05
TARGET_RESOLUTION = 0.05


def _simulate(args: tuple[str, int, Path]) -> str:
    from calocoffea.simulation.beam import Beam
    from calocoffea.simulation.run import simulate

    name, events, path = args
    x, y, size = SPOTS[name]
    beam = Beam(energies_gev=ENERGIES_GEV, x_mm=x, y_mm=y, size_mm=size)
    return str(simulate(GEOMETRY, "e-", beam, events, SIM_SEEDS[name], path))


def event_sums(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(beam energy, calibrated energy sum [GeV]) of every event of a calibrated file."""
    events = read_events(path)
    return (np.asarray(events.beam_energy, np.float64),
            np.asarray(ak.sum(events.hits.energy, axis=1), np.float64))  # fmt: skip


def resolution(beam: np.ndarray, sums: np.ndarray) -> dict[float, float]:
    """sigma/E per beam energy: half the 16-84 % range over the median."""
    out = {}
    for energy in ENERGIES_GEV:
        s = sums[beam == energy]
        p16, p50, p84 = np.percentile(s, [16, 50, 84])
        out[energy] = 0.5 * (p84 - p16) / p50
    return out


def calibrated(raw: str, constants: Constants, out: Path, steps: CalibrationSteps) -> str:
    options = RunOptions(executor="futures", workers=2, chunksize=20_000)
    return str(calibrate_files([raw], out, constants, steps=steps, run_options=options).output)


def fit(data_raw: str, reference: str, start: Path, **extra: Any) -> tuple[Constants, float]:
    t0 = time.perf_counter()
    method = calibration_method(
        "inverse_nonlinearity", GEOMETRY, reference=reference, constants=str(start),
        min_hits=MIN_HITS, **extra,
    )  # fmt: skip
    options = RunOptions(executor="futures", workers=2, chunksize=20_000)
    constants, _ = fit_files(method, [data_raw], run_options=options)
    return constants, time.perf_counter() - t0


def score_lines(label: str, fitted: Constants, truth: Conditions) -> tuple[list[str], dict]:
    """Score lines of a, b (fit and nominal) over the status-0 cells."""
    ok = fitted.tables["nonlinearity_status"].values == 0
    a_true, b_true = truth.values["nonlinearity_a"], truth.values["nonlinearity_b"]
    a, b = fitted.tables["nonlinearity_a"].values, fitted.tables["nonlinearity_b"].values
    scores = {
        "b": score_constants(b, b_true, ok),
        "b_nominal": score_constants(np.ones_like(b), b_true, ok),
        "a": score_constants(a, a_true, ok & (a_true > 0)),
        "a_nominal": score_constants(np.full_like(a, 0.05), a_true, ok & (a_true > 0)),
    }
    q = fitted.provenance.fit_quality
    prediction = ""
    if "prediction" in q["loss_refined"]:
        prediction = (
            f"; prediction loss nominal {q['loss_nominal']['prediction']:.3g} -> closed form "
            f"{q['loss_closed_form']['prediction']:.3g} -> refined "
            f"{q['loss_refined']['prediction']:.3g}"
        )
    lines = [
        f"**{label}**: {q['ok']} cells fitted (>= {q['min_hits']} hits in both samples inside "
        f"the beam-profile overlap), {q['too_few_hits']} too few hits, {q['failed_fit']} "
        f"failed; events outside the overlap: data {100 * q['profile_data_outside_overlap']:.1f}"
        f" %, MC {100 * q['profile_reference_outside_overlap']:.1f} %; loss (cell, energy "
        f"sum) nominal {q['loss_nominal']['cell']:.3g}, {q['loss_nominal']['energy_sum']:.3g}"
        f" -> closed form {q['loss_closed_form']['cell']:.3g}, "
        f"{q['loss_closed_form']['energy_sum']:.3g} -> refined {q['loss_refined']['cell']:.3g},"
        f" {q['loss_refined']['energy_sum']:.3g} ({q['refine_message']}){prediction}",
        "",
        *(f"- {name}: {score.line()}" for name, score in scores.items()),
    ]
    return lines, scores


def prediction_run(
    raw: str,
    reference: str,
    start: Constants,
    start_path: Path,
    work: Path,
    truth: Conditions,
    res_mc: dict[float, float],
    without: tuple[dict, dict[float, float], dict[float, float]],
) -> tuple[list[str], tuple[dict, dict[float, float]]]:
    """The main data run fitted with the :data:`NETWORK` prediction term: its score lines,
    sigma/E, and a table beside the fit ``without`` the term (scores, sigma/E, relative
    difference to MC_digi)."""
    fitted, seconds = fit(raw, reference, start_path, energy_prediction=NETWORK)
    label = (f"data (spot +5, -5 mm, 15 mm) with the {NETWORK} prediction term "
             f"(weight_prediction 1), fit {seconds:.0f} s")  # fmt: skip
    block, scores = score_lines(label, fitted, truth)
    block = [line for line in block if not line.startswith(("- a_nominal", "- b_nominal"))]
    p = fitted.provenance.fit_quality["prediction"]
    gev = CalibrationSteps(to_gev=True)
    res = resolution(*event_sums(
        calibrated(raw, start.update(fitted), work / "data-network.root", gev)))  # fmt: skip
    relative = {e: abs(res[e] - res_mc[e]) / res_mc[e] for e in ENERGIES_GEV}
    scores_0, res_0, relative_0 = without
    energies = " | ".join(f"sigma/E {e:.0f} GeV" for e in ENERGIES_GEV)
    block += [
        "",
        f"{shown(p['network'])}: E_net / S frozen on the data corrected by the fit without "
        f"the term (mean {p['factor_mean']:.3f} over {p['events']} events), then the "
        "refinement with it from the same closed-form start.",
        "",
        f"| fit | b RMS(fit/true - 1) | a RMS(fit/true - 1) | {energies} "
        "| worst rel. diff. vs MC_digi |",
        "|---|---|---|" + "---|" * len(ENERGIES_GEV) + "---|",
    ]
    for what, s, r, rel in (("without the term", scores_0, res_0, relative_0),
                            (f"with the {NETWORK} term", scores, res, relative)):  # fmt: skip
        block.append(f"| {what} | {100 * s['b'].rms:.2f} % | {100 * s['a'].rms:.2f} % | "
                     + " | ".join(f"{r[e]:.4f}" for e in ENERGIES_GEV)
                     + f" | {100 * max(rel.values()):.1f} % |")  # fmt: skip
    block.append("| MC_digi | | | " + " | ".join(f"{res_mc[e]:.4f}" for e in ENERGIES_GEV) + " | |")
    return block, (scores, relative)


def spectra_figure(work: Path, files: dict[str, str], figures: Path, mc: Conditions) -> Path:
    """Seed 000's figure: 100 GeV, layer 7, the central 4 x 4 cells."""
    geometry = get_geometry(GEOMETRY)
    cellids = geometry.cellids()
    from calocoffea.geometry import decode_cellid

    _, layer, i, j = decode_cellid(cellids)
    n_i, n_j = int(i.max()) + 1, int(j.max()) + 1
    rows = np.arange(n_i // 2 - 2, n_i // 2 + 2)
    cols = np.arange(n_j // 2 - 2, n_j // 2 + 2)
    chosen = np.array([np.flatnonzero((layer == 7) & (i == r) & (j == c))[0]
                       for r in rows for c in cols])  # fmt: skip
    spectra: dict[str, tuple[Any, Any]] = {}
    for label, path in files.items():
        events = read_events(path)
        events = events[np.asarray(events.beam_energy) == 100.0]
        cell = geometry.cell_index(ak.to_numpy(ak.flatten(events.hits.cellid)))
        energy = ak.to_numpy(ak.flatten(events.hits.energy)).astype(np.float64)
        if label == "MC_truth":  # MeV -> MIP of the cell's layer
            energy = energy / mc.mip_mev[cell]
        spectra[label] = (energy, cell)
    titles = [f"layer 7, i={r}, j={c}" for r in rows for c in cols]
    fig = nl.plot_cell_spectra(spectra, chosen, titles, title="e- 100 GeV, layer 7, central 4x4")
    figures.mkdir(parents=True, exist_ok=True)
    target = figures / "nonlinearity_cells_100gev_layer7.png"
    fig.savefig(target, dpi=90)
    return target


def shown(network: str) -> str:
    """``name (path)`` with the path relative to the repository (README stays portable)."""
    return network.replace(str(Path(__file__).resolve().parents[1]) + "/", "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=4000, help="electrons per energy")
    parser.add_argument("--no-readme", action="store_true", help="print only")
    parser.add_argument("--figures", type=Path, default=None, help="write the figure here")
    args = parser.parse_args()
    start_time = time.perf_counter()
    mc = nl.mc_digi_conditions(GEOMETRY)
    data = nl.data_conditions(mc, DATA_SEED, SPREAD_A, SPREAD_B)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with ProcessPoolExecutor(max_workers=2) as pool:
            sims = dict(zip(SPOTS, pool.map(
                _simulate, [(name, args.events, work / f"{name}-sim.root") for name in SPOTS]
            ), strict=True))  # fmt: skip
        simulated = time.perf_counter() - start_time
        options = RunOptions(executor="futures", workers=2, chunksize=20_000)
        raw = {
            name: str(digitize_files([sims[name]], work / f"{name}-raw.root",
                                     conditions=mc if name == "mc" else data, seed=k + 11,
                                     run_options=options).output)
            for k, name in enumerate(SPOTS)
        }  # fmt: skip
        start = nominal_constants(mc, sample="MC_digi nominal")
        start_path = start.save(work / "start.json")
        truth_constants = nominal_constants(data, sample="data, true (a, b)")
        lines: list[str] = []
        results: dict[str, Any] = {}
        gev = CalibrationSteps(to_gev=True)
        mc_sums = event_sums(calibrated(raw["mc"], start, work / "mc-gev.root", gev))
        res_mc = resolution(*mc_sums)
        for name, label in (("data", "data (spot +5, -5 mm, 15 mm)"),
                            ("shifted", "data, spot shifted by one cell (40 mm)")):  # fmt: skip
            fitted, seconds = fit(raw[name], raw["mc"], start_path)
            block, scores = score_lines(f"{label}, fit {seconds:.0f} s", fitted, data)
            corrected = start.update(fitted)
            res_before = resolution(*event_sums(
                calibrated(raw[name], start, work / f"{name}-before.root", gev)))  # fmt: skip
            res_after = resolution(*event_sums(
                calibrated(raw[name], corrected, work / f"{name}-after.root", gev)))  # fmt: skip
            # the best any (a, b) can do: the data's own true constants; what remains against
            # MC_digi comes from the beam spot, not from the non-linearity
            true_path = work / f"{name}-true.root"
            true_file = calibrated(raw[name], truth_constants, true_path, gev)
            res_true = resolution(*event_sums(true_file))
            block += [
                "",
                "| E [GeV] | sigma/E MC_digi | data, nominal (a, b) | corrected data "
                "| data, true (a, b) | rel. diff. corrected vs MC_digi | true vs MC_digi |",
                "|---|---|---|---|---|---|---|",
            ]
            relative = {}
            for e in ENERGIES_GEV:
                relative[e] = abs(res_after[e] - res_mc[e]) / res_mc[e]
                floor = abs(res_true[e] - res_mc[e]) / res_mc[e]
                block.append(f"| {e:.0f} | {res_mc[e]:.4f} | {res_before[e]:.4f} | "
                             f"{res_after[e]:.4f} | {res_true[e]:.4f} | "
                             f"{100 * relative[e]:.1f} % | {100 * floor:.1f} % |")  # fmt: skip
            results[name] = (scores, relative)
            lines += [*block, ""]
            if name == "data":
                with_network, summary = prediction_run(
                    raw[name], raw["mc"], start, start_path, work, data, res_mc,
                    (scores, res_after, relative),
                )  # fmt: skip
                lines += [*with_network, ""]
            if name == "data" and args.figures is not None:
                mip = CalibrationSteps()
                files = {
                    "MC_truth": sims["mc"],
                    "MC_digi": calibrated(raw["mc"], start, work / "mc-mip.root", mip),
                    "data": calibrated(raw["data"], start, work / "data-mip.root", mip),
                    "corrected data": calibrated(raw["data"], corrected,
                                                 work / "data-corr-mip.root", mip),
                }  # fmt: skip
                figure = spectra_figure(work, files, args.figures, mc)
                lines += [f"Figure: `{figure}`", ""]
    scores, relative = results["data"]
    checks = [
        ("b within 5 % RMS of the truth (fitted cells)", scores["b"].rms,
         scores["b"].rms < TARGET_RMS),
        ("a within 5 % RMS of the truth (fitted cells, a > 0)", scores["a"].rms,
         scores["a"].rms < TARGET_RMS),
        ("energy-sum sigma/E of corrected data within 5 % of MC_digi's (worst energy)",
         max(relative.values()), max(relative.values()) < TARGET_RESOLUTION),
    ]  # fmt: skip
    shifted_scores, shifted_relative = results["shifted"]
    net_scores, net_relative = summary
    header = [
        f"Command: `python reproduce/nonlinearity.py --events {args.events}`; "
        f"{datetime.date.today().isoformat()}, {machine()}; "
        f"{time.perf_counter() - start_time:.0f} s (simulation {simulated:.0f} s).",
        "",
        f"{GEOMETRY}, e- at {', '.join(f'{e:.0f}' for e in ENERGIES_GEV)} GeV, {args.events} "
        f"per energy in each of MC_digi (spot 0, 0, 10 mm), data and shifted data; data (a, b) "
        f"drawn with spreads {SPREAD_A}, {SPREAD_B} (seed {DATA_SEED}); min_hits {MIN_HITS}.",
        "",
    ]
    footer = [
        *(f"- {'ok' if ok else 'FAIL'}: {what}: {value:.4f}" for what, value, ok in checks),
        f"- shifted spot (robustness, reported, no target): b RMS {shifted_scores['b'].rms:.4f}"
        f" over {shifted_scores['b'].cells} cells, worst relative resolution mismatch "
        f"{max(shifted_relative.values()):.4f}",
        f"- with the {NETWORK} prediction term (reported, no target): b RMS "
        f"{scores['b'].rms:.4f} -> {net_scores['b'].rms:.4f}, a RMS {scores['a'].rms:.4f} -> "
        f"{net_scores['a'].rms:.4f}, worst relative resolution mismatch "
        f"{max(relative.values()):.4f} -> {max(net_relative.values()):.4f}",
    ]
    text = "\n".join(header + lines + footer)
    print(text)
    if not args.no_readme:
        write_block("nonlinearity", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
