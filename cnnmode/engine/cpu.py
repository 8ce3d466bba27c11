"""What this CPU does fast, and the settings that follow from it, in one place.

CNN Mode runs on three kinds of x86 hosts that behave very differently:
- `amx` (Intel Sapphire Rapids and later): AMX tiles for bf16 and int8;
- `avx512-bf16` (AMD Zen 4/5, Intel Cooper Lake): native bf16 dot products and int8 VNNI;
- `avx2` (most laptops and desktops, older servers): no bf16 kernels (bf16 is emulated, 10-50x slower than fp32)
  and, without AVX-VNNI, int8 products that saturate in 16 bits unless the quantization range is reduced.
`ONEDNN_MAX_CPU_ISA` (oneDNN's own cap, e.g. `AVX2`) is honoured, so a faster host can stand in for a slower one
in tests and benchmarks: oneDNN then uses only that ISA's kernels, and these defaults follow.

`train.channels_last` stays on for every kind: channels-last convolutions were faster or equal everywhere measured,
fp32 on AVX2 included (FastNet-deep at batch 256: 3.4 s a step against 4.0 s NCHW; ResNet-18 at batch 64: 2.9-3.0 s
either way; 2 threads of a Sapphire Rapids with oneDNN capped at AVX2).
"""
from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

import torch

# oneDNN's ISA names, lowest first (https://oneapi-src.github.io/oneDNN/dev_guide_cpu_dispatcher_control.html)
_ONEDNN_ISAS = ["SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
                "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX10_1_512_AMX", "AVX512_CORE_AMX",
                "AVX10_1_512_AMX_FP16", "AVX512_CORE_AMX_FP16", "ALL"]


def _capped_at(isa: str) -> bool:
    """True when ONEDNN_MAX_CPU_ISA caps oneDNN below `isa`."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).upper()
    if cap not in _ONEDNN_ISAS:
        return False
    return _ONEDNN_ISAS.index(cap) < _ONEDNN_ISAS.index(isa)


@dataclass(frozen=True)
class CpuKind:
    """The features that change CNN Mode's choices, and those choices."""
    x86: bool
    avx512: bool
    bf16: bool  # oneDNN has native bf16 kernels (AVX-512 BF16 or AMX)
    vnni: bool  # int8 dot products accumulate in 32 bits (AVX-512 VNNI, AVX-VNNI or AMX)
    amx: bool

    @property
    def name(self) -> str:
        """`amx`, `avx512-bf16`, `avx512`, `avx2` or the machine's architecture (e.g. `arm64`)."""
        if not self.x86:
            return platform.machine().lower() or "other"
        if self.amx:
            return "amx"
        if self.bf16:
            return "avx512-bf16"
        return "avx512" if self.avx512 else "avx2"

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """`train.amp=auto` on this CPU: bf16 only where it has kernels; emulated bf16 is far slower than fp32."""
        return torch.bfloat16 if self.bf16 else None

    @property
    def newton_schulz_dtype(self) -> torch.dtype:
        """Muon's Newton-Schulz iteration: bf16 where it is native (2x faster than fp32 with AMX); fp32 elsewhere,
        where torch's bf16 matmul is emulated (a 256x2304 gradient: 765 ms in bf16 against 16 ms in fp32 with
        oneDNN capped at AVX2), which made it 65% of an AVX2 host's training time."""
        return torch.bfloat16 if self.bf16 else torch.float32

    @property
    def int8_reduce_range(self) -> bool:
        """Quantize to 7 bits where int8 products would saturate: x86 without VNNI multiplies u8 x s8 pairs into
        16-bit sums (vpmaddubsw), which overflow with full-range activations and weights (fbgemm's and ONNX
        Runtime's documented fix is `reduce_range`)."""
        return self.x86 and not self.vnni


@functools.cache
def cpu_kind() -> CpuKind:
    """This CPU's kind, read once through torch's cpuinfo (every OS), capped by ONEDNN_MAX_CPU_ISA."""
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
    has = torch.cpu.get_capabilities() if x86 else {}
    avx512 = has.get("avx512_f", False) and not _capped_at("AVX512_CORE")
    vnni = ((has.get("avx_vnni", False) and not _capped_at("AVX2_VNNI"))
            or (has.get("avx512_vnni", False) and not _capped_at("AVX512_CORE_VNNI")))
    amx = has.get("amx_int8", False) and not _capped_at("AVX512_CORE_AMX")
    return CpuKind(x86=x86, avx512=avx512, bf16=_mkldnn_bf16(), vnni=vnni, amx=amx)


def _mkldnn_bf16() -> bool:
    try:  # oneDNN's own answer; it already honours ONEDNN_MAX_CPU_ISA
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


