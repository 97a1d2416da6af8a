"""The accuracy gate on a model that answers (``perfgate.testmodels.taught``): CPU vLLM serves the
tiny model taught the bundled questions (right ~70% of the time at temperature 1) and a copy
with noise on one layer (~40%); real lm-eval asks, perfgate extracts, pairs and decides.

A/A (the taught model against itself) must not regress; A/B (the damaged copy) must regress,
with the per-question table and the extraction counts, through ``perfgate eval`` (questions
from a CSV file the test writes in the hub's schema) and through ``perfgate compare`` (the
candidate arm serving its own weights, ``[arms.candidate] model``). The tolerance (15 pp) sits
below the damage (~23 pp) by about three standard errors of what 24 questions x 8 seeds
resolve: the same rows judged with a tolerance above the drop must not regress (the margin rule
is what decides).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from perfgate.accuracy import BUNDLED_GPQA, REQUIRED_COLUMNS
from perfgate.decide.accuracy import compare_arms
from perfgate.documents.eval import AccuracySpec, ArmAccuracy
from perfgate.serve.server import ServerSpec, VllmServer
from perfgate.testmodels import taught
from tests.e2e.conftest import MAX_MODEL_LEN, cpu_server_env, perfgate

K, MAX_DROP = 8, 0.15
# float32: the models were taught and damaged in float32, their accuracies computed there
SERVE_ARGS = ("--enforce-eager", "--max-model-len", str(MAX_MODEL_LEN), "--dtype", "float32")
SAMPLING = ("--k", str(K), "--temperature", "1.0", "--max-tokens", "16")


@pytest.fixture(scope="module")
def models(tiny_model: Path) -> tuple[Path, Path]:
    good = taught.build_taught(tiny_model, tiny_model.parent / "taught-model")
    bad = taught.build_degraded(good, tiny_model.parent / "taught-model-degraded")
    return good, bad


@pytest.fixture(scope="module")
def servers(models, tmp_path_factory):
    logs = tmp_path_factory.mktemp("taught-servers")
    specs = [
        ServerSpec(
            name=name,
            model=str(path),
            served_model_name="tiny",
            log_path=logs / f"{name}.log",
            serve_args=SERVE_ARGS,
            env=cpu_server_env(),
            startup_timeout_s=300,
        )
        for name, path in zip(("taught", "damaged"), models, strict=True)
    ]
    with VllmServer(specs[0]) as good, VllmServer(specs[1]) as bad:
        yield good.url, bad.url


def eval_json(out: Path) -> dict:
    return json.loads(out.read_text())["accuracy"]


def test_the_taught_model_and_its_damaged_copy_are_what_they_claim(models):
    facts = taught.facts(models[0])
    assert 0.6 < facts["expected_accuracy"] < 0.8 and facts["least_likely_fixed_token"] > 0.99
    damaged = taught.facts(models[1])
    assert damaged["expected_accuracy"] == pytest.approx(taught.DEGRADED_ACCURACY, abs=0.01)


def test_a_a_on_the_taught_model_is_no_change(servers, tmp_path):
    good, _ = servers
    out = tmp_path / "aa.json"
    proc = perfgate(
        "eval", "--url", good, "--candidate-url", good, *SAMPLING,
        "--max-drop", str(MAX_DROP), "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    acc = eval_json(out)
    base = ArmAccuracy(**acc["arms"]["baseline"])
    assert base.no_answer == 0  # every reply has an answer the extractor finds
    assert 0.45 < base.accuracy < 0.85, base.accuracy  # well away from 0% and 100%
    per_seed = [sum(r[s] for r in base.correct) / len(base.correct) for s in range(K)]
    assert len(set(per_seed)) > 1, per_seed  # the seeds draw different replies
    mixed = [r for r in base.correct if 0 < sum(r) < K]
    assert len(mixed) >= len(base.correct) // 2  # questions are draws, not fixed outcomes
    c = acc["comparison"]
    assert c["verdict"] == "no change" and c["diff"] == 0.0  # same server, same seeds
    assert "no change" in proc.stdout


def test_a_b_with_the_damaged_copy_regresses_from_a_local_gpqa_file(servers, tmp_path):
    good, bad = servers
    questions = tmp_path / "gpqa.csv"  # the bundled questions as a CSV in the hub's schema
    rows = [json.loads(line) for line in BUNDLED_GPQA.read_text().splitlines() if line.strip()]
    with questions.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["Record ID", *REQUIRED_COLUMNS])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in writer.fieldnames})
    out = tmp_path / "ab.json"
    proc = perfgate(
        "eval", "--url", good, "--candidate-url", bad, "--gpqa-path", str(questions),
        *SAMPLING, "--max-drop", str(MAX_DROP), "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    acc = eval_json(out)
    assert acc["arms"]["baseline"]["source"].startswith(f"local file {questions}")
    base, cand = (ArmAccuracy(**acc["arms"][a]) for a in ("baseline", "candidate"))
    assert len(base.questions) == len(rows) and base.questions == cand.questions
    c = acc["comparison"]
    assert c["verdict"] == "regressed" and c["p_margin"] < 0.05
    assert c["diff"] < -MAX_DROP and c["diff_high"] < 0
    assert cand.accuracy < base.accuracy - 0.15 and base.no_answer == 0
    assert "regressed" in proc.stdout and "Per question (paired)" in proc.stdout
    assert f"Replies with no extractable answer: baseline 0, candidate {cand.no_answer}" in (
        " ".join(proc.stdout.split())
    )
    # The margin decides: the same rows with a tolerance above the drop do not regress.
    spec = AccuracySpec(k=K, temperature=1.0, max_drop=-c["diff"] + 0.10)
    assert compare_arms(base, cand, spec).verdict != "regressed"


def test_a_gpqa_file_with_a_bad_row_is_refused_before_any_question_is_asked(servers, tmp_path):
    good, _ = servers
    bad_file = tmp_path / "gpqa.jsonl"
    good_row = json.loads(BUNDLED_GPQA.read_text().splitlines()[0])
    bad_file.write_text(
        json.dumps(good_row) + "\n" + json.dumps({**good_row, "Correct Answer": " "}) + "\n"
    )
    proc = perfgate("eval", "--url", good, "--gpqa-path", str(bad_file), "--k", "1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "row 2 has empty ['Correct Answer']; fill or remove the row" in proc.stderr
    assert not (Path.cwd() / "eval-baseline").exists()


def test_compare_catches_the_damaged_weights_of_the_candidate_arm(models, tmp_path):
    good, bad = models
    scenario = tmp_path / "taught.toml"
    scenario.write_text(
        f"""
