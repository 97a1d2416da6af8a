"""A vLLM general plugin that sends GPT-OSS's MoE router GEMM through a Triton skinny GEMM.

Written for perfgate's reference case (a faster router GEMM for GPT-OSS; docs/gpu.md) and its
broken twin. ``PERFGATE_ROUTER_GEMM=op`` (default) dispatches on the number of tokens *inside* a
custom op, so torch.compile keeps the choice at run time; ``PERFGATE_ROUTER_GEMM=broken`` does
the same test in Python outside the op, where torch.compile resolves it once at trace time.
"""
