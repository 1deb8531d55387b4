"""Reproduce issue 9's dual-branch 3D CNN (seed 001) on `calice_siw_ecal_ahcal` pions and
record it in README.

Samples (calibrated with the nominal chain): ``--train-events`` pi- from a flat 5-170 GeV
spectrum (wider than the test range: models regress towards the middle of their training
spectrum near its ends), and an independent test sample of ``--test-events`` per energy at
10, 20, 30, 40, 60, 80, 100, 120 and 150 GeV.

Trained on the training sample with the same split seed:

- ``dual_branch_cnn`` through ``calocoffea train`` (the default voxel grids, ``--steps``,
  ``--max-minutes``, two threads); with ``--ship`` it becomes the shipped model
  ``models/calice_siw_ecal_ahcal_dual_branch_cnn.onnx``;
- ``software_compensation`` (the Pandora form, iminuit) for the comparison.

On the test sample:

- f_em regression per section and energy: RMSE, bias and correlation of the predicted
  against the true EM fraction, beside the spread of the truth (the RMSE of predicting the
  mean); ``--figures DIR`` draws truth against prediction;
- energy: Gaussian-core response and sigma/E (:func:`calocoffea.scan.scan_summary`) of the
  sum at unit response (E' = (E_sum - b) / a, core means of the training sample in 5 GeV
  bins), of software compensation, of the e/h formula with the predicted f_em (the model),
  and of the same formula with the TRUE f_em (its k_s and (e/h)_s fitted with the true
  fractions on the training sample): what a perfect f_em regression would give with this
  formula; resolution fits a/sqrt(E) (+) c.

Run: ``python reproduce/dual_branch.py [--train-events N] [--test-events N] [--steps N]
[--max-minutes M] [--ship] [--figures DIR] [--no-readme]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _readme import machine, write_block
from software_compensation import _terms as terms
from software_compensation import sum_line

from calocoffea.geometry import get_geometry
from calocoffea.io import read_events
from calocoffea.methods import reconstruction_method
from calocoffea.models.dual_branch import (
    FEM_OUTPUTS,
    SECTIONS,
    e_over_h_energy,
    fem_metrics,
    fit_e_over_h,
    onnx_outputs,
)
from calocoffea.models.inputs import FlatHits, build_inputs
from calocoffea.models.onnxmodel import load_model
from calocoffea.models.reconstruction import SHIPPED
from calocoffea.plugins.software_compensation import SoftwareCompensation
from calocoffea.runner import RunOptions, reconstruct_files
from calocoffea.scan import scan_summary
from calocoffea.simulation.beam import Beam

GEOMETRY = "calice_siw_ecal_ahcal"
TRAIN_RANGE_GEV = (5.0, 170.0)
TEST_ENERGIES = (10.0, 20.0, 30.0, 40.0, 60.0, 80.0, 100.0, 120.0, 150.0)
TRAIN_FILES = 4
SEEDS = {"train": 901, "test": 951}
SPLIT_SEED = 1
RUN = RunOptions(executor="futures", workers=2, chunksize=5000)
#: events per batch when running the graph for the f_em outputs
BATCH = 2000


def _simulate(job: tuple[Beam, int, int, str]) -> str:
    from calocoffea.samples import calibrated_sample

    beam, events, seed, path = job
    return str(calibrated_sample(GEOMETRY, "pi-", beam, events, seed, path))


def samples(work: Path, train_events: int, test_events: int) -> tuple[list[str], list[str]]:
    """(training files, test files), simulated two at a time."""
    flat = Beam(energy_range_gev=TRAIN_RANGE_GEV, size_mm=10.0)
    per_file = -(-train_events // TRAIN_FILES)
    jobs = [(flat, per_file, SEEDS["train"] + k, str(work / f"train-{k}.gev.root"))
            for k in range(TRAIN_FILES)]  # fmt: skip
    half = len(TEST_ENERGIES) // 2
    for k, energies in enumerate((TEST_ENERGIES[:half], TEST_ENERGIES[half:])):
        jobs.append((Beam(energies, size_mm=10.0), test_events, SEEDS["test"] + k,
                     str(work / f"test-{k}.gev.root")))  # fmt: skip
    with ProcessPoolExecutor(max_workers=2) as pool:
        files = list(pool.map(_simulate, jobs))
    return files[:TRAIN_FILES], files[TRAIN_FILES:]


def train_network(files: list[str], output: Path, steps: int, minutes: float) -> str:
    """``calocoffea train --model dual_branch_cnn``; returns the command (card's)."""
    # --force: with --ship this retrains the shipped model in place
    command = ["calocoffea", "train", "--model", "dual_branch_cnn", *files, "-o", str(output),
               "--force", "--seed", str(SPLIT_SEED), "--option", f"steps={steps}", "--option",
               f"max_minutes={minutes:g}", "--option", "threads=2"]  # fmt: skip
    subprocess.run([str(Path(sys.executable).parent / "calocoffea"), *command[1:]], check=True)
    return shlex.join(command)


def network_outputs(model: Path, files: list[str]) -> dict[str, np.ndarray]:
    """Every graph output, the section sums, the true f_em and the beam energy of every test
    event (file order), the inputs built batch by batch as inference builds them."""
    loaded = load_model(model, geometry=GEOMETRY)
    shapes = {i.name: i.shape for i in loaded.card.inputs}
    geometry = get_geometry(GEOMETRY)
    parts: dict[str, list[np.ndarray]] = {}
    for path in files:
        events = read_events(path)
        hits = FlatHits.from_events(events)
        truth = {f: np.asarray(events[f], dtype=np.float64) for f in FEM_OUTPUTS}
        beam = np.asarray(events.beam_energy, dtype=np.float64)
        for a in range(0, len(hits), BATCH):
            b = min(len(hits), a + BATCH)
            inputs = build_inputs(shapes, hits.events(a, b), geometry)
            energy, *fem = onnx_outputs(loaded.session, inputs)[:3]
            rows = {"energy": energy, "sums": inputs["section_sums"], "beam": beam[a:b],
                    **{f"pred_{f}": v for f, v in zip(FEM_OUTPUTS, fem, strict=True)},
                    **{f"true_{f}": v[a:b] for f, v in truth.items()}}  # fmt: skip
            for k, v in rows.items():
                parts.setdefault(k, []).append(np.asarray(v, dtype=np.float64))
    return {k: np.concatenate(v) for k, v in parts.items()}


def oracle_constants(files: list[str]) -> dict[str, Any]:
    """k_s and (e/h)_s fitted with the TRUE f_em on the training files: the constants of the
    e/h formula when the fractions are known."""
    geometry = get_geometry(GEOMETRY)
    sums, fem, beam = [], [], []
    for path in files:
        events = read_events(path)
        hits = FlatHits.from_events(events)
        sums.append(build_inputs({"section_sums": (None, 2)}, hits, geometry)["section_sums"])
        fem.append(np.column_stack([np.asarray(events[f], dtype=np.float64) for f in FEM_OUTPUTS]))
        beam.append(np.asarray(events.beam_energy, dtype=np.float64))
    return fit_e_over_h(np.concatenate(sums), np.concatenate(fem), np.concatenate(beam))


def fem_table(out: dict[str, np.ndarray]) -> list[str]:
    head = "| E [GeV] | " + " | ".join(
        f"{s}: RMSE | {s}: spread | {s}: bias | {s}: corr." for s in SECTIONS
    )
    lines = [head + " |", "|" + "---:|" * (1 + 4 * len(SECTIONS))]
    for e in TEST_ENERGIES:
        at = out["beam"] == e
        cells = [f"{e:.0f}"]
        for f in FEM_OUTPUTS:
            m = fem_metrics(out[f"pred_{f}"][at], out[f"true_{f}"][at])
            spread = float(np.nanstd(out[f"true_{f}"][at]))
            cells += [f"{m['rmse']:.3f}", f"{spread:.3f}", f"{m['bias']:+.3f}",
                      f"{m['correlation']:.3f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def energy_table(scans: dict[str, dict[str, Any]]) -> list[str]:
    names = list(scans)
    head = "| E [GeV] | " + " | ".join(f"{n}: resp. | {n}: sigma/E [%]" for n in names)
    lines = [head + " |", "|" + "---:|" * (1 + 2 * len(names))]
    reference = scans[names[0]]
    for k, e in enumerate(reference["energy_gev"]):
        cells = [f"{e:.0f}"]
        for n in names:
            s = scans[n]
            sigma, error = 100 * s["sigma_over_e"][k], 100 * s["sigma_over_e_error"][k]
            cells += [f"{s['mean_gev'][k] / e:.3f}", f"{sigma:.2f} ± {error:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def figure(out: dict[str, np.ndarray], folder: Path) -> Path:
    """Truth against prediction of f_em per section (all test energies), 2D histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(SECTIONS), figsize=(5 * len(SECTIONS), 4.5))
    for ax, s, f in zip(axes, SECTIONS, FEM_OUTPUTS, strict=True):
        t, p = out[f"true_{f}"], out[f"pred_{f}"]
        ok = np.isfinite(t)
        ax.hist2d(t[ok], p[ok], bins=50, range=[[0, 1], [0, 1]], cmap="viridis", cmin=1)
        ax.plot([0, 1], [0, 1], color="white", lw=1)
        ax.set_xlabel(f"true f_em ({s.upper()})")
        ax.set_ylabel(f"predicted f_em ({s.upper()})")
    fig.suptitle(f"dual_branch_cnn on {GEOMETRY}, pi- 10-150 GeV")
    fig.tight_layout()
    path = folder / "dual_branch_fem.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-events", type=int, default=40_000, help="training pions")
    parser.add_argument("--test-events", type=int, default=1500, help="test pions per energy")
    parser.add_argument("--steps", type=int, default=4000, help="most training steps")
    parser.add_argument("--max-minutes", type=float, default=30.0, help="training time cap")
    parser.add_argument("--ship", action="store_true", help="write the shipped model")
    parser.add_argument("--figures", type=Path, help="folder for the f_em figure")
    parser.add_argument("--no-readme", action="store_true", help="print only")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="calocoffea-dual-branch-") as tmp:
        work = Path(tmp)
        train, test = samples(work, args.train_events, args.test_events)
        simulated = time.perf_counter() - start
        model = (SHIPPED if args.ship else work) / f"{GEOMETRY}_dual_branch_cnn.onnx"
        t0 = time.perf_counter()
        command = train_network(train, model, args.steps, args.max_minutes)
        trained = time.perf_counter() - t0
        sc_model = SoftwareCompensation.train(train, str(work / "sc.onnx"), options={},
                                              seed=SPLIT_SEED, command="reproduce")  # fmt: skip
        out = network_outputs(model, test)
        plain = reconstruct_files(test, reconstruction_method("sum", GEOMETRY),
                                  run_options=RUN).columns  # fmt: skip
        compensation = reconstruction_method("software_compensation", GEOMETRY, model=str(sc_model))
        sc = reconstruct_files(test, compensation, run_options=RUN).columns
        train_sum = reconstruct_files(train, reconstruction_method("sum", GEOMETRY),
                                      run_options=RUN).columns  # fmt: skip
        card = json.loads(model.with_suffix(".card.json").read_text())
        known = oracle_constants(train)
    metrics = card["metrics"]
    fit = metrics["e_over_h_fit"]
    slope, offset = sum_line(train_sum["beam_energy"], train_sum["energy"])
    true_fem = np.nan_to_num(np.column_stack([out[f"true_{f}"] for f in FEM_OUTPUTS]))
    oracle = e_over_h_energy(out["sums"], true_fem, known["em_scale"], known["e_over_h"])
    no_clipping = np.zeros(out["beam"].size)
    scans = {
        "sum": scan_summary(plain["beam_energy"], (plain["energy"] - offset) / slope,
                            plain["clipped_hits"], label="sum"),
        "SC": scan_summary(sc["beam_energy"], sc["energy"], sc["clipped_hits"], label="SC"),
        "CNN": scan_summary(out["beam"], out["energy"], no_clipping, label="CNN"),
        "true f_em": scan_summary(out["beam"], oracle, no_clipping, label="true f_em"),
    }  # fmt: skip
    clipped = [f"{e:.0f}: {100 * c:.1f} %" for e, c in zip(
        scans["sum"]["energy_gev"], scans["sum"]["clipped_fraction"], strict=True)]  # fmt: skip
    overall = {s: fem_metrics(out[f"pred_{f}"], out[f"true_{f}"])
               for s, f in zip(SECTIONS, FEM_OUTPUTS, strict=True)}  # fmt: skip
    lines = [
        f"Command: `{shlex.join(['python', 'reproduce/dual_branch.py', *sys.argv[1:]])}`; "
        f"{datetime.date.today().isoformat()}, {machine()}; {time.perf_counter() - start:.0f} s "
        f"(simulation {simulated:.0f} s, training {trained:.0f} s).",
        "",
        f"{GEOMETRY}, pi-: training {args.train_events} from a flat "
        f"{TRAIN_RANGE_GEV[0]:.0f}-{TRAIN_RANGE_GEV[1]:.0f} GeV spectrum (split "
        f"{metrics['split_events']}), test {args.test_events} per energy. Network: default "
        f"voxel grids, {metrics['parameters']} parameters, {metrics['steps']} steps "
        f"(stopped by {metrics['stopped']}, best at {metrics['best_step']}), "
        f"{metrics['seconds_per_step']:.2f} s per step of {metrics['options']['batch_size']} on "
        f"{metrics['device']}; ONNX parity {metrics['onnx_parity_max']:.1e}.",
        "",
        "f_em regression on the test sample (spread: the rms of the true f_em, the RMSE of "
        "always predicting the mean):",
        "",
        *fem_table(out),
        "",
        "Overall: "
        + "; ".join(
            f"{s}: RMSE {m['rmse']:.3f}, correlation {m['correlation']:.3f}"
            for s, m in overall.items()
        )
        + ".",
        "",
        f"Energy (e/h formula with k = {', '.join(f'{v:.3f}' for v in fit['em_scale'])} and "
        f"e/h = {', '.join(f'{v:.3f}' for v in fit['e_over_h'])} (ECAL, HCAL), fitted on the "
        f"training split; sum at unit response E' = (E_sum - {offset:.3f} GeV) / {slope:.4f}; "
        "'true f_em': the same formula with the true fractions and its constants fitted with "
        f"them on the training sample, k = {', '.join(f'{v:.3f}' for v in known['em_scale'])}, "
        f"e/h = {', '.join(f'{v:.3f}' for v in known['e_over_h'])}; resolution = "
        "Gaussian-core sigma / mean):",
        "",
        *energy_table(scans),
        "",
        "Events with a clipped hit: " + ", ".join(clipped) + " (scan_summary fits only points "
        "below 1 %).",
        "",
        *(f"- {terms(name, scan)}" for name, scan in scans.items()),
    ]
    if args.ship:
        shown = command.replace(str(SHIPPED.parent) + "/", "")
        shown = re.sub(r"/\S*/(?=train-\d\.gev\.root)", "$SAMPLE/", shown)
        lines.append(f"- Shipped: `models/{model.name}` with its card; `{shown}` ($SAMPLE: "
                     "the training files, in a temporary folder).")  # fmt: skip
    if args.figures:
        lines.append(
            f"- Figure (truth against prediction of f_em, both sections): "
            f"`{figure(out, args.figures)}`."
        )
    text = "\n".join(lines)
    print(text)
    if not args.no_readme:
        write_block("dual_branch", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
