"""On a GPU: the router-GEMM kernel vs cuBLAS (F.linear) at gpt-oss-120b's shape, and proof
from a torch-profiler trace that the custom op launches it under torch.compile + CUDA graphs.

    python3 examples/router_gemm_plugin/bench_kernel.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import perfgate_router_gemm.ops  # noqa: F401  (registers torch.ops.perfgate.*)

K, N = 2880, 128
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)


def time_us(fn, *args, iters: int = 200) -> float:
    for _ in range(20):
        fn(*args)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn(*args)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / iters


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    w = (torch.randn(N, K, device="cuda") * 0.02).to(torch.bfloat16)
    b = torch.randn(N, device="cuda").to(torch.bfloat16)
    rows = []
    for m in BATCHES:
        x = torch.randn(m, K, device="cuda", dtype=torch.bfloat16)
        ref = F.linear(x, w, b)
        got = torch.ops.perfgate.router_gemm(x, w, b)
        err = (got.float() - ref.float()).abs().max().item()
        rows.append(
            {
                "m": m,
                "max_abs_err": err,
                "cublas_us": time_us(F.linear, x, w, b),
                "triton_us": time_us(torch.ops.perfgate.router_gemm, x, w, b),
            }
        )
        print(rows[-1], flush=True)

    def router(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.perfgate.router_gemm(x, w, b)

    compiled = torch.compile(router, mode="reduce-overhead", dynamic=False)
    xs = [torch.randn(m, K, device="cuda", dtype=torch.bfloat16) for m in (1, 8, 64, 256)]
    for _ in range(3):
        for x in xs:
            compiled(x)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for x in xs:
            compiled(x)
        torch.cuda.synchronize()
    kernels: dict[str, int] = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            kernels[e.name] = kernels.get(e.name, 0) + 1
    summary = {
        "rows": rows,
        "compiled_kernels": kernels,
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
    }
    prof.export_chrome_trace(str(out / "router_gemm_op_compiled.pt.trace.json"))
    (out / "router_gemm_bench.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({"compiled_kernels": kernels}, indent=1))


if __name__ == "__main__":
    main()
