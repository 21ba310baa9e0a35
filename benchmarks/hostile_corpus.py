"""A corpus of hostile inputs for ``vsr upscale``, made here with FFmpeg, and what each gives.

    python benchmarks/hostile_corpus.py [--weights auto] [--out DIR]

Every case must end one of two ways: a correct output of everything decodable (exit status 0,
or 3 where the input was damaged: the output's frame count equals what FFmpeg's own decoder gets
from the input, its size is x2 the first picture's), or a one-line ``error: ...`` in words (exit
status 2; no traceback, no Python exception class name). Either way nothing half-written is left
in the output folder. Prints a Markdown table of the cases and outcomes (the one in
``benchmarks/RESULTS.md``); ``tests/test_hostile_corpus.py`` runs the same corpus.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

VSR = [sys.executable, "-m", "vsr_pipeline"]
TS_PACKET = 188
#: The cases :func:`build_corpus` makes, in order.
NAMES = (
    "zero-length", "random bytes", "text as .mp4", "audio only", "truncated MP4 (index at the end)", "truncated MP4 (index first)",
    "truncated MPEG-TS", "bit-flipped packets", "resolution change", "single frame", "1x1", "3x5", "10-bit", "4:2:2", "a directory",
    "a missing file",
)
#: A Python exception class name in a message (``InvalidDataError``, ``RuntimeError``, ...).
CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception|Warning)\b")


@dataclass(frozen=True)
class Case:
    """One hostile input.

    Attributes:
        name: short name (the table's first column).
        what: what it is, in words.
        path: the input.
        outcome: ``output`` (a correct output expected: exit 0 or 3), ``damaged`` (an output
            expected, exit 3), or ``error`` (a one-line refusal expected: exit 2).
        mentions: for errors, words the message must contain.
        suffix: the output's extension.
    """

    name: str
    what: str
    path: Path
    outcome: str
    mentions: str = ""
    suffix: str = ".mp4"


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True, capture_output=True)


def _clip(path: Path, *, size: str = "96x64", seconds: float = 1.0, pix_fmt: str = "yuv420p", codec: str = "libx264", audio: bool = True, extra: tuple[str, ...] = ()) -> Path:
    args = ["-f", "lavfi", "-i", f"testsrc2=s={size}:r=25:d={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=f=440:d={seconds}", "-c:a", "aac", "-shortest"]
    _ffmpeg(*args, "-c:v", codec, "-pix_fmt", pix_fmt, *extra, str(path))
    return path


def scramble_ts(src: Path, dst: Path, *, seed: int, packets: int, skip: int = 10) -> None:
    """Copy an MPEG-TS file scrambling the payload (bytes 4..187) of ``packets`` transport packets
    past the first ``skip`` (headers intact: the demuxer finds the packets, the decoders meet the damage)."""
    data = bytearray(src.read_bytes())
    rng = random.Random(seed)
    for k in rng.sample(range(skip, len(data) // TS_PACKET), packets):
        for j in range(k * TS_PACKET + 4, (k + 1) * TS_PACKET):
            data[j] ^= rng.randrange(1, 256)
    dst.write_bytes(bytes(data))


def build_corpus(folder: Path) -> list[Case]:
    """Make every hostile input in ``folder`` (a few seconds of FFmpeg on two cores)."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    add = cases.append

    empty = folder / "zero_length.mp4"
    empty.write_bytes(b"")
    add(Case("zero-length", "an empty file named .mp4", empty, "error", "cannot open"))

    noise = folder / "random_bytes.mp4"
    noise.write_bytes(random.Random(16).randbytes(64 * 1024))
    add(Case("random bytes", "64 KiB of random bytes named .mp4", noise, "error"))

    text = folder / "notes.mp4"
    text.write_text("this is not a video, only some text renamed to .mp4\n" * 40)
    add(Case("text as .mp4", "a text file named .mp4", text, "error", "cannot open"))

    audio = folder / "audio_only.m4a"
    _ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=1", "-c:a", "aac", str(audio))
    add(Case("audio only", "AAC in MP4, no video stream", audio, "error", "no video stream"))

    whole = _clip(folder / "whole.mp4", seconds=2.0)
    moov_end = folder / "truncated_moov_at_end.mp4"
    moov_end.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    add(Case("truncated MP4 (index at the end)", "first half of an MP4 whose index (moov) was at the end: nothing is decodable", moov_end, "error", moov_end.name))

    fast = folder / "whole_faststart.mp4"
    _ffmpeg("-i", str(whole), "-c", "copy", "-movflags", "+faststart", str(fast))
    cut_mp4 = folder / "truncated_faststart.mp4"
    cut_mp4.write_bytes(fast.read_bytes()[: fast.stat().st_size * 3 // 5])
    add(Case("truncated MP4 (index first)", "first 60 % of a faststart MP4 (H.264 + AAC)", cut_mp4, "damaged"))

    ts = _clip(folder / "clean.ts", seconds=1.0)
    cut_ts = folder / "truncated.ts"
    cut_ts.write_bytes(ts.read_bytes()[: ts.stat().st_size // 2 + 77])
    add(Case("truncated MPEG-TS", "first half of an MPEG-TS (H.264 + AAC), cut inside a transport packet", cut_ts, "damaged"))

    flipped = folder / "bit_flipped.ts"
    scramble_ts(ts, flipped, seed=1, packets=6)
    add(Case("bit-flipped packets", "MPEG-TS with the payload of 6 transport packets scrambled (video and audio)", flipped, "damaged"))

    parts = []
    for i, (src, size) in enumerate((("testsrc2", "96x64"), ("smptebars", "64x64"), ("testsrc2", "160x72"))):
        part = folder / f"segment{i}.ts"
        _ffmpeg("-f", "lavfi", "-i", f"{src}=s={size}:r=25", "-frames:v", "10", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-bf", "0", "-output_ts_offset", str(i * 0.4), str(part))
        parts.append(part.read_bytes())
    change = folder / "resolution_change.ts"
    change.write_bytes(b"".join(parts))
    add(Case("resolution change", "MPEG-TS segments 96x64, 64x64, 160x72 joined with cat", change, "output"))

    single = folder / "single_frame.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25", "-frames:v", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(single))
    add(Case("single frame", "one H.264 picture", single, "output"))

    raw = folder / "one_pixel.yuv"
    raw.write_bytes(bytes([200, 90, 160]) * 5)
    tiny = folder / "1x1.mkv"
    _ffmpeg("-f", "rawvideo", "-pix_fmt", "yuv444p", "-s", "1x1", "-r", "25", "-i", str(raw), "-c:v", "ffv1", str(tiny))
    add(Case("1x1", "five 1x1 pictures (FFV1, 4:4:4)", tiny, "output", suffix=".mkv"))

    odd = folder / "3x5.mkv"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=s=3x5:r=25:d=0.2", "-c:v", "ffv1", "-pix_fmt", "yuv420p", str(odd))
    add(Case("3x5", "five 3x5 pictures (FFV1, 4:2:0, odd sizes)", odd, "output", suffix=".mkv"))

    ten = _clip(folder / "10bit.mkv", seconds=0.4, pix_fmt="yuv420p10le", audio=False)
    add(Case("10-bit", "H.264 4:2:0 10-bit", ten, "output", suffix=".mkv"))

    four22 = _clip(folder / "422.mkv", seconds=0.4, pix_fmt="yuv422p", audio=False)
    add(Case("4:2:2", "H.264 4:2:2 8-bit", four22, "output", suffix=".mkv"))

    directory = folder / "a_folder.mp4"
    directory.mkdir(exist_ok=True)
    add(Case("a directory", "a folder named .mp4", directory, "error", "directory"))

    add(Case("a missing file", "a path that does not exist", folder / "does_not_exist.mp4", "error", "not found"))
    assert tuple(c.name for c in cases) == NAMES
    return cases


def _probe(path: Path, *args: str) -> dict:
    out = subprocess.run(["ffprobe", "-v", "quiet", "-of", "json", *args, str(path)], capture_output=True, text=True)
    return json.loads(out.stdout or "{}")


def decodable(path: Path) -> tuple[int, tuple[int, int] | None, str | None]:
    """(frames FFmpeg's decoder gets, first picture's size, first picture's pixel format) of the
    first video stream; (0, None, None) when there is none."""
    frames = _probe(path, "-select_streams", "v:0", "-show_entries", "frame=width,height,pix_fmt", "-show_frames").get("frames", [])
    if not frames:
        return 0, None, None
    return len(frames), (frames[0]["width"], frames[0]["height"]), frames[0]["pix_fmt"]


@dataclass(frozen=True)
class Outcome:
    """What ``vsr upscale`` did with one case."""

    case: Case
    status: int
    frames_in: int  # what FFmpeg decodes from the input
    frames_out: int  # in the output (0 if none)
    size_in: tuple[int, int] | None
    size_out: tuple[int, int] | None
    pix_fmt_out: str | None
    message: str  # the error line, or the damage summary, or ""
    leftovers: tuple[str, ...]  # what is in the output folder besides the output
    problems: tuple[str, ...]  # every way the contract was broken (empty: passed)

    @property
    def passed(self) -> bool:
        return not self.problems

    def row(self) -> str:
        if self.status == 2:
            result = f"refused: `{self.message}`"
        else:
            w, h = self.size_out or (0, 0)
            result = f"{self.frames_out}/{self.frames_in} frames at {w}x{h} {self.pix_fmt_out}" + (f"; {self.message}" if self.message else "")
        return f"| {self.case.name} | {self.case.what} | {self.status} | {result} | {'pass' if self.passed else 'FAIL: ' + '; '.join(self.problems)} |"


def run_case(case: Case, outdir: Path, *, weights: str = "auto", timeout: float = 300) -> Outcome:
    """Run ``vsr upscale`` on one case into an empty ``outdir`` and check the contract."""
    if outdir.exists():
        shutil.rmtree(outdir)
    outdir.mkdir(parents=True)
    target = outdir / f"x2{case.suffix}"
    r = subprocess.run([*VSR, "upscale", str(case.path), str(target), "--weights", weights, "--progress", "off"], capture_output=True, text=True, cwd=outdir.parent, timeout=timeout)
    problems: list[str] = []
    if "Traceback" in r.stderr or "Traceback" in r.stdout:
        problems.append("a traceback")
    if CLASS_NAME.search(r.stderr):
        problems.append(f"an exception class name: {CLASS_NAME.search(r.stderr).group(0)}")
    lines = r.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    frames_in, size_in, _ = decodable(case.path) if case.path.is_file() else (0, None, None)
    frames_out, size_out, pix_out, message = 0, None, None, ""
    expected = {"error": {2}, "damaged": {3}, "output": {0, 3}}[case.outcome]
    if r.returncode not in expected:
        problems.append(f"exit status {r.returncode}, expected {'/'.join(map(str, sorted(expected)))}")
    if r.returncode == 2:
        if len(errors) != 1 or lines[-1] != errors[0]:
            problems.append("not one error line, last")
        message = errors[-1] if errors else ""
        if case.mentions and case.mentions.lower() not in message.lower():
            problems.append(f"the error does not mention {case.mentions!r}")
        if target.exists():
            problems.append("an output was written")
    elif r.returncode in (0, 3):
        if errors:
            problems.append("an error line on success")
        if not target.is_file():
            problems.append("no output")
        else:
            frames_out, size_out, pix_out = decodable(target)
            if frames_out != frames_in:
                problems.append(f"{frames_out} frames out of {frames_in} decodable")
            if size_in is None or size_out != (size_in[0] * 2, size_in[1] * 2):
                problems.append(f"output size {size_out}, expected x2 of {size_in}")
        if r.returncode == 3:
            message = lines[-1].removeprefix("warning: ") if lines else ""
            if not message.startswith("damaged input: "):
                problems.append("no damage summary line last")
            message = message.split("; the output holds")[0]
    leftovers = tuple(sorted(p.name for p in outdir.iterdir() if p != target))
    if leftovers:
        problems.append(f"left in the output folder: {', '.join(leftovers)}")
    return Outcome(case, r.returncode, frames_in, frames_out, size_in, size_out, pix_out, message, leftovers, tuple(problems))


def table(outcomes: list[Outcome], root: Path | None = None) -> str:
    """The Markdown table; paths under ``root`` are shown relative to it."""
    head = "| case | input | exit | result | contract |\n|---|---|---|---|---|"
    rows = [o.row().replace(f"{root}/", "") if root is not None else o.row() for o in outcomes]
    return "\n".join([head, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="auto", help="--weights for vsr upscale (default auto: the shipped weights)")
    parser.add_argument("--out", type=Path, default=None, help="where the corpus and outputs go (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        cases = build_corpus(root / "corpus")
        outcomes = [run_case(case, root / "out" / f"case{i:02d}", weights=args.weights) for i, case in enumerate(cases)]
    print(table(outcomes, root / "corpus"))
    failed = [o.case.name for o in outcomes if not o.passed]
    print(f"\n{len(outcomes) - len(failed)}/{len(outcomes)} cases keep the contract" + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
