"""Triton skinny GEMM with bias: out[M, N] = x[M, K] @ w[N, K]^T + b[N], for small M.

GPT-OSS-120b's router: K = 2880 (hidden), N = 128 (experts), M = tokens in the batch; decode
batches are small, where cuBLAS picks split-K kernels plus a separate reduce. Two kernels:

- ``gpt_oss_router_gemm_decode_kernel`` (M <= DECODE_TOKENS): decode is memory-bound (the
  128 x 2880 bf16 weight, 737 KB, is read once per step; x is a few rows), so the work is split
  over N: each program owns ``BLOCK_N`` experts (one, by default: 128 programs, about one per
  multiprocessor of an H200) and walks all of K for every token with broadcast multiply-adds
  in fp32 (no tensor cores: M is below their smallest tile). No program shares an output, so
  there is no reduce kernel and no atomics (cuBLAS runs a split-K GEMM plus a reduce).
- ``gpt_oss_router_gemm_kernel`` (larger M, up to TILED_TOKENS): one program per BLOCK_M x
  BLOCK_N tile over the whole K with ``tl.dot``, accumulating in fp32.

Both add the bias in the epilogue and write bf16 (the input dtype). Runs under
``TRITON_INTERPRET=1`` on CPU for tests.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# The op's Triton range: decode batches, where the decode kernel beats cuBLAS's split-K pair on
# an H200 (bench_kernel.py, results/h200_router_gemm_bench.json): GPU time per call 2.46 vs
# 5.38 us at M = 1 and 4.19 vs 5.34 us at M = 8 with the weight in L2, 3.62 vs 7.14 and 5.43
# vs 7.94 us with it read from HBM (as between MoE layers). Above M = 8 the tiled kernel loses
# to cuBLAS (7.2-7.4 vs 5.6-6.1 us, 11.8-12.1 vs 8.4-8.9 from HBM), so larger batches go to
# cuBLAS; ``router_gemm_triton`` still takes up to TILED_TOKENS.
MAX_TOKENS = 8
DECODE_TOKENS = 8  # up to here the split-over-N decode kernel
TILED_TOKENS = 128
# (BLOCK_N, BLOCK_K, num_warps) of the decode kernel: the fastest of bench_kernel.py's sweep on
# an H200 at M = 1 and M = 8
DECODE_CONFIG = (1, 2048, 4)


@triton.jit
def gpt_oss_router_gemm_decode_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_wn,
    stride_om,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_n = tl.program_id(0)
    rm = tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        x = tl.load(
            x_ptr + rm[:, None] * stride_xm + kk[None, :],
            mask=(rm[:, None] < M) & (kk[None, :] < K),
            other=0.0,
        ).to(tl.float32)
        w = tl.load(
            w_ptr + rn[:, None] * stride_wn + kk[None, :],
            mask=(rn[:, None] < N) & (kk[None, :] < K),
            other=0.0,
        ).to(tl.float32)
        acc += tl.sum(x[:, None, :] * w[None, :, :], axis=2)
    bias = tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
    acc += bias[None, :]
    tl.store(
        out_ptr + rm[:, None] * stride_om + rn[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=(rm[:, None] < M) & (rn[None, :] < N),
    )


@triton.jit
def gpt_oss_router_gemm_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_wn,
    stride_om,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        x = tl.load(
            x_ptr + rm[:, None] * stride_xm + kk[None, :],
            mask=(rm[:, None] < M) & (kk[None, :] < K),
            other=0.0,
        )
        w = tl.load(
            w_ptr + rn[:, None] * stride_wn + kk[None, :],
            mask=(rn[:, None] < N) & (kk[None, :] < K),
            other=0.0,
        )
        acc += tl.dot(x, tl.trans(w))
    bias = tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
    acc += bias[None, :]
    tl.store(
        out_ptr + rm[:, None] * stride_om + rn[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=(rm[:, None] < M) & (rn[None, :] < N),
    )


def router_gemm_triton(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    decode_config: tuple[int, int, int] | None = None,
    *,
    tiled: bool = False,
) -> torch.Tensor:
    """The Triton path; x [M, K] with M <= TILED_TOKENS, w [N, K], b [N], all contiguous rows.
    ``decode_config`` (BLOCK_N, BLOCK_K, num_warps) overrides the decode kernel's, for the
    benchmark's sweep; ``tiled`` sends decode batches to the tiled kernel too (the plugin's
    first, slower version: 4 programs walk all of K)."""
    m, k = x.shape
    n = w.shape[0]
    if w.shape[1] != k or b.shape != (n,):
        raise ValueError(
            f"shapes do not match: x {tuple(x.shape)}, w {tuple(w.shape)}, b {tuple(b.shape)}"
        )
    x = x.contiguous()
    out = torch.empty((m, n), device=x.device, dtype=x.dtype)
    if m <= DECODE_TOKENS and not tiled:
        block_n, block_k, warps = decode_config or DECODE_CONFIG
        gpt_oss_router_gemm_decode_kernel[(triton.cdiv(n, block_n),)](
            x,
            w,
            b,
            out,
            m,
            n,
            k,
            x.stride(0),
            w.stride(0),
            out.stride(0),
            BLOCK_M=max(1, triton.next_power_of_2(m)),
            BLOCK_N=block_n,
            BLOCK_K=block_k,
            num_warps=warps,
        )
        return out
    block_m, block_n, block_k = 16, 32, 128
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    gpt_oss_router_gemm_kernel[grid](
        x,
        w,
        b,
        out,
        m,
        n,
        k,
        x.stride(0),
        w.stride(0),
        out.stride(0),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
    )
    return out
