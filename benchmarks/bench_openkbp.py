"""Equal-compute benchmark on real OpenKBP patients: every contender trains for the same
wall-clock budget on this machine through the workflow's own stages (`dosediff ingest`,
`preprocess`, `split`, `train`, `predict`, `mean-dose`, `evaluate`, called in-process with
the arguments the rules pass), then one table and a learning-curve figure.

    python benchmarks/bench_openkbp.py --budget-minutes 60                  # 33 validation patients
    python benchmarks/bench_openkbp.py --budget-minutes 2 --train-cases 12 --eval-cases 3

Contenders: mean_dose (the trivial predictor), unet, dosediff_paper (the paper's recipe:
epsilon prediction), dosediff_best (the best recipe found: v-prediction), dosediff_best_bf16 (the same, trained
under bf16 autocast: train.bf16 true; not run unless named), all with the
network of --config (config/openkbp-cpu.yaml). Training uses train.max_minutes; the
learning curve resumes each training from 25 % to 50 % to 100 % of the budget (the budget
counts all runs) and scores each point. Gamma (3 %/3 mm) is computed only at 100 %, on a
seeded subset of --gamma-points points per patient (the evaluate setting gamma.max_points).

--ablate-cases N then re-samples dosediff_best's final weights with each sampling lever
(DDIM steps, spacing, mean of several samples, flip averaging) on the first N scored
patients, without training again, and prints an ablation table against the same patients.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import pandas as pd
import yaml

from dosediff.cli import main as dosediff
from dosediff.config import SplitConfig, section
from dosediff.data.splits import make_splits
from dosediff.names import prediction_file

REPO = Path(__file__).resolve().parents[1]
MEAN_DOSE = "mean_dose"
FRACTIONS = (0.25, 0.5, 1.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "openkbp",
                   help="OpenKBP folder (train-pats/, validation-pats/, test-pats/)")
    p.add_argument("--config", type=Path, default=REPO / "config" / "openkbp-cpu.yaml",
                   help="config giving the dataset, preprocessing, network and evaluation")
    p.add_argument("--split", choices=("validation", "test"), default="validation",
                   help="official split whose patients are scored (training: train-pats)")
    p.add_argument("--train-cases", type=int, default=0, help="use only the first N training patients (0 = all)")
    p.add_argument("--eval-cases", type=int, default=0, help="score only the first N patients (0 = all)")
    p.add_argument("--budget-minutes", type=float, default=60.0, help="training minutes per contender")
    p.add_argument("--size", type=int, default=64, help="in-plane size after the body crop (rows = columns)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--contenders", nargs="+", default=[MEAN_DOSE, "unet", "dosediff_paper", "dosediff_best"])
    p.add_argument("--gamma-points", type=int, default=20_000, help="gamma points per patient (seeded subset)")
    p.add_argument("--ablate-cases", type=int, default=0, help="sampling ablation on the first N scored patients")
    p.add_argument("--work", type=Path, default=REPO / "results" / "bench_openkbp", help="output folder")
    return p.parse_args(argv)


def experiments(config: dict) -> dict[str, dict]:
    """The trained contenders, from the config's unet and dosediff experiments."""
    base = config["experiments"]["dosediff"]
    paper = {**copy.deepcopy(base), "prediction": "epsilon"}
    best = {**copy.deepcopy(base), "prediction": "v"}
    best_bf16 = {**copy.deepcopy(best), "train": {**best.get("train", {}), "bf16": True}}
    return {"unet": copy.deepcopy(config["experiments"]["unet"]), "dosediff_paper": paper, "dosediff_best": best,
            "dosediff_best_bf16": best_bf16}


def run(*args: object) -> None:
    """One stage, as the workflow's rule runs it."""
    rc = dosediff([str(a) for a in args])
    if rc != 0:
        raise SystemExit(f"dosediff {args[0]} failed (exit {rc}); see the message above")


