"""The options of ``vsr upscale`` as a user types them: every combination either runs, or ends
with one ``error:`` line and exit status 2 (no traceback, no internal error, nothing written);
and ``--log FILE``, the processing record."""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import tempfile
from pathlib import Path

import av
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ffmpeg
from vsr_pipeline.cli import main

FRAMES = 5


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "in.mp4"
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=s=64x48:r=25:d={FRAMES / 25}", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
    return path


def _vsr(argv: list[str]) -> tuple[int, str]:
    """Run ``vsr`` in this process; its exit status and what it wrote on stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse: a value of the wrong type, an unknown choice
            status = exc.code
    return status, err.getvalue()


def _frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


#: For each option, values that must run (the option left out is always one of them)...
GOOD = {
    "--codec": ["libx264", "libx265", "mpeg4"],
    "--crf": ["0", "18", "51"],
    "--preset": ["ultrafast", "medium"],
    "--format": ["mp4", "matroska"],
    "--backend": ["auto", "onnxruntime", "torch"],
    "--device": ["auto", "cpu"],
    "--window": ["1", "3", "15"],
    "--weights": ["default", "auto"],
    "--mirror": ["auto", "on", "off"],
    "--threads": ["0", "1", "2"],
    "--queue": ["1", "8"],
    "--batch": ["1", "4"],
    "--tile": ["16", "32"],
    "--faces": ["off", "auto"],
    "--face-every": ["1", "7"],
    "--metrics-port": ["0"],
    "--metrics-host": ["127.0.0.1"],
    "--metrics-linger": ["0", "0.05"],
    "--progress": ["auto", "on", "off"],
    "--latency": ["0.5"],
    "--log": ["LOG"],
}
#: ... and values a user may type by mistake (or that need hardware this machine lacks).
BAD = {
    "--scale": ["3", "0", "x"],
    "--codec": ["aac", "", "nosuch"],
    "--crf": ["64", "-1", "x"],
    "--preset": ["nonsense", ""],
    "--format": ["nonsense", ""],
    "--backend": ["tensorrt", "bogus"],
    "--device": ["cuda", "gpu"],
    "--window": ["2", "0", "-1", "17", "100001", "x"],
    "--weights": ["nosuch", "/nonexistent.safetensors", ""],
    "--mirror": ["maybe"],
    "--threads": ["-1", "300", "100000", "x"],
    "--queue": ["0", "-5", "2000", "x"],
    "--batch": ["0", "-1", "65", "x"],
    "--tile": ["0", "30", "8", "100000", "x"],
    "--faces": ["on", "x"],
    "--face-every": ["0", "-3"],
    "--metrics-port": ["-1", "70000", "x"],
    "--metrics-host": ["999.1.1.1"],
    "--metrics-linger": ["-1", "nan", "inf", "1e9", "x"],
    "--progress": ["x"],
    "--latency": ["0", "-1", "nan"],  # live only: a file job may ignore it
    "--log": ["/nonexistent/folder/vsr.log"],
}


@st.composite
def command_lines(draw) -> tuple[list[str], bool]:
    """Options with good values, and at most one bad one; whether a bad one is among them."""
    chosen = {option: draw(st.sampled_from([None, *values])) for option, values in GOOD.items()}
    bad = draw(st.none() | st.sampled_from(sorted(BAD)))
    if bad is not None:
        chosen[bad] = draw(st.sampled_from(BAD[bad]))
    args = [part for option, value in chosen.items() if value is not None for part in (option, value)]
    if draw(st.booleans()):
        args.append("--no-scene-cuts")
    return args, bad is not None


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(command_lines())
def test_every_option_combination_runs_or_is_one_line_error(clip, tiny_weights, tmp_path, drawn):
    args, has_bad = drawn
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    out = folder / "out.mp4"
    args = [str(folder / "vsr.log") if a == "LOG" else a for a in args]
    if "--weights" not in args:
        args += ["--weights", str(tiny_weights)]  # small and fast; the shipped ones are drawn too
    status, err = _vsr(["upscale", str(clip), str(out), *args])
    assert "Traceback" not in err, err
    assert status in ((0, 2) if has_bad else (0,)), f"exit status {status} (1: an internal error): {args}\n{err}"
    if status == 0:
        assert _frames(out) == FRAMES, args
        return
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "usage:" not in err, f"{args}\n{err}"
    assert not re.search(r"\b[A-Z][a-z]+(Error|Exception)\b", errors[0]), errors  # words, not a class name
    assert not out.exists() and not list(folder.glob(".*partial*")), list(folder.iterdir())


@pytest.mark.parametrize(
    "args, words",
    [
        (["--threads", "100000"], "--threads 100000: must be from 0"),
        (["--threads", "-1"], "--threads -1: must be from 0"),
        (["--metrics-port", "0", "--metrics-linger", "inf"], "--metrics-linger inf: must be from 0 to 3600"),
        (["--metrics-linger", "-1"], "--metrics-linger -1.0"),
        (["--window", "100001"], "--window 100001: must be an odd number from 1 to 15"),
        (["--queue", "1000000000"], "--queue 1000000000: must be from 1 to 1024"),
    ],
)
def test_values_that_used_to_hang_or_crash_are_refused(clip, tiny_weights, tmp_path, args, words):
    """Found by the test above: 100000 threads took 16 GB and hung, an infinite linger crashed
    after the run (exit 1), a huge window ran out of memory (exit 1), a huge queue is no bound."""
    status, err = _vsr(["upscale", str(clip), str(tmp_path / "out.mp4"), "--weights", str(tiny_weights), *args])
    assert status == 2 and f"error: {words}" in err, err
    assert not list(tmp_path.iterdir())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_log_file_is_a_processing_record(clip, tiny_weights, tmp_path):
    log = tmp_path / "case-0042.log"
    out = tmp_path / "out.mp4"
    argv = ["upscale", str(clip), str(out), "--weights", str(tiny_weights), "--backend", "onnxruntime", "--device", "cpu", "--log", str(log)]
    status, err = _vsr(argv)
    assert status == 0, err
    lines = log.read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} "
    assert all(re.match(stamp, line) for line in lines), lines
    text = [re.sub(f"^{stamp}", "", line) for line in lines]
    assert text[0].startswith("vsr upscale RunOptions(") and "crf=18" in text[0] and "window=None" in text[0]
    assert f"input: {clip} sha256:{_sha256(clip)}" in text
    assert f"output: {out} sha256:{_sha256(out)}" in text
    assert any(t.startswith("backend: onnxruntime on cpu") for t in text), text
    assert any(t.startswith(f"upscaled {FRAMES} frames 64x48 -> 128x96") for t in text), text
    assert all(line in text for line in err.splitlines()), "every line shown on stderr is in the record"
    # a second run is appended; its error ends the record
    status, err = _vsr(["upscale", str(tmp_path / "missing.mp4"), str(tmp_path / "o.mp4"), "--log", str(log)])
    assert status == 2
    after = log.read_text().splitlines()
    assert after[: len(lines)] == lines and after[-1].endswith(f"error: input not found: {tmp_path / 'missing.mp4'}")


def test_log_file_that_cannot_be_written_is_one_line_error(clip, tiny_weights, tmp_path):
    status, err = _vsr(["upscale", str(clip), str(tmp_path / "out.mp4"), "--log", str(tmp_path), "--weights", str(tiny_weights)])
    assert status == 2 and err.strip().startswith(f"error: --log {tmp_path}: cannot write it") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out.mp4").exists()
