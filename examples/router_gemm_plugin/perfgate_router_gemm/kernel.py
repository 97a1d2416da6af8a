"""Triton skinny GEMM with bias: out[M, N] = x[M, K] @ w[N, K]^T + b[N], for small M.

GPT-OSS-120b's router: K = 2880 (hidden), N = 128 (experts), M = tokens in the batch; decode
batches are small, where cuBLAS picks a split-K GEMM plus a separate reduce kernel. Three
kernels:

- ``gpt_oss_router_gemm_splitk_kernel`` (the op's kernel for M <= DECODE_TOKENS): decode is
  latency-bound (the 128 x 2880 bf16 weight, 737 KB, is read once per step; x is a few rows),
  so the work is spread over many short programs: (N / BLOCK_N) x SPLIT_K programs (4 x 23 =
  92 by default), each summing a few BLOCK_K slices of K for its experts on tensor cores (M
  padded to 16), adding its partial sums into an fp32 workspace with atomics and counting
  itself done; the last program of an expert block adds the bias, writes bf16 and leaves the
  workspace and counter at zero. cuBLAS's split-K needs a second kernel for that reduce.
- ``gpt_oss_router_gemm_decode_kernel``: the previous decode kernel, one program per expert
  (BLOCK_N = 1) walking all of K in fp32 multiply-adds, no reduce; slower than split-K at M = 8.
- ``gpt_oss_router_gemm_kernel`` (larger M, up to TILED_TOKENS): one program per BLOCK_M x
  BLOCK_N tile over the whole K with ``tl.dot``, accumulating in fp32.

All add the bias in the epilogue and write the input dtype (bf16). Run under
``TRITON_INTERPRET=1`` on CPU for tests.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# The op's Triton range: decode batches, where the split-K kernel beats cuBLAS's split-K pair
# on an H200 (bench_kernel.py, results/h200_router_gemm_bench.json, 2026-11-30): kernel time
# per call 3.14 vs 5.38 us at M = 1 and 3.17 vs 5.38 us at M = 8 with the weight in L2, 4.12 vs
# 7.05 and 4.31 vs 7.76 us per call with it read from HBM (as between MoE layers). Above M = 8
# the tiled kernel loses to cuBLAS (7.2-7.4 vs 5.7-6.1 us), so larger batches go to cuBLAS;
# ``router_gemm_triton`` still takes up to TILED_TOKENS.
MAX_TOKENS = 8
DECODE_TOKENS = 8  # up to here the split-over-N decode kernel
TILED_TOKENS = 128
# (BLOCK_N, BLOCK_K, num_warps) of the decode kernel: the fastest of bench_kernel.py's sweep on
# an H200 at M = 1 and M = 8
DECODE_CONFIG = (1, 2048, 4)
# The op's kernel at decode batches, and the split-K kernel's (BLOCK_N, BLOCK_K, SPLIT_K,
# USE_DOT, num_warps): the fastest at M = 8 with the weight from HBM of bench_kernel.py's sweep
# on an H200 (52 configurations; the next five within 0.1 us)
DECODE_KERNEL = "splitk"
SPLITK_CONFIG = (32, 128, 23, 1, 4)


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
def gpt_oss_router_gemm_splitk_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    ws_ptr,
    count_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_wn,
    stride_om,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
    USE_DOT: tl.constexpr,
):
    """One launch, no reduce kernel: program (n, s) sums K blocks s, s + SPLIT_K, ... of its
    BLOCK_N experts into an fp32 workspace with atomic adds, then counts itself done; the last
    of an expert block's SPLIT_K programs (the counter's old value SPLIT_K - 1) takes the sums
    (and sets the workspace back to 0), adds the bias, writes bf16 and
    resets the counter, so the next call (or CUDA graph replay) starts from zeros."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rm = tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(pid_k * BLOCK_K, K, SPLIT_K * BLOCK_K):
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
        if USE_DOT:
            acc += tl.dot(x, tl.trans(w))
        else:
            acc += tl.sum(x.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :], axis=2)
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    ws = ws_ptr + rm[:, None] * N + rn[None, :]
    tl.atomic_add(ws, acc, mask=mask, sem="relaxed")
    tl.debug_barrier()  # every thread's partial sums before the release below
    done = tl.atomic_add(count_ptr + pid_n, 1, sem="acq_rel")
    if done == SPLIT_K - 1:
        # read the sums where the atomics left them (L2), then clear them for the next call
        zeros = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        total = tl.atomic_add(ws, zeros, mask=mask, sem="relaxed")
        tl.store(ws, zeros, mask=mask)
        bias = tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
        total += bias[None, :]
        tl.store(
            out_ptr + rm[:, None] * stride_om + rn[None, :],
            total.to(out_ptr.dtype.element_ty),
            mask=mask,
        )
        tl.atomic_xchg(count_ptr + pid_n, 0)


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


