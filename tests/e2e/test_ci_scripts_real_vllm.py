"""The CI jobs as the example workflows run them: ci/nightly.sh and ci/pr.sh on CPU vLLM, in a
GitHub-Actions-like environment (GITHUB_STEP_SUMMARY, GITHUB_OUTPUT, a local git remote for the
history branch, and a stand-in `gh` on PATH that records what would have been posted).

The nightly job: the first night records the baseline (exit 0, said in the summary); a history
of real earlier nights (tests/fixtures/nightly) is followed by real nights of a build that
regressed: pending (exit 3), then regressed (exit 1) naming when it began, an issue opened and
updated on the next night; an invalid night opens a "nightly broken" issue; a history push that
races is rebased and retried, one that keeps failing fails the job. The PR job: a comparison,
its comment, and a second push that updates the same comment (here: a job cancelled before
its report)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from perfgate.documents.nightly import Baseline
from tests.e2e.conftest import ROOT, cpu_server_env, perfgate, vllm_processes

SCENARIO = str(ROOT / "tests" / "e2e" / "nightly-cpu.toml")
FIXTURE = ROOT / "tests" / "fixtures" / "nightly" / "history-7-nights.jsonl"
NIGHTLY = str(ROOT / "ci" / "nightly.sh")
PR = str(ROOT / "ci" / "pr.sh")
SLOW = "--candidate-arg=--max-num-seqs=2"


class Actions:
    """A job's environment: files GitHub Actions provides, `gh` on PATH, a history remote."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        gh = bin_dir / "gh"
        gh.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT}/tests/gh_standin.py" "$@"\n')
        gh.chmod(0o755)
        self.gh_state = tmp / "gh.json"
        self.summary = tmp / "summary.md"
        self.output = tmp / "output.txt"
        self.remote = tmp / "remote.git"
        self.history = tmp / "history"
        git("init", "-q", "--bare", str(self.remote))
        seed = tmp / "seed"
        git("clone", "-q", str(self.remote), str(seed))
        subprocess.run(  # README's one-time set-up of the history branch, word for word
            ["bash", "-c", readme_block("branch once, empty:")],
            cwd=seed,
            check=True,
            capture_output=True,
            env={**os.environ, **IDENTITY},
        )
        git("clone", "-q", "-b", "perfgate-history", str(self.remote), str(self.history))
        self.env = {
            **os.environ,
            **cpu_server_env(),
            "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
            "GH_STATE": str(self.gh_state),
            "GITHUB_STEP_SUMMARY": str(self.summary),
            "GITHUB_OUTPUT": str(self.output),
            "PERFGATE_HISTORY": str(self.history),
            "PERFGATE_OUT": str(tmp / "out"),
            "PERFGATE_SCENARIO": SCENARIO,
            "PERFGATE_PUSH_TRIES": "2",
            "PERFGATE_ACCURACY": "never",  # the nights that answer GPQA say so
        }

    def run(self, script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [script, *args],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=self.tmp,
            env={**self.env, **env},
        )

    def night(self, commit: str, *extra: str, accuracy: str = "never") -> int:
        """One night: run, push, notify; the gate's exit code. ``accuracy``: the schedule
        (PERFGATE_ACCURACY)."""
        shutil.rmtree(self.tmp / "out", ignore_errors=True)
        proc = self.run(
            NIGHTLY,
            "run",
            sys.executable,
            commit,
            PERFGATE_ARGS=" ".join(extra),
            PERFGATE_ACCURACY=accuracy,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
        self.last = proc.stdout + proc.stderr[-3000:]
        for step in ("push", "notify"):
            done = self.run(NIGHTLY, step)
            assert done.returncode == 0, done.stdout + done.stderr
        return int((self.tmp / "out" / "exit-code").read_text())

    def gh(self) -> dict:
        return json.loads(self.gh_state.read_text()) if self.gh_state.exists() else {}


IDENTITY = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}


