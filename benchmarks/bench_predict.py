"""Benchmark `dosediff predict` on one real OpenKBP volume (128 slices at 128x128).

The case goes through the real stages (OpenKBP reader -> preprocess at 128x128, PSDM of
10 ROIs) into a temporary folder; a network of the issue's benchmark size (base width 32,
multipliers 1,1,2,3,4, random weights saved as safetensors) predicts it with 8 DDIM steps,
sampling only the slices inside the possible-dose mask. Printed per variant: seconds per
volume (whole predict_case: read, sample, restore, write), slices sampled, peak memory.

    python benchmarks/bench_predict.py [patient folder] [--variants paper cached paper-bf16 cached-bf16]
    python benchmarks/bench_predict.py --width 128 --device cuda --variants paper-bf16   # authors' size

Each variant runs in its own process so its peak memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CASE = REPO.parent / "shared" / "data" / "openkbp" / "validation-pats" / "pt_201"
ROIS = ["PTV70", "PTV63", "PTV56", "Brainstem", "SpinalCord", "RightParotid", "LeftParotid",
        "Esophagus", "Larynx", "Mandible"]
VARIANTS = {"paper": (True, False), "cached": (False, False), "paper-bf16": (True, True), "cached-bf16": (False, True)}


def prepare(case_dir: Path, work: Path, width: int) -> None:
    """Ingest and preprocess the patient; write one random-weight model per timestep design."""
    import torch

    from dosediff.checkpoint import model_info, save_final
    from dosediff.config import DatasetConfig, PreprocessConfig
    from dosediff.experiment import ExperimentConfig
    from dosediff.ingest import ingest_case
    from dosediff.io.nifti import read_case
    from dosediff.models.factory import build_model
    from dosediff.preprocess.pipeline import preprocess_case

    dataset = DatasetConfig(name="openkbp", source="openkbp", input_dir=str(case_dir.parent), rois=ROIS,
                            targets={"PTV70": 70.0, "PTV63": 63.0, "PTV56": 56.0}, prescription_gy=70.0,
                            lr_pairs=[["LeftParotid", "RightParotid"]])
    ingest_case(case_dir, case_dir.name, dataset, work / "nifti")
    preprocess_case(read_case(work / "nifti"), dataset, PreprocessConfig(crop_to_body=False, size=[128, 128]),
                    work / "case.h5")
    for use_time in (True, False):
        network = {"width": width, "channel_mult": [1, 1, 2, 3, 4], "num_res_blocks": 2, "norm_groups": 32,
                   "fusion_patch_size": [4, 4], "cond_encoders_use_time": use_time}
        exp = ExperimentConfig.from_mapping({"network": network, "sample": {"batch_size": 8}}, "bench", ROIS)
        torch.manual_seed(0)
        model = build_model(exp.network)
        with torch.no_grad():  # the output conv starts at zero: give it weights so sampling does work
            for p in model.parameters():
                if p.abs().sum() == 0:
                    p.normal_(0, 1e-3)
        save_final(work / f"model-time{int(use_time)}", model, model, exp,
                   model_info(exp, ROIS, dataset.lr_pairs, 0, [128, 128]))


def run_variant(work: Path, variant: str, threads: int, device: str | None) -> dict:
    from dosediff.predict import predict_case

    use_time, bf16 = VARIANTS[variant]
    start = time.perf_counter()
    manifest = predict_case(work / f"model-time{int(use_time)}", work / "case.h5", work / "nifti",
                            work / f"{variant}.nii.gz", sample_overrides={"bf16": bf16}, device=device,
                            threads=threads)
    return {"variant": variant, "seconds_per_volume": round(time.perf_counter() - start, 1),
            "sampling_seconds": manifest["sampling_seconds"], "slices_sampled": manifest["slices_sampled"],
            "slices_total": manifest["slices_total"], "precision": manifest["precision"],
            "device": manifest["device"],
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("case", nargs="?", default=str(DEFAULT_CASE), help="OpenKBP patient folder")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--width", type=int, default=32, help="base width (default 32; 128 = the authors' size)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when present)")
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:  # child process: one variant
        print(json.dumps(run_variant(Path(args.work), args.variant, args.threads, args.device)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(Path(args.case), work, args.width)
        print(f"case {Path(args.case).name}: 8-step DDIM, width {args.width}, mult 1,1,2,3,4, {args.threads} threads")
        for variant in args.variants:
            cmd = [sys.executable, __file__, args.case, "--work", str(work), "--variant", variant,
                   "--threads", str(args.threads)] + (["--device", args.device] if args.device else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            print(json.dumps(json.loads(out.stdout.strip().splitlines()[-1])))


if __name__ == "__main__":
    main()
