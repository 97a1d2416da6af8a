#!/usr/bin/env bash
# The GPU runs of docs/gpu.md, one comparison after another on one GPU. SITE is where vLLM is
# importable from (the offline bundle: a site folder, not a venv); OUT receives per comparison
# a run directory, its console log and scenario copy, and a line in `exits`.
# MODES (default: aa tiled op broken):
#   aa      A/A, stock vLLM in both arms, unpinned vs pinned CPUs (toy-gpt-oss-aa-gpu.toml)
#   tiled   stock vs the plugin's first, slower kernel   (toy-gpt-oss-router-gemm-gpu.toml)
#   op      stock vs the plugin's decode kernel (faster)
#   broken  stock vs the broken twin (dispatch outside the custom op): must end invalid
# PERFGATE_GPU (default 0) is both arms' GPU; PERFGATE_PARALLEL_GPUS="0 1" instead runs both
# arms of every round at once, one per GPU, swapping GPUs every round ([compare] parallel_gpus).
# PERFGATE_STARTS=N replaces the scenario's budget (rounds until decided) by a fixed design of N
# starts per arm, analysed once at the full alpha: a small gain that the budget's early looks
# call "no change" is then tested at N (the op run of docs/gpu.md).
#   examples/router_gemm_plugin/run_campaign.sh /tmp/site /tmp/runs tiled op
set -u
site=${1:?usage: run_campaign.sh SITE OUT [MODES]}
out=${2:?usage: run_campaign.sh SITE OUT [MODES]}
shift 2
modes=("$@")
[ $# -eq 0 ] && modes=(aa tiled op broken)
gpu=${PERFGATE_GPU:-0}
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo" || exit 2
mkdir -p "$out"
export PYTHONPATH="$site:$repo" PYTHONUNBUFFERED=1
for mode in "${modes[@]}"; do
    extra=()
    scenario=scenarios/toy-gpt-oss-router-gemm-gpu.toml
    if [ "$mode" = aa ]; then
        scenario=scenarios/toy-gpt-oss-aa-gpu.toml
    else
        extra=(--candidate-env "PYTHONPATH=$site:$repo:$repo/examples/router_gemm_plugin"
               --candidate-env "PERFGATE_ROUTER_GEMM=$mode")
    fi
    # the scenario as run, on this GPU (its model path is relative to the repository)
    sed "s/^gpus = \"0\"/gpus = \"$gpu\"/" "$scenario" >"$out/$mode.toml"
    if [ -n "${PERFGATE_STARTS:-}" ]; then  # a fixed design of N starts per arm, one analysis
        sed -i "s/^budget = .*/starts = $PERFGATE_STARTS/" "$out/$mode.toml"
    fi
    if [ -n "${PERFGATE_PARALLEL_GPUS:-}" ]; then
        read -r g0 g1 <<<"$PERFGATE_PARALLEL_GPUS"
        sed -i "s/^\[compare\]\$/[compare]\nparallel_gpus = [\"$g0\", \"$g1\"]/" "$out/$mode.toml"
    fi
    python3 -m perfgate compare --scenario "$out/$mode.toml" --no-accuracy \
        --out-dir "$out/$mode" "${extra[@]}" >"$out/$mode.log" 2>&1
    echo "$mode $?" >>"$out/exits"
done
