"""Triton skinny GEMM with bias: out[M, N] = x[M, K] @ w[N, K]^T + b[N], for small M.

GPT-OSS-120b's router: K = 2880 (hidden), N = 128 (experts), M = tokens in the batch; decode
batches are small, where cuBLAS picks split-K kernels plus a separate reduce. One program
computes a BLOCK_M x BLOCK_N tile over the whole K, accumulating in fp32, adding the bias in the
epilogue: one kernel launch, no reduce. Runs under ``TRITON_INTERPRET=1`` on CPU for tests.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_TOKENS = 128  # the kernel's range; larger batches go to cuBLAS


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


def router_gemm_triton(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The Triton path; x [M, K] with M <= MAX_TOKENS, w [N, K], b [N], all contiguous rows."""
    m, k = x.shape
    n = w.shape[0]
    if w.shape[1] != k or b.shape != (n,):
        raise ValueError(
            f"shapes do not match: x {tuple(x.shape)}, w {tuple(w.shape)}, b {tuple(b.shape)}"
        )
    x = x.contiguous()
    out = torch.empty((m, n), device=x.device, dtype=x.dtype)
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
