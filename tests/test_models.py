"""MMFNet, the UNet baseline and their switches, at a tiny CPU size (32x32, width 16)."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from dosediff.diffusion.ddim import ddim_sample
from dosediff.diffusion.schedule import linear_schedule
from dosediff.errors import InputError
from dosediff.models.config import ModelConfig
from dosediff.models.factory import build_model, count_parameters, describe
from dosediff.models.fusion_former import patchify, unpatchify


def tiny(**kw) -> ModelConfig:
    base = dict(width=16, norm_groups=8, channel_mult=[1, 2, 2], num_res_blocks=1, num_heads=2,
                fusion_patch_size=[4, 4], fusion_dim=32, fusion_mlp_dim=64, cond_channels=3)
    return ModelConfig(**{**base, **kw})


def inputs(cfg: ModelConfig, b: int = 2, h: int = 32, w: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(b, 1, h, w, generator=g)
    ct = torch.randn(b, 1, h, w, generator=g)
    cond = torch.randn(b, cfg.cond_channels, h, w, generator=g) if cfg.cond_channels else None
    return y, ct, cond


def wake(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give the zero-initialised layers (residual convs, attention and output projections)
    random weights, as training would, so every input can reach the output."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and all(bool((p == 0).all()) for p in m.parameters()):
            m.reset_parameters()
    return model


SWITCHES = [(True, True), (True, False), (False, False)]  # (multiscale, fusion_former)


@pytest.mark.parametrize("k", [0, 1, 3])
@pytest.mark.parametrize("ms,ff", SWITCHES)
@pytest.mark.parametrize("arch", ["mmfnet", "unet"])
def test_output_shape_for_every_switch(arch, ms, ff, k):
    cfg = tiny(arch=arch, multiscale=ms, fusion_former=ff, cond_channels=k)
    model = build_model(cfg)
    y, ct, cond = inputs(cfg, h=32, w=48)  # non-square: the input size is free
    out = model(y, torch.tensor([0, 999]), ct, cond) if arch == "mmfnet" else model(ct, cond)
    assert out.shape == (2, 1, 32, 48)
    assert torch.equal(out, torch.zeros_like(out))  # output conv zero-initialised (ADM)
    assert count_parameters(model) == describe(cfg)["parameters"]


@pytest.mark.parametrize("arch", ["mmfnet", "unet"])
def test_every_input_reaches_the_output_and_all_parameters_get_gradients(arch):
    cfg = tiny(arch=arch)
    model = wake(build_model(cfg))
    y, ct, cond = inputs(cfg)
    t = torch.tensor([10, 10])

    def run(y=y, t=t, ct=ct, cond=cond):
        return model(y, t, ct, cond) if arch == "mmfnet" else model(ct, cond)

    out = run()
    assert not torch.allclose(out, run(ct=ct + 0.5))
    assert not torch.allclose(out, run(cond=cond * 0.0))
    if arch == "mmfnet":
        assert not torch.allclose(out, run(y=-y))
        assert not torch.allclose(out, run(t=torch.tensor([900, 900])))  # timestep changes the output
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())  # DDP without find_unused_parameters


@pytest.mark.parametrize("arch", ["mmfnet", "unet"])
def test_bf16_autocast_keeps_the_output_layer_in_fp32(arch):
    """Under bf16 autocast only the output layer runs in fp32: its result equals an fp32 run of
    that layer on the bf16 network's last features, and has more than bf16's 8 bits."""
    cfg = tiny(arch=arch)
    model = wake(build_model(cfg))
    y, ct, cond = inputs(cfg)
    feats = {}
    model.decoder.out.register_forward_pre_hook(lambda m, args: feats.setdefault("h", args[0]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(y, torch.tensor([10, 10]), ct, cond) if arch == "mmfnet" else model(ct, cond)
    assert out.dtype == torch.float32 and feats["h"].dtype == torch.float32
    with torch.no_grad():
        expected = model.decoder.out(feats["h"])
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert not torch.equal(out, out.bfloat16().float())


def test_fusion_former_changes_the_result_and_patching_round_trips():
    x = torch.randn(2, 5, 8, 12)
    assert patchify(x, 4, 2).shape == (2, 2 * 6, 5 * 4 * 2)
    assert torch.equal(unpatchify(patchify(x, 4, 2), 5, 8, 12, 4, 2), x)
    # one patch token holds exactly that patch's values
    assert torch.equal(patchify(x, 4, 2)[0, 1].sort().values, x[0, :, 0:4, 2:4].flatten().sort().values)
    cfg = tiny()
    model = wake(build_model(cfg))
    y, ct, cond = inputs(cfg)
    t = torch.tensor([5, 5])
    with_ff = model(y, t, ct, cond)
    nn.init.zeros_(model.fusion.out.weight)
    nn.init.zeros_(model.fusion.out.bias)
    assert not torch.allclose(with_ff, model(y, t, ct, cond))


def test_timestep_acts_through_adagn_once_residual_branches_are_non_zero():
    cfg = tiny()
    model = build_model(cfg)
    y, ct, cond = inputs(cfg)
    t1, t2 = torch.tensor([1, 1]), torch.tensor([800, 800])
    nn.init.normal_(model.decoder.out[-1].weight)  # output conv alone non-zero
    a = model(y, t1, ct, cond)
    assert not torch.equal(a, torch.zeros_like(a))
    # every residual branch ends in a zero conv (ADM), so AdaGN's t cannot reach the output yet
    assert torch.equal(a, model(y, t2, ct, cond))
    wake(model)
    assert not torch.allclose(model(y, t1, ct, cond), model(y, t2, ct, cond))


def test_scalar_timestep_broadcasts():
    cfg = tiny()
    model = wake(build_model(cfg))
    y, ct, cond = inputs(cfg)
    torch.testing.assert_close(model(y, torch.tensor(7), ct, cond), model(y, torch.tensor([7, 7]), ct, cond))


@pytest.mark.parametrize("k,ff", [(3, True), (0, True), (3, False)])
def test_condition_cache_equals_uncached(k, ff):
    cfg = tiny(cond_encoders_use_time=False, cond_channels=k, fusion_former=ff)
    model = wake(build_model(cfg)).eval()
    y, ct, cond = inputs(cfg)
    t = torch.tensor([3, 700])
    with torch.no_grad():
        cache = model.encode_condition(ct, cond)
        torch.testing.assert_close(model(y, t, cache=cache), model(y, t, ct, cond), atol=1e-6, rtol=1e-6)
        # the cache makes the condition path independent of t: only the dose path sees it
        assert not torch.allclose(model(y, t, cache=cache), model(y, t + 100, cache=cache))


def test_ddim_with_cached_condition_matches_uncached_and_repeats():
    cfg = tiny(cond_encoders_use_time=False)
    model = wake(build_model(cfg)).eval()
    _, ct, cond = inputs(cfg)
    ac = linear_schedule()
    with torch.no_grad():
        cache = model.encode_condition(ct, cond)
        cached = ddim_sample(lambda y, t: model(y, t, cache=cache), (2, 1, 32, 32), ac, steps=4,
                             generator=torch.Generator().manual_seed(0))
        plain = ddim_sample(lambda y, t: model(y, t, ct, cond), (2, 1, 32, 32), ac, steps=4,
                            generator=torch.Generator().manual_seed(0))
        again = ddim_sample(lambda y, t: model(y, t, ct, cond), (2, 1, 32, 32), ac, steps=4,
                            generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(cached, plain, atol=1e-5, rtol=0)
    assert torch.equal(plain, again)


def test_cache_misuse_raises():
    cfg = tiny()  # paper default: the condition encoders take t, so there is nothing to cache
    model = build_model(cfg)
    y, ct, cond = inputs(cfg)
    with pytest.raises(InputError, match="cond_encoders_use_time"):
        model.encode_condition(ct, cond)
    cached_model = build_model(tiny(cond_encoders_use_time=False))
    cache = cached_model.encode_condition(ct, cond)
    with pytest.raises(InputError, match="cond_encoders_use_time"):
        model(y, torch.tensor([1, 1]), cache=cache)
    with pytest.raises(InputError, match="cache"):
        cached_model(y[:1], torch.tensor([1]), cache=cache)


def test_bad_sizes_and_settings_raise_input_errors():
    cfg = tiny(fusion_patch_size=[3, 3])  # lowest map of a 32x32 input is 8x8
    with pytest.raises(InputError, match="fusion_patch_size") as err:
        build_model(cfg)(*inputs(cfg)[:1], torch.tensor([1, 1]), *inputs(cfg)[1:])
    assert "8x8" in str(err.value)
    cfg = tiny()
    with pytest.raises(InputError, match="divisible by 4"):
        build_model(cfg)(*inputs(cfg, h=30)[:1], torch.tensor([1, 1]), *inputs(cfg, h=30)[1:])
    with pytest.raises(InputError, match="cond_channels"):
        y, ct, _ = inputs(cfg)
        build_model(cfg)(y, torch.tensor([1, 1]), ct, torch.zeros(2, 2, 32, 32))
    with pytest.raises(InputError, match="multiscale"):
        tiny(multiscale=False, fusion_former=True)
    with pytest.raises(InputError, match="norm_groups"):
        tiny(width=20)
    with pytest.raises(InputError, match="attention_levels"):
        tiny(attention_levels=[3])
    with pytest.raises(InputError, match="arch"):
        tiny(arch="transformer")


def expected_adm_unet_parameters(cfg: ModelConfig, in_ch: int, encoders: int, time: bool) -> int:
    """Parameter count of the ADM layout written out by hand (without the fusionFormer)."""
    conv = lambda i, o, k: i * o * k * k + o  # noqa: E731
    gn = lambda c: 2 * c  # noqa: E731
    emb = 4 * cfg.width if time else 0

    def res(i, o):
        return gn(i) + conv(i, o, 3) + (emb * 2 * o + 2 * o if time else 0) + gn(o) + conv(o, o, 3) + (
            conv(i, o, 1) if i != o else 0)

    def attn(c):
        return gn(c) + conv(c, 3 * c, 1) + conv(c, c, 1)

    chans = [cfg.width * m for m in cfg.channel_mult]
    low = len(chans) - 1

    def encoder(cin):
        n, ch, skips = conv(cin, chans[0], 3), chans[0], [chans[0]]
        for lv, c in enumerate(chans):
            for _ in range(cfg.num_res_blocks):
                n += res(ch, c) + (attn(c) if lv == low else 0)
                ch = c
                skips.append(c)
            if lv != low:
                n += conv(c, c, 3)
                skips.append(c)
        return n, skips

    enc = [encoder(c) for c in in_ch]
    n = sum(e[0] for e in enc[:encoders])
    skips, ch = enc[0][1], chans[-1]
    n += 2 * res(ch, ch) + attn(ch)
    for lv in reversed(range(len(chans))):
        for i in range(cfg.num_res_blocks + 1):
            n += res(ch + skips.pop(), chans[lv]) + (attn(chans[lv]) if lv == low else 0)
            ch = chans[lv]
            if lv and i == cfg.num_res_blocks:
                n += conv(ch, ch, 3)
    n += gn(ch) + conv(ch, 1, 3)
    if time:
        n += (cfg.width * emb + emb) + (emb * emb + emb)
    return n


def test_parameter_count_matches_hand_count():
    k = 5
    cfg = ModelConfig(cond_channels=k, fusion_former=False)  # authors' size, on the meta device
    assert describe(cfg)["parameters"] == expected_adm_unet_parameters(cfg, [1, 1, k], 3, True)
    cfg = ModelConfig(cond_channels=k, fusion_former=False, multiscale=False)
    assert describe(cfg)["parameters"] == expected_adm_unet_parameters(cfg, [2 + k], 1, True)
    cfg = ModelConfig(arch="unet", cond_channels=k, fusion_former=False)
    assert describe(cfg)["parameters"] == expected_adm_unet_parameters(cfg, [1, k], 2, False)
    full = describe(ModelConfig(cond_channels=k))
    ff = full["parameters_by_part"]["fusion"]
    patch, d, mlp = 512 * 16, 1024, 2048  # 4x4 patches of the 512-channel lowest map
    lin = lambda i, o: i * o + o  # noqa: E731
    assert ff == 3 * (lin(patch, d) + 2 * d) + 3 * lin(d, d) + 2 * d + lin(d, mlp) + lin(mlp, d) + lin(d, patch)


def test_authors_size_instantiates():
    start = time.perf_counter()
    cfg = ModelConfig(cond_channels=5)
    n = count_parameters(build_model(cfg))
    d = describe(cfg)
    print(f"\nauthors' size (base 128, mult 1,1,2,3,4, K=5): {n:,} parameters, built in "
          f"{time.perf_counter() - start:.1f} s; by part {d['parameters_by_part']}")
    assert n == d["parameters"] and 175e6 < n < 185e6  # paper: about 179 M
    assert d["input_size_multiple"] == [64, 64]


@pytest.mark.slow
def test_authors_size_runs_a_forward_pass():
    cfg = ModelConfig(cond_channels=5)
    model = build_model(cfg)
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 128, 128), torch.tensor([999]), torch.zeros(1, 1, 128, 128),
                    torch.zeros(1, 5, 128, 128))
    assert out.shape == (1, 1, 128, 128)
