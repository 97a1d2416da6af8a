from tests.reliability_doc import DOC, render


def test_docs_reliability_md_says_what_the_cases_test():
    assert DOC.read_text() == render(), "run: python -m tests.reliability_doc"
