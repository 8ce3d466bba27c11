"""The CPU kind and the settings chosen from it. Other kinds are reached by capping oneDNN (ONEDNN_MAX_CPU_ISA) in
a fresh process, which is how a Sapphire Rapids or AVX-512 BF16 host stands in for an AVX2-only one: oneDNN then
runs only AVX2 kernels (no bf16, no VNNI), and CNN Mode's choices follow. On an AVX2-only host the same tests see
the host as it is."""
import json
import os
import subprocess
import sys

import pytest
import torch
from torch.optim._muon import DEFAULT_A, DEFAULT_B, DEFAULT_C, EPS, _zeropower_via_newtonschulz

from cnnmode.config import resolve_config
from cnnmode.engine import optim
from cnnmode.engine.cpu import CpuKind, cpu_kind

SHOW = ("import json; from cnnmode.engine.cpu import cpu_kind; k = cpu_kind(); "
        "print(json.dumps({'name': k.name, 'bf16': k.bf16, 'vnni': k.vnni, 'amp': str(k.amp_dtype), "
        "'ns': str(k.newton_schulz_dtype), 'reduce_range': k.int8_reduce_range}))")
AVX2 = CpuKind(x86=True, avx512=False, bf16=False, vnni=False, amx=False)


def kind_under(isa: str) -> dict:
    env = os.environ | {"ONEDNN_MAX_CPU_ISA": isa}
    out = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


@pytest.mark.skipif(not cpu_kind().x86, reason="x86 ISA caps")
def test_an_avx2_cap_turns_off_bf16_and_vnni():
    kind = kind_under("AVX2")
    assert kind == {"name": "avx2", "bf16": False, "vnni": False, "amp": "None", "ns": "torch.float32",
                    "reduce_range": True}


@pytest.mark.skipif(not cpu_kind().bf16, reason="needs a CPU with bf16 kernels")
def test_a_bf16_host_keeps_bf16_and_full_range_int8():
    kind = kind_under("ALL")
    assert kind["amp"] == "torch.bfloat16" and kind["ns"] == "torch.bfloat16" and not kind["reduce_range"]
    assert kind["name"] in ("amx", "avx512-bf16")


def test_kind_names():
    assert AVX2.name == "avx2"
    assert CpuKind(True, True, True, True, False).name == "avx512-bf16"
    assert CpuKind(True, True, True, True, True).name == "amx"
    assert not CpuKind(False, False, False, False, False).int8_reduce_range  # ARM: no 16-bit saturation


@pytest.mark.parametrize("shape", [(64, 576), (256, 2304), (96, 27)])
def test_newton_schulz_in_bf16_is_torchs_and_fp32_agrees(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    ours = optim.newton_schulz(g, 3)
    assert torch.equal(ours, _zeropower_via_newtonschulz(g, (DEFAULT_A, DEFAULT_B, DEFAULT_C), 3, EPS))
    fp32 = optim.newton_schulz(g, 3, torch.float32)
    assert fp32.dtype == torch.float32 and fp32.shape == g.shape
    assert (fp32 - ours.float()).norm() / fp32.norm() < 0.02  # bf16 rounding, nothing more
    singular = torch.linalg.svdvals(fp32)
    assert 0.3 < singular.min() and singular.max() < 1.3  # orthogonalised, as Muon's quintic iteration leaves it


def test_muon_iterates_in_fp32_on_a_cpu_without_bf16(monkeypatch):
    seen = []
    real = optim.newton_schulz
    monkeypatch.setattr(optim, "cpu_kind", lambda: AVX2)
    monkeypatch.setattr(optim, "newton_schulz", lambda m, steps, dtype: seen.append(dtype) or real(m, steps, dtype))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Flatten(),
                                torch.nn.LazyLinear(2))
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt = optim.build_optimizer(resolve_config(overrides=["optim.name=muon"]), model)
    opt.step()
    assert seen == [torch.float32]
