"""The only argument parser: `dosediff <stage> ...`, one subcommand per workflow rule.

Each subcommand parses its arguments and calls one typed function. Settings come as the
config's sections in JSON (what the rules pass) or as a YAML config file (by hand).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from dosediff.errors import InputError

log = logging.getLogger("dosediff")

SETTINGS_HELP = "config sections as inline JSON (as the workflow passes them) or a YAML config file"


def _settings(args: argparse.Namespace) -> dict:
    from dosediff.config import load_settings

    return load_settings(args.settings)


def cmd_phantom(args: argparse.Namespace) -> None:
    from dosediff.config import PhantomConfig, section
    from dosediff.phantom import write_phantom_case

    cfg = section(_settings(args), PhantomConfig, "phantom")
    write_phantom_case(Path(args.out), args.case, args.index, cfg)


def cmd_ingest(args: argparse.Namespace) -> None:
    from dosediff.config import DatasetConfig, section
    from dosediff.ingest import ingest_case

    dataset = section(_settings(args), DatasetConfig, "dataset")
    ingest_case(Path(args.input), args.case, dataset, Path(args.out), require_dose=not args.no_dose)


def cmd_preprocess(args: argparse.Namespace) -> None:
    from dosediff.config import DatasetConfig, PreprocessConfig, section
    from dosediff.io.nifti import read_case
    from dosediff.preprocess.pipeline import preprocess_case

    settings = _settings(args)
    dataset = section(settings, DatasetConfig, "dataset")
    cfg = section(settings, PreprocessConfig, "preprocess")
    preprocess_case(read_case(Path(args.input)), dataset, cfg, Path(args.out))


def cmd_split(args: argparse.Namespace) -> None:
    from dosediff.config import DatasetConfig, SplitConfig, section
    from dosediff.data.splits import make_splits, write_splits

    settings = _settings(args)
    dataset = section(settings, DatasetConfig, "dataset")
    cfg = section(settings, SplitConfig, "split")
    splits = make_splits(list(args.cases), dataset.source, cfg)
    write_splits(Path(args.out), splits)
    log.info("split: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dosediff",
        description="DoseDiff dose prediction: each subcommand is one stage of the Snakemake workflow.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")

    p = sub.add_parser("phantom", help="write one synthetic DICOM-RT patient (CT, RTSTRUCT, RTDOSE, RTPLAN)")
    p.add_argument("--settings", required=True, help=SETTINGS_HELP + " (uses section: phantom)")
    p.add_argument("--case", required=True, help="case id, e.g. phantom_001")
    p.add_argument("--index", required=True, type=int, help="patient number (seeds the anatomy with phantom.seed)")
    p.add_argument("--out", required=True, help="output folder for the patient's DICOM files")
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("ingest", help="read a DICOM-RT or OpenKBP patient folder into the NIfTI case folder")
    p.add_argument("--settings", required=True, help=SETTINGS_HELP + " (uses section: dataset)")
    p.add_argument("--case", required=True, help="case id (the folder name or a pseudonym; never a patient ID)")
    p.add_argument("--input", required=True, help="the patient's source folder")
    p.add_argument("--out", required=True, help="output case folder (ct.nii.gz, dose.nii.gz, roi/, case.json)")
    p.add_argument("--no-dose", action="store_true", help="allow cases without a planned dose (prediction only)")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("preprocess", help="body mask, crop/resize and distance maps -> one HDF5 per case")
    p.add_argument("--settings", required=True, help=SETTINGS_HELP + " (uses sections: dataset, preprocess)")
    p.add_argument("--input", required=True, help="case folder written by `dosediff ingest`")
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("split", help="train/validation/test split by patient -> splits.json")
    p.add_argument("--settings", required=True, help=SETTINGS_HELP + " (uses sections: dataset, split)")
    p.add_argument("--cases", required=True, nargs="+", help="all case ids of the dataset")
    p.add_argument("--out", required=True, help="output splits.json")
    p.set_defaults(func=cmd_split)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        args.func(args)
    except InputError as err:
        log.error(str(err))
        return 2
    return 0
