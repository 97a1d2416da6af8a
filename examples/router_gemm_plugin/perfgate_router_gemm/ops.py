"""The router GEMM as torch custom ops, so torch.compile treats them as opaque calls.

``perfgate::router_gemm`` holds the dispatch (Triton for <= MAX_TOKENS tokens, cuBLAS via
F.linear above) inside the op: whatever shape torch.compile traced with, the choice is made
per call at run time. ``perfgate::router_gemm_triton`` is the kernel alone, for the broken
variant that dispatches in Python outside any op.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from perfgate_router_gemm.kernel import MAX_TOKENS, router_gemm_triton


@torch.library.custom_op("perfgate::router_gemm", mutates_args=())
def router_gemm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if x.shape[0] <= MAX_TOKENS and (x.is_cuda or _interpreting()):
        return router_gemm_triton(x, w, b)
    return F.linear(x, w, b)


@router_gemm.register_fake
def _(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return x.new_empty((x.shape[0], w.shape[0]))


@torch.library.custom_op("perfgate::router_gemm_triton", mutates_args=())
def router_gemm_triton_op(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return router_gemm_triton(x, w, b)


@router_gemm_triton_op.register_fake
def _(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return x.new_empty((x.shape[0], w.shape[0]))


@torch.library.custom_op("perfgate::router_gemm_tiled", mutates_args=())
def router_gemm_tiled(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The plugin's first version: the dispatch inside the op (correct), but decode batches go
    to the tiled kernel, slower than cuBLAS's pair (kept as a known regression)."""
    if x.shape[0] <= MAX_TOKENS and (x.is_cuda or _interpreting()):
        return router_gemm_triton(x, w, b, "tiled")
    return F.linear(x, w, b)


@router_gemm_tiled.register_fake
def _(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return x.new_empty((x.shape[0], w.shape[0]))


def router_gemm_broken(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The reference PR's bug: the token-count test in Python, outside the op. Under vLLM's
    torch.compile (traced once with a large symbolic batch, guards not re-checked) the F.linear
    branch is baked into the graph and the Triton kernel never runs."""
    if x.shape[0] <= MAX_TOKENS:
        return torch.ops.perfgate.router_gemm_triton(x, w, b)
    return F.linear(x, w, b)


def _interpreting() -> bool:
    """True when the kernel was built for Triton's CPU interpreter (TRITON_INTERPRET=1 at
    import), as in the tests."""
    from triton.runtime.interpreter import InterpretedFunction

    from perfgate_router_gemm.kernel import gpt_oss_router_gemm_kernel

    return isinstance(gpt_oss_router_gemm_kernel, InterpretedFunction)
