#!/usr/bin/env bash
# The nightly job of .github/workflows/perfgate-nightly.yml, step by step (the YAML only calls
# these, and tests/e2e/test_ci_scripts_real_vllm.py runs them on CPU vLLM). Settings come from
# the environment (defaults in brackets):
#   PERFGATE_OUT        the run directory                                    [reports/nightly]
#   PERFGATE_SCENARIO   a built-in scenario name or a scenario file          [gpt-oss-120b-nightly]
#   PERFGATE_HISTORY    a checkout of the history branch (a git work tree)   [history]
#   PERFGATE_ARGS       extra `perfgate gate` / `compare` arguments          []
#   PERFGATE_ACCURACY   when tonight also answers GPQA: always, never, or the
#                       UTC weekdays it does (Mon,Thu ...)                  [Sun]
#   PERFGATE            the perfgate command                                 [perfgate]
#   GH                  the GitHub CLI                                       [gh]
#   GITHUB_STEP_SUMMARY, GITHUB_OUTPUT   written when set (GitHub Actions sets them)
#
#   nightly.sh run PYTHON COMMIT  tonight's build (PYTHON has it) against the baseline kept in
#                      the history checkout (SCENARIO.baseline.json); the first night, with no
#                      baseline yet, measures the build against itself and records the baseline
#                      from it (exit 0, said in the summary), with its GPQA answers unless
#                      PERFGATE_ACCURACY is never. On the accuracy schedule's nights the
#                      gate also judges GPQA per question against those answers. Writes
#                      OUT/exit-code, and exit=N to GITHUB_OUTPUT.
#   nightly.sh push    commit the history (and a new baseline) and push it, rebasing and
#                      retrying on a race; fails the job if it still cannot
#   nightly.sh notify  exit 1: open or update the regression issue; exit 2: the "nightly broken"
#                      issue; labels created when missing
#   nightly.sh exit    exit as the gate did
set -euo pipefail
OUT=${PERFGATE_OUT:-reports/nightly}
PERFGATE=${PERFGATE:-perfgate}
GH=${GH:-gh}
HISTORY=${PERFGATE_HISTORY:-history}
SCENARIO=${PERFGATE_SCENARIO:-gpt-oss-120b-nightly}
ACCURACY=${PERFGATE_ACCURACY:-Sun}
NAME=$(basename "$SCENARIO" .toml)
BASELINE=$HISTORY/$NAME.baseline.json
NIGHTS=$HISTORY/$NAME.jsonl
REGRESSION_LABEL=perfgate-regression
BROKEN_LABEL=perfgate-nightly-broken

usage() {
    sed -n '2,26p' "$0" >&2
    exit 2
}

accuracy_tonight() {  # whether the schedule (PERFGATE_ACCURACY) includes tonight
    local today
    today=$(LC_ALL=C date -u +%a)
    case $ACCURACY in
        always) return 0 ;;
        never) return 1 ;;
    esac
    local day
    for day in ${ACCURACY//,/ }; do
        case $day in
            Mon | Tue | Wed | Thu | Fri | Sat | Sun) [ "$day" = "$today" ] && return 0 ;;
            *)
                echo "PERFGATE_ACCURACY=$ACCURACY: give always, never, or weekdays (Mon,Thu)" >&2
                exit 2 ;;
        esac
    done
    return 1
}

summary() {  # a line for the job's summary page (and the log)
    echo "$*"
    if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then echo "$*" >>"$GITHUB_STEP_SUMMARY"; fi
}

