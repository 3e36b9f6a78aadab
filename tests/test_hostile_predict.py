"""Defect 7 leftovers: damaged prediction inputs give clean dosediff errors."""
import json

import pytest


def test_damaged_config_and_weights_are_clean_errors(tmp_path):
    """Defect 7: a damaged config.json, one missing 'experiment', and a non-safetensors
    weights file each give a dosediff InputError naming the file, not a raw traceback."""
    from dosediff import checkpoint
    from dosediff.errors import InputError
    cfg = tmp_path / checkpoint.CONFIG
    cfg.write_text('{"format_version": ')
    with pytest.raises(InputError, match="config.json.*unreadable JSON"):
        checkpoint.read_config(tmp_path)
    cfg.write_text(json.dumps({"format_version": checkpoint.FORMAT_VERSION}))
    with pytest.raises(InputError, match=r"config.json.*missing keys \['experiment'\]"):
        checkpoint.read_config(tmp_path)
    bad = tmp_path / checkpoint.WEIGHTS
    bad.write_bytes(b"PK\x03\x04 not safetensors")
    with pytest.raises(InputError, match="model.safetensors.*not a readable safetensors"):
        checkpoint._read_weights(bad)


@pytest.fixture(scope="module")
def predict_inputs(tmp_path_factory) -> dict:
    """A tiny phantom case through ingest and preprocessing, and a random-weight model."""
    from test_predict import save_model

    from dosediff.config import PhantomConfig, PreprocessConfig
    from dosediff.ingest import ingest_case
    from dosediff.io.nifti import read_case
    from dosediff.phantom import phantom_dataset_config, write_phantom_case
    from dosediff.preprocess.pipeline import preprocess_case

    root = tmp_path_factory.mktemp("damaged")
    dataset = phantom_dataset_config()
    write_phantom_case(root / "dicom", "anon", 1, PhantomConfig(shape=[8, 32, 32], spacing=[8.0, 7.0, 7.0]))
    ingest_case(root / "dicom", "anon", dataset, root / "nifti" / "anon")
    preprocess_case(read_case(root / "nifti" / "anon"), dataset, PreprocessConfig(size=[16, 16]),
                    root / "h5" / "anon.h5")
    save_model(root / "model", dataset.rois, dataset.lr_pairs, [16, 16], steps=1)
    return {"root": root, "case_dir": root / "nifti" / "anon", "h5": root / "h5" / "anon.h5"}


def _damage_json(text: str):
    return lambda d: (d["case_dir"] / "case.json").write_text(text)


def _drop_key(d: dict) -> None:
    info = json.loads((d["case_dir"] / "case.json").read_text())
    del info["geometry"]
    (d["case_dir"] / "case.json").write_text(json.dumps(info))


def _truncate_h5(d: dict) -> None:
    blob = d["h5"].read_bytes()
    d["h5"].write_bytes(blob[: len(blob) // 2])


def _overwrite_h5_chunks(d: dict) -> None:
    """Its header intact (it opens), its compressed slices overwritten: reading them fails."""
    blob = bytearray(d["h5"].read_bytes())
    n = len(blob)
    blob[n // 3: 2 * n // 3] = b"\xff" * (2 * n // 3 - n // 3)
    d["h5"].write_bytes(bytes(blob))


@pytest.mark.parametrize("damage, fragment", [
    (_damage_json('{"case_id": "anon", "geom'), "case.json: not valid JSON"),
    (_damage_json("PK\x03\x04 not json at all"), "case.json: not valid JSON"),
    (_drop_key, "case.json: keys ['geometry'] missing"),
    (_truncate_h5, "anon.h5: not a readable HDF5 file"),
    (_overwrite_h5_chunks, "anon.h5: a damaged or cut-short HDF5 file"),
])
def test_damaged_case_inputs_are_clean_errors(predict_inputs, tmp_path, capsys, damage, fragment):
    """Defect 7: predict on a damaged case.json (cut short, not JSON, a key missing) or an
    HDF5 cut in half or overwritten inside: exit 2, one message naming the file and the step that rewrites it,
    no traceback, and nothing written."""
    import shutil

    from dosediff.cli import main

    d = {"case_dir": tmp_path / "nifti" / "anon", "h5": tmp_path / "h5" / "anon.h5"}
    shutil.copytree(predict_inputs["case_dir"], d["case_dir"])
    d["h5"].parent.mkdir()
    shutil.copy(predict_inputs["h5"], d["h5"])
    damage(d)
    out = tmp_path / "pred"
    rc = main(["predict", "--model", str(predict_inputs["root"] / "model"), "--h5", str(d["h5"]),
               "--case-dir", str(d["case_dir"]), "--out", str(out / "anon.nii.gz"), "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert fragment in err and "Fix:" in err and "Traceback" not in err, err
    assert ("ingest" if "json" in fragment else "preprocess") in err, err
    assert not out.exists() or not any(out.iterdir())
