"""The channels-last GroupNorm backward against PyTorch's GroupNorm in float64 (NCHW)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dosediff.models.factory import build_model, to_device
from dosediff.models.config import ModelConfig
from dosediff.models.group_norm import _LARGE, GroupNorm, _channel_sums


def reference(x, groups, weight, bias, scale=None, shift=None, silu=False):
    """silu?(GN(x) * (1 + scale) + shift) with PyTorch's own ops (NCHW)."""
    y = F.group_norm(x, groups, weight, bias, 1e-5)
    if scale is not None:
        y = y * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    return F.silu(y) if silu else y


@pytest.mark.parametrize("adagn", [False, True])
@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("shape,groups", [((2, 64, 9, 7), 32), ((3, 96, 16, 16), 8), ((1, 8, 5, 3), 1)])
def test_channels_last_gradients_equal_float64_reference(shape, groups, silu, adagn):
    torch.manual_seed(0)
    norm = GroupNorm(groups, shape[1])
    norm.weight.data.normal_()
    norm.bias.data.normal_()
    x = (torch.randn(shape) * 3 + 1).contiguous(memory_format=torch.channels_last).requires_grad_()
    scale, shift = (torch.randn(shape[:2]).requires_grad_() if adagn else None for _ in range(2))
    dy = torch.randn(shape)
    y = norm(x, scale, shift, silu=silu)
    assert y.grad_fn.name().endswith("_ChannelsLastGroupNormBackward")  # the fast path ran
    y.backward(dy)
    ins = [x, norm.weight, norm.bias] + ([scale, shift] if adagn else [])
    ref_ins = [t.detach().double().contiguous().requires_grad_() for t in ins]
    ref = reference(ref_ins[0], groups, *ref_ins[1:], silu=silu)
    ref.backward(dy.double())
    torch.testing.assert_close(y.double(), ref.detach(), rtol=0, atol=2e-5 * float(ref.detach().abs().max()))
    for got, want in zip(ins, ref_ins):
        torch.testing.assert_close(got.grad.double(), want.grad, rtol=0, atol=1e-5 * float(want.grad.abs().max()))
    assert x.grad.is_contiguous(memory_format=torch.channels_last)


def test_plain_path_applies_scale_shift_and_silu():
    torch.manual_seed(1)
    norm = GroupNorm(4, 8)
    x, scale, shift = torch.randn(2, 8, 5, 5), torch.randn(2, 8), torch.randn(2, 8)
    y = norm(x, scale, shift, silu=True)
    want = reference(x.double(), 4, *(t.detach().double() for t in (norm.weight, norm.bias, scale, shift)), silu=True)
    torch.testing.assert_close(y.double(), want, rtol=0, atol=1e-5)


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


def test_channel_sums_of_large_activations_equal_float64_sums():
    torch.manual_seed(2)
    n, hw, c = 2, (_LARGE // 64) + 1, 64  # just above the size where the batch-norm kernel is used
    x, dz = torch.randn(n, hw, c) * 3 + 1, torch.randn(n, hw, c)
    sum_dz, sum_dz_x = _channel_sums(dz, x)
    for got, terms in ((sum_dz, dz.double()), (sum_dz_x, dz.double() * x.double())):
        # float32 sums of 65537 terms: allow 1e-6 of the sum of |terms| (a wrong sum is off by ~1)
        assert ((got.double() - terms.sum(1)).abs() <= 1e-6 * terms.abs().sum(1)).all()


def test_fast_and_plain_forward_give_the_same_numbers():
    """Training (fast path) and sampling (plain path, no grad) must not drift apart."""
    torch.manual_seed(3)
    norm = GroupNorm(8, 32)
    x = torch.randn(2, 32, 16, 16).contiguous(memory_format=torch.channels_last)
    scale, shift = torch.randn(2, 32), torch.randn(2, 32)
    fast = norm(x.requires_grad_(), scale, shift, silu=True)
    assert fast.grad_fn.name().endswith("_ChannelsLastGroupNormBackward")
    with torch.no_grad():
        plain = norm(x, scale, shift, silu=True)
    torch.testing.assert_close(fast.detach(), plain, rtol=0, atol=0)
