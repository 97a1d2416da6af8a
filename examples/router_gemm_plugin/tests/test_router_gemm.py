"""The plugin's kernel and ops on CPU, through Triton's interpreter (no GPU needed)."""

import importlib.metadata
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))

torch = pytest.importorskip("torch")
F = torch.nn.functional

# Triton chooses its CPU interpreter when it is imported and kernels are decorated: set the
# switch for the imports only, so the rest of the test session (the vLLM servers the e2e tests
# start) does not inherit it.
_saved = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "1"
try:
    pytest.importorskip("triton")
    from perfgate_router_gemm import ops
    from perfgate_router_gemm.kernel import MAX_TOKENS, router_gemm_triton
finally:
    if _saved is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = _saved

K, N = 2880, 128  # gpt-oss-120b: hidden 2880 -> 128 experts


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    """Launches read the switch too: on for each test here, off for the rest of the session."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def weights(dtype):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(N, K, generator=g) * 0.02).to(dtype), (torch.randn(N, generator=g)).to(
        dtype
    )


@pytest.mark.parametrize("m", [1, 2, 7, 8, 9, 16, 33, 128])
def test_kernel_matches_f_linear_at_the_router_shape(m):
    w, b = weights(torch.float32)
    x = torch.randn(m, K, generator=torch.Generator().manual_seed(m))
    out = router_gemm_triton(x, w, b)
    assert out.shape == (m, N)
    torch.testing.assert_close(out, F.linear(x, w, b), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "kernel, config",
    [
        ("splitk", None),
        ("splitk", (8, 128, 4, 0, 4)),  # fp32 multiply-adds, no tensor cores
        ("splitk", (16, 256, 7, 1, 4)),  # K blocks do not divide evenly among the programs
        ("decode", None),
        ("tiled", None),
    ],
)
@pytest.mark.parametrize("m", [1, 5, 8])
def test_every_decode_kernel_matches_f_linear(kernel, config, m):
    w, b = weights(torch.float32)
    x = torch.randn(m, K, generator=torch.Generator().manual_seed(m))
    torch.testing.assert_close(
        router_gemm_triton(x, w, b, kernel, config), F.linear(x, w, b), rtol=1e-4, atol=1e-4
    )


def test_split_k_leaves_its_workspace_at_zero_for_the_next_call():
    """The last program of each expert block takes the sums and resets them and its counter:
    a second call (or a CUDA graph replay) must not see the first call's sums."""
    from perfgate_router_gemm import kernel as kernels

    w, b = weights(torch.float32)
    x1, x2 = torch.randn(8, K), torch.randn(3, K)
    first = router_gemm_triton(x1, w, b, "splitk")
    second = router_gemm_triton(x2, w, b, "splitk")
    torch.testing.assert_close(first, F.linear(x1, w, b), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(second, F.linear(x2, w, b), rtol=1e-4, atol=1e-4)
    ws, count = kernels._splitk_workspace(x1.device, N, kernels.SPLITK_CONFIG[0])
    assert not ws.any() and not count.any()


def test_decode_kernels_refuse_prefill_batches_and_unknown_names():
    w, b = weights(torch.float32)
    with pytest.raises(ValueError, match="at most 8 tokens"):
        router_gemm_triton(torch.randn(9, K), w, b, "splitk")
    with pytest.raises(ValueError, match="kernel must be"):
        router_gemm_triton(torch.randn(2, K), w, b, "fast")


def test_shape_mismatch_is_a_clear_error():
    w, b = weights(torch.float32)
    with pytest.raises(ValueError, match="shapes do not match"):
        router_gemm_triton(torch.randn(2, K - 1), w, b)


def test_the_kernel_really_runs_in_the_interpreter():
    assert ops._interpreting()


def test_op_dispatches_inside_by_token_count():
    w, b = weights(torch.float32)
    small, large = torch.randn(MAX_TOKENS, K), torch.randn(MAX_TOKENS + 1, K)
    torch.testing.assert_close(
        torch.ops.perfgate.router_gemm(small, w, b), F.linear(small, w, b), rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(torch.ops.perfgate.router_gemm(large, w, b), F.linear(large, w, b))
    torch.testing.assert_close(
        ops.router_gemm_broken(small, w, b), F.linear(small, w, b), rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(
        torch.ops.perfgate.router_gemm_tiled(small, w, b),
        F.linear(small, w, b),
        rtol=1e-4,
        atol=1e-4,
    )
    torch.testing.assert_close(
        torch.ops.perfgate.router_gemm_tiled(large, w, b), F.linear(large, w, b)
    )


def test_fake_kernels_give_shapes_for_torch_compile():
    w, b = weights(torch.float32)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        x = mode.from_tensor(torch.randn(5, K))
        assert torch.ops.perfgate.router_gemm(
            x, mode.from_tensor(w), mode.from_tensor(b)
        ).shape == (5, N)


def test_entry_point_is_discoverable_from_pythonpath():
    dists = importlib.metadata.distributions(path=[str(HERE)])
    eps = [ep for d in dists for ep in d.entry_points if ep.group == "vllm.general_plugins"]
    assert [ep.value for ep in eps] == ["perfgate_router_gemm.plugin:register"]


def test_register_patches_gpt_oss_router_once_and_checks_the_mode(monkeypatch):
    pytest.importorskip("vllm")
    from perfgate_router_gemm import plugin
    from vllm.model_executor.models import gpt_oss

    original = gpt_oss.MLPBlock.forward
    try:
        monkeypatch.setenv("PERFGATE_ROUTER_GEMM", "sideways")
        with pytest.raises(ValueError, match="PERFGATE_ROUTER_GEMM must be one of op, tiled"):
            plugin.register()
        monkeypatch.setenv("PERFGATE_ROUTER_GEMM", "broken")
        plugin.register()
        patched = gpt_oss.MLPBlock.forward
        assert patched._perfgate_router_gemm == "broken"
        plugin.register()  # plugins load in every vLLM process: registering twice is a no-op
        assert gpt_oss.MLPBlock.forward is patched
    finally:
        gpt_oss.MLPBlock.forward = original