def readme_block(after: str) -> str:
    """The README's fenced block that follows the words ``after``."""
    text = (ROOT / "README.md").read_text()
    rest = text[text.index(after) :]
    block = rest[rest.index("```") + 3 :]
    return block[block.index("\n") + 1 : block.index("```")].replace("\\\n", " ")


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def test_the_nightly_job_as_the_workflow_runs_it(tiny_model, tmp_path):
    before = vllm_processes()
    job = Actions(tmp_path)
    baseline = job.history / "nightly-cpu.baseline.json"

    # first night: no baseline yet, so the build is measured against itself and recorded,
    # with its GPQA answers for the accuracy nights
    assert job.night("aa0", accuracy="Sun") == 0, job.last
    assert "no baseline in" in job.summary.read_text()
    assert "Baseline recorded" in job.summary.read_text()
    stored = json.loads(baseline.read_text())
    assert stored["schema"] == "perfgate.baseline/1"
    assert all(len(m["per_start"]) == 2 for m in stored["metrics"].values())
    assert stored["accuracy"]["spec"]["limit"] == 12
    assert len(stored["accuracy"]["arm"]["correct"]) == 12
    assert "nightly-cpu.baseline.json" in git("ls-tree", "-r", "--name-only", "perfgate-history",
                                              cwd=job.remote)  # fmt: skip
    assert job.output.read_text().splitlines()[-1] == "exit=0"

    # the same baseline on another machine is refused before any server starts
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**stored, "machine": {**stored["machine"], "cpu": "Elsewhere"}}))
    unused = tmp_path / "unused.jsonl"
    proc = perfgate("gate", "--scenario", SCENARIO, "--baseline", str(other),
                    "--history", str(unused), "--out-dir", str(tmp_path / "x"))  # fmt: skip
    assert proc.returncode == 2
    assert "recorded on another machine or scenario (cpu: the baseline has 'Elsewhere'" in (
        proc.stderr
    )
    assert not unused.exists()

    # an unchanged night on the accuracy schedule: appended and pushed, no issue, GPQA judged
    # per question against the baseline's answers. (On this CPU a start's TPOT varies by ~28%,
    # so one night alone may still read worse than the 25% tolerance: exit 3, pending.)
    code = job.night("aa1", "--date", "2026-11-01", accuracy="always")
    assert code in (0, 3), job.last
    if code == 3:  # pending (one night is no established level), or answers that flipped on
        # this CPU leaving 12 questions unable to rule out a drop
        reasons = ("pending:", "cannot rule out a drop")
        assert any(r in job.last for r in reasons), job.last
    assert git("show", "perfgate-history:nightly-cpu.jsonl", cwd=job.remote).count("\n") == 1
    # the night names the baseline its ratios are relative to (a new recording starts afresh)
    (first,) = (job.history / "nightly-cpu.jsonl").read_text().splitlines()
    assert json.loads(first)["reference"] == Baseline.from_json(stored, "b").identity
    assert job.gh().get("issues", []) == []
    assert "Tonight is on the accuracy schedule" in job.summary.read_text()
    judged = json.loads((tmp_path / "out" / "results.json").read_text())["accuracy"]
    assert judged["comparison"]["n_questions"] == 12
    assert judged["arms"]["baseline"] == stored["accuracy"]["arm"]  # the stored answers
    assert "accuracy" in (tmp_path / "out" / "report.md").read_text().lower()
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    assert "accuracy" in [c.get("name") for c in suite.iter("testcase")]

    # six unchanged nights, then the first with --max-num-seqs=2 (real runs: the fixture, from
    # before nights kept their comparison's standard error, so night 7 could not fail at once)
    shutil.copy(FIXTURE, job.history / "nightly-cpu.jsonl")
    code8 = job.night("reg8", SLOW, "--date", "2026-11-08")
    report = (tmp_path / "out" / "report.md").read_text()
    # requests queue for 2 slots: TTFT grows tenfold, certainly beyond twice its 50%
    # tolerance on most nights (exit 1 at once); else pending, 2 of the 3 nights
    assert code8 in (1, 3), job.last
    if code8 == 1:
        assert "fails the night it is seen" in report and "from night 7 (2026-11-07)" in report
    else:
        assert "⏳ **pending**" in report and "of the 3 nights needed" in report
        assert job.gh().get("issues", []) == []
    assert job.night("reg9", SLOW, "--date", "2026-11-09") == 1, job.last
    report = (tmp_path / "out" / "report.md").read_text()
    assert "❌ **regressed**" in report
    assert "from night 7 (2026-11-07)" in report and "Bisect `aa6..reg7`." in report
    assert (tmp_path / "out" / "trend-median_ttft_ms.png").read_bytes().startswith(b"\x89PNG")
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed and "median_ttft_ms" in failed  # requests queue for 2 slots: TTFT grows
    (issue,) = job.gh()["issues"]
    assert (
        issue["labels"] == ["perfgate-regression"] and "perfgate-regression" in job.gh()["labels"]
    )
    assert "nightly regression in nightly-cpu" in issue["title"]
    assert len(issue["comments"]) == (1 if code8 == 1 else 0)  # opened on the first failure
    # the next failing night comments on the open issue (notify alone: the run is the same)
    assert job.run(NIGHTLY, "notify").returncode == 0
    (issue,) = job.gh()["issues"]  # the same issue, updated
    assert len(issue["comments"]) == (2 if code8 == 1 else 1)
    assert "regressed" in issue["comments"][-1]
    nights = (job.history / "nightly-cpu.jsonl").read_text().splitlines()
    assert len(nights) == 9
    pushed = git("show", "perfgate-history:nightly-cpu.jsonl", cwd=job.remote).splitlines()
    assert pushed == nights

    # an invalid night (the candidate's server cannot start): a "nightly broken" issue
    assert job.night("bad10", "--candidate-arg=--no-such-flag", "--date", "2026-11-10") == 2
    broken = [i for i in job.gh()["issues"] if i["labels"] == ["perfgate-nightly-broken"]]
    assert len(broken) == 1 and "is broken" in broken[0]["title"]
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    assert int(suite.get("errors")) >= 1  # JUnit on exit 2 too
    assert vllm_processes() - before == set()

    # a push that races another job's is rebased and retried
    other_clone = tmp_path / "other-clone"
    git("clone", "-q", "-b", "perfgate-history", str(job.remote), str(other_clone))
    (other_clone / "other.txt").write_text("another job's night\n")
    git("add", "other.txt", cwd=other_clone)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "race", cwd=other_clone)
    git("push", "-q", "origin", "HEAD", cwd=other_clone)
    (job.history / "nightly-cpu.jsonl").write_text("\n".join(nights) + "\n")
    with (job.history / "nightly-cpu.jsonl").open("a") as f:
        f.write(nights[-1] + "\n")
    raced = job.run(NIGHTLY, "push")
    assert raced.returncode == 0 and "rebasing" in raced.stderr, raced.stdout + raced.stderr
    files = git("ls-tree", "-r", "--name-only", "perfgate-history", cwd=job.remote).split()
    assert "other.txt" in files and len(git("show", "perfgate-history:nightly-cpu.jsonl",
                                            cwd=job.remote).splitlines()) == 10  # fmt: skip

    # a remote that refuses every push: the job fails, and says the night is not kept
    hook = job.remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho protected >&2\nexit 1\n")
    hook.chmod(0o755)
    with (job.history / "nightly-cpu.jsonl").open("a") as f:
        f.write(nights[-1] + "\n")
    refused = job.run(NIGHTLY, "push")
    assert refused.returncode == 1
    assert "could not be pushed after 2 tries" in job.summary.read_text()


