#!/usr/bin/env bash
# The reference case on one NVIDIA GPU: scenarios/gpt-oss-120b.toml with this folder's weights
# (gpt-oss-120b's released config: 36 layers, MXFP4 experts, served with random weights), stock
# vLLM as the baseline and the router-GEMM plugin (examples/router_gemm_plugin) as the candidate.
#   run_campaign.sh SITE FLASHINFER OUT [MODES]
# SITE: where vLLM is importable from (the offline bundle's site folder, or a venv's
# site-packages); FLASHINFER: a folder where flashinfer-python is importable from (both arms get
# it, so they differ only in the plugin); OUT receives per mode a run directory, its console log
# and scenario copy, and a line "MODE EXIT" in `exits`.
# MODES (default: tinygemm tinygemm-broken):
#   aa               A/A: stock vLLM in both arms (the kernel rules: no TinyGEMM in either)
#   tinygemm         stock vs FlashInfer's tinygemm_bf16, dispatch inside the op (the change)
#   tinygemm-broken  stock vs the same with the dispatch outside the op: must end invalid
#   tiled | op       stock vs the plugin's Triton kernels (a known slower / faster one)
# PERFGATE_STARTS=N replaces the scenario's budget by a fixed design of N starts per arm; a mode
# written MODE:N (tinygemm:3) takes its own N. A mode that needs no change to the scenario
# (tinygemm, tinygemm-broken without N, on GPU 0) runs the README's headline command,
# `perfgate compare --model gpt-oss-120b`, with the scenario's own budget.
# PERFGATE_WEIGHTS (default: this folder) is both arms' --weights: a checkpoint, or a shape-only
# folder such as the bf16 variant that bf16_variant.py writes.
# PERFGATE_FALLBACK_LAYERS=N: when the first mode's first server ends before becoming healthy
# and none became healthy (vLLM cannot serve the MXFP4 shape here), write the bf16 variant at N layers
# (bf16_variant.py) to OUT/bf16-N and run every mode again on it; the first attempt's log stays.
# PERFGATE_GPU (default 0) is both arms' GPU.
#   examples/gpt-oss-120b-shape/run_campaign.sh /root/site /root/fisite /root/runs tinygemm
set -u
site=${1:?usage: run_campaign.sh SITE FLASHINFER OUT [MODES]}
flashinfer=${2:?usage: run_campaign.sh SITE FLASHINFER OUT [MODES]}
out=${3:?usage: run_campaign.sh SITE FLASHINFER OUT [MODES]}
shift 3
modes=("$@")
[ $# -eq 0 ] && modes=(tinygemm tinygemm-broken)
gpu=${PERFGATE_GPU:-0}
repo=$(cd "$(dirname "$0")/../.." && pwd)
plugin=$repo/examples/router_gemm_plugin
cd "$repo" || exit 2
mkdir -p "$out"
export PYTHONPATH="$flashinfer:$site:$repo" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
weights=${PERFGATE_WEIGHTS:-examples/gpt-oss-120b-shape}
run_mode() {  # run_mode SPEC: one comparison; its exit code in OUT/exits
    local spec=$1 mode starts scenario
    local -a extra=()
    mode=${spec%%:*} starts=${PERFGATE_STARTS:-}
    [ "$spec" != "$mode" ] && starts=${spec#*:}
    scenario=$out/$mode.toml
    sed "s/^gpus = \"0\"/gpus = \"$gpu\"/" scenarios/gpt-oss-120b.toml >"$scenario"
    if [ -n "$starts" ]; then  # a fixed design of N starts per arm, one analysis
        sed -i "s/^budget = .*/starts = $starts/" "$scenario"
    fi
    case $mode in
        aa)  # no plugin in either arm: both must run without TinyGEMM
            sed -i 's/^expect_kernels = .*/forbid_kernels = ["tinygemm"]/' "$scenario" ;;
        tinygemm | tinygemm-broken) ;;
        tiled | op)
            sed -i 's/pattern = "tinygemm", min_calls = 360/pattern = "gpt_oss_router_gemm", min_calls = 360/;
                    s/^forbid_kernels = \["tinygemm"\]/forbid_kernels = ["gpt_oss_router_gemm"]/' "$scenario" ;;
        *) echo "unknown mode $mode" >&2; exit 2 ;;
    esac
    if [ "$mode" != aa ]; then
        extra=(--candidate-env "PYTHONPATH=$flashinfer:$site:$repo:$plugin"
               --candidate-env "VLLM_PLUGINS=perfgate_router_gemm"
               --candidate-env "PERFGATE_ROUTER_GEMM=$mode")
    fi
    local -a which=(--scenario "$scenario")
    if cmp -s "$scenario" scenarios/gpt-oss-120b.toml; then  # the scenario as shipped: the
        which=(--model gpt-oss-120b)                         # README's headline command
    fi
    echo "perfgate compare ${which[*]} --weights $weights --no-accuracy ${extra[*]}" >"$out/$mode.cmd"
    python3 -m perfgate compare "${which[@]}" --weights "$weights" \
        --no-accuracy --out-dir "$out/$mode" "${extra[@]}" >"$out/$mode.log" 2>&1
    echo "$mode $? $weights" >>"$out/exits"
}
run_mode "${modes[0]}"
first=${modes[0]%%:*}
if [ -n "${PERFGATE_FALLBACK_LAYERS:-}" ] && grep -q "before becoming healthy" "$out/$first.log" &&
    ! grep -q "healthy at" "$out/$first.log"; then
    layers=$PERFGATE_FALLBACK_LAYERS
    echo "MXFP4 shape not served; falling back to bf16 at $layers layers" >>"$out/exits"
    mv "$out/$first.log" "$out/$first-mxfp4.log"
    mv "$out/$first" "$out/$first-mxfp4"
    weights=$out/bf16-$layers
    python3 "$repo/examples/gpt-oss-120b-shape/bf16_variant.py" "$layers" "$weights"
    run_mode "${modes[0]}"
fi
for spec in "${modes[@]:1}"; do
    run_mode "$spec"
done
