"""Train the shipped reconstruction models of `cepc_ahcal` and write them to ``models/``.

Sample: ``--events`` electrons (default 150,000) with seed 000's continuous trapezoidal
spectrum over 1-120 GeV, a 10 mm beam spot on the detector centre, realistic digitisation
with the nominal conditions and the nominal calibration chain (:mod:`_electrons`). Then, for
each model, exactly the command its card records:

    calocoffea train --model NAME FILES... -o models/cepc_ahcal_NAME.onnx --seed 1 --option ...

(split 70/15/15 by event, seeded; the card holds the test-sample metrics). The models are
evaluated on independent fixed-energy samples by ``reproduce/reconstruction.py``.
Run: ``python reproduce/models_training.py [--events N] [--only gbr|cnn_lstm] [--no-readme]``;
``--report`` writes the README block from the shipped cards without training.
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
from pathlib import Path

from _electrons import GEOMETRY, training_files
from _readme import machine, write_block

MODELS = Path(__file__).resolve().parents[1] / "models"
#: the training options of the shipped models
OPTIONS: dict[str, list[str]] = {
    "gbr": [],
    # 2500 steps of 256 events (about 6 epochs of 105,000): some 16 minutes on 2 cores
    "cnn_lstm": ["steps=2500", "max_minutes=18", "threads=2"],
}
SEED = 1
SAMPLE_SEED = 5000
PER_FILE = 15_000


def train(name: str, files: list[Path], options: list[str]) -> tuple[str, float, Path]:
    target = MODELS / f"{GEOMETRY}_{name}.onnx"
    # --force: this script retrains the shipped models in place
    command = ["calocoffea", "train", "--model", name, *map(str, files), "-o", str(target),
               "--force", "--seed", str(SEED)]  # fmt: skip
    for option in options:
        command += ["--option", option]
    start = time.perf_counter()
    subprocess.run([Path(sys.executable).parent / "calocoffea", *command[1:]], check=True)
    return shlex.join(command), time.perf_counter() - start, target


def card_lines(name: str, target: Path) -> list[str]:
    """What the card of model file ``target`` records: size, training time, test metrics,
    ONNX parity, the command."""
    card = json.loads(target.with_suffix(".card.json").read_text())
    metrics = card["metrics"]
    parity = metrics.get("onnx_parity_max_relative", metrics.get("parity_max_relative"))
    stopped = f", stopped by {metrics['stopped']} at step {metrics['steps']}" if "stopped" in (
        metrics) else ""  # fmt: skip
    command = re.sub(r"/\S*/(?=electrons-trapezoid-)", "$SAMPLE/", card["training_command"])
    command = command.replace(str(MODELS.parent) + "/", "")
    return [
        f"- `{name}`: {target.stat().st_size / 1024:.0f} kB, trained {card['created'][:10]} in "
        f"{metrics.get('training_seconds', float('nan')):.0f} s on "
        f"{metrics.get('device', 'cpu')}{stopped}; test split {metrics.get('events', '?')} "
        f"events: relative rms {metrics.get('relative_rms', float('nan')):.4f}, mean response "
        f"{metrics.get('mean_response', float('nan')):.4f}; ONNX parity (max relative) "
        f"{parity:.1e}",
        f"  `{command}`",
    ]


def report() -> int:
    """Write the README block from the shipped cards alone (no training)."""
    lines = [
        f"Shipped models, from their cards (`python reproduce/models_training.py --report`, "
        f"{datetime.date.today().isoformat()}); trained by `python reproduce/models_training.py`"
        f" on {GEOMETRY}, 150000 e- with the trapezoidal 1-120 GeV spectrum, spot 10 mm "
        f"(files of {PER_FILE}, seeds {SAMPLE_SEED}+k, `$SAMPLE` below), realistic "
        "digitisation and nominal calibration:",
        "",
    ]
    for name in OPTIONS:
        lines += card_lines(name, MODELS / f"{GEOMETRY}_{name}.onnx")
    text = "\n".join(lines)
    print(text)
    write_block("models_training", text)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=150_000, help="training electrons")
    parser.add_argument("--only", choices=sorted(OPTIONS), help="train one model only")
    parser.add_argument("--no-readme", action="store_true", help="print only")
    parser.add_argument(
        "--report",
        action="store_true",
        help="no training: write the README block from the shipped cards",
    )
    args = parser.parse_args()
    if args.report:
        return report()
    start = time.perf_counter()
    lines = []
    with tempfile.TemporaryDirectory(prefix="calocoffea-models-") as tmp:
        files = training_files(Path(tmp), args.events, PER_FILE, SAMPLE_SEED)
        simulated = time.perf_counter() - start
        for name, options in OPTIONS.items():
            if args.only and name != args.only:
                continue
            _, _, target = train(name, files, options)
            lines += card_lines(name, target)
    header = [
        f"Command: `python reproduce/models_training.py --events {args.events}`; "
        f"{datetime.date.today().isoformat()}, {machine()}; "
        f"{time.perf_counter() - start:.0f} s (samples {simulated:.0f} s).",
        "",
        f"{GEOMETRY}, {args.events} e- with the trapezoidal 1-120 GeV spectrum, spot 10 mm "
        f"(files of {PER_FILE}, seeds {SAMPLE_SEED}+k, `$SAMPLE` below), realistic "
        "digitisation and nominal calibration:",
        "",
    ]
    text = "\n".join(header + lines)
    print(text)
    if not args.no_readme:
        write_block("models_training", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
