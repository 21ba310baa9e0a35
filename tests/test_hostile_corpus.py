"""The corpus of hostile inputs (issue 16; ``benchmarks/hostile_corpus.py`` makes and checks it):
each gives a correct output of everything decodable (ffprobe: frame count and size) or a
one-line ``error: ...`` in words, and leaves nothing half-written in the output folder."""

from __future__ import annotations


import pytest

from conftest import benchmark_module


corpus = benchmark_module("hostile_corpus")


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict:
    return {case.name: case for case in corpus.build_corpus(tmp_path_factory.mktemp("hostile"))}


@pytest.mark.parametrize("name", corpus.NAMES)
def test_hostile_input(name, cases, tiny_weights, tmp_path):
    outcome = corpus.run_case(cases[name], tmp_path / "out", weights=str(tiny_weights))
    assert outcome.passed, outcome.row()
    if outcome.status == 2:
        assert outcome.message.startswith("error: ") and "\n" not in outcome.message
    else:
        assert outcome.frames_out == outcome.frames_in > 0


def test_the_checks_catch_a_broken_contract(cases, tiny_weights, tmp_path):
    """The checker itself: a case expected to give an output that is refused fails it, and so
    does a half-written file left in the output folder."""
    refused = corpus.Case("missing, but expected to work", "x", cases["a missing file"].path, "output")
    outcome = corpus.run_case(refused, tmp_path / "a", weights=str(tiny_weights))
    assert not outcome.passed and any("exit status 2" in p for p in outcome.problems)
    assert corpus.CLASS_NAME.search("error: encode stage failed: InvalidDataError: ...")
    assert not corpus.CLASS_NAME.search("error: cannot open x.mp4: Invalid data found when processing input")


def test_the_output_checks_catch_a_wrong_stream(cases, tiny_weights, tmp_path):
    """An expected ffprobe field the output does not have fails the case (here: the interlaced
    input's output is progressive, not top field first)."""
    wrong = corpus.Case("interlaced, expected interlaced out", "x", cases["interlaced"].path, "output", expect=(("field_order", "tt"),))
    outcome = corpus.run_case(wrong, tmp_path / "b", weights=str(tiny_weights))
    assert outcome.problems == ("field_order progressive, expected tt",)


def test_a_forged_picture_size_is_written_into_the_sps(tmp_path):
    """``claim_picture_size`` changes only the size: the same size gives the same bytes, and
    FFmpeg reads the claimed size back."""
    base = tmp_path / "base.h264"
    corpus._ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=0.12", "-c:v", "libx264", "-profile:v", "baseline", "-f", "h264", str(base))
    data = base.read_bytes()
    assert corpus.claim_picture_size(data, 96, 64) == data
    forged = tmp_path / "forged.h264"
    forged.write_bytes(corpus.claim_picture_size(data, 4096, 2048))
    stream = corpus._probe(forged, "-show_streams")["streams"][0]
    assert (stream["width"], stream["height"]) == (4096, 2048)
