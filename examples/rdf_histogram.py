"""Calibrate calocoffea raw (ADC) events and histogram them with plain RDataFrame.

This example needs only ROOT (PyROOT) and correctionlib -- no calocoffea, numpy, uproot or
awkward -- and fills the two event histograms of calocoffea's histogram processor
(``processors/histogram.py``) for raw input calibrated on the fly to MIP::

    python examples/rdf_histogram.py RAW.root CONSTANTS.json OUT.root \\
        --beam-energies 10,40 --energy-max 2000 [--energy-bins 400] [--threads 4]

``energy_sum``: beam energy [GeV] x the event energy sum [MIP]; ``nhit``: beam energy x the
number of hits per event. Both are TH2D in ``OUT.root``; with the same binning they hold the
counts of calocoffea's ``energy_sum`` and ``nhit`` (``calocoffea histogram --constants``).

Input
-----
RAW.root has the TTree ``events`` of calocoffea's ``raw`` stage: one entry per event, the scalar
``beam_energy`` [GeV] and jagged hit branches (``nhit`` entries each): ``hit_energy`` (ADC),
``hit_gain`` (0 high gain, 1 low gain), ``hit_flags`` (bits of ``calocoffea.flags.HitFlag``),
``hit_layer``, ``hit_i``, ``hit_j`` (the cell). RDataFrame reads each jagged branch as a
``ROOT::RVec``.

CONSTANTS.json is a correctionlib (schema v2) file written by calocoffea
(``calocoffea constants nominal`` or any calibration method). Every parameter is one
correction whose first input ``kind`` picks ``"value"`` or ``"uncertainty"``; per-cell
parameters then take ``layer``, ``i``, ``j``, per-layer ones ``layer`` alone. For a hit::

    cset->at("pedestal_hg_adc")->evaluate({"value", layer, i, j})

The correction set's ``description`` is a JSON string (calocoffea's provenance) whose
``settings`` hold the read-out constants the chain needs: ``nonlinearity_scale_adc`` (X),
``desaturation_occupancy`` (r) and ``lg_saturation_adc`` (the low-gain range top).

How it works
------------
The C++ below is declared once with ``gInterpreter.Declare``: a ``Calibration`` object that holds
the correctionlib references, and free functions over ``ROOT::RVec`` that RDataFrame calls once
per event (``Define``), so nothing is JIT-compiled per hit. The chain, per hit, is that of
``calocoffea.calibration.calibrate`` with its default steps (ADC -> MIP), the same operations in
the same order (``calocoffea/digitization.py`` for the formulas):

1. pedestal: A = ADC - pedestal of the gain the hit was read on (``pedestal_lg_adc`` or
   ``pedestal_hg_adc``);
2. gain selection: low-gain hits A x ``gain_ratio`` (high-gain equivalent);
3. inverse electronics non-linearity x = A / (b - a A / X) (``nonlinearity_a``, ``_b``); beyond
   the asymptote (denominator <= 0) x is taken at 0.999 of it, A = 0.999 b X / a;
4. fired pixels p = x / ``spe_adc``; SiPM de-saturation with N = ``n_pixels``:
   -N ln(1 - p / N) up to p / N = r, continued linearly (same value and slope) above;
5. / ``light_yield_pe`` -> MIP. Hits flagged SATURATED are instead set to the MIP value of
   their cell's low-gain range top: steps 3-5 applied to
   A = (``lg_saturation_adc`` - ``pedestal_lg_adc``) x ``gain_ratio``;
6. x ``scale``.

The event energy sum adds the calibrated hits in hit order, leaving out non-finite energies,
and ``nhit`` counts the hits that entered it, as the histogram processor does. Axes: beam
energy with variable edges halfway between the beam energy points (first edge half the first
point, last 1.5 x the last: calocoffea's ``beam_energy_axis``), energy regular from 0 to
``--energy-max``, nhit 4000 bins of width 1 from 0.

Floating point: ``#pragma clang fp contract(off)`` keeps the compiler from fusing a multiply
and an add into one FMA, which numpy never does, so each operation rounds as it does in
calocoffea; ``std::log1p`` is the C library's, as calocoffea's (``calocoffea.libm``; numpy's
own ``np.log1p`` differs in the last bit on AVX-512 machines). Given the same constants, every
hit gets calocoffea's energy to the bit. The constants are not quite the same, though:
correctionlib's C++ JSON reader (rapidjson without its full-precision flag) reads about one
value in eight 1 ulp away from Python's ``json``, so about half the hit energies differ from
calocoffea's by ~1e-16 (relative). An event then changes bin only if its sum lies that close
to a bin edge.

Errors: a missing or unreadable input, a file without the ``events`` tree (or without the raw
hit branches) or constants without calocoffea's settings end the script with a message naming
the file and exit code 2.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: ``calocoffea.flags.HitFlag.SATURATED``: the ADC was clipped at the range top.
SATURATED = 2
#: The read-out settings of the constants' description that the chain needs.
SETTINGS = ("nonlinearity_scale_adc", "desaturation_occupancy", "lg_saturation_adc")
#: The nhit axis of calocoffea's histogram processor: integers 0 .. 4000.
NHIT_MAX = 4000
#: The tree of calocoffea event files and the branches read from it.
TREE = "events"
BRANCHES = ("beam_energy", "hit_energy", "hit_gain", "hit_flags", "hit_layer", "hit_i", "hit_j")
#: Exit code of every input error (as calocoffea's command line).
INPUT_ERROR = 2

CPP = r"""
// No FMA: numpy rounds every multiply and add on its own, so must we.
#pragma clang fp contract(off)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "ROOT/RVec.hxx"
#include "correction.h"