def prepare(a: argparse.Namespace, settings: dict, work: Path) -> tuple[list[str], list[str]]:
    """Ingest and preprocess the chosen patients (kept between runs); write splits.json."""
    folders = {p.name: p for p in sorted(a.data.glob("*-pats/pt_*")) if p.is_dir()}
    splits = make_splits(list(folders), "openkbp", section(settings, SplitConfig, "split"))
    train = splits["train"][: a.train_cases or None]
    scored = splits[a.split][: a.eval_cases or None]
    if not train or not scored:
        raise SystemExit(f"{a.data}: no training or no {a.split} patients found")
    js = json.dumps(settings)
    for case in train + scored:
        nifti, h5 = work / "nifti" / case, work / "h5" / f"{case}.h5"
        if not nifti.is_dir():
            run("ingest", "--settings", js, "--case", case, "--input", folders[case], "--out", nifti)
        if not h5.is_file():
            run("preprocess", "--settings", js, "--input", nifti, "--out", h5)
    # No validation during training: the budget is spent on steps only, for every contender alike.
    (work / "splits.json").write_text(json.dumps({"train": train, "validation": [], "test": scored}))
    return train, scored


def score(a: argparse.Namespace, settings: dict, work: Path, name: str, tag: str, scored: list[str],
          gamma: bool, predictions: Path | None = None) -> dict:
    """Evaluate one prediction set; the table's columns from per_case.csv and openkbp_scores.json."""
    s = copy.deepcopy(settings)
    s.setdefault("evaluate", {})["gamma"] = {**s["evaluate"].get("gamma", {}), "enabled": gamma,
                                             "max_points": a.gamma_points}
    out = work / "metrics" / name / tag
    folder = predictions or work / "predictions" / name / tag
    run("evaluate", "--settings", json.dumps(s), "--experiment", name, "--references",
        *[work / "nifti" / c for c in scored], "--predictions", *[prediction_file(folder, c) for c in scored],
        "--out", out, "--no-figures")
    per_case = pd.read_csv(out / "per_case.csv")
    body = per_case[per_case["roi"] == "Body"].groupby("metric")["value"].mean()
    kbp = json.loads((out / "openkbp_scores.json").read_text())
    return {"dose_score": kbp["dose_score"], "dvh_score": kbp["dvh_score"], "mae_body": body.get("MAE"),
            "gamma_pct": body.get("gamma_pass_rate") if gamma else float("nan")}


def predict_all(a: argparse.Namespace, work: Path, name: str, tag: str, scored: list[str],
                train: list[str], sample: dict | None = None) -> float:
    """Predict every scored patient; seconds per patient."""
    t0 = time.perf_counter()
    for case in scored:
        out = work / "predictions" / name / tag / f"{case}.nii.gz"
        h5 = work / "h5" / f"{case}.h5"
        if name == MEAN_DOSE:
            if out.is_file():  # it does not depend on training: kept between runs, like the HDF5
                continue
            run("mean-dose", "--train-h5", *[work / "h5" / f"{c}.h5" for c in train], "--h5", h5, "--out", out)
        else:
            run("predict", "--model", work / "models" / name, "--h5", h5, "--case-dir", work / "nifti" / case,
                "--out", out, "--threads", a.threads, *(("--sample", json.dumps(sample)) if sample else ()))
    return (time.perf_counter() - t0) / len(scored)


def train_to(a: argparse.Namespace, settings: dict, work: Path, name: str, exp: dict, minutes: float) -> dict:
    """Train (resuming) until `minutes` of training in all; steps and seconds from the log."""
    exp = copy.deepcopy(exp)
    exp["train"] = {**exp.get("train", {}), "max_minutes": minutes, "validate_every": 0}
    s = {**settings, "experiments": {name: exp}}
    run("train", "--settings", json.dumps(s), "--experiment", name, "--h5-dir", work / "h5",
        "--splits", work / "splits.json", "--out", work / "models" / name, "--threads", a.threads)
    last = pd.read_csv(work / "models" / name / "train_log.csv").iloc[-1]
    return {"steps": int(last["step"]), "train_s": float(last["seconds"])}


def stage_settings(a: argparse.Namespace, config: dict) -> dict:
    """The config's sections the stages read, with this run's data folder and size."""
    settings = {k: config[k] for k in ("dataset", "preprocess", "split", "evaluate") if k in config}
    settings["dataset"] = {**settings["dataset"], "input_dir": str(a.data)}
    settings["preprocess"] = {**settings.get("preprocess", {}), "size": [a.size, a.size]}
    return settings


