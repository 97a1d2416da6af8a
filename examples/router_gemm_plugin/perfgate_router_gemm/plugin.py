"""vLLM general plugin entry point (group ``vllm.general_plugins``; select with
``VLLM_PLUGINS=perfgate_router_gemm``). Patches GPT-OSS's MLPBlock (vLLM 0.26, where the
router is a ReplicatedLinear with bias) to compute the router logits through the ops above."""

from __future__ import annotations

import os

# op: the split-K kernel inside the custom op (faster than cuBLAS at decode batches); tiled: the
# first version, the tiled kernel at decode batches (slower); broken: the dispatch outside the
# op, so under torch.compile the Triton kernel never runs; tinygemm: FlashInfer's tinygemm_bf16
# for batches of <= 128 tokens, the dispatch inside the op (the reference change as merged);
# tinygemm-broken: the same with the dispatch outside the op (the change's first version)
MODES = ("op", "tiled", "broken", "tinygemm", "tinygemm-broken")


def register() -> None:
    mode = os.environ.get("PERFGATE_ROUTER_GEMM", "op")
    if mode not in MODES:
        raise ValueError(f"PERFGATE_ROUTER_GEMM must be one of {', '.join(MODES)}, got {mode!r}")
    from vllm.model_executor.models import gpt_oss

    gemm = _gemm(mode)
    original = gpt_oss.MLPBlock.forward
    if getattr(original, "_perfgate_router_gemm", None):
        return  # registered already (plugins load in every process)

    def forward(self, x):  # type: ignore[no-untyped-def]
        if self.is_sequence_parallel:
            return original(self, x)  # keep vLLM's own path where the input is sharded
        g = gemm(x[:, : self.hidden_size], self.router.weight, self.router.bias)
        return self.experts(hidden_states=x, router_logits=g)[:, : self.hidden_size]

    forward._perfgate_router_gemm = mode  # type: ignore[attr-defined]
    gpt_oss.MLPBlock.forward = forward


def _gemm(mode: str):  # type: ignore[no-untyped-def]
    """The router GEMM function of a mode (each module registers its custom ops on import)."""
    if mode.startswith("tinygemm"):
        from perfgate_router_gemm import flashinfer_ops

        if mode == "tinygemm":
            return flashinfer_ops.router_gemm_tinygemm
        return flashinfer_ops.router_gemm_tinygemm_broken
    from perfgate_router_gemm import ops

    return {"op": ops.router_gemm, "tiled": ops.router_gemm_tiled}.get(mode, ops.router_gemm_broken)
