#!/usr/bin/env bash
# Steps of a run of the reference case on a lent GPU machine with no internet, one device call
# each (docs/gpu.md, "The reference case at gpt-oss-120b's shape"). Parts travel in the
# repository's ignored .gpuwh/ folder, one call at a time (64 MiB a call):
#   stash            copy what this call carried (.gpuwh/*) to /root/parts
#   assemble         check SHA256SUMS, unpack vLLM's site to /root/site, FlashInfer (slimmed
#                    wheel) and apache-tvm-ffi to /root/fisite
#   check OUT        FlashInfer's tinygemm_bf16 against cuBLAS (check_tinygemm.py)
#   probe            one stock vLLM server of this folder's model in its own session: whether
#                    it serves, how long its start takes, how much GPU memory it holds
#                    (runs/probe.log, runs/probe-healthy, runs/smi.csv)
#   start MODES...   the campaign in its own session (setsid), GPU memory and clocks logged
#   poll SECONDS     wait up to SECONDS while the campaign runs; print its progress
#   collect OUT      pack the run directories (no traces, no caches) into OUT
set -u
parts=/root/parts site=/root/site fisite=/root/fisite runs=/root/runs
repo=$(cd "$(dirname "$0")/../.." && pwd)
cmd=${1:?usage: gpu_lease.sh stash|assemble|check|start|poll|collect ...}
shift
case $cmd in
stash)
    mkdir -p "$parts" && find "$repo/.gpuwh" -type f -exec cp {} "$parts/" \; && ls -la "$parts" ;;
assemble)
    cd "$parts" || exit 2
    cat site.tar.xz.part* >site.tar.xz && sha256sum -c --ignore-missing SHA256SUMS || exit 2
    mkdir -p "$site" "$fisite"
    tar -C "$site" -xJf site.tar.xz && tar -C "$fisite" -xJf flashinfer-slim.tar.xz || exit 2
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$fisite" \
        apache_tvm_ffi-*.whl || exit 2
    PYTHONPATH=$fisite:$site python3 -c 'import vllm, flashinfer, tvm_ffi
print("vllm", vllm.__version__, "flashinfer", flashinfer.__version__, "tvm_ffi", tvm_ffi.__version__)' ;;
check)
    PYTHONPATH=$fisite:$site:$repo/examples/router_gemm_plugin \
        python3 "$repo/examples/router_gemm_plugin/check_tinygemm.py" "${1:?OUT}" ;;
probe)
    mkdir -p "$runs"
    setsid nohup nvidia-smi --query-gpu=timestamp,memory.used,clocks.sm,power.draw \
        --format=csv -l 2 >"$runs/smi.csv" 2>&1 </dev/null &
    # shellcheck disable=SC2016  # expanded by the inner shell
    setsid nohup bash -c 'began=$SECONDS
        PYTHONPATH=$0:$1 VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 python3 -m vllm.entrypoints.cli.main \
            serve "$2/examples/gpt-oss-120b-shape" --served-model-name probe --load-format dummy \
            --max-model-len 32768 --cudagraph-capture-sizes 1 2 4 8 16 32 64 128 --port 8123 \
            >"$3/probe.log" 2>&1 &
        until curl -sf localhost:8123/health >/dev/null; do sleep 2; [ $((SECONDS - began)) -gt 900 ] && exit; done
        echo "healthy after $((SECONDS - began)) s" >"$3/probe-healthy"
        curl -s localhost:8123/v1/completions -H "Content-Type: application/json" \
            -d "{\"model\": \"probe\", \"prompt\": \"hello\", \"max_tokens\": 64, \"ignore_eos\": true}" \
            >>"$3/probe-healthy" 2>&1' "$fisite" "$site" "$repo" "$runs" </dev/null >/dev/null 2>&1 &
    echo probing ;;
start)
    mkdir -p "$runs"
    # the bf16 fallback's depth: as many 6.4 GB layers as 90% of the GPU holds beside ~12 GB
    # (embeddings, activations, a small KV cache): 16 on an H200, 9 on an H100
    gib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -n 1)
    : "${PERFGATE_FALLBACK_LAYERS:=$(( (gib * 9 / 10 / 1024 - 12) * 10 / 64 ))}"
    export PERFGATE_FALLBACK_LAYERS
    echo "bf16 fallback: $PERFGATE_FALLBACK_LAYERS layers" >"$runs/fallback"
    setsid nohup nvidia-smi --query-gpu=timestamp,memory.used,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_event_reasons.active \
        --format=csv -l 5 >"$runs/smi.csv" 2>&1 </dev/null &
    setsid nohup "$repo/examples/gpt-oss-120b-shape/run_campaign.sh" "$site" "$fisite" "$runs" "$@" \
        >"$runs/campaign.log" 2>&1 </dev/null &
    echo started ;;
poll)
    end=$((SECONDS + ${1:?SECONDS}))
    while [ $SECONDS -lt $end ] && pgrep -f run_campaign.sh >/dev/null; do sleep 10; done
    cat "$runs/exits" 2>/dev/null
    for log in "$runs"/*.log; do echo "== $log"; tail -n 12 "$log"; done
    tail -n 2 "$runs/smi.csv"
    pgrep -f run_campaign.sh >/dev/null && echo RUNNING || echo DONE ;;
collect)
    out=${1:?OUT}
    tar -C "$runs" --exclude='*trace*' --exclude='*cache*' -czf "$out/runs.tgz" . && ls -la "$out"
    [ -d /root/check ] && cp /root/check/*.json "$out/" 2>/dev/null
    tail -n 30 "$runs"/probe.log "$runs"/probe-healthy 2>/dev/null; tail -n 3 "$runs/smi.csv" ;;
*)
    echo "unknown step $cmd" >&2; exit 2 ;;
esac