def test_the_pr_job_comments_once_and_updates_its_comment(tiny_model, tmp_path):
    before = vllm_processes()
    job = Actions(tmp_path)
    out = tmp_path / "out"
    proc = job.run(PR, "compare", sys.executable, sys.executable, PERFGATE_ARGS="--starts 1")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    code = int((out / "exit-code").read_text())
    assert code == 3  # one start per arm: start-to-start variation unsampled
    assert (out / "junit.xml").exists() and (out / "report.md").exists()
    assert job.run(PR, "exit").returncode == code
    posted = job.run(PR, "comment", "7")
    assert posted.returncode == 0, posted.stderr
    (comment,) = job.gh()["comments"]
    assert comment["pr"] == 7 and comment["body"].startswith("<!-- perfgate-pr-comment -->")
    assert "## perfgate: nightly-cpu" in comment["body"]
    assert "Accuracy skipped: no HF_TOKEN secret" in comment["body"]

    # the next push's job is cancelled before it writes a report: the same comment says so
    shutil.rmtree(out)
    again = job.run(PR, "comment", "7", "cancelled")
    assert again.returncode == 0 and "updated comment 1000" in again.stdout, again.stderr
    (comment,) = job.gh()["comments"]
    assert comment["edits"] == 1 and "before a report was written" in comment["body"]
    assert "Job status: cancelled." in comment["body"]
    assert job.run(PR, "exit").returncode == 2
    assert vllm_processes() - before == set()
