"""One options type for files and live streams: one check, and one way to resolve the network."""

from __future__ import annotations

from pathlib import Path

import pytest

from vsr_pipeline.errors import ConfigError, OutputError
from vsr_pipeline.io.frames import Picture
from vsr_pipeline.colour import ColourSpec
from vsr_pipeline.io.sink import EncoderSettings
from vsr_pipeline.models.weights import SHIPPED_WEIGHTS, engines_dir
from vsr_pipeline.run.assemble import choose_network
from vsr_pipeline.run.options import LiveOptions, RunOptions

import numpy as np


def test_check_tells_file_from_live_and_names_the_bad_option(tmp_path):
    source, target = RunOptions("in.mp4", "out.mp4").check()
    assert not source.live and not target.live
    source, target = RunOptions("udp://127.0.0.1:5000", str(tmp_path / "rec.ts")).check()
    assert source.live and target.protocol == "file"
    bad = [
        (RunOptions("in.mp4", "out.mp4", window=4), "--window 4"),
        (RunOptions("in.mp4", "out.mp4", scale=3), "--scale 3"),
        (RunOptions("in.mp4", "out.mp4", mirror="sometimes"), "--mirror sometimes"),
        (RunOptions("in.mp4", "out.mp4", faces="maybe"), "--faces maybe"),
        (RunOptions("in.mp4", "out.mp4", batch=0), "--batch 0: must be from 1 to 64"),
        (RunOptions("in.mp4", "out.mp4", tile=30), "--tile 30: must be a multiple of 4 from 16 to 16384 pixels"),
        (RunOptions("in.mp4", "out.mp4", tile=8), "--tile 8"),
        (RunOptions("in.mp4", "out.mp4", encoder=EncoderSettings(crf=70)), "--crf 70"),
        (RunOptions("in.mp4", "out.mp4", encoder=EncoderSettings(codec="nosuch")), "unknown encoder"),
        (RunOptions("in.mp4", "udp://127.0.0.1:6000"), "a live output needs a live input"),
        (RunOptions("udp://127.0.0.1:5000", "out.ts", live=LiveOptions(latency=0)), "--latency"),
        (RunOptions("udp://127.0.0.1:5000", "out.ts", live=LiveOptions(slate="grey")), "--slate grey"),
        (RunOptions("udp://127.0.0.1:5000", "out.ts", live=LiveOptions(duration=-1)), "--duration -1"),
    ]
    for options, words in bad:
        with pytest.raises(ConfigError, match=words):
            options.check()
    # the live options only matter on a live input: a file job ignores them
    RunOptions("in.mp4", "out.mp4", live=LiveOptions(latency=0)).check()
    # a live output's folder is created (a fresh volume has none); one that cannot be is an error
    RunOptions("udp://127.0.0.1:5000", str(tmp_path / "new" / "hls" / "live.m3u8")).check()
    assert (tmp_path / "new" / "hls").is_dir()
    with pytest.raises(OutputError, match="cannot create the output folder /dev/null/hls"):
        RunOptions("udp://127.0.0.1:5000", "/dev/null/hls/live.m3u8").check()


def _pictures(qp: float | None, n: int = 8) -> list[Picture]:
    spec = ColourSpec("bt709", False, 8, (2, 2))
    y, c = np.zeros((32, 32), np.uint8), np.zeros((16, 16), np.uint8)
    return [Picture(y, c, c.copy(), spec, index=i, qp=qp) for i in range(n)]


def test_choose_network_is_the_same_policy_for_files_and_live():
    shipped = {name: engines_dir() / file for name, file in SHIPPED_WEIGHTS.items()}
    coarse = choose_network("auto", "auto", _pictures(34.0), "h264")
    assert (coarse.weights, coarse.label, coarse.mirror) == (shipped["heavy"], "heavy", True)
    assert coarse.notes[0].startswith("weights: heavy (auto: H.264 median QP 34.0")
    fine = choose_network("auto", "auto", _pictures(14.0), "h264")
    assert (fine.weights, fine.mirror) == (shipped["default"], False)
    hevc = choose_network("auto", "off", _pictures(None), "hevc")
    assert (hevc.label, hevc.mirror) == ("compressed", False)
    # live: no frames yet, so auto means the default weights and no mirror, said in the notes
    live = choose_network("auto", "auto", None, None)
    assert (live.weights, live.mirror) == (None, False)
    assert any("auto on a live input" in n for n in live.notes) and len(live.notes) == 2
    # explicit choices are kept as they are
    mine = choose_network(Path("x/mine.safetensors"), "on", None, None)
    assert (mine.weights, mine.label, mine.mirror) == (Path("x/mine.safetensors"), "mine", True)


def test_encoder_options_for_files_and_live_outputs():
    assert EncoderSettings(crf=0, codec="libx265").video_options() == {"crf": "0", "x265-params": "log-level=error:lossless=1"}
    assert EncoderSettings(codec="h264_nvenc", crf=0, preset="p5").video_options() == {"preset": "p5", "rc": "vbr", "cq": "1"}
    live = EncoderSettings(codec="libx265", keyint=30, bitrate=4_000_000).video_options(live=True)
    assert live == {"preset": "veryfast", "tune": "zerolatency", "x265-params": "keyint=30:min-keyint=30:scenecut=0:log-level=error", "maxrate": "4000000", "bufsize": "4000000"}
    nvenc = EncoderSettings(codec="hevc_nvenc", crf=23).video_options(live=True)
    assert nvenc == {"preset": "p4", "rc": "vbr", "cq": "23", "tune": "ll", "forced-idr": "1", "zerolatency": "1"}
