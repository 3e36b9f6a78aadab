"""Benchmark: ingest + preprocess of one OpenKBP patient with every ROI's PSDM, on one core.

    python benchmarks/bench_preprocess.py [PATIENT_FOLDER] [--runs 5]

Prints the median wall-clock and CPU seconds per step (read, body, distances, crop/resize,
write) and in total, the peak memory of this process (ru_maxrss: peak resident set size,
which includes the interpreter and the imported libraries), and the HDF5 size. Targets
(issue 2): <= 1.5 s per patient on one core, <= 1 GB peak, <= 20 MB of HDF5.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy, scipy or SimpleITK load

import argparse  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import SimpleITK as sitk  # noqa: E402

from dosediff.config import DatasetConfig, PreprocessConfig  # noqa: E402
from dosediff.io.openkbp import read_openkbp_case  # noqa: E402
from dosediff.preprocess.pipeline import preprocess_case  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "data" / "openkbp" / "train-pats" / "pt_1"
ROIS = ["PTV70", "PTV63", "PTV56", "Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus",
        "Larynx", "Mandible"]
STEPS = ("read", "body", "distances", "crop_resize", "write")


def run_once(folder: Path, out: Path, dataset: DatasetConfig, cfg: PreprocessConfig) -> dict:
    """One ingest + preprocess: wall seconds per step, CPU seconds as `<step>_cpu`."""
    wall: dict[str, float] = {}
    cpu0, t0 = time.process_time(), time.perf_counter()
    case = read_openkbp_case(folder, folder.name, dataset)
    wall["read"], wall["read_cpu"] = time.perf_counter() - t0, time.process_time() - cpu0
    preprocess_case(case, dataset, cfg, out, timings=wall)
    wall["total"], wall["total_cpu"] = time.perf_counter() - t0, time.process_time() - cpu0
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT, help="OpenKBP patient folder")
    parser.add_argument("--runs", type=int, default=5, help="timed runs (after one warm-up)")
    parser.add_argument("--level", type=int, default=PreprocessConfig().compression_level, help="gzip level")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"no such folder: {args.folder} (pass an OpenKBP patient folder)", file=sys.stderr)
        return 2
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    dataset = DatasetConfig(name="openkbp", source="openkbp", input_dir=str(args.folder.parent), rois=ROIS,
                            targets={"PTV70": 70.0, "PTV63": 63.0, "PTV56": 56.0}, prescription_gy=70.0,
                            lr_pairs=[["LeftParotid", "RightParotid"]])
    cfg = PreprocessConfig(crop_to_body=False, size=[128, 128], representations=["psdm"],
                           compression_level=args.level)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{args.folder.name}.h5"
        run_once(args.folder, out, dataset, cfg)  # warm-up (imports, page cache)
        runs = [run_once(args.folder, out, dataset, cfg) for _ in range(args.runs)]
        size_mb = out.stat().st_size / 1e6
    n_rois = sum(1 for p in args.folder.iterdir() if p.name.split(".")[0] in ROIS)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(f"patient {args.folder} ({n_rois} ROIs, PSDM each), median of {args.runs} runs, one thread")
    print("  step          wall s   CPU s (process time; less sensitive to other users' load)")
    for step in (*STEPS, "total"):
        wall = statistics.median(r[step] for r in runs)
        cpu = statistics.median(r[f"{step}_cpu"] for r in runs)
        print(f"  {step:12s} {wall:7.3f} {cpu:7.3f}" + ("   target <= 1.5 s" if step == "total" else ""))
    print(f"  peak memory  {peak_mb:6.0f} MB (ru_maxrss, peak resident set of this process)   target <= 1024 MB")
    print(f"  HDF5 size    {size_mb:6.2f} MB   target <= 20 MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
