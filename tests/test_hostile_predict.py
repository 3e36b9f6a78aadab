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