name = "taught-ab"
model = "{good}"
served_model_name = "tiny"
[server]
args = {json.dumps(list(SERVE_ARGS))}
env = {{ VLLM_CPU_KVCACHE_SPACE = "1", VLLM_CPU_OMP_THREADS_BIND = "0" }}
colocate = true
[workload]
num_prompts = 4
input_len = 32
output_len = 8
num_warmups = 2
[compare]
starts = 1
[accuracy]
k = {K}
temperature = 1.0
max_tokens = 16
max_drop = 0.10
[arms.baseline]
[arms.candidate]
model = "{bad}"
"""
    )
    run_dir = tmp_path / "run"
    proc = perfgate("compare", "--scenario", str(scenario), "--out-dir", str(run_dir))
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    doc = json.loads((run_dir / "results.json").read_text())
    assert doc["verdict"] == "regressed"
    assert doc["scenario"]["arms"]["candidate"]["model"] == str(bad)
    argv = doc["arms"]["candidate"]["servers"][0]["argv"]
    assert str(bad) in argv and str(good) not in argv  # served in place of the scenario's
    # accuracy shares Holm's family with the 5 gated speed metrics: at k = 4 its p_margin of
    # 0.008 came out 0.045 after adjustment, too near 0.05; at k = 8 it is ~1e-4
    c = doc["accuracy"]["comparison"]
    assert c["verdict"] == "regressed" and c["diff"] < -0.10 and c["p_adjusted"] < 0.01
    report = (run_dir / "report.md").read_text()
    assert "| accuracy |" in report and "Per question (paired): the candidate did worse" in report
    assert "| question | correct | baseline right | candidate right |" in report
    assert "Replies with no extractable answer: baseline 0, candidate" in report
