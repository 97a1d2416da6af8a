"""GPT-OSS's router GEMM through FlashInfer's ``tinygemm_bf16``: the reference change itself.

The reference change (vLLM PR 37244, merged form) sends the router GEMM of GPT-OSS to
FlashInfer's TinyGEMM (a warp-specialized TMA + mma.sync kernel for a few rows, compiled by
FlashInfer's JIT on first use) when the batch has at most ``TINYGEMM_MAX_TOKENS`` tokens, and to
cuBLAS (F.linear) above. Two forms, as in the PR's history:

- ``router_gemm_tinygemm`` (mode ``tinygemm``, the merged form): the token-count test sits
  inside a custom op, so torch.compile keeps an opaque call and the choice is made per call at
  run time, also inside CUDA graphs captured per batch size.
- ``router_gemm_tinygemm_broken`` (mode ``tinygemm-broken``, the first version): the test is in
  Python around the op; vLLM's torch.compile traces once with a large symbolic batch and does
  not re-check guards, so the F.linear branch is baked into the graph and TinyGEMM never runs.

FlashInfer is imported on the first call (not at plugin load), so the plugin loads where
FlashInfer is absent and fails, naming the package, only when the mode is used.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

# The PR routes batches of up to 128 tokens to TinyGEMM (its kernel tiles 8 rows per program).
TINYGEMM_MAX_TOKENS = 128

_TINYGEMM: list[Any] = []


def tinygemm_bf16() -> Any:
    """FlashInfer's ``tinygemm_bf16`` (imported once, on first use)."""
    if not _TINYGEMM:
        try:
            from flashinfer.gemm import tinygemm_bf16 as fn
        except ImportError as exc:  # pragma: no cover - depends on the GPU machine
            raise RuntimeError(
                "PERFGATE_ROUTER_GEMM=tinygemm needs FlashInfer (pip install flashinfer-python): "
                f"{exc}"
            ) from exc
        _TINYGEMM.append(fn)
    return _TINYGEMM[0]


def _tinygemm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # TinyGEMM reads x through a TMA descriptor of a dense row-major matrix: GPT-OSS passes a
    # column slice of a padded hidden state, so make it dense first.
    out = x.new_empty((x.shape[0], w.shape[0]))
    tinygemm_bf16()(x.contiguous(), w, out, bias=b)
    return out


@torch.library.custom_op("perfgate::router_gemm_tinygemm", mutates_args=())
def router_gemm_tinygemm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if x.is_cuda and 0 < x.shape[0] <= TINYGEMM_MAX_TOKENS:
        return _tinygemm(x, w, b)
    return F.linear(x, w, b)


@router_gemm_tinygemm.register_fake
def _(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return x.new_empty((x.shape[0], w.shape[0]))


@torch.library.custom_op("perfgate::router_gemm_tinygemm_only", mutates_args=())
def router_gemm_tinygemm_only(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """TinyGEMM alone, whatever the batch: the op the broken twin calls."""
    return _tinygemm(x, w, b)


@router_gemm_tinygemm_only.register_fake
def _(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return x.new_empty((x.shape[0], w.shape[0]))


def router_gemm_tinygemm_broken(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The PR's first version: the token-count test in Python, outside the op."""
    if x.shape[0] <= TINYGEMM_MAX_TOKENS:
        return torch.ops.perfgate.router_gemm_tinygemm_only(x, w, b)
    return F.linear(x, w, b)
