"""Training runs in bf16 only where the hardware computes in bf16: emulated bf16 on an AVX2 CPU
made a GAN step ~18x slower than fp32."""

from __future__ import annotations

import torch

from enhancer.training.loop import autocast, cpu_flags, native_bf16

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse sse2 avx2 avx512f avx512_bf16
processor\t: 1
flags\t\t: fpu sse sse2 avx2
"""


def test_cpu_flags_reads_the_first_processor() -> None:
    assert cpu_flags(CPUINFO) == {"fpu", "sse", "sse2", "avx2", "avx512f", "avx512_bf16"}
    assert cpu_flags("processor: 0\n") == frozenset()


def test_bf16_only_with_bf16_instructions_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert native_bf16(cpu, frozenset({"avx2", "avx512f"})) is False
    assert native_bf16(cpu, frozenset({"avx512f", "avx512_bf16"})) is True
    assert native_bf16(cpu, frozenset({"amx_tile", "amx_bf16"})) is True
    assert native_bf16(torch.device("cuda")) is True


def test_autocast_follows_this_machine() -> None:
    cpu = torch.device("cpu")
    lin = torch.nn.Linear(4, 4)
    with autocast(cpu, True):
        y = lin(torch.ones(2, 4))
    assert y.dtype == (torch.bfloat16 if native_bf16(cpu) else torch.float32)
    with autocast(cpu, False):
        assert lin(torch.ones(2, 4)).dtype == torch.float32
