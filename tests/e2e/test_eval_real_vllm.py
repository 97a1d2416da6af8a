"""``perfgate eval``: GPQA through real lm-eval against the real CPU vLLM."""

from __future__ import annotations

import json

from tests.e2e.conftest import perfgate


def test_eval_one_server_writes_per_question_rows(vllm_server, tmp_path):
    out = tmp_path / "eval.json"
    proc = perfgate(
        "eval",
        "--url",
        vllm_server.url,
        "--k",
        "2",
        "--limit",
        "6",
        "--max-tokens",
        "8",
        "--temperature",
        "1.0",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    arm = doc["accuracy"]["arms"]["baseline"]
    assert len(arm["questions"]) == 6 and [len(r) for r in arm["correct"]] == [2] * 6
    assert {s["repeat"] for s in arm["samples"]} == {0, 1}
    assert "Accuracy" in proc.stdout
    # lm-eval's progress bars and log lines go to the arm's log, perfgate's progress to the
    # terminal
    lm_eval_log = (tmp_path / "eval-baseline" / "lm-eval.log").read_text()
    assert "Requesting API" in lm_eval_log
    for noise in ("Requesting API", "generation_kwargs", "lm_eval", "%|"):
        assert noise not in proc.stdout + proc.stderr, noise
    assert "[baseline] run 1/2 done" in proc.stderr and "[baseline] run 2/2 done" in proc.stderr


def test_eval_two_servers_are_compared_question_by_question(vllm_server, tmp_path):
    out = tmp_path / "eval2.json"
    proc = perfgate(
        "eval",
        "--url",
        vllm_server.url,
        "--candidate-url",
        vllm_server.url,
        "--k",
        "1",
        "--limit",
        "6",
        "--max-tokens",
        "8",
        "--out",
        str(out),
    )
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr[-3000:]
    c = json.loads(out.read_text())["accuracy"]["comparison"]
    assert c["n_questions"] == 6 and c["test"].startswith("exact McNemar")
    # greedy decoding twice on one server: the same answers, so no difference at all
    assert c["diff"] == 0.0
