"""Reproduce the main job's numbers (`calocoffea demo`) and record them in README.

Runs the full demo (800 000 muons, 2 000 electrons per energy, 2 workers) into a temporary
directory, prints its summary and targets, and writes them with the command, date, machine
and wall time into README. Exits 1 when a target of issue 4 does not hold.
Run: ``make reproduce`` (or ``python reproduce/demo.py [--seed N] [--no-readme]``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

from calocoffea.demo import DemoConfig, check_lines, run_demo, summary_lines
from calocoffea.runner import RunOptions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _readme import machine, write_block


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=DemoConfig.seed, help="demo seed")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--no-readme", action="store_true", help="print only")
    args = parser.parse_args()
    config = dataclasses.replace(DemoConfig(), seed=args.seed)
    options = RunOptions(executor="futures", workers=args.workers, chunksize=100_000)
    command = f"python reproduce/demo.py --seed {args.seed} --workers {args.workers}"
    with tempfile.TemporaryDirectory() as work:
        results = run_demo(Path(work) / "demo", config, options, command=command)
    summary, checks = summary_lines(results), check_lines(results)
    print("\n".join(summary), "", "\n".join(checks), sep="\n")
    mip, steps = results["calibration"]["mip"], results["steps"]
    lines = [
        f"Command: `{command}`; {results['date'][:10]}, {machine()}; "
        f"{steps[-1]['seconds']:.0f} s wall time.",
        "",
        "```",
        *summary,
        "```",
        "",
        f"MIP scales: {mip['cells_ok']} of {mip['cells']} cells fitted "
        f"({mip['cells_too_few_entries']} too few hits, {mip['cells_failed']} failed), "
        f"{mip['hits_per_cell_median']:.0f} hits per cell (median, minimum "
        f"{mip['hits_per_cell_min']}); RMS(fit/true - 1) over all cells "
        f"{100 * mip['rms_fit_over_true_minus_1_all_cells']:.2f} % (hidden spread "
        f"{100 * mip['rms_hidden_spread']:.1f} %), "
        f"mean {100 * mip['mean_fit_over_true_minus_1']:+.2f} %.",
        "",
        "Targets:",
        "",
        *(f"- {line.strip()}" for line in checks[1:]),
    ]
    if not args.no_readme:
        write_block("demo", "\n".join(lines))
    return 0 if all(c["passed"] for c in results["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
