"""The embedded default workflow made tiny (5 phantom patients of 16x48x48, a 2-level network,
3 training steps): what the SLURM and DDP rule tests run end to end in well under a minute."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def tiny_config(tmp: Path, name: str) -> Path:
    """Write tmp/tiny.yaml: config/config.yaml with dataset `name` and one experiment, `tiny`."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["dataset"]["name"] = name
    cfg["dataset"]["input_dir"] = f"results/{name}/dicom"
    cfg["phantom"].update(n_cases=5, shape=[16, 48, 48])
    cfg["preprocess"]["size"] = [32, 32]
    cfg["split"]["fractions"] = [0.6, 0.2, 0.2]
    exp = cfg["experiments"]["dosediff"]
    exp["network"] = {"width": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "norm_groups": 8, "num_heads": 2,
                      "fusion_patch_size": [2, 2], "fusion_dim": 16, "fusion_mlp_dim": 32}
    exp["train"] = {"steps": 3, "batch_size": 2, "lr": 1e-3, "checkpoint_every": 3, "validate_every": 3,
                    "val_max_slices": 2, "log_every": 1}
    exp["sample"] = {"steps": 2, "n_samples": 1, "batch_size": 8}
    cfg["experiments"] = {"tiny": exp}
    cfg["report"] = {"tables": {"comparison": ["mean_dose", "tiny"]}, "per_roi": ["tiny"]}
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