namespace calo_rdf {

constexpr std::uint32_t kSaturated = SATURATED_BIT;  // calocoffea.flags.HitFlag.SATURATED

struct Settings {
  double nonlinearity_scale_adc;  // X of the non-linearity y = b x / (1 + a x / X)
  double desaturation_occupancy;  // r: linear continuation above this pixel occupancy
  double lg_saturation_adc;       // low-gain range top [ADC]
};

// The per-cell constants of one hit (one correctionlib lookup each).
struct Cell {
  double pedestal_hg, pedestal_lg, gain_ratio, spe, n_pixels, light_yield, a, b, scale;
};

// calocoffea.digitization.inverse_nonlinearity: x = y / (b - a y / X); inf beyond the asymptote.
inline double inverse_nonlinearity(double y, double a, double b, double scale) {
  const double denominator = b - a * y / scale;
  return denominator > 0 ? y / denominator : std::numeric_limits<double>::infinity();
}

// calocoffea.digitization.desaturation: -N ln(1 - p / N), linear above the occupancy r.
inline double desaturation(double fired, double n_pixels, double r) {
  const double fraction = fired / n_pixels;
  if (fraction <= r) return -n_pixels * std::log1p(-fraction);
  return (fired - r * n_pixels) / (1.0 - r) - n_pixels * std::log1p(-r);
}

class Calibration {
 public:
  Calibration(std::shared_ptr<const correction::CorrectionSet> set, Settings settings)
      : set_(std::move(set)), s_(settings),
        pedestal_hg_(set_->at("pedestal_hg_adc")), pedestal_lg_(set_->at("pedestal_lg_adc")),
        gain_ratio_(set_->at("gain_ratio")), spe_(set_->at("spe_adc")),
        n_pixels_(set_->at("n_pixels")), light_yield_(set_->at("light_yield_pe")),
        a_(set_->at("nonlinearity_a")), b_(set_->at("nonlinearity_b")), scale_(set_->at("scale")) {}

  // Calibrated energy [MIP] of one hit: calocoffea.calibration.calibrate, default steps.
  double energy(double adc, int gain, std::uint32_t flags, int64_t layer, int64_t i,
                int64_t j) const {
    const Cell c = cell(layer, i, j);
    double mip;
    if ((flags & kSaturated) != 0) {  // the range top of the cell, whatever the ADC says
      mip = to_mip((s_.lg_saturation_adc - c.pedestal_lg) * c.gain_ratio, c);
    } else {
      const bool low = gain == 1;
      double amplitude = adc - (low ? c.pedestal_lg : c.pedestal_hg);
      if (low) amplitude = amplitude * c.gain_ratio;
      mip = to_mip(amplitude, c);
    }
    return mip * c.scale;
  }

 private:
  Cell cell(int64_t layer, int64_t i, int64_t j) const {
    const std::vector<correction::Variable::Type> key{std::string("value"), layer, i, j};
    return Cell{pedestal_hg_->evaluate(key), pedestal_lg_->evaluate(key),
                gain_ratio_->evaluate(key),  spe_->evaluate(key),
                n_pixels_->evaluate(key),    light_yield_->evaluate(key),
                a_->evaluate(key),           b_->evaluate(key),
                scale_->evaluate(key)};
  }

