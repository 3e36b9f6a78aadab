"""dosediff and the authors' DoseDiff side by side, interleaved in one run on one machine.

    python benchmarks/bench_vs_authors.py [--peers DIR] [--repeats 3] [--size 128] [--json out.json]

Equal settings (benchmarks/equal_settings.py): 128x128 slices, batch 8, width 32 with the
paper's multipliers, 8 DDIM steps (eta 0, x0 clipped), 20 condition channels, fp32, 2 torch
threads. Every measurement is a child process (its peak memory is ru_maxrss of that child
alone; the parent imports only the standard library), and the sides alternate A, B, A, B ...
for --repeats rounds; the table gives medians and the median of the per-round ratios.

Rows:
  training step     forward + backward + clipping + AdamW: the authors' train.py loop body
                    (their GaussianDiffusion.training_losses) vs dosediff.train.train_step
                    (which also updates the EMA of the weights; the authors keep none); and
                    dosediff under bf16 autocast (train.bf16: true), which changes the arithmetic.
  DDIM per slice    a batch of 8 slices through 8 DDIM steps: their ddim_sample_loop vs
                    dosediff's DiffusionPredictor (paper design; also the cached-encoder option
                    and bf16, which the workflow uses on CPUs with bf16 units).
  predicted volume  dosediff: `dosediff predict` on a real OpenKBP patient, HDF5 -> NIfTI end to
                    end, as the workflow runs it (only slices that can receive dose; 20 -> 10
                    channels: the workflow's PSDM of the 10 OpenKBP ROIs). Authors: pred.py samples
                    all 128 slices; their time is their DDIM per slice x 128 (not a run).
  preprocessing     one OpenKBP patient, one core (sched_setaffinity): their csv2nii.py ->
                    PSDM_OpenKBP.py -> NII_to_npy.py vs `dosediff ingest` + `dosediff preprocess`
                    with config/openkbp.yaml and PSDM alone (as theirs), start-up included on both
                    sides, both reading the same plain CSV files; a second row with the config's
                    PSDM, MSDM and TSBDM (its Table 2 runs).
  disk              bytes each side leaves per patient (all files, and the model input alone).
Design differences, measured as separate rows: the authors' fusionFormer projects its 1024-wide
tokens to one 64-wide head (to_q/k/v 1024 -> 64); dosediff's beta/gamma/delta keep 1024 -> 1024
(fusion_dim), so the "ours, fusion_dim 64" rows show what a narrower fusionFormer changes.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEERS = REPO.parent / "shared" / "peers" / "whisney-DoseDiff"
DATA = REPO.parent / "shared" / "data" / "openkbp"
AUTHORS_STAGES = ("csv2nii.py", "PSDM_OpenKBP.py", "NII_to_npy.py")
THREADS = 2
# (row, side) pairs of the child measurements, in the order a round runs them
ROWS = [("train", "authors"), ("train", "ours"), ("train", "ours-bf16"), ("ddim", "authors"), ("ddim", "ours"),
        ("ddim", "ours-cached"), ("ddim", "ours-bf16"), ("ddim", "ours-ff64"),
        ("predict", "ours"), ("preprocess", "authors"), ("preprocess", "ours"),
        ("preprocess", "ours-3maps")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", type=Path, default=PEERS, help=f"the authors' code (default {PEERS})")
    p.add_argument("--data", type=Path, default=DATA, help=f"OpenKBP folder with train-pats/ (default {DATA})")
    p.add_argument("--repeats", type=int, default=3, help="rounds of A, B, A, B (default 3)")
    p.add_argument("--size", type=int, default=128, help="slice rows = columns (default 128)")
    p.add_argument("--steps", type=int, default=4, help="timed training steps per child, after 1 warm-up")
    p.add_argument("--rows", nargs="+", default=None, help="only these rows: train ddim predict preprocess")
    p.add_argument("--patient", default="pt_1", help="OpenKBP patient for preprocessing and prediction")
    p.add_argument("--json", type=Path, help="also write every measurement to this JSON file")
    p.add_argument("--child", nargs=2, metavar=("ROW", "SIDE"), help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------- child side (torch imported here)
def child(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    row, side = args.child
    if side == "authors":
        import authors_side

        return authors_side.measure(row, args.peers, args.size, args.steps)
    import ours_side

    return ours_side.measure(row, side, args.size, args.steps, args.work, args.data / "train-pats" / args.patient)


# ---------------------------------------------------------------- parent side (stdlib only)
def run_measured(cmd: list[str], cwd: Path | None = None, env: dict | None = None, one_core: bool = False,
                 ) -> tuple[str, dict]:
    """Run cmd; its stdout, wall seconds and its peak RSS (MB) from os.wait4."""
    pre = (lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})) if one_core else None
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.PIPE, text=True,
                                preexec_fn=pre)
        err = proc.stderr.read()
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        text = out.read()
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{err[-3000:]}")
    return text, {"wall_s": wall, "peak_mb": ru.ru_maxrss / 1024}


def measure_child(args: argparse.Namespace, row: str, side: str, work: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__)), "--child", row, side, "--peers", str(args.peers),
           "--size", str(args.size), "--steps", str(args.steps), "--work", str(work), "--data", str(args.data),
           "--patient", args.patient]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    text, stats = run_measured(cmd, env=env)
    result = json.loads(text.strip().splitlines()[-1])
    return {**result, "peak_mb": stats["peak_mb"]}


def dir_bytes(root: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in root.rglob(pattern) if p.is_file())


def plain_patient(args: argparse.Namespace, work: Path) -> Path:
    """The patient's files as plain CSV, as OpenKBP ships them: both sides read the same files
    (the stored copies are .csv.xz; decompressed once, not timed)."""
    folder = work / "plain" / args.patient
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for src in sorted((args.data / "train-pats" / args.patient).glob("*.csv.xz")):
            with lzma.open(src) as fin, open(folder / src.name[:-3], "wb") as fout:
                shutil.copyfileobj(fin, fout)
    return folder


def preprocess_authors(args: argparse.Namespace, work: Path) -> dict:
    """Their three scripts, unmodified, in their layout (provided-data/train-pats/<pt>/*.csv)."""
    root = work / f"authors-{time.monotonic_ns()}"
    pt = root / "provided-data" / "train-pats" / args.patient
    pt.mkdir(parents=True)
    shutil.copytree(plain_patient(args, work), pt, dirs_exist_ok=True)  # not timed
    inputs = dir_bytes(root)
    for split in ("train-pats", "validation-pats", "test-pats"):  # the scripts expect all three
        for sub in (split, split + "_preprocess"):
            (root / "preprocessed_data" / sub).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    wall, peak = 0.0, 0.0
    for script in AUTHORS_STAGES:
        _, st = run_measured([sys.executable, str(args.peers / script)], cwd=root, env=env, one_core=True)
        wall, peak = wall + st["wall_s"], max(peak, st["peak_mb"])
    out = {"s": wall, "peak_mb": peak, "disk_mb": (dir_bytes(root) - inputs) / 1e6,
           "model_input_mb": dir_bytes(root / "preprocessed_data" / "NPY", "*.npy") / 1e6}
    shutil.rmtree(root)
    return out


def settings_file(work: Path, representations: list[str]) -> str:
    """config/openkbp.yaml with preprocess.representations replaced (JSON is YAML; not timed)."""
    path = work / f"openkbp-{'-'.join(representations)}.json"
    if not path.is_file():
        code = ("import json, sys, yaml; d = yaml.safe_load(open(sys.argv[1])); "
                "d['preprocess']['representations'] = sys.argv[3].split(','); json.dump(d, open(sys.argv[2], 'w'))")
        subprocess.run([sys.executable, "-c", code, str(REPO / "config" / "openkbp.yaml"), str(path),
                        ",".join(representations)], check=True)
    return str(path)


def preprocess_ours(args: argparse.Namespace, work: Path, representations: list[str]) -> dict:
    """`dosediff ingest` + `dosediff preprocess` with the OpenKBP config, as the workflow's rules."""
    root = work / f"ours-{time.monotonic_ns()}"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="1")
    settings = Path(settings_file(work, representations)).read_text()  # inline JSON, as the rules pass it
    cmds = [["ingest", "--settings", settings, "--case", args.patient, "--input",
             str(plain_patient(args, work)), "--out", str(root / "nifti")],
            ["preprocess", "--settings", settings, "--input", str(root / "nifti"), "--out", str(root / "case.h5")]]
    wall, peak = 0.0, 0.0
    for c in cmds:
        _, st = run_measured([sys.executable, "-m", "dosediff", *c], env=env, one_core=True)
        wall, peak = wall + st["wall_s"], max(peak, st["peak_mb"])
    out = {"s": wall, "peak_mb": peak, "disk_mb": dir_bytes(root) / 1e6,
           "model_input_mb": (root / "case.h5").stat().st_size / 1e6}
    shutil.rmtree(root)
    return out


def predict_ours(args: argparse.Namespace, work: Path) -> dict:
    """`dosediff predict`, HDF5 -> NIfTI, on the case and model that ours_side.prepare_predict wrote."""
    out = work / f"pred-{time.monotonic_ns()}.nii.gz"
    cmd = [sys.executable, "-m", "dosediff", "predict", "--model", str(work / "model"), "--h5",
           str(work / "case.h5"), "--case-dir", str(work / "nifti"), "--out", str(out), "--device", "cpu",
           "--threads", str(THREADS)]
    _, st = run_measured(cmd)
    manifest = json.loads(out.with_suffix("").with_suffix(".json").read_text())
    return {"s": st["wall_s"], "peak_mb": st["peak_mb"], "slices": manifest["slices_sampled"],
            "of": manifest["slices_total"], "precision": manifest["precision"]}


def one(args: argparse.Namespace, row: str, side: str, work: Path) -> dict:
    if row == "preprocess":
        if side == "authors":
            return preprocess_authors(args, work)
        return preprocess_ours(args, work, ["psdm"] if side == "ours" else ["psdm", "msdm", "tsbdm"])
    if row == "predict":
        return predict_ours(args, work)
    return measure_child(args, row, side, work)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if not (args.peers / "guided_diffusion" / "unet.py").is_file():
        print(f"the authors' code is not at {args.peers} (no guided_diffusion/unet.py): clone "
              "github.com/whisney/DoseDiff there or pass --peers DIR; nothing was measured", file=sys.stderr)
        return 2
    rows = [(r, s) for r, s in ROWS if args.rows is None or r in args.rows]
    from report_vs_authors import machine, table  # stdlib only

    results: dict[str, list[dict]] = {f"{r}/{s}": [] for r, s in rows}
    with tempfile.TemporaryDirectory(prefix="bench_vs_authors_") as tmp:
        work = Path(tmp)
        if any(r == "predict" for r, _ in rows):
            measure_child(args, "prepare", "ours", work)  # ingest, preprocess, a model: not timed
        for k in range(args.repeats):
            for row, side in rows:
                print(f"[{time.strftime('%H:%M:%S')}] round {k + 1}/{args.repeats}: {row} {side}",
                      file=sys.stderr, flush=True)
                results[f"{row}/{side}"].append(one(args, row, side, work))
    info = machine()
    print(table(results, info, args))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "settings": vars(args), "results": results},
                                        indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
