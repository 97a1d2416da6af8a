import json

import pytest

from perfgate.accuracy import (
    BUNDLED_GPQA,
    NO_ANSWER,
    REQUIRED_COLUMNS,
    _SeedPerQuestion,
    extract_answer,
    extract_filter,
    preflight,
    question_seed,
    shuffled_choices,
    task_config,
)
from perfgate.documents.eval import AccuracyError, AccuracySpec


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("The answer is (C).", "C"),
        ("... so the final answer is **B**", "B"),
        ("**Answer: D**", "D"),
        ("Answer: (A)", "A"),
        ("answer: c", "C"),
        ("Therefore \\boxed{C}", "C"),
        ("$\\boxed{(B)}$", "B"),
        ("Comparing (A) and (B), (A) fails. **C**", "C"),
        ("Option (A) is wrong, option (D) is right.", "D"),  # last parenthesised letter
        ("We need B.\nB", "B"),
        ("I think it's (B) but the final answer is (D)", "D"),  # "answer is" beats "(B)"
        ("Looking at (A)... \\boxed{B}. Answer: (C)", "B"),  # boxed is the most explicit
        ("", None),
        (None, None),
        ("no letter here at all", None),
        ("An apple a day", None),  # a word starting with A is not an answer
    ],
)
def test_real_world_answer_shapes(reply, letter):
    assert extract_answer(reply) == letter


def test_filter_maps_to_the_target_shape_and_never_crashes_on_no_answer():
    assert extract_filter([["The answer is (B)", "gibberish"]], [{}]) == [["(B)", NO_ANSWER]]


def test_choice_order_is_fixed_per_question_and_correct_index_tracks_the_answer():
    doc = {
        "Question": "Q?",
        "Correct Answer": "yes",
        "Incorrect Answer 1": "a",
        "Incorrect Answer 2": "b",
        "Incorrect Answer 3": "c",
    }
    first = shuffled_choices(doc, 0)
    assert first == shuffled_choices(doc, 0)  # same for both arms and every repeat
    choices, correct = first
    assert choices[correct] == "yes" and sorted(choices) == ["a", "b", "c", "yes"]
    orders = {tuple(shuffled_choices({**doc, "Question": f"Q{i}"}, 0)[0]) for i in range(40)}
    assert len(orders) > 5  # the position of the right answer varies across questions


def test_bundled_file_has_the_hub_schema():
    rows = [json.loads(line) for line in BUNDLED_GPQA.read_text().splitlines()]
    assert len(rows) >= 20
    assert all(all(col in row for col in REQUIRED_COLUMNS) for row in rows)


def test_preflight_errors_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(AccuracyError, match="does not exist"):
        preflight(AccuracySpec(source="local", path=str(tmp_path / "none.csv")))
    with pytest.raises(AccuracyError, match="--gpqa-path"):
        preflight(AccuracySpec(source="local"))
    bad = tmp_path / "bad.csv"
    bad.write_text("Question,Correct Answer\nq,a\n")
    with pytest.raises(AccuracyError, match="lacks the GPQA columns"):
        preflight(AccuracySpec(source="local", path=str(bad)))
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(AccuracyError, match="gated and no Hugging Face token"):
        preflight(AccuracySpec(source="hub"))
    monkeypatch.setenv("HF_TOKEN", "x")
    assert "Idavidrein/gpqa" in preflight(AccuracySpec(source="hub"))
    with pytest.raises(AccuracyError, match="source must be bundled, local or hub"):
        preflight(AccuracySpec(source="kaggle"))


def test_task_config_points_lm_eval_at_the_right_data():
    local = task_config(AccuracySpec(source="local", path="/d/gpqa.csv"))
    assert local["dataset_path"] == "csv"
    assert local["dataset_kwargs"] == {"data_files": {"train": "/d/gpqa.csv"}}
    hub = task_config(AccuracySpec(source="hub", subset="diamond"))
    assert (hub["dataset_path"], hub["dataset_name"]) == ("Idavidrein/gpqa", "gpqa_diamond")
    assert task_config(AccuracySpec())["dataset_kwargs"]["data_files"]["train"] == str(BUNDLED_GPQA)


def test_credentials_in_the_url_become_a_header_lm_eval_can_send():
    from perfgate.accuracy import auth_header

    assert auth_header("http://h:1", None) == ("http://h:1", None)
    assert auth_header("http://u:p%40ss@h:1/", None) == (
        "http://h:1/",
        {"Authorization": "Basic dTpwQHNz"},  # base64("u:p@ss")
    )
    assert auth_header("http://u:p@h:1", "sk-1") == ("http://h:1", {"Authorization": "Bearer sk-1"})


def test_every_question_gets_a_seed_of_its_own_the_same_in_both_arms_and_reruns():
    class LmEvalModel:  # what lm-eval's local API models build: one seed for every request
        def _create_payload(self, messages, generate=False, gen_kwargs=None, seed=1234):
            return {"prompt": messages, "seed": 3, "max_tokens": 16}

    class Seeded(_SeedPerQuestion, LmEvalModel):
        pass

    model = Seeded()
    q1, q2 = [101, 7, 55], [101, 7, 56]  # token ids of two prompts
    s1, s2 = model._create_payload(q1, True)["seed"], model._create_payload(q2, True)["seed"]
    assert s1 != s2 and s1 == question_seed(3, q1) == Seeded()._create_payload(q1)["seed"]
    assert question_seed(4, q1) != s1  # the next evaluation (k) draws anew
    assert 0 <= s1 < 2**31 and model._create_payload(q1)["prompt"] == q1
    chat = [{"role": "user", "content": "Q?"}]
    assert question_seed(3, chat) == question_seed(3, [{"content": "Q?", "role": "user"}])


def test_without_lm_eval_the_accuracy_phase_says_how_to_install_it(monkeypatch):
    import importlib.util

    import pytest

    from perfgate.accuracy import preflight
    from perfgate.documents.eval import AccuracyError, AccuracySpec

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "lm_eval" else real(n, *a)
    )
    with pytest.raises(AccuracyError, match=r"needs lm-eval.*pip install 'perfgate\[eval\]'"):
        preflight(AccuracySpec())