run() {
    local python=$1 commit=$2 code
    local -a args=(--scenario "$SCENARIO") extra
    read -r -a extra <<<"${PERFGATE_ARGS:-}"
    local -a answers=()
    local tonight=yes
    accuracy_tonight || tonight=no  # (a bad PERFGATE_ACCURACY ends the job here)
    mkdir -p "$OUT" "$HISTORY"
    set +e
    if [ ! -f "$BASELINE" ]; then
        summary "perfgate nightly: no baseline in $HISTORY yet; tonight's build ($commit) is" \
            "measured against itself and recorded as the baseline."
        # the baseline keeps GPQA answers for the accuracy nights, unless there are none
        [ "$ACCURACY" = never ] && answers=(--no-accuracy)
        $PERFGATE compare "${args[@]}" --baseline-python "$python" --candidate-python "$python" \
            "${answers[@]}" --out-dir "$OUT" --junit "$OUT/junit.xml" "${extra[@]}"
        code=$?
        if [ "$code" -ne 2 ]; then  # a complete run, whatever its A/A verdict
            $PERFGATE baseline record "$OUT/results.json" --out "$BASELINE" --arm baseline
            code=$?
            [ "$code" -eq 0 ] && summary "Baseline recorded: $BASELINE (first night, exit 0)."
        fi
    else
        if [ "$tonight" = yes ]; then
            answers=(--accuracy)
            summary "Tonight is on the accuracy schedule (PERFGATE_ACCURACY=$ACCURACY):" \
                "GPQA is judged per question against the baseline's answers."
        fi
        $PERFGATE gate "${args[@]}" --baseline "$BASELINE" --history "$NIGHTS" \
            --commit "$commit" --candidate-python "$python" "${answers[@]}" \
            --out-dir "$OUT" --junit "$OUT/junit.xml" "${extra[@]}"
        code=$?
    fi
    set -e
    echo "$code" >"$OUT/exit-code"
    if [ -n "${GITHUB_OUTPUT:-}" ]; then echo "exit=$code" >>"$GITHUB_OUTPUT"; fi
    return 0
}

push() {
    local tries=${PERFGATE_PUSH_TRIES:-5} i
    git -C "$HISTORY" add -A -- .
    if git -C "$HISTORY" diff --cached --quiet; then
        echo "nothing new in the history"
        return 0
    fi
    git -C "$HISTORY" -c user.name=perfgate -c user.email=perfgate@users.noreply.github.com \
        commit -q -m "perfgate nightly: $(date -u +%F)"
    for i in $(seq "$tries"); do
        if git -C "$HISTORY" push -q origin HEAD; then
            echo "history pushed"
            return 0
        fi
        echo "push $i of $tries refused; rebasing on the remote history" >&2
        git -C "$HISTORY" pull -q --rebase origin "$(git -C "$HISTORY" rev-parse --abbrev-ref HEAD)" || true
        sleep "$i"
    done
    summary "perfgate nightly: the history could not be pushed after $tries tries; tonight's" \
        "night is not kept."
    return 1
}

issue() {  # issue LABEL TITLE: open one, or comment on the open one with that label
    local label=$1 title=$2 number
    $GH label create "$label" --color B60205 --description "perfgate nightly" --force >/dev/null
    number=$($GH issue list --label "$label" --state open --json number --jq '.[0].number')
    if [ -n "$number" ]; then
        $GH issue comment "$number" --body-file "$OUT/report.md"
    else
        $GH issue create --title "$title" --label "$label" --body-file "$OUT/report.md"
    fi
}

notify() {
    local code
    code=$(cat "$OUT/exit-code" 2>/dev/null || echo 2)
    if [ ! -f "$OUT/report.md" ]; then
        echo "## perfgate nightly: no report (exit $code); see the job's log" >"$OUT/report.md"
    fi
    case $code in
        1) issue "$REGRESSION_LABEL" "perfgate: nightly regression in $NAME" ;;
        2) issue "$BROKEN_LABEL" "perfgate: the nightly run of $NAME is broken" ;;
        *) echo "exit $code: no issue" ;;
    esac
}

step=${1:-}
[ $# -gt 0 ] && shift
case $step in
    run) [ $# -eq 2 ] || usage; run "$@" ;;
    push) push ;;
    notify) notify ;;
    exit) exit "$(cat "$OUT/exit-code" 2>/dev/null || echo 2)" ;;
    *) usage ;;
esac
