"""bf16 autocast defaults: explicit settings win; training uses it on bf16 GPUs only,
sampling wherever the device has bf16 units."""

from pathlib import Path

import pytest
import torch

from dosediff.precision import native_bf16, sampling_bf16, training_bf16

CPU = torch.device("cpu")
CPUINFO = Path("/proc/cpuinfo")


def test_explicit_setting_wins():
    for device in (CPU, torch.device("cuda", 0)):
        for choose in (training_bf16, sampling_bf16):
            assert choose(True, device) is True
            assert choose(False, device) is False


def test_unset_trains_in_fp32_and_samples_natively_on_the_cpu():
    assert training_bf16(None, CPU) is False
    assert sampling_bf16(None, CPU) == native_bf16(CPU)


@pytest.mark.skipif(not CPUINFO.is_file(), reason="no /proc/cpuinfo (not Linux) to read the CPU's flags from")
def test_cpu_check_agrees_with_the_kernel_flags():
    flags = set()
    for line in CPUINFO.read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    assert native_bf16(CPU) == bool({"avx512_bf16", "amx_bf16"} & flags)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_unset_uses_bf16_on_cuda_with_bf16_units():
    dev = torch.device("cuda", 0)
    ampere = torch.cuda.get_device_capability(dev)[0] >= 8  # bf16 tensor cores from sm_80 on
    assert training_bf16(None, dev) == sampling_bf16(None, dev) == ampere
