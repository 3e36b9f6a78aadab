"""Prediction: seeding, original grid and masks, slice selection, samples/std, flip TTA, the
condition cache, the UNet baseline, RTDOSE read-back and atomic outputs.

Cases come through the real pipeline (phantom DICOM -> ingest -> preprocess -> HDF5, and a
hand-made Case -> preprocess); models are tiny, with random weights saved through
checkpoint.save_final (the zero-initialised layers perturbed so the output depends on the
inputs and the noise).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

from dosediff import checkpoint as ckpt
from dosediff.config import DatasetConfig, PhantomConfig, PreprocessConfig
from dosediff.data.dataset import denormalise_dose
from dosediff.diffusion.ddim import ddim_sample
from dosediff.diffusion.schedule import linear_schedule
from dosediff.errors import InputError
from dosediff.experiment import ExperimentConfig
from dosediff.ingest import ingest_case
from dosediff.io.nifti import read_case, read_image, write_case
from dosediff.models.factory import build_model
from dosediff.phantom import SENTINELS, phantom_dataset_config, write_phantom_case
from dosediff.predict import load_for_prediction, predict_case
from dosediff.prediction import outputs
from dosediff.prediction.inputs import load_case_inputs
from dosediff.prediction.sampling import DiffusionPredictor, sample_volume, slice_noise, slice_predictor
from dosediff.preprocess.body import body_mask
from dosediff.preprocess.pipeline import preprocess_case
from dosediff.preprocess.resample import restore_to_original
from dosediff.volume import Case, Geometry
from dicom_readers import read_rtdose
from synthetic_h5 import LR_PAIRS, ROIS, TINY_NETWORK, make_case


def save_model(out: Path, rois: list[str], lr_pairs: list[list[str]], image_size: list[int], model: str = "mmfnet",
               cache: bool = False, steps: int = 2, batch_size: int = 3) -> Path:
    """Random-weight tiny model saved as `dosediff train` leaves it (safetensors + config.json)."""
    network = {**TINY_NETWORK, "cond_encoders_use_time": not cache}
    exp = ExperimentConfig.from_mapping({"model": model, "network": network,
                                         "sample": {"steps": steps, "batch_size": batch_size, "bf16": False}},
                                        "tiny", rois)  # fp32: the tests compare with fp32 paths
    torch.manual_seed(0)
    net = build_model(exp.network)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():  # the zero-initialised output layers would hide the inputs
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    ckpt.save_final(out, net, net, exp, ckpt.model_info(exp, rois, lr_pairs, 0, image_size))
    return out


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> dict:
    """A phantom patient through DICOM, ingest and preprocessing (32 x 32 slices), plus models."""
    root = tmp_path_factory.mktemp("phantom")
    dataset = phantom_dataset_config()
    write_phantom_case(root / "dicom", "ph_001", 1, PhantomConfig(shape=[8, 40, 40], spacing=[8.0, 7.0, 7.0]))
    ingest_case(root / "dicom", "ph_001", dataset, root / "nifti" / "ph_001")
    case = read_case(root / "nifti" / "ph_001")
    preprocess_case(case, dataset, PreprocessConfig(size=[32, 32]), root / "h5" / "ph_001.h5")
    models = {name: save_model(root / "models" / name, dataset.rois, dataset.lr_pairs, [32, 32], **kw)
              for name, kw in {"diff": {}, "cached": {"cache": True}, "unet": {"model": "unet"}}.items()}
    return {"root": root, "h5": root / "h5" / "ph_001.h5", "case_dir": root / "nifti" / "ph_001", "case": case,
            "models": models, "dataset": dataset}


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory) -> dict:
    """A non-DICOM case with an empty slice (0) and a possible-dose mask excluding slice 5."""
    root = tmp_path_factory.mktemp("hand")
    arrays = make_case(np.random.default_rng(3), z=6, h=20, w=24)
    geo = Geometry((6, 20, 24), (3.0, 2.0, 2.0), (-20.0, -30.0, 5.0))
    possible = arrays["body"].copy()
    possible[5] = 0
    possible[:, :, :4] = 0  # and a strip inside the body of every slice
    case = Case("hand_01", geo, arrays["ct"], None, {n: arrays["masks"][i] for i, n in enumerate(ROIS)},
                possible, 60.0, {"source": "openkbp"})
    write_case(case, root / "nifti" / "hand_01")
    dataset = DatasetConfig(source="openkbp", rois=ROIS, lr_pairs=LR_PAIRS)
    preprocess_case(case, dataset, PreprocessConfig(size=[16, 16], crop_to_body=False), root / "h5" / "hand_01.h5")
    model = save_model(root / "model", ROIS, LR_PAIRS, [16, 16])
    return {"h5": root / "h5" / "hand_01.h5", "case_dir": root / "nifti" / "hand_01", "case": case,
            "model": model, "root": root}


def predict(ph: dict, out: Path, model: str = "diff", **overrides) -> tuple[np.ndarray, Geometry, dict]:
    manifest = predict_case(ph["models"][model], ph["h5"], ph["case_dir"], out / "ph_001.nii.gz",
                            overrides or None, threads=1)
    dose, geo = read_image(out / "ph_001.nii.gz")
    return dose, geo, manifest


def test_same_seed_same_prediction_other_seed_differs(phantom, tmp_path):
    a, _, man = predict(phantom, tmp_path / "a")
    b, _, _ = predict(phantom, tmp_path / "b")
    c, _, _ = predict(phantom, tmp_path / "c", seed=1)
    d, _, _ = predict(phantom, tmp_path / "d", batch_size=8)
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 1.0  # Gy: a diffusion model's samples depend on the noise
    # The noise is drawn per slice, so the batch layout changes only the kernels' round-off.
    np.testing.assert_allclose(d, a, atol=1e-3)
    assert man["seed"] == 0 and man["sample"]["steps"] == 2 and man["sample"]["eta"] == 0.0
    assert man["slices_sampled"] == man["slices_total"] == 8
    assert man["forward_passes"] == 3 * 2  # ceil(8 / 3) batches x 2 DDIM steps


def test_output_on_original_ct_grid_zero_outside_body(phantom, tmp_path):
    dose, geo, man = predict(phantom, tmp_path)
    case = phantom["case"]
    assert geo.same_grid(case.geometry, tol_mm=1e-4) and dose.dtype == np.float32
    body = body_mask(case.ct, -500.0) > 0
    assert not dose[~body].any()
    assert (dose[body] > 0).mean() > 0.5 and dose.max() <= 75.0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted([*man["files"].values(), "ph_001.json"])
    assert json.loads((tmp_path / "ph_001.json").read_text()) == man
    assert man["files"] == {"dose": "ph_001.nii.gz", "rtdose": "ph_001_RTDOSE.dcm"}


def test_only_dose_receiving_slices_sampled(hand_made, tmp_path):
    man = predict_case(hand_made["model"], hand_made["h5"], hand_made["case_dir"], tmp_path / "hand_01.nii.gz")
    dose, geo = read_image(tmp_path / "hand_01.nii.gz")
    case = hand_made["case"]
    assert geo.same_grid(case.geometry) and dose.shape == (6, 20, 24)
    assert man["slices_sampled"] == 4 and man["slices_total"] == 6  # no body on 0, no possible dose on 5
    region = (body_mask(case.ct, -500.0) > 0) & (case.possible_dose > 0)
    assert not dose[~region].any() and not dose[[0, 5]].any()
    assert (dose[region] > 0).mean() > 0.5
    assert man["files"] == {"dose": "hand_01.nii.gz"}  # not from DICOM: no RTDOSE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hand_01.json", "hand_01.nii.gz"]


def test_samples_give_std_map_and_tta_runs(phantom, tmp_path):
    dose, _, man = predict(phantom, tmp_path, n_samples=2, tta_flip=True)
    std, geo = read_image(tmp_path / "ph_001_std.nii.gz")
    body = body_mask(phantom["case"].ct, -500.0) > 0
    assert geo.same_grid(phantom["case"].geometry) and std.dtype == np.float32
    assert std.min() >= 0 and not std[~body].any() and std[body].max() > 0.5  # Gy
    assert man["files"]["std"] == "ph_001_std.nii.gz" and man["forward_passes"] == 3 * 2 * 2 * 2
    # A later run without samples removes the stale std map its manifest does not list.
    predict(phantom, tmp_path)
    assert not (tmp_path / "ph_001_std.nii.gz").exists()


class RampModel:
    """Hand-made slice predictor, not flip-equivariant (an x ramp) and using the condition's
    channel order, so a wrong flip-back or channel swap shows."""

    noise_draws = 1

    def __init__(self, equivariant: bool = False):
        self.equivariant = equivariant

    def prepare(self, ct, cond):
        return ct, cond

    def predict(self, prepared, noise):
        ct, cond = prepared
        w = ct.shape[-1]
        ramp = torch.zeros(w) if self.equivariant else torch.linspace(-0.5, 0.5, w)
        lungs = cond[:, 1:2] + cond[:, 2:3] if self.equivariant else cond[:, 1:2] - 0.5 * cond[:, 2:3]
        return torch.tanh(ct + 0.3 * noise[:, 0] + ramp + lungs + 0.2 * cond[:, 0:1])


def _noise(seed: int):
    return lambda s, slices, draws: slice_noise(seed, "x", s, slices, draws, (8, 10))


def test_tta_flip_back_and_sample_statistics_on_hand_made_model():
    gen = torch.Generator().manual_seed(0)
    ct, cond = torch.rand((5, 1, 8, 10), generator=gen) * 2 - 1, torch.rand((5, 3, 8, 10), generator=gen)
    slices = np.array([1, 2, 4, 5, 7])
    swap = [0, 2, 1]  # channels 1 and 2: a left/right pair
    kw = dict(tta_flip=True, lr_swap=swap, batch_size=2, dose_max_gy=70.0, device=torch.device("cpu"))
    mean, std = sample_volume(RampModel(), ct, cond, slices, _noise(4), n_samples=3, **kw)
    model, per_sample = RampModel(), []
    for s in range(3):
        noise = _noise(4)(s, slices, 1)
        plain = model.predict((ct, cond), noise)
        mirrored = model.predict((ct.flip(-1), cond.flip(-1)[:, swap]), noise.flip(-1)).flip(-1)
        per_sample.append(denormalise_dose(0.5 * (plain + mirrored), 70.0)[:, 0].numpy())
    per_sample = np.stack(per_sample)
    np.testing.assert_allclose(mean, per_sample.mean(0), atol=1e-4)
    np.testing.assert_allclose(std, per_sample.std(0, ddof=1), atol=1e-4)
    assert std.max() > 0.1
    # Flip TTA of a flip-equivariant model changes nothing; of the ramp model it does.
    one = dict(n_samples=1, lr_swap=swap, batch_size=2, dose_max_gy=70.0, device=torch.device("cpu"))
    for equivariant, same in [(True, True), (False, False)]:
        with_tta, _ = sample_volume(RampModel(equivariant), ct, cond, slices, _noise(4), tta_flip=True, **one)
        without, _ = sample_volume(RampModel(equivariant), ct, cond, slices, _noise(4), tta_flip=False, **one)
        assert np.allclose(with_tta, without, atol=1e-4) == same


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_loop_matches_ddim_sample(phantom, eta):
    """The per-slice-noise DDIM loop equals diffusion.ddim.ddim_sample fed the same numbers."""
    loaded = load_for_prediction(phantom["models"]["diff"], "cpu")
    inputs = load_case_inputs(phantom["h5"], loaded.exp, loaded.info["rois"])
    ct, cond = inputs.ct[:3], inputs.cond[:3]
    abar = linear_schedule()
    sample = ddim_sample(lambda y, t: loaded.model(y, t, ct, cond), tuple(ct.shape), abar, steps=3, eta=eta,
                         generator=torch.Generator().manual_seed(9)).clamp(-1, 1)
    gen = torch.Generator().manual_seed(9)
    draws = 1 + (3 if eta > 0 else 0)
    noise = torch.stack([torch.randn(ct.shape, generator=gen) for _ in range(draws)], dim=1)  # (B, D, 1, H, W)
    pred = DiffusionPredictor(loaded.model, abar, 3, eta, False, torch.device("cpu"))
    ours = pred.predict(pred.prepare(ct, cond), noise)
    torch.testing.assert_close(ours, sample, atol=1e-5, rtol=0)


def test_condition_cache_equals_uncached(phantom, tmp_path):
    loaded = load_for_prediction(phantom["models"]["cached"], "cpu")
    inputs = load_case_inputs(phantom["h5"], loaded.exp, loaded.info["rois"])
    results = []
    for use_cache in (True, False):
        predictor = slice_predictor(loaded.model, loaded.exp, loaded.device, use_cache=use_cache)
        assert predictor.use_cache == use_cache
        results.append(sample_volume(predictor, inputs.ct, inputs.cond, inputs.slices, _noise_hw(0, (32, 32)),
                                     n_samples=2, tta_flip=False, lr_swap=list(range(6)), batch_size=3,
                                     dose_max_gy=75.0, device=torch.device("cpu")))
    for cached, plain in zip(*results):
        np.testing.assert_allclose(cached, plain, atol=1e-4)
    _, _, man = predict(phantom, tmp_path, model="cached")
    assert man["condition_cache"] is True


def _noise_hw(seed: int, hw: tuple[int, int]):
    return lambda s, slices, draws: slice_noise(seed, "c", s, slices, draws, hw)


def test_unet_baseline_is_one_pass(phantom, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="dosediff"):
        dose, _, man = predict(phantom, tmp_path, model="unet", n_samples=3)
    assert "n_samples" in caplog.text and "std" not in man["files"]
    assert man["forward_passes"] == 3  # ceil(8 / 3) batches, one pass each
    # Independent path: the network on the normalised slices, de-normalised, restored, masked.
    loaded = load_for_prediction(phantom["models"]["unet"], "cpu")
    inputs = load_case_inputs(phantom["h5"], loaded.exp, loaded.info["rois"])
    with torch.no_grad():
        out = loaded.model(inputs.ct, inputs.cond).clamp(-1, 1)
    expected = restore_to_original(denormalise_dose(out, 75.0)[:, 0].numpy(), inputs.attrs)
    expected[body_mask(phantom["case"].ct, -500.0) == 0] = 0
    np.testing.assert_allclose(dose, expected.clip(0, 75), atol=1e-4)


def test_rtdose_reads_back_onto_ct(phantom, tmp_path):
    dose, _, man = predict(phantom, tmp_path)
    case, path = phantom["case"], tmp_path / man["files"]["rtdose"]
    rt, rt_geo, refs = read_rtdose(path, "ph_001")
    assert rt_geo.same_grid(case.geometry, tol_mm=1e-3)
    assert np.abs(rt - dose).max() <= 0.005 * dose.max()
    assert refs["frame_of_reference_uid"] == case.meta["frame_of_reference_uid"]
    ds = pydicom.dcmread(path)
    assert ds.StudyInstanceUID == case.meta["study_uid"] and "tiny" in ds.SeriesDescription
    image = sitk.ReadImage(str(path))
    assert Geometry.from_sitk(image).same_grid(case.geometry, tol_mm=1e-3)
    sitk_dose = sitk.GetArrayFromImage(image) * float(ds.DoseGridScaling)  # SimpleITK ignores the scaling
    assert np.abs(sitk_dose - dose).max() <= 0.005 * dose.max()
    # Nothing identifying from the source headers in any output.
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert not [s for s in SENTINELS if s.encode() in blob]


def test_bad_input_and_failed_write_leave_nothing(phantom, hand_made, tmp_path, monkeypatch):
    model = phantom["models"]["diff"]
    with pytest.raises(InputError, match="unknown keys"):
        predict_case(model, phantom["h5"], phantom["case_dir"], tmp_path / "x.nii.gz", {"stepz": 3})
    with pytest.raises(InputError, match="sample.steps"):
        predict_case(model, phantom["h5"], phantom["case_dir"], tmp_path / "x.nii.gz", {"steps": 0})
    with pytest.raises(InputError, match=r"\.nii\.gz"):
        predict_case(model, phantom["h5"], phantom["case_dir"], tmp_path / "x.npy")
    with pytest.raises(InputError, match="same case"):  # ingest folder of another case
        predict_case(model, phantom["h5"], hand_made["case_dir"], tmp_path / "x.nii.gz")
    with pytest.raises(InputError, match="ROI channels"):  # HDF5 of another dataset
        predict_case(model, hand_made["h5"], hand_made["case_dir"], tmp_path / "x.nii.gz")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(outputs, "write_rtdose", broken)
    with pytest.raises(OSError, match="disk full"):
        predict(phantom, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_prediction(phantom, tmp_path):
    man = predict_case(phantom["models"]["cached"], phantom["h5"], phantom["case_dir"], tmp_path / "ph_001.nii.gz",
                       {"n_samples": 2, "tta_flip": True}, device="cuda")
    dose, geo = read_image(tmp_path / "ph_001.nii.gz")
    assert man["precision"] == "bf16 autocast" and man["device"].startswith("cuda")
    assert geo.same_grid(phantom["case"].geometry) and np.isfinite(dose).all()
    assert not dose[body_mask(phantom["case"].ct, -500.0) == 0].any() and dose.max() > 0
