"""Two CPU paths chosen for speed compute what they replace: the Wan VAE's narrow RMS norm (a sum of squares instead
of torch's CPU vector norm) and the per-tensor optimizer update for sharded parameters on CPU."""

import pytest
import torch
import torch.distributed as dist
from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm

from trackstream.models.codecs.wan_vae import NarrowRMSNorm, WanVAE, WanVAEConfig
from trackstream.trainer.optim import OptimConfig, build_optimizer, use_foreach


@pytest.mark.parametrize("channel_first", [True, False])
def test_the_narrow_rms_norm_is_diffusers_norm(channel_first):
    torch.manual_seed(0)
    norm = WanRMS_norm(8, channel_first=channel_first, images=False)
    torch.nn.init.normal_(norm.gamma)
    x = torch.randn((2, 8, 3, 6, 10) if channel_first else (2, 3, 6, 10, 8))
    x[0] = 0  # the norm's floor: zeros stay zeros
    want = norm(x)
    norm.__class__ = NarrowRMSNorm
    torch.testing.assert_close(norm(x), want, rtol=1e-6, atol=1e-6)
    half = x.bfloat16()
    assert torch.equal(norm(half), WanRMS_norm.forward(norm, half))  # other dtypes: diffusers' own forward


def test_a_rehearsal_vae_takes_the_narrow_norm_and_the_release_width_keeps_diffusers():
    small = WanVAE.from_config(WanVAEConfig(base_dim=2, z_dim=16))
    norms = [m for m in small.vae.modules() if isinstance(m, WanRMS_norm)]
    assert norms and all(type(m) is NarrowRMSNorm for m in norms)
    with torch.device("meta"):
        release = WanVAE.from_config(WanVAEConfig())  # base 96: 96-384 channels
    assert all(type(m) is WanRMS_norm for m in release.vae.modules() if isinstance(m, WanRMS_norm))


def test_sharded_parameters_on_cpu_take_the_per_tensor_update(tmp_path):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        plain = torch.nn.Parameter(torch.randn(4, 3))
        sharded = torch.nn.Parameter(distribute_tensor(plain.detach().clone(), mesh, [Shard(0)]))
        cpu = torch.device("cpu")
        assert use_foreach([plain], cpu) and not use_foreach([plain, sharded], cpu)
        assert use_foreach([sharded], torch.device("cuda"))  # on GPU the multi-tensor kernels pay off
        steps = []
        for p in (plain, sharded):
            opt = build_optimizer([{"params": [p], "weight_decay": 0.1}], OptimConfig(lr=0.1), device=cpu)
            assert opt.defaults["foreach"] is (p is plain)
            p.grad = torch.ones_like(p)
            opt.step()
            steps.append(p.detach().full_tensor() if p is sharded else p.detach().clone())
        torch.testing.assert_close(steps[0], steps[1], rtol=0, atol=0)  # the same arithmetic
    finally:
        dist.destroy_process_group()