  // calocoffea.calibration._to_mip: high-gain-equivalent amplitude [ADC] -> MIP.
  double to_mip(double amplitude, const Cell& c) const {
    const double X = s_.nonlinearity_scale_adc;
    double x = inverse_nonlinearity(amplitude, c.a, c.b, X);
    if (!std::isfinite(x)) {  // clip just below the asymptote b X / a
      const double limit = 0.999 * c.b * X / std::max(c.a, 1e-300);
      x = inverse_nonlinearity(limit, c.a, c.b, X);
    }
    const double pixels = desaturation(x / c.spe, c.n_pixels, s_.desaturation_occupancy);
    return pixels / c.light_yield;
  }

  std::shared_ptr<const correction::CorrectionSet> set_;
  Settings s_;
  correction::Correction::Ref pedestal_hg_, pedestal_lg_, gain_ratio_, spe_, n_pixels_,
      light_yield_, a_, b_, scale_;
};

// Set once before the event loop, then only read (safe with implicit multi-threading).
inline std::unique_ptr<const Calibration> gCalibration;

inline std::shared_ptr<const correction::CorrectionSet> open(const std::string& path) {
  return correction::CorrectionSet::from_file(path);
}

inline void install(std::shared_ptr<const correction::CorrectionSet> set,
                    double nonlinearity_scale, double occupancy, double lg_saturation) {
  gCalibration = std::make_unique<const Calibration>(
      std::move(set), Settings{nonlinearity_scale, occupancy, lg_saturation});
}

// Calibrated energies [MIP] of an event's hits, in hit order.
template <typename E, typename G, typename F, typename L>
ROOT::RVecD calibrate(const ROOT::RVec<E>& adc, const ROOT::RVec<G>& gain,
                      const ROOT::RVec<F>& flags, const ROOT::RVec<L>& layer,
                      const ROOT::RVec<L>& i, const ROOT::RVec<L>& j) {
  ROOT::RVecD energy(adc.size());
  for (std::size_t k = 0; k < adc.size(); ++k) {
    energy[k] = gCalibration->energy(adc[k], gain[k], flags[k], layer[k], i[k], j[k]);
  }
  return energy;
}

// The processor's event sum: finite energies added in hit order, starting from 0.
inline double finite_sum(const ROOT::RVecD& energy) {
  double sum = 0.0;
  for (double e : energy) {
    if (std::isfinite(e)) sum += e;
  }
  return sum;
}

inline int finite_count(const ROOT::RVecD& energy) {
  return static_cast<int>(std::count_if(energy.begin(), energy.end(),
                                        [](double e) { return std::isfinite(e); }));
}

}  // namespace calo_rdf
"""


class InputError(Exception):
    """An input the script cannot use; the message names the file."""


# ------------------------------------------------------------------------------ options


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Calibrate calocoffea raw events to MIP and histogram them with RDataFrame."
    )
    parser.add_argument("raw", type=Path, help="calocoffea raw (ADC) events file")
    parser.add_argument("constants", type=Path, help="calocoffea constants (correctionlib JSON)")
    parser.add_argument("output", type=Path, help="ROOT file to write the TH2D to")
    parser.add_argument("--beam-energies", type=_floats, required=True,
                        help="beam energy points [GeV], e.g. 10,20,40")  # fmt: skip
    parser.add_argument("--energy-bins", type=int, default=400, help="energy sum bins")
    parser.add_argument("--energy-max", type=float, required=True,
                        help="upper edge of the energy sum axis [MIP]")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="ROOT implicit MT threads")
    return parser.parse_args(argv)


def _floats(text: str) -> list[float]:
    try:
        return [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None


def beam_energy_edges(points: Sequence[float]) -> list[float]:
    """calocoffea's ``beam_energy_axis``: edges halfway between the (sorted, distinct)
    points, the first at half the first point, the last at 1.5 times the last."""
    p = sorted(set(points))
    if not p:
        return [0.0, 1000.0]
    middle = [0.5 * (low + high) for low, high in itertools.pairwise(p)]
    return [0.5 * p[0], *middle, 1.5 * p[-1]]


# ------------------------------------------------------------------------------ inputs


def load_root() -> Any:
    """PyROOT with correctionlib's C++ evaluator and the calibration code declared."""
    import correctionlib
    import ROOT

    correctionlib.register_pyroot_binding()  # loads libcorrectionlib, includes correction.h
    if not hasattr(ROOT, "calo_rdf") and not ROOT.gInterpreter.Declare(
        CPP.replace("SATURATED_BIT", f"{SATURATED}u")
    ):
        raise RuntimeError("the calibration C++ code did not compile")
    return ROOT


