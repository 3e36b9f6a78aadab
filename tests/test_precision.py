"""bf16 autocast: explicit settings win; unset means bf16 on CUDA devices with bf16 only."""

import pytest
import torch

from dosediff.precision import use_bf16


def test_explicit_setting_wins():
    for device in (torch.device("cpu"), torch.device("cuda", 0)):
        assert use_bf16(True, device) is True
        assert use_bf16(False, device) is False


def test_unset_keeps_the_cpu_in_fp32():
    assert use_bf16(None, torch.device("cpu")) is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_unset_uses_bf16_on_cuda_with_bf16_units():
    dev = torch.device("cuda", 0)
    major, _ = torch.cuda.get_device_capability(dev)
    assert use_bf16(None, dev) == (major >= 8)  # bf16 tensor cores from Ampere (sm_80) on
