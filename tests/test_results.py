import json
import math

import pytest

from perfgate.documents.io import ResultError, read_json, write_json


def test_nan_is_written_as_null_and_the_file_is_strict_json(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"schema": "perfgate.bench/1", "x": math.nan, "y": [1.5, math.inf]})
    doc = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert doc == {"schema": "perfgate.bench/1", "x": None, "y": [1.5, None]}
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_reading_rejects_broken_and_foreign_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ResultError, match="not valid JSON"):
        read_json(bad)
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"schema": "other/1"}')
    with pytest.raises(ResultError, match="not a perfgate result"):
        read_json(foreign)


def test_stored_h200_results_read_back_typed_through_the_one_migration():
    """Files written by perfgate 0.1.0 on an H200 (records with 'extra', repeats without
    'start') become typed repeats and recompute without a patch anywhere else."""
    import lzma
    from pathlib import Path

    from perfgate.decide.judge import recompute
    from perfgate.documents.run import Repeat, migrate

    files = sorted((Path(__file__).resolve().parents[1] / "docs/gpu/results").glob("*.json.xz"))
    assert len(files) >= 5
    for path in files:
        doc = json.loads(lzma.decompress(path.read_bytes()))
        migrated = migrate(doc)
        for arm in ("baseline", "candidate"):
            repeats = [Repeat.from_json(r) for r in migrated["arms"][arm]["repeats"]]
            assert all(r.start is not None and r.records for r in repeats), path
    again, was = recompute(
        json.loads(lzma.decompress(min(files, key=lambda p: p.stat().st_size).read_bytes()))
    )
    assert was.perfgate_version and again.comparison


def test_reading_a_damaged_document_names_the_missing_key():
    from perfgate.documents.bench import BenchResult
    from perfgate.documents.io import ResultError

    with pytest.raises(ResultError, match="bench result: missing key 'server'"):
        BenchResult.from_json({"config": {"url": "http://x"}, "records": [], "metrics": {}})


def test_a_compare_document_round_trips_through_its_types():
    from perfgate.documents.run import CompareRun
    from tests.test_markdown import run_doc

    doc = json.loads(json.dumps(run_doc(4.0, starts={"baseline": [0, 1], "candidate": [0, 1]})))
    again = json.loads(json.dumps(CompareRun.from_json(doc).to_json()))
    assert again == doc


def test_an_eval_document_round_trips_through_its_types():
    from perfgate.decide.accuracy import compare_arms
    from perfgate.documents.eval import AccuracySpec, ArmAccuracy, EvalRun

    arms = {
        a: ArmAccuracy("bundled", "perfgate_gpqa", 2, ["q1", "q2"], [[1, 0], [c, 1]])
        for a, c in (("baseline", 1), ("candidate", 0))
    }
    run = EvalRun(
        AccuracySpec(),
        arms,
        compare_arms(arms["baseline"], arms["candidate"], AccuracySpec(max_drop=0.05)),
    )
    doc = json.loads(json.dumps(run.to_json()))
    assert json.loads(json.dumps(EvalRun.from_json(doc).to_json())) == doc


def test_stored_results_are_read_compressed_too(tmp_path):
    import gzip
    import lzma

    doc = {"schema": "perfgate.bench/1", "x": 1}
    for suffix, pack in ((".xz", lzma.compress), (".gz", gzip.compress)):
        path = tmp_path / f"r.json{suffix}"
        path.write_bytes(pack(json.dumps(doc).encode()))
        assert read_json(path) == doc
    broken = tmp_path / "broken.json.xz"
    broken.write_bytes(lzma.compress(b"{}")[:-8])
    with pytest.raises(ResultError, match="a damaged compressed file"):
        read_json(broken)
    # a gzip header over a damaged deflate stream (zlib's own error, not an OSError)
    garbled = tmp_path / "garbled.json.gz"
    packed = bytearray(gzip.compress(json.dumps(doc).encode() * 50))
    packed[12:40] = b"\xff" * 28
    garbled.write_bytes(bytes(packed))
    with pytest.raises(ResultError, match="a damaged compressed file"):
        read_json(garbled)


def test_no_writer_follows_or_replaces_a_planted_link(tmp_path):
    """results.json, report.md, JUnit and pictures all go through ``replacing``: a link (or
    a FIFO) at the path is refused and what it points to is untouched."""
    import os

    import pytest

    from perfgate.documents.io import replacing, write_json, write_text_private

    victim = tmp_path / "victim"
    victim.write_text("theirs")
    (tmp_path / "r.json").symlink_to(victim)
    (tmp_path / "report.md").symlink_to(victim)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError, match="a symbolic link"):
        write_json(tmp_path / "r.json", {"schema": "perfgate.bench/1"})
    with pytest.raises(OSError, match="a symbolic link"):
        write_text_private(tmp_path / "report.md", "x")
    with pytest.raises(OSError, match="not a regular file"), replacing(tmp_path / "fifo"):
        pass
    assert victim.read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "r.json", "report.md", "victim"]
    write_text_private(tmp_path / "new.md", "ours")  # a plain path: written, owner-only
    assert (tmp_path / "new.md").read_text() == "ours"
    assert (tmp_path / "new.md").stat().st_mode & 0o777 == 0o600


def test_a_decompression_bomb_and_deep_nesting_are_refused_with_a_message(tmp_path):
    import gzip
    import lzma

    import pytest

    from perfgate.documents.io import read_json, unpacked

    bomb = gzip.compress(b"0" * 5_000_000)  # ~5 KB that would be 5 MB
    with pytest.raises(ValueError, match="decompresses to more than"):
        unpacked(bomb, most=1_000_000)
    assert len(unpacked(bomb)) == 5_000_000  # under the real cap: read
    with pytest.raises(ValueError, match="cut short"):
        unpacked(lzma.compress(b"x" * 1000)[:-20])
    deep = tmp_path / "deep.json"
    deep.write_text('{"schema": "perfgate.bench/1", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ResultError, match=r"nested too deeply|not valid JSON"):
        read_json(deep)
