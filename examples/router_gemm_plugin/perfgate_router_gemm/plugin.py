"""vLLM general plugin entry point (group ``vllm.general_plugins``; select with
``VLLM_PLUGINS=perfgate_router_gemm``). Patches GPT-OSS's MLPBlock (vLLM 0.26, where the
router is a ReplicatedLinear with bias) to compute the router logits through the ops above."""

from __future__ import annotations

import os

# op: the split-K kernel inside the custom op (faster than cuBLAS at decode batches); tiled: the
# first version, the tiled kernel at decode batches (slower); broken: the dispatch outside the
# op, so under torch.compile the Triton kernel never runs
MODES = ("op", "tiled", "broken")


def register() -> None:
    mode = os.environ.get("PERFGATE_ROUTER_GEMM", "op")
    if mode not in MODES:
        raise ValueError(f"PERFGATE_ROUTER_GEMM must be one of {', '.join(MODES)}, got {mode!r}")
    from vllm.model_executor.models import gpt_oss

    from perfgate_router_gemm import ops

    gemm = {"op": ops.router_gemm, "tiled": ops.router_gemm_tiled}.get(mode, ops.router_gemm_broken)
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
