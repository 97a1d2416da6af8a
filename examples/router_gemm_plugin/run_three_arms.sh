#!/usr/bin/env bash
# The three-arm run of docs/gpu.md on one GPU: stock vLLM vs the plugin (op), then stock vs the
# broken plugin. SITE is where vLLM is importable from (the offline bundle: a site folder, not a
# venv); OUT receives one run directory and one console log per comparison, and `exits`.
# MODES (default: op broken) picks the comparisons and their order.
#   examples/router_gemm_plugin/run_three_arms.sh /tmp/site /tmp/runs [op] [broken]
set -u
site=${1:?usage: run_three_arms.sh SITE OUT [MODES]}
out=${2:?usage: run_three_arms.sh SITE OUT [MODES]}
shift 2
modes=("$@")
[ $# -eq 0 ] && modes=(op broken)
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo" || exit 2
mkdir -p "$out"
export PYTHONPATH="$site:$repo" PYTHONUNBUFFERED=1
for mode in "${modes[@]}"; do
    python3 -m perfgate compare --scenario scenarios/toy-gpt-oss-router-gemm-gpu.toml \
        --skip-accuracy --out-dir "$out/$mode" \
        --candidate-env "PYTHONPATH=$site:$repo:$repo/examples/router_gemm_plugin" \
        --candidate-env "PERFGATE_ROUTER_GEMM=$mode" >"$out/$mode.log" 2>&1
    echo "$mode $?" >>"$out/exits"
done