def bench(a: argparse.Namespace, config: dict, settings: dict, work: Path,
          train: list[str], scored: list[str]) -> pd.DataFrame:
    exps = experiments(config)
    rows = []
    for name in a.contenders:
        for frac in FRACTIONS if name != MEAN_DOSE else (1.0,):
            tag = f"{int(frac * 100)}pct"
            trained = {"steps": 0, "train_s": 0.0}
            if name != MEAN_DOSE:
                trained = train_to(a, settings, work, name, exps[name], a.budget_minutes * frac)
            predict_s = predict_all(a, work, name, tag, scored, train)
            row = {"contender": name, "budget_pct": int(frac * 100), **trained,
                   "train_s_per_patient": trained["train_s"] / len(train), "predict_s_per_patient": predict_s,
                   **score(a, settings, work, name, tag, scored, gamma=frac == 1.0)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return pd.DataFrame(rows)


# Sampling levers, each alone against the experiment's own sample settings (8 leading DDIM steps).
SAMPLE_LEVERS = {"steps4": {"steps": 4}, "steps16": {"steps": 16}, "trailing": {"spacing": "trailing"},
                 "flip": {"tta_flip": True}, "mean4": {"n_samples": 4}}


def ablate_sampling(a: argparse.Namespace, settings: dict, work: Path, scored: list[str],
                    train: list[str], name: str = "dosediff_best") -> pd.DataFrame:
    """Re-sample the final weights with each lever on the first --ablate-cases patients."""
    cases = scored[: a.ablate_cases]
    base = score(a, settings, work, name, "ablate_base", cases, gamma=False,
                 predictions=work / "predictions" / name / "100pct")
    rows = [{"lever": "none (8 leading steps, 1 sample)", **base}]
    for lever, sample in SAMPLE_LEVERS.items():
        tag = f"ablate_{lever}"
        predict_s = predict_all(a, work, name, tag, cases, train, sample)
        rows.append({"lever": lever, **score(a, settings, work, name, tag, cases, gamma=False),
                     "predict_s_per_patient": predict_s})
        print(json.dumps(rows[-1]), flush=True)
    return pd.DataFrame(rows)


def curve_figure(df: pd.DataFrame, path: Path, budget: float) -> None:
    """Official dose and DVH scores against training minutes, one line per contender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, col, label in zip(axes, ("dose_score", "dvh_score"), ("official dose score (Gy)", "official DVH score (Gy)")):
        for name, part in df.groupby("contender", sort=False):
            if name == MEAN_DOSE:
                ax.axhline(part[col].iloc[0], color="grey", ls="--", label=name)
            else:
                ax.plot(part["budget_pct"] / 100 * budget, part[col], marker="o", label=name)
        ax.set_xlabel("training minutes")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    config = yaml.safe_load(a.config.read_text())
    settings = stage_settings(a, config)
    work = a.work / f"size{a.size}"
    train, scored = prepare(a, settings, work)
    df = bench(a, config, settings, work, train, scored)
    df.to_csv(work / "bench_openkbp.csv", index=False)
    curve_figure(df, work / "learning_curve.png", a.budget_minutes)
    final = df[df["budget_pct"] == 100]
    cols = ["contender", "dose_score", "dvh_score", "mae_body", "gamma_pct", "steps",
            "train_s_per_patient", "predict_s_per_patient"]
    print(f"\n{len(final)} contenders, {a.budget_minutes:g} min each, {a.size}^2, 2 cores; scored on {a.split}")
    print(final[cols].to_markdown(index=False, floatfmt=".3f"))
    print(f"\nlearning curve: {work / 'learning_curve.png'}")
    if a.ablate_cases:
        abl = ablate_sampling(a, settings, work, scored, train)
        abl.to_csv(work / "ablation_sampling.csv", index=False)
        print(f"\nsampling levers on dosediff_best's final weights, first {a.ablate_cases} scored patients")
        print(abl.to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
