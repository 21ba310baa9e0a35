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
    "a missing file", "interlaced", "sample aspect ratio change", "VFR with gaps", "huge declared size", "huge declared size (8192x8192)",
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
        expect: ffprobe fields the output's video stream must have (e.g. ``field_order``).
        same_times: the output's video frames must have the input's timestamps (VFR).
    """

    name: str
    what: str
    path: Path
    outcome: str
    mentions: str = ""
    suffix: str = ".mp4"
    expect: tuple[tuple[str, str], ...] = ()
    same_times: bool = False


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

    interlaced = folder / "interlaced.mp4"
    _ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=s=96x64:r=50,scroll=h=0.02", "-f", "lavfi", "-i", "sine=f=440:d=0.4", "-vf", "tinterlace=interleave_top,fieldorder=tff",
        "-frames:v", "10", "-c:v", "libx264", "-flags", "+ilme+ildct", "-x264opts", "tff=1", "-pix_fmt", "yuv420p", "-c:a", "aac", str(interlaced),
    )
    add(Case("interlaced", "H.264 top field first (fields coded interlaced), with AAC", interlaced, "output", expect=(("field_order", "progressive"),), same_times=True))

    parts = []
    for i, sar in enumerate(("1/1", "4/3", "1/1")):
        part = folder / f"sar{i}.ts"
        _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25", "-vf", f"setsar={sar}", "-frames:v", "8", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-bf", "0", "-output_ts_offset", str(i * 8 / 25), str(part))
        parts.append(part.read_bytes())
    sar_change = folder / "sar_change.ts"
    sar_change.write_bytes(b"".join(parts))
    add(Case("sample aspect ratio change", "MPEG-TS segments 96x64 of SAR 1:1, 4:3, 1:1 joined with cat", sar_change, "output"))

    vfr = folder / "vfr_gaps.mp4"
    _ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=2", "-f", "lavfi", "-i", "sine=f=440:d=2", "-vf", "select='not(between(t,0.6,1.0))*not(eq(mod(n,7),3))'",
        "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(vfr),
    )
    add(Case("VFR with gaps", "H.264 + AAC, every 7th frame and 0.6-1.0 s missing (variable frame rate)", vfr, "output", same_times=True))

    base = folder / "baseline.h264"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=0.2", "-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-f", "h264", str(base))
    huge = folder / "sps_16384x16384.h264"
    huge.write_bytes(claim_picture_size(base.read_bytes(), 16384, 16384))
    add(Case("huge declared size", "H.264 whose sequence parameter set claims 16384x16384 pictures", huge, "error", "picture size", suffix=".mkv"))
    big = folder / "sps_8192x8192.h264"
    big.write_bytes(claim_picture_size(base.read_bytes(), 8192, 8192))
    add(Case("huge declared size (8192x8192)", "H.264 whose sequence parameter set claims 8192x8192 pictures (FFmpeg decodes them)", big, "error", "claims 8192x8192", suffix=".mkv"))
    assert tuple(c.name for c in cases) == NAMES
    return cases


def claim_picture_size(h264: bytes, width: int, height: int) -> bytes:
    """An H.264 Annex B stream (Baseline profile) whose first sequence parameter set is rewritten
    to claim ``width x height`` pictures (multiples of 16); the slices are left as they are.

    The SPS is parsed up to ``pic_width_in_mbs_minus1`` and ``pic_height_in_map_units_minus1``
    (Exp-Golomb), those two are replaced, and the rest of its bits are kept."""
    start = h264.index(b"\x00\x00\x01\x67") + 3
    end = h264.find(b"\x00\x00\x01", start)
    end = len(h264) if end < 0 else end - (h264[end - 1] == 0)
    rbsp = h264[start + 1 : end].replace(b"\x00\x00\x03", b"\x00\x00")  # emulation prevention out
    bits = "".join(f"{b:08b}" for b in rbsp)
    pos = 0

    def ue() -> int:
        nonlocal pos
        zeros = 0
        while bits[pos] == "0":
            zeros, pos = zeros + 1, pos + 1
        value = int(bits[pos : pos + zeros + 1], 2) - 1
        pos += zeros + 1
        return value

    if rbsp[0] != 66:
        raise ValueError("claim_picture_size needs a Baseline profile SPS")
    pos = 24  # profile_idc, constraint flags, level_idc
    ue()  # seq_parameter_set_id
    ue()  # log2_max_frame_num_minus4
    if ue() == 0:  # pic_order_cnt_type
        ue()  # log2_max_pic_order_cnt_lsb_minus4
    ue()  # max_num_ref_frames
    pos += 1  # gaps_in_frame_num_value_allowed_flag
    head = bits[:pos]
    ue(), ue()  # the picture size in macroblocks, replaced

    def code(value: int) -> str:
        return "0" * ((value + 1).bit_length() - 1) + format(value + 1, "b")

    out = (head + code(width // 16 - 1) + code(height // 16 - 1) + bits[pos:]).rstrip("0")  # ends in the stop bit
    out += "0" * (-len(out) % 8)
    raw = bytes(int(out[i : i + 8], 2) for i in range(0, len(out), 8))
    escaped, zeros = bytearray(), 0
    for b in raw:  # emulation prevention back in
        if zeros >= 2 and b <= 3:
            escaped.append(3)
            zeros = 0
        escaped.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return h264[: start + 1] + bytes(escaped) + h264[end:]


def _frame_times(path: Path) -> list[float]:
    frames = _probe(path, "-select_streams", "v:0", "-show_entries", "frame=pts_time", "-show_frames").get("frames", [])
    return [float(f["pts_time"]) for f in frames if "pts_time" in f]


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
            checked = [f"{k} {v}" for k, v in self.case.expect] + (["the input's timestamps"] if self.case.same_times else [])
            result = f"{self.frames_out}/{self.frames_in} frames at {w}x{h} {self.pix_fmt_out}" + (f", {', '.join(checked)}" if checked else "") + (f"; {self.message}" if self.message else "")
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
            if case.expect:
                stream = (_probe(target, "-select_streams", "v:0", "-show_streams").get("streams") or [{}])[0]
                problems += [f"{key} {stream.get(key)}, expected {value}" for key, value in case.expect if str(stream.get(key)) != value]
            if case.same_times:
                t_in, t_out = _frame_times(case.path), _frame_times(target)
                shift = t_out[0] - t_in[0] if t_in and t_out else 0.0
                if len(t_in) != len(t_out) or any(abs(b - a - shift) > 0.002 for a, b in zip(t_in, t_out)):
                    problems.append("the video timestamps are not the input's")
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