_WORKSPACES: dict[tuple[torch.device, int, int], tuple[torch.Tensor, torch.Tensor]] = {}


def _splitk_workspace(
    device: torch.device, n: int, block_n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The split-K kernel's fp32 sums (DECODE_TOKENS x n) and per-block counters, zeros, made
    once per device and shape and kept: the kernel leaves both at zero after every call."""
    key = (device, n, block_n)
    if key not in _WORKSPACES:
        _WORKSPACES[key] = (
            torch.zeros((DECODE_TOKENS, n), device=device, dtype=torch.float32),
            torch.zeros((triton.cdiv(n, block_n),), device=device, dtype=torch.int32),
        )
    return _WORKSPACES[key]


def router_gemm_triton(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    kernel: str = "auto",
    config: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """The Triton path; x [M, K] with M <= TILED_TOKENS, w [N, K], b [N], all contiguous rows.
    ``kernel``: ``auto`` (DECODE_KERNEL up to DECODE_TOKENS, else tiled), ``splitk``,
    ``decode`` or ``tiled`` (the plugin's first, slower version at decode batches: 4 programs
    walk all of K). ``config`` overrides the kernel's, for the benchmark's sweep: splitk
    (BLOCK_N, BLOCK_K, SPLIT_K, USE_DOT, num_warps), decode (BLOCK_N, BLOCK_K, num_warps)."""
    m, k = x.shape
    n = w.shape[0]
    if w.shape[1] != k or b.shape != (n,):
        raise ValueError(
            f"shapes do not match: x {tuple(x.shape)}, w {tuple(w.shape)}, b {tuple(b.shape)}"
        )
    if kernel == "auto":
        kernel = DECODE_KERNEL if m <= DECODE_TOKENS else "tiled"
    if kernel not in ("splitk", "decode", "tiled"):
        raise ValueError(f"kernel must be auto, splitk, decode or tiled, got {kernel!r}")
    if kernel != "tiled" and m > DECODE_TOKENS:
        raise ValueError(f"the {kernel} kernel takes at most {DECODE_TOKENS} tokens, got {m}")
    x = x.contiguous()
    out = torch.empty((m, n), device=x.device, dtype=x.dtype)
    if kernel == "splitk":
        block_n, block_k, split_k, use_dot, warps = config or SPLITK_CONFIG
        ws, count = _splitk_workspace(x.device, n, block_n)
        gpt_oss_router_gemm_splitk_kernel[(triton.cdiv(n, block_n), split_k)](
            x,
            w,
            b,
            out,
            ws,
            count,
            m,
            n,
            k,
            x.stride(0),
            w.stride(0),
            out.stride(0),
            BLOCK_M=16 if use_dot else max(1, triton.next_power_of_2(m)),
            BLOCK_N=block_n,
            BLOCK_K=block_k,
            SPLIT_K=split_k,
            USE_DOT=bool(use_dot),
            num_warps=warps,
        )
        return out
    if kernel == "decode":
        block_n, block_k, warps = config or DECODE_CONFIG
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
