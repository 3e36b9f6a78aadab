"""The channels-last GroupNorm backward against PyTorch's GroupNorm in float64 (NCHW)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dosediff.models.factory import build_model, to_device
from dosediff.models.config import ModelConfig
from dosediff.models.group_norm import GroupNorm


@pytest.mark.parametrize("shape,groups", [((2, 64, 9, 7), 32), ((3, 96, 16, 16), 8), ((1, 8, 5, 3), 1)])
def test_channels_last_gradients_equal_float64_reference(shape, groups):
    torch.manual_seed(0)
    norm = GroupNorm(groups, shape[1])
    norm.weight.data.normal_()
    norm.bias.data.normal_()
    x = (torch.randn(shape) * 3 + 1).contiguous(memory_format=torch.channels_last).requires_grad_()
    dy = torch.randn(shape)
    y = norm(x)
    assert y.grad_fn.name().endswith("_ChannelsLastGroupNormBackward")  # the fast path ran
    y.backward(dy)
    xd = x.detach().double().contiguous().requires_grad_()
    wd, bd = (p.detach().double().requires_grad_() for p in (norm.weight, norm.bias))
    F.group_norm(xd, groups, wd, bd, norm.eps).backward(dy.double())
    torch.testing.assert_close(y.double(), F.group_norm(xd, groups, wd, bd, norm.eps), rtol=0, atol=2e-5)
    for got, ref in ((x.grad, xd.grad), (norm.weight.grad, wd.grad), (norm.bias.grad, bd.grad)):
        torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-5 * float(ref.abs().max()))
    assert x.grad.is_contiguous(memory_format=torch.channels_last)


def test_other_inputs_take_the_plain_path():
    norm = GroupNorm(4, 8)
    for x in (torch.randn(2, 8, 5, 5, requires_grad=True), torch.randn(2, 8, 5, requires_grad=True)):
        assert norm(x).grad_fn.name() == "NativeGroupNormBackward0"
    with torch.no_grad():
        x = torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(norm(x), F.group_norm(x.contiguous(), 4, norm.weight, norm.bias, norm.eps))


def test_cpu_networks_run_channels_last():
    net = to_device(build_model(ModelConfig(cond_channels=2, width=8, channel_mult=[1, 2], norm_groups=4,
                                            fusion_former=False, multiscale=False)), "cpu")
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