def check_raw(root: Any, path: Path) -> None:
    """The file opens and has the ``events`` tree with the raw hit branches (else InputError
    naming the file)."""
    file = root.TFile.Open(str(path))
    if not file or file.IsZombie():
        raise InputError(f"{path}: not a readable ROOT file")
    try:
        tree = file.Get(TREE)
        if not tree or not tree.InheritsFrom("TTree"):
            raise InputError(f"{path}: has no TTree {TREE!r}; is it a calocoffea events file?")
        missing = [name for name in BRANCHES if not tree.GetBranch(name)]
        if missing:  # e.g. a simulated (MeV) file: it has no hit_gain
            raise InputError(
                f"{path}: tree {TREE!r} lacks the branches {', '.join(missing)}; "
                "is it a calocoffea raw (ADC) file?"
            )
    finally:
        file.Close()


def install_constants(root: Any, path: Path) -> None:
    """Read the correction set with correctionlib's C++ reader, take the read-out settings from
    its description and make them the calibration of the event loop."""
    try:
        cset = root.calo_rdf.open(str(path))
        settings = json.loads(str(cset.description()))["settings"]
        values = [float(settings[name]) for name in SETTINGS]
        root.calo_rdf.install(cset, *values)
    except Exception as err:  # correctionlib's C++ errors arrive as plain Exception
        raise InputError(
            f"{path}: not calocoffea constants ({err}); write them with "
            "`calocoffea constants nominal` or a calibration method"
        ) from err


# ------------------------------------------------------------------------------ histograms


def book(root: Any, frame: Any, beam: Sequence[float], bins: int, energy_max: float) -> list:
    """The two histograms (lazy RDataFrame results), as the histogram processor books them."""
    edges = array("d", beam)
    energy = root.RDF.TH2DModel(
        "energy_sum", ";Beam energy [GeV];Energy sum [MIP]", len(beam) - 1, edges,
        bins, 0.0, energy_max,
    )  # fmt: skip
    nhit = root.RDF.TH2DModel(
        "nhit", ";Beam energy [GeV];Hits per event", len(beam) - 1, edges,
        NHIT_MAX, 0.0, float(NHIT_MAX),
    )  # fmt: skip
    return [
        frame.Histo2D(energy, "beam_energy", "event_energy_mip"),
        frame.Histo2D(nhit, "beam_energy", "event_nhit"),
    ]


def calibrated_frame(root: Any, raw: Path) -> Any:
    """The events with calibrated hits and the per-event sum and hit count defined."""
    frame = root.RDataFrame(TREE, str(raw))
    # One JIT-compiled call per Define (not per hit): the loop over hits is in calo_rdf.
    calibrate = "calo_rdf::calibrate(hit_energy, hit_gain, hit_flags, hit_layer, hit_i, hit_j)"
    return (
        frame.Define("hit_mip", calibrate)
        .Define("event_energy_mip", "calo_rdf::finite_sum(hit_mip)")
        .Define("event_nhit", "calo_rdf::finite_count(hit_mip)")
    )


def write(root: Any, histograms: list, output: Path) -> None:
    """Run the event loop (once, for all histograms), then write them: a failed loop leaves
    no output file behind."""
    filled = [result.GetValue() for result in histograms]
    file = root.TFile.Open(str(output), "RECREATE")
    if not file or file.IsZombie():
        raise InputError(f"{output}: cannot write")
    for h in filled:
        file.WriteObject(h, h.GetName())
    file.Close()


def check_exists(*paths: Path) -> None:
    """Every input exists (before the few seconds that loading ROOT takes)."""
    for path in paths:
        if not path.is_file():
            raise InputError(f"{path}: no such file")


def run(args: argparse.Namespace) -> None:
    check_exists(args.raw, args.constants)
    root = load_root()
    if args.threads > 1:  # before the RDataFrame is made
        root.EnableImplicitMT(args.threads)
    check_raw(root, args.raw)
    install_constants(root, args.constants)
    frame = calibrated_frame(root, args.raw)
    beam = beam_energy_edges(args.beam_energies)
    write(root, book(root, frame, beam, args.energy_bins, args.energy_max), args.output)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except InputError as err:
        print(f"rdf_histogram: error: {err}", file=sys.stderr)
        return INPUT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
