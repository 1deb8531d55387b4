"""`calocoffea reconstruct` and `calocoffea train`: energies per event from a reconstruction
method or an ONNX model file, and the training of the learned models."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from calocoffea.cli.executor import (
    add_executor_options,
    add_force_option,
    print_cutflow,
    run_options,
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="one energy per event (sum, software compensation, ONNX networks)",
        description="Reconstruct the energy of every event of calibrated files (stage gev) "
        "with a reconstruction plugin (`calocoffea plugins list`) or an ONNX model file with "
        "its card beside it; write the per-event tree `reconstruction` and the histograms "
        "`energy` and `response` to OUT.root.",
    )
    p.add_argument("files", nargs="+", metavar="IN", help="calibrated ROOT files (stage gev)")
    p.add_argument(
        "--method", "-m", default="sum", metavar="NAME|MODEL.onnx",
        help="reconstruction plugin or model file (default: sum)",
    )  # fmt: skip
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="a reconstruction option")
    p.add_argument("--output", "-o", required=True, metavar="OUT.root", help="output ROOT file")
    add_force_option(p)
    add_executor_options(p)
    p.set_defaults(handler=run_reconstruct)

    t = sub.add_parser(
        "train",
        help="train a reconstruction model and export it to ONNX with its card",
        description="Train a learned reconstruction (gbr, cnn_lstm, software_compensation) on "
        "calibrated files (stage gev) and write MODEL.onnx with MODEL.card.json (the exact "
        "command, training sample and test metrics) and MODEL.curves.json (loss curves). The "
        "events are split into train/validation/test by event with --seed. Networks need the "
        "`train` extra (torch).",
    )
    t.add_argument("files", nargs="+", metavar="IN", help="calibrated ROOT files (stage gev)")
    t.add_argument("--model", required=True, metavar="NAME", help="the model to train")
    t.add_argument(
        "--option", action="append", metavar="KEY=VALUE", help="a training option of the model"
    )
    t.add_argument("--seed", type=int, default=0, help="split, initialisation and shuffling seed")
    t.add_argument("--output", "-o", required=True, metavar="MODEL.onnx", help="output model")
    add_force_option(t)
    t.set_defaults(handler=run_train)


def reconstruction_for(spec: str, geometry: str, options: dict[str, str]) -> Any:
    """The method of ``--method``: a plugin name, or a model file (``*.onnx``)."""
    from calocoffea import registry
    from calocoffea.methods import reconstruction_method

    if spec.endswith(".onnx"):
        return reconstruction_method("onnx", geometry, model=spec, **options)
    registry.load("reconstructions", spec)  # an unknown name lists the installed ones
    return reconstruction_method(spec, geometry, **options)


def run_reconstruct(args: argparse.Namespace) -> int:
    import numpy as np

    from calocoffea.io import read_metadata
    from calocoffea.methods import parse_options
    from calocoffea.runner import _check_output, reconstruct_files

    _check_output(args.output, args.files, overwrite=args.force)
    geometry = read_metadata(args.files[0]).geometry
    method = reconstruction_for(args.method, geometry, parse_options(args.option))
    label = Path(args.method).stem if args.method.endswith(".onnx") else args.method
    result = reconstruct_files(
        args.files,
        method,
        output=args.output,
        label=label,
        run_options=run_options(args),
        overwrite=args.force,
        skip_bad_files=args.skip_bad_files,
    )
    print_cutflow(result.cutflow)
    c = result.columns
    if c and len(c["energy"]):
        ratio = c["energy"] / c["beam_energy"]
        print(f"{len(ratio)} events; mean E/E_beam = {np.mean(ratio):.4f}, rms {np.std(ratio):.4f}")
    print(f"wrote {result.output}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from calocoffea import registry
    from calocoffea.exceptions import ModelError
    from calocoffea.methods import parse_options
    from calocoffea.models.onnxmodel import card_path
    from calocoffea.runner import _check_output

    cls = registry.load("reconstructions", args.model)
    if not hasattr(cls, "train"):
        raise ModelError(
            f"reconstruction {args.model!r} is not a learned model and has nothing to train"
        )
    if not args.output.endswith(".onnx"):
        raise ModelError(f"--output {args.output} must end in .onnx")
    _check_output(args.output, args.files, overwrite=args.force)
    _check_output(card_path(args.output), args.files, overwrite=args.force)
    command = shlex.join(["calocoffea", *getattr(args, "argv", ["train"])])
    path = cls.train(
        list(args.files),
        args.output,
        options=parse_options(args.option),
        seed=args.seed,
        command=command,
    )
    print(f"wrote {path} and its card {Path(path).with_suffix('.card.json')}")
    return 0
