#!/usr/bin/env bash
# The PR job of .github/workflows/perfgate-pr.yml, step by step (the YAML only calls these, and
# tests/e2e/test_ci_scripts_real_vllm.py runs them on CPU vLLM). Settings come from the
# environment (defaults in brackets):
#   PERFGATE_OUT        the run directory                                   [reports/pr]
#   PERFGATE_SCENARIO   a built-in scenario name or a scenario file         [gpt-oss-120b]
#   PERFGATE_ARGS       extra `perfgate compare` arguments (word-split)     []
#   PERFGATE            the perfgate command                                [perfgate]
#   GH                  the GitHub CLI                                      [gh]
#   HF_TOKEN            set: the accuracy phase runs (GPQA from the hub); unset: it is skipped
#                       and the comment says why
#
#   pr.sh needs-compile VLLM_DIR BASE HEAD    print "yes" when the change touches compiled code
#   pr.sh build VLLM_DIR SHA VENV [compiled]  a venv with vLLM at SHA: precompiled kernels when
#                       the change is Python only (VLLM_USE_PRECOMPILED=1), else a compiled
#                       build through ccache, its wheel cached by commit in
#                       PERFGATE_WHEEL_CACHE [~/.cache/perfgate-wheels] so a rerun skips it
#   pr.sh compare BASE_PYTHON HEAD_PYTHON     perfgate compare, exit code kept in OUT/exit-code
#   pr.sh comment PR [JOB_STATUS]             post report.md as the PR's one perfgate comment
#                       (found by its marker and updated in place), on every outcome: a job
#                       that timed out or failed before a report gets a comment saying so
#   pr.sh exit                                exit as the comparison did
set -euo pipefail
OUT=${PERFGATE_OUT:-reports/pr}
PERFGATE=${PERFGATE:-perfgate}
GH=${GH:-gh}
MARKER='<!-- perfgate-pr-comment -->'
# Paths whose change needs vLLM's kernels compiled (anything else reuses the precompiled ones).
COMPILED='^(csrc/|cmake/|CMakeLists\.txt|setup\.py|requirements/(build|cuda)\.txt|.*\.(cu|cuh|cpp|h|hpp)$)'

usage() {
    sed -n '2,26p' "$0" >&2
    exit 2
}

needs_compile() {
    local repo=$1 base=$2 head=$3
    if git -C "$repo" diff --name-only "$base" "$head" | grep -Eq "$COMPILED"; then
        echo yes
    else
        echo no
    fi
}

build() {
    local repo=$1 sha=$2 venv=$3 mode=${4:-}
    local tree cache
    tree=$(mktemp -d)
    git -C "$repo" worktree add --detach "$tree" "$sha" >/dev/null
    python3 -m venv "$venv"
    if [ "$mode" != compiled ]; then
        (cd "$tree" && VLLM_USE_PRECOMPILED=1 "$venv/bin/pip" install -q .)
    else
        cache=${PERFGATE_WHEEL_CACHE:-$HOME/.cache/perfgate-wheels}/$sha
        if ! compgen -G "$cache/*.whl" >/dev/null; then
            mkdir -p "$cache"
            (cd "$tree" && CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache} \
                CMAKE_C_COMPILER_LAUNCHER=ccache CMAKE_CXX_COMPILER_LAUNCHER=ccache \
                CMAKE_CUDA_COMPILER_LAUNCHER=ccache "$venv/bin/pip" wheel -q --no-deps -w "$cache" .)
        fi
        "$venv/bin/pip" install -q "$cache"/*.whl
    fi
    git -C "$repo" worktree remove --force "$tree"
    "$venv/bin/python" -c 'import vllm; print(vllm.__version__)'
}

compare() {
    local base_python=$1 head_python=$2 scenario=${PERFGATE_SCENARIO:-gpt-oss-120b}
    local -a args=(--out-dir "$OUT" --junit "$OUT/junit.xml"
                   --baseline-python "$base_python" --candidate-python "$head_python")
    args+=(--scenario "$scenario")  # a built-in's name or a file
    mkdir -p "$OUT"
    if [ -z "${HF_TOKEN:-}" ]; then
        args+=(--no-accuracy)
        echo "Accuracy skipped: no HF_TOKEN secret for the gated GPQA dataset." >"$OUT/notes.md"
    fi
    local -a extra
    read -r -a extra <<<"${PERFGATE_ARGS:-}"  # a list of words on purpose
    set +e
    $PERFGATE compare "${args[@]}" "${extra[@]}"
    echo $? >"$OUT/exit-code"
    set -e
}

comment() {
    local pr=$1 status=${2:-}
    local body=$OUT/comment.md repo id
    mkdir -p "$OUT"
    {
        echo "$MARKER"
        if [ -f "$OUT/report.md" ]; then
            # the PNGs beside report.md do not travel with a comment: the job's artifacts do
            sed 's/^Pictures: .*/Pictures (latency CDFs, timeline): in the job'"'"'s artifacts./' \
                "$OUT/report.md"
        else
            echo "## perfgate"
            echo
            echo "⛔ The perfgate job ended (${status:-unknown}) before a report was written:" \
                "see the job's log and artifacts."
        fi
        if [ -f "$OUT/notes.md" ]; then echo; cat "$OUT/notes.md"; fi
        if [ -n "$status" ] && [ "$status" != success ] && [ "$status" != failure ]; then
            echo
            echo "Job status: $status."
        fi
    } >"$body"
    repo=$($GH repo view --json nameWithOwner --jq .nameWithOwner)
    id=$($GH api --paginate "repos/$repo/issues/$pr/comments" \
        --jq ".[] | select(.body | startswith(\"$MARKER\")) | .id" | head -n 1)
    if [ -n "$id" ]; then
        $GH api --method PATCH "repos/$repo/issues/comments/$id" -F "body=@$body" >/dev/null
        echo "updated comment $id"
    else
        $GH pr comment "$pr" --body-file "$body"
    fi
}

step=${1:-}
[ $# -gt 0 ] && shift
case $step in
    needs-compile) [ $# -eq 3 ] || usage; needs_compile "$@" ;;
    build) [ $# -ge 3 ] || usage; build "$@" ;;
    compare) [ $# -eq 2 ] || usage; compare "$@" ;;
    comment) [ $# -ge 1 ] || usage; comment "$@" ;;
    exit) exit "$(cat "$OUT/exit-code" 2>/dev/null || echo 2)" ;;
    *) usage ;;
esac
