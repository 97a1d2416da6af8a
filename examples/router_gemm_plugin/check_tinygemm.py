"""On a GPU: FlashInfer's tinygemm_bf16 as the plugin calls it, against cuBLAS (F.linear), at
gpt-oss-120b's router shape (K = 2880, N = 128), before any server starts.

For each batch M: the largest error against F.linear on a padded column slice of the hidden
state (as GPT-OSS passes it), the kernels each path launches and their GPU time per call
(profiler kernel events, as a vLLM trace shows them), and the per-call time with the weight
read from HBM (bench_kernel.cold_graph_us). Then the plugin's two ops under torch.compile +
CUDA graphs: ``tinygemm`` must launch TinyGEMM at decode batches, ``tinygemm-broken`` must not
(the dispatch baked in at trace time). Writes OUT_DIR/tinygemm_check.json; exit 1 when a check
fails.

    python3 examples/router_gemm_plugin/check_tinygemm.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_kernel import K, N, cold_graph_us, kernel_us
from perfgate_router_gemm import flashinfer_ops

BATCHES = (1, 2, 4, 8, 16, 64, 128)
PADDED = 3072  # GPT-OSS's hidden state may be padded past 2880 for the MoE kernels


def compiled_kernels(fn, w, b) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Kernels launched by ``fn`` compiled as vLLM does (dynamic batch, graphs per size)."""
    compiled = torch.compile(lambda x: fn(x, w, b), dynamic=True)
    xs = [torch.randn(m, PADDED, device="cuda", dtype=torch.bfloat16)[:, :K] for m in (8, 512)]
    for _ in range(3):
        for x in xs:
            compiled(x)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        compiled(xs[0])
        torch.cuda.synchronize()
    found: dict[str, int] = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            found[e.name] = found.get(e.name, 0) + 1
    return found


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.02
    b = torch.randn(N, device="cuda", dtype=torch.bfloat16) * 0.02
    ws = [w.clone() for _ in range(128)]  # 94 MB: the weight from HBM, not L2
    bs = [b.clone() for _ in range(128)]
    tiny = flashinfer_ops.router_gemm_tinygemm
    rows, ok = [], True
    for m in BATCHES:
        x = torch.randn(m, PADDED, device="cuda", dtype=torch.bfloat16)[:, :K]
        ref = F.linear(x, w, b).float()
        err = (tiny(x, w, b).float() - ref).abs().max().item()
        good = err <= 2e-2 * max(1.0, ref.abs().max().item())
        ok &= good
        row = {
            "m": m,
            "max_abs_err": err,
            "ok": good,
            "tinygemm": kernel_us(tiny, x, w, b),
            "cublas": kernel_us(F.linear, x, w, b),
            "tinygemm_cold": cold_graph_us(tiny, x, ws, bs),
            "cublas_cold": cold_graph_us(F.linear, x, ws, bs),
        }
        rows.append(row)
        print(
            f"M={m:4d} err {err:.1e} {'ok' if good else 'WRONG'}: kernels TinyGEMM "
            f"{row['tinygemm']['per_call_us']:.2f} us vs cuBLAS {row['cublas']['per_call_us']:.2f}"
            f" us; from HBM {row['tinygemm_cold']['median_us']:.2f} vs "
            f"{row['cublas_cold']['median_us']:.2f} us",
            flush=True,
        )
    merged = compiled_kernels(flashinfer_ops.router_gemm_tinygemm, w, b)
    broken = compiled_kernels(flashinfer_ops.router_gemm_tinygemm_broken, w, b)
    merged_ok = any("tinygemm" in k for k in merged)
    broken_ok = not any("tinygemm" in k for k in broken)
    ok &= merged_ok and broken_ok
    print(f"compiled, dispatch inside the op: {sorted(merged)} -> TinyGEMM ran: {merged_ok}")
    print(f"compiled, dispatch outside the op: {sorted(broken)} -> TinyGEMM absent: {broken_ok}")
    summary = {
        "rows": rows,
        "compiled_kernels": {"tinygemm": merged, "tinygemm-broken": broken},
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "ok": ok,
    }
    (out / "tinygemm_check.json").write_text(json.dumps(summary, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
