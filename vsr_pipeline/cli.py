"""Command line: ``vsr upscale``, ``vsr batch``, ``vsr stream``, ``vsr demo``, ``vsr info``, ``vsr bench``,
``vsr engines build``, ``vsr data prepare``, ``vsr train``, ``vsr soup``, ``vsr eval``.

Every problem the user can act on ends as one ``error: ...`` line on stderr and exit status 2.
A file job whose input was damaged completes and exits with status 3 (:data:`EXIT_DAMAGED`).
For files, Ctrl-C (status 130) and SIGTERM (143) leave no partial output. For live streams, SIGTERM
and Ctrl-C drain: the frames already buffered are sent and the output is closed cleanly (status 0
and 130); a second signal stops at once. ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from .errors import ConfigError, VsrError, words

#: Exit status of ``vsr upscale`` when the output is complete but the input was damaged.
EXIT_DAMAGED = 3

_UPSCALE_EPILOG = """\
examples:
  vsr upscale in.mp4 out.mp4                      x2 with the default model, H.264 CRF 18
  vsr upscale in.mkv out.mkv --codec libx265 --crf 20
  vsr upscale in.mp4 out.mp4 --codec libx264 --crf 0   lossless output (for quality checks)
  vsr upscale in.mp4 out.mp4 --metrics-port 9108  Prometheus metrics at 127.0.0.1:9108/metrics
  vsr upscale                                     no INPUT: same as 'vsr demo'

Audio and subtitle streams are copied without re-encoding; timestamps, frame count, colour
tags, rotation (display matrix) and sample aspect ratio are kept, and the output's comment tag
says how it was made (version, weights SHA-256, settings). The output is written under a
temporary name and renamed when complete.

Damaged input: what can be decoded is upscaled; a corrupt or undecodable packet of any stream is
dropped with a warning, and the run ends with a summary line of the damage (also counted in
vsr_input_damage_total). A truncated file gives everything up to the cut. A picture size or
pixel format change mid-file restarts the window; the output keeps x2 the first picture's size
and pictures of another size are fitted into it (black bars), with a warning.

exit status: 0 done, input clean; 3 done, input damaged (the output holds everything that could
be decoded; see the warnings); 2 error (one 'error: ...' line, no output written); 1 internal
error; 130 Ctrl-C, 143 SIGTERM (no output written).
A live INPUT URL (udp://, rtp://, srt://, rist://, rtmp://, rtsp://, tcp://) runs 'vsr stream'
(see 'vsr stream --help'); SRT and RIST go through the system ffmpeg, which PyAV's FFmpeg lacks.
"""

_STREAM_EPILOG = """\
examples:
  vsr stream udp://127.0.0.1:5000 udp://127.0.0.1:6000           MPEG-TS over UDP in and out
  vsr stream 'srt://0.0.0.0:9000?mode=listener' 'srt://cdn:9001'   SRT contribution in, SRT out
  vsr stream rtmp://server/live/in out/live.m3u8 --hls-time 2     HLS segments + playlist
  vsr stream udp://127.0.0.1:5000 record.ts --duration 60         record one minute

Protocols: UDP, RTP (MPEG-TS payload), TCP, RTMP, RTSP (input) and HLS (output) go through PyAV's
FFmpeg. SRT and RIST are not in PyAV's FFmpeg: they are bridged through the system 'ffmpeg'
(Debian's has both), which receives or sends MPEG-TS over a pipe; streams are copied, not
re-encoded, by the bridge.

Real time: the output runs at the input's frame rate on its own clock. Each frame is sent
--latency seconds after it was decoded; a frame the network cannot finish by then is upscaled
classically (Lanczos) instead, and when the input stalls or disconnects the last frame (or black,
--slate black) is repeated with silence while the input is reconnected with backoff. Timestamps
stay monotonic; audio is re-encoded (AAC) in sync with the video. Every degraded, repeated or
dropped frame is counted (Prometheus metrics, summary line). SIGTERM or Ctrl-C drains and closes
the output cleanly; /healthz and /readyz are served beside /metrics.
"""


_BATCH_EPILOG = """\
examples:
  vsr batch archive/ upscaled/                     every video under archive/, one at a time, here
  vsr batch 'archive/**/*.mkv' upscaled/ --workers 2 --threads 1
  vsr batch archive/ upscaled/ --ray-address local  a local Ray cluster, one task per file
  vsr batch /nfs/archive /nfs/upscaled --ray-address auto   join a Ray cluster (shared storage)
  vsr batch films/ out/ --ray-address auto --chunk-seconds 120   long files in 2-minute chunks

Outputs mirror the input tree under OUTPUT_DIR with the same names; nothing is written outside
it (an output that would be, through a link, is refused). Every 'vsr upscale' option applies to
every file. A journal in OUTPUT_DIR (.vsr-batch-journal.jsonl) records each finished file: run
the same command again after a crash or kill and only unfinished files are redone; finished
outputs are not touched. A file that fails is reported and the batch goes on. --chunk-seconds S
splits files longer than S seconds at keyframes so that several workers share one; each chunk
decodes its neighbours' frames for the temporal window, and the joined output has the input's
frames, timestamps, audio and subtitles (finished chunks are journalled too). --metrics-port
serves the batch's Prometheus metrics (vsr_batch_*).

exit status: 0 all done; 2 a file failed (named in the summary) or an error; 3 all done, some
inputs damaged; 130 Ctrl-C, 143 SIGTERM (finished files kept).
"""


def _add_upscale_options(p: argparse.ArgumentParser, *, files: bool = True, live: bool = False, log: bool = False) -> None:
    """Options of ``vsr upscale``; without ``files``, only those that mean something for a live
    stream; with ``live``, the live streams' own; with ``log``, ``--log``."""
    p.add_argument("--scale", type=int, default=2, help="upscaling factor (only 2)")
    p.add_argument("--codec", default="libx264", help="video encoder: libx264 (default), libx265, h264_nvenc/hevc_nvenc where FFmpeg and the GPU have NVENC")
    p.add_argument("--crf", type=int, default=18, help="constant quality (x264/x265 crf, NVENC cq); 0 with libx264 is lossless (default 18)")
    p.add_argument("--preset", default=None, help="encoder preset (e.g. medium, fast, p4 for NVENC)")
    if files:
        p.add_argument("--format", dest="container", default=None, metavar="FMT", help="output container (FFmpeg muxer name, e.g. mp4, matroska, mpegts); default: from OUTPUT's extension")
    p.add_argument("--backend", default="auto", choices=("auto", "tensorrt", "torch", "onnxruntime"), help="inference backend; auto picks the fastest available and says which (default)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the network runs (default: cuda if available)")
    p.add_argument("--window", type=int, default=None, metavar="T", help="temporal window, odd (default: the model's, 3)")
    weights_help = (
        "video SR weights: 'default' (engines/vsrnet_x2.safetensors: clean, lossless and finely quantised input), "
        "'compressed' (engines/vsrnet_x2_compressed_anim.safetensors: lossy input such as broadcast and web video; "
        "1.6x the MACs, half the speed on a CPU), 'heavy' (engines/vsrnet_x2_heavy_soup.safetensors: the same network, "
        "its weights averaged with two copies trained on compressed clips only, for coarse H.264 such as CCTV) or a .safetensors file"
    )
    if files:
        weights_help += (
            "; 'auto' (default) looks at how the input was coded and says what it picked: H.264 whose first frames have "
            "a median QP under 20 gets 'default', 20 to 30 'compressed', 30 or more 'heavy'; a lossy codec whose decoder "
            "reports no quantiser (HEVC, AV1, ...) gets 'compressed'; lossless or raw input 'default'"
        )
    else:
        weights_help += " (default: 'default'; 'auto' needs frames before the network is built, so on live input it takes 'default' and says so)"
    p.add_argument("--weights", type=_weights, default="auto" if files else None, metavar="NAME|FILE", help=weights_help)
    if files:
        p.add_argument("--mirror", choices=("auto", "on", "off"), default="auto", help="mirror ensemble: also run the network on the mirrored picture and average the two (2x the MACs, half the speed; +0.03 to +0.09 dB on H.264 CRF 28). auto (default): on for lossy-coded input, the inputs 'auto' gives 'compressed' or 'heavy'")
    else:
        p.add_argument("--mirror", choices=("on", "off"), default="off", help="mirror ensemble: also run the network on the mirrored picture and average the two (2x the MACs, half the speed; default off)")
    p.add_argument("--threads", type=int, default=0, help="inference threads (default: all cores)")
    if files:
        p.add_argument("--batch", type=int, default=1, metavar="N", help="pictures encoded, and windows reconstructed, per network call (default 1; the same pictures within one code value; see benchmarks/RESULTS.md for where it pays)")
    p.add_argument("--tile", type=int, default=None, metavar="N", help="run the network in overlapping tiles of N x N input pixels, a multiple of 4 (for GPUs too small for the whole picture; default: whole pictures, and tiles of 256 after running out of memory, with a warning)")
    if files:
        p.add_argument("--queue", type=int, default=8, metavar="N", help="frames buffered between stages (default 8)")
    p.add_argument("--deinterlace", choices=("auto", "on", "off"), default="auto", help="deinterlace with FFmpeg's bwdif before upscaling, one picture per frame (live: one frame later): auto (default) where the decoder says the input is interlaced, on for every picture, off to upscale the fields as they are")
    p.add_argument("--no-scene-cuts", action="store_true", help="do not detect scene cuts (windows may then mix shots)")
    p.add_argument("--faces", choices=("on", "off", "auto"), default="off", help="face engine: detect, track and restore faces with the face SR network (auto: on where its detector and weights are installed; default off)")
    p.add_argument("--face-weights", type=Path, default=None, help="face SR weights (default: engines/facesr_x2.safetensors)")
    p.add_argument("--face-every", type=int, default=5, metavar="N", help="run the face detector every N frames, track in between (default 5)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="P", help="serve Prometheus metrics on this port (0: any free port)")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address for the metrics server (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    if files:
        p.add_argument("--metrics-linger", type=float, default=0.0, metavar="S", help="keep serving metrics S seconds after the end, so a last scrape sees the final counts")
        p.add_argument("--progress", choices=("auto", "on", "off"), default="auto", help="progress bar (auto: when stderr is a terminal)")
    if live:
        g = p.add_argument_group("live streams")
        g.add_argument("--latency", type=float, default=1.0, metavar="S", help="latency budget: each frame is sent S seconds after it was decoded; what the network cannot finish by then is upscaled classically (default 1.0)")
        g.add_argument("--keyint", type=float, default=2.0, metavar="S", help="seconds between keyframes (default 2)")
        g.add_argument("--bitrate", default=None, metavar="RATE", help="video bitrate, e.g. 20M (capped VBR); default: constant quality --crf")
        g.add_argument("--audio-bitrate", default="128k", metavar="RATE", help="AAC bitrate (default 128k)")
        g.add_argument("--stall-timeout", type=float, default=1.0, metavar="S", help="seconds without input data before reconnecting (default 1)")
        g.add_argument("--connect-timeout", type=float, default=0.0, metavar="S", help="give up if the first input connection takes longer than S seconds (default 0: wait forever, retrying, as a listener waits for its sender)")
        g.add_argument("--reconnect-max", type=float, default=5.0, metavar="S", help="longest delay between reconnection attempts (default 5)")
        g.add_argument("--slate", choices=("repeat", "black"), default="repeat", help="what fills an input stall: the last frame (default) or black")
        g.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds of output (default: run until SIGTERM/Ctrl-C)")
        g.add_argument("--hls-time", type=float, default=2.0, metavar="S", help="HLS segment length (default 2)")
        g.add_argument("--hls-list-size", type=int, default=6, metavar="N", help="segments kept in the HLS playlist; 0 keeps all (default 6)")
    if log:
        p.add_argument("--log", type=Path, default=None, metavar="FILE", help="also append the job's log to FILE, each line time-stamped: a processing record (every setting; files: the input's and output's SHA-256)")


class _Parser(argparse.ArgumentParser):
    """argparse with the command line's errors as one line, like every other error of ``vsr``."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vsr",
        description="Streaming x2 video super-resolution: decode -> sliding-window video SR -> encode, with Prometheus metrics.",
        epilog="Start with 'vsr demo', then 'vsr upscale IN OUT' (see 'vsr upscale --help' for --codec, --crf, --backend, --window, --metrics-port).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    up = sub.add_parser("upscale", help="upscale a video x2", description="Upscale a video x2 with the video SR network.", epilog=_UPSCALE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    up.add_argument("input", nargs="?", help="input video (path or URL); omit to run the demo")
    up.add_argument("output", nargs="?", help="output video (path or URL)")
    _add_upscale_options(up, live=True, log=True)

    st = sub.add_parser("stream", help="upscale a live stream x2 in real time", description="Upscale a live stream x2 in real time: bounded latency, graceful degradation, reconnects.", epilog=_STREAM_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    st.add_argument("input", help="live input URL")
    st.add_argument("output", help="output URL, HLS playlist (.m3u8) or file")
    _add_upscale_options(st, files=False, live=True, log=True)

    ba = sub.add_parser("batch", help="upscale a folder of videos x2: resumable, in parallel, locally or on a Ray cluster", description="Upscale every video of a folder (searched recursively) or a glob x2 into OUTPUT_DIR, mirroring the input tree; resumable.", epilog=_BATCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ba.add_argument("input", help="input folder (searched recursively for videos) or a glob (quote it: 'in/**/*.mkv')")
    ba.add_argument("output_dir", metavar="OUTPUT_DIR", help="output folder: the input tree mirrored, same file names")
    ba.add_argument("--workers", type=int, default=None, metavar="N", help="files upscaled at once (default: 1 here; with --ray-address, the cluster's GPUs, else its CPUs)")
    ba.add_argument("--ray-address", default=None, metavar="ADDR", help="run on Ray: 'local' starts a local cluster, 'auto' or HOST:PORT joins one (default: no Ray, in this process); needs pip install 'vsr_pipeline[cluster]'")
    ba.add_argument("--chunk-seconds", type=float, default=None, metavar="S", help="split files longer than S seconds into chunks at keyframes, upscaled by several workers and joined (same frames, timestamps and audio as a whole-file run)")
    _add_upscale_options(ba, log=True)

    demo = sub.add_parser("demo", help="upscale the bundled sample clip and write a side-by-side PNG")
    demo.add_argument("--out", type=Path, default=Path("vsr-demo"), help="output folder (default ./vsr-demo)")
    _add_upscale_options(demo)

    info = sub.add_parser("info", help="model, cost per frame, backends and encoders available")
    info.add_argument("--weights", type=_fixed_weights, default=None, metavar="NAME|FILE", help="'default', 'compressed', 'heavy' or a .safetensors file")
    info.add_argument("--window", type=int, default=None)

    bench = sub.add_parser("bench", help="frames/s and per-frame time: engine alone, in-memory pipeline, file to file", description="Measure the engine alone, the whole pipeline (in-memory source, null sink) and file to file on real frames at each size: frames/s, per-frame time percentiles, MACs per frame against the device's peak (a matrix-product probe run now), and the pipeline's overhead over the engine.")
    bench.add_argument("--device", default="auto", metavar="auto|cpu|cuda", help="where the network runs (default: cuda if available)")
    bench.add_argument("--backend", default="auto", metavar="NAME", help="auto (default), torch, onnxruntime or tensorrt")
    bench.add_argument("--sizes", nargs="+", default=None, metavar="WxH", help="input sizes (default: 128x72 256x144 on a CPU, 1280x720 1920x1080 on a GPU)")
    bench.add_argument("--frames", type=int, default=None, metavar="N", help="frames per stage and size (default: 8 on a CPU, 100 on a GPU)")
    bench.add_argument("--repeat", type=int, default=2, metavar="R", help="runs of each stage, taking turns; the fastest counts (default 2)")
    bench.add_argument("--weights", type=_fixed_weights, default=None, metavar="NAME|FILE", help="'default' (default), 'compressed', 'heavy' or a .safetensors file")
    bench.add_argument("--window", type=int, default=None, metavar="T", help="temporal window (default: the model's)")
    bench.add_argument("--threads", type=int, default=0, help="inference threads (default: all cores)")
    bench.add_argument("--batch", type=int, default=1, metavar="N", help="frames encoded, and windows reconstructed, per network call (default 1)")
    bench.add_argument("--codec", default="libx264", help="encoder of the file-to-file stage (default libx264)")
    bench.add_argument("--preset", default=None, help="its preset (default: the encoder's)")
    bench.add_argument("--crf", type=int, default=18, help="its constant quality (default 18)")
    bench.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")

    engines = sub.add_parser("engines", help="ONNX export and TensorRT engines")
    engines_sub = engines.add_subparsers(dest="engines_command", metavar="ACTION")
    eb = engines_sub.add_parser("build", help="export ONNX, check it against PyTorch, build TensorRT engines where TensorRT runs", description="Export the network's two graphs to ONNX, validate them with ONNX Runtime against the PyTorch fp32 reference on real frames (PSNR printed, must exceed 45 dB) and, where TensorRT and a CUDA GPU are present, build and validate per-size engines into the cache (keyed by ONNX hash, shapes, precision, TensorRT version and GPU).")
    eb.add_argument("--input-size", nargs="+", default=None, metavar="WxH", help="input sizes (default: 1280x720 1920x1080)")
    eb.add_argument("--precision", default="fp16", metavar="fp16|fp32", help="TensorRT engine precision (default fp16, with fp32 islands)")
    eb.add_argument("--cache", type=Path, default=None, metavar="DIR", help="cache folder (default engines/cache, where 'vsr upscale' looks)")
    eb.add_argument("--weights", type=_fixed_weights, default=None, metavar="NAME|FILE", help="'default' (default), 'compressed', 'heavy' or a .safetensors file")
    eb.add_argument("--frames", type=int, default=3, metavar="N", help="real frames each graph or engine is validated on (default 3)")

    data = sub.add_parser("data", help="training data")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    prep = data_sub.add_parser("prepare", help="build training/validation/hold-out data from Debian packages (needs apt-get)")
    prep.add_argument("--out", type=Path, default=None, help="output folder: train.npz, val.npz, holdout/ (with --footage: val/, test/), manifest.json with every source's provenance and licence (default data/vsr; with --footage data/footage)")
    prep.add_argument("--cache", type=Path, default=Path("data/cache"), help="where packages are downloaded and unpacked")
    prep.add_argument("--clips-per-photo", type=int, default=64, help="moving clips synthesised from each training photograph (default 64)")
    prep.add_argument("--compress-prob", type=float, default=0.0, help="fraction of LR clips sent through a real H.264/HEVC round trip (default 0)")
    prep.add_argument("--crf-range", type=int, nargs=2, default=(18, 34), metavar=("MIN", "MAX"), help="CRF range of that round trip, inclusive (default 18 34; higher is stronger compression)")
    prep.add_argument("--animation-clips", type=int, default=0, metavar="N", help="also cut N training clips from each of 12 game cut-scenes (planetblupi; the animation hold-out is two other cut-scenes of that game; default 0: none)")
    prep.add_argument("--seed", type=int, default=0, help="seed of every random choice; the same seed gives the same data (default 0)")
    prep.add_argument("--footage", action="store_true", help="instead: real footage from the shared data folder, split into training pairs, validation and the sealed test set (default --out data/footage)")
    prep.add_argument("--shared", type=Path, default=None, metavar="DIR", help="with --footage: the shared data folder holding video/ and faces/video/ (default ../shared/data beside the repository, or $VSR_SHARED_DATA)")
    prep.add_argument("--pairs-per-clip", type=int, default=96, metavar="N", help="with --footage: training pairs cut from each training clip (face videos a third; default 96)")
    sample = data_sub.add_parser("sample", help="rebuild the bundled sample clip from validation photographs")
    sample.add_argument("--out", type=Path, default=Path("vsr_pipeline/data/sample.mp4"), help="where the clip goes (default: the bundled sample)")
    sample.add_argument("--cache", type=Path, default=Path("data/cache"), help="where packages are downloaded and unpacked")

    train = sub.add_parser("train", help="train the video SR network")
    train.add_argument("--config", type=Path, default=None, help="JSON training config (fields of TrainConfig)")
    train.add_argument("--data", type=Path, default=None, help="'vsr data prepare' folder (default data/vsr)")
    train.add_argument("--run", type=Path, default=None, help="run folder (checkpoint, log, plot); an existing one is resumed")
    train.add_argument("--steps", type=int, default=None, help="optimiser steps in all (a resumed run continues to this)")
    train.add_argument("--output", type=Path, default=None, help="where the final weights go")
    train.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads (default: all cores)")
    train.add_argument("--device", default=None, help="cpu (default), cuda, cuda:N, or auto (a CUDA GPU when PyTorch sees one); the same seeded batches on any device")
    train.add_argument("--init", type=Path, default=None, help="start from these weights (fine-tuning)")
    train.add_argument("--lr", type=float, default=None, help="peak learning rate")

    soup = sub.add_parser("soup", help="average the weights of networks fine-tuned from one start (a model soup)", description="Write one weights file whose tensors are the (weighted) average of the given files: copies of one network fine-tuned from the same start. Same size and cost as each; its header records the ingredients.")
    soup.add_argument("out", type=Path, help="the soup's .safetensors file")
    soup.add_argument("ingredients", type=Path, nargs="+", metavar="WEIGHTS", help="two or more .safetensors files of the same network")
    soup.add_argument("--shares", type=float, nargs="+", default=None, help="each file's weight in the average (default: equal)")

    fc = sub.add_parser("faces", help="the face SR network: train it, evaluate the face engine")
    fc_sub = fc.add_subparsers(dest="faces_command", metavar="ACTION")
    fd = fc_sub.add_parser("data", help="build the face training and validation sets from ../shared/data/faces, split by identity", description="Real face photographs (as virtual-camera clips) and face videos (real motion) of the shared faces folder, split by identity (a person in one split only), degraded as footage comes (x2 with varied kernels, noise, H.264/HEVC at CRF 10-35); runs of 6 frames with the current face's landmarks; a manifest with every source's provenance, identity, split and SHA-256 and the outputs' SHA-256; held-out identities' videos as lossless eval clips for 'vsr faces eval'.")
    fd.add_argument("--shared", type=Path, default=None, metavar="DIR", help="the shared faces folder (default ../shared/data/faces beside the repository, or $VSR_SHARED_DATA/faces)")
    fd.add_argument("--out", type=Path, default=Path("data/faces"), help="output folder (default data/faces)")
    fd.add_argument("--cache", type=Path, default=None, help="also the packages' face photographs already unpacked in this 'vsr data prepare' cache (nothing is downloaded)")
    fd.add_argument("--photo-samples", type=int, default=4, metavar="N", help="runs cut from each photograph (default 4)")
    fd.add_argument("--video-samples", type=int, default=32, metavar="N", help="runs cut from each video (default 32)")
    fd.add_argument("--val-identities", type=int, default=5, metavar="N", help="identities drawn for validation (default 5)")
    fd.add_argument("--eval-frames", type=int, default=16, metavar="N", help="frames of each held-out eval clip (default 16)")
    fd.add_argument("--limit", type=int, default=0, metavar="N", help="only the first N photographs and N videos (a quick build; default 0: all)")
    fd.add_argument("--seed", type=int, default=0, help="seed of every random choice; the same seed gives the same files (default 0)")
    ft = fc_sub.add_parser("train", help="train the face SR network (real face photographs + training photographs)")
    ft.add_argument("--data", type=Path, default=Path("data/vsr"), help="'vsr data prepare' folder (its manifest lists the training photographs)")
    ft.add_argument("--cache", type=Path, default=Path("data/cache"))
    ft.add_argument("--steps", type=int, default=3000)
    ft.add_argument("--out", type=Path, default=Path("runs/facesr/facesr_x2.safetensors"))
    ft.add_argument("--threads", type=int, default=1)
    ft.add_argument("--video-weights", type=_fixed_weights, default=None, metavar="NAME|FILE", help="the video network whose output the face network refines: default, compressed, heavy or a file (default: default)")
    ft.add_argument("--channels", type=int, default=48, help="face network feature channels")
    ft.add_argument("--blocks", type=int, default=6, help="face network residual blocks")
    ft.add_argument("--batch", type=int, default=12)
    ft.add_argument("--lr", type=float, default=5e-4, help="peak learning rate")
    ft.add_argument("--pool", type=int, default=3000, help="training pairs generated up front")
    ft.add_argument("--compress", type=float, default=0.5, help="share of pairs through H.264 (CRF 18-34)")
    ft.add_argument("--face-weight", type=float, default=3.0, help="extra loss weight inside the face box")
    ft.add_argument("--face-width", type=float, nargs=2, default=(40.0, 140.0), metavar=("MIN", "MAX"), help="face width in the training targets, pixels (default 40 140)")
    ft.add_argument("--val-every", type=int, default=250, help="validate (and keep the best checkpoint) every N steps")
    ft.add_argument("--max-scale", type=float, default=1.0, help="largest resampling of a face photograph (>1: softer, upsampled targets; default 1)")
    ft.add_argument("--blur", type=float, default=0.3, help="share of low-resolution clips blurred (default 0.3)")
    ft.add_argument("--noise", type=float, default=0.4, help="share of low-resolution clips with added noise (default 0.4)")
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto, as for 'vsr train'")
    ft.add_argument("--face-data", type=Path, default=None, metavar="DIR", help="instead: train the multi-frame face network on a 'vsr faces data' set (real faces split by identity; the video output as 'vsr upscale --weights auto --mirror auto' makes it; resumes from the checkpoint beside --out)")
    ft.add_argument("--frames", type=int, default=1, metavar="T", help="with --face-data: crops of the face's track fused, the current one and T-1 before it (default 1: T=3 and 5 measured no better, benchmarks/RESULTS.md)")
    ft.add_argument("--window", type=int, default=64, help="with --face-data: low-resolution side of the training windows cut from the face crops (default 64)")
    ft.add_argument("--checkpoint-every", type=int, default=50, metavar="N", help="with --face-data: save a resumable checkpoint every N steps (default 50)")
    ft.add_argument("--config", type=Path, default=None, metavar="FILE", help="a face training recipe (vsr_pipeline/train/configs/face_*.json: every --face-data option, the network's levels and coding condition); the other options are then ignored")
    fe = fc_sub.add_parser("eval", help="face-region Y-PSNR, temporal error and identity distance, engine on vs off vs Lanczos")
    fe.add_argument("--data", type=Path, default=Path("data/vsr"), help="a folder whose manifest lists face clips: 'vsr data prepare' (the package hold-out faces) or 'vsr faces data' (held-out identities, eval/)")
    fe.add_argument("--weights", "--video-weights", dest="weights", type=_weights, default=None, metavar="NAME|FILE", help="video network weights for engine off and on: 'default', 'compressed', 'heavy', a file, or 'auto': per clip and condition, those 'vsr upscale' picks (default: 'default')")
    fe.add_argument("--mirror", choices=("auto", "on", "off"), default="off", help="mirror ensemble of the video network, as 'vsr upscale'; auto: on lossy input (default off)")
    fe.add_argument("--face-weights", type=Path, default=None, help="face SR weights (default: engines/facesr_x2.safetensors)")
    fe.add_argument("--frames", type=int, default=24)
    fe.add_argument("--conditions", nargs="+", choices=("clean", "crf10", "crf18", "crf23", "crf28", "crf33", "hevc18", "hevc28"), default=["clean", "crf28"], help="input conditions: clean, or H.264 (crfN) / HEVC (hevcN) at CRF N (default: clean crf28)")
    fe.add_argument("--out", type=Path, default=Path("runs/eval_faces"))

    ev = sub.add_parser("eval", help="Y-PSNR/SSIM of the network vs Lanczos and bicubic on the hold-out footage")
    ev.add_argument("--data", type=Path, default=None, help="data folder: of 'vsr data prepare' for --split holdout (default data/vsr), of 'vsr data prepare --footage' for val and test (default data/footage)")
    ev.add_argument("--weights", type=_weights, default=None, metavar="NAME|FILE", help="video SR weights: 'default', 'compressed', 'heavy', a .safetensors file, or 'auto': for each clip and condition the weights 'vsr upscale' would pick from the codec and H.264 quantisers (default: 'default')")
    ev.add_argument("--window", type=int, default=None, help="temporal window (default: the weights' own)")
    ev.add_argument("--mirror", choices=("auto", "on", "off"), default="off", help="mirror ensemble (see 'vsr upscale --help'); auto: where 'vsr upscale' would run it, on lossy input (default off)")
    ev.add_argument("--frames", type=int, default=24, help="frames per clip (default 24)")
    ev.add_argument("--out", type=Path, default=Path("runs/eval"), help="folder for the table, plot and PNG crops")
    ev.add_argument("--conditions", nargs="+", type=_condition, default=None, metavar="COND", help="input conditions: 'clean', 'crfN' (the LR clip through x264 at CRF N) and/or 'hevcN' (through x265) (default: clean crf28 for the holdout; the standard matrix for val and test)")
    ev.add_argument("--kernels", nargs="+", choices=("bicubic", "bicubic75", "area", "gauss"), default=None, help="downscaling kernels making the LR input, each with every condition: antialiased bicubic a=-0.5 (PIL, MATLAB), a=-0.75 (PyTorch, OpenCV), area, a mild Gaussian (default bicubic)")
    ev.add_argument("--split", choices=("test", "val", "holdout"), default="holdout", help="clips to score: 'test', the sealed test set of 'vsr data prepare --footage' (score once per candidate, never choose on it); 'val', its validation clips; 'holdout', the package footage of 'vsr data prepare' (default)")
    ev.add_argument("--standard", action="store_true", help="the standard matrix (the default for --split val/test without --conditions/--kernels): H.264 and HEVC at CRF 10, 18, 23, 28, 33 (bicubic), and CRF 10 and 28 with each other kernel")
    return parser


def _condition(value: str) -> str:
    from .train.evaluate import parse_condition

    try:
        parse_condition(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _weights(value: str) -> Path | str:
    """``--weights`` where ``auto`` is meaningful (files: the source's quantisers decide)."""
    from .models.weights import weights_argument

    return weights_argument(value)


def _fixed_weights(value: str) -> Path:
    """``--weights`` of commands that need one network up front: a shipped name or a file."""
    if value == "auto":
        raise argparse.ArgumentTypeError("'auto' is not possible here: name the weights (default, compressed, heavy or a file)")
    return Path(_weights(value))


def _run_options(args: argparse.Namespace, input_: str, output: str):
    """The :class:`~.run.options.RunOptions` of ``vsr upscale``, ``vsr stream`` and ``vsr demo``
    (the live options only where the command has them)."""
    from .io.sink import EncoderSettings
    from .run.options import LiveOptions, RunOptions

    encoder = EncoderSettings(codec=args.codec, crf=args.crf, preset=args.preset, container=getattr(args, "container", None))
    live = LiveOptions()
    if hasattr(args, "latency"):
        encoder = replace(
            encoder, bitrate=_rate(args.bitrate, "--bitrate"), audio_bitrate=_rate(args.audio_bitrate, "--audio-bitrate"),
            hls_time=args.hls_time, hls_list_size=args.hls_list_size,
        )
        live = LiveOptions(keyint_seconds=args.keyint, **{k: getattr(args, k) for k in ("latency", "stall_timeout", "connect_timeout", "reconnect_max", "slate", "duration")})
    same = ("scale", "backend", "device", "window", "weights", "mirror", "threads", "tile", "faces", "face_weights", "face_every", "metrics_port", "metrics_host")
    return RunOptions(
        input=input_, output=output, encoder=encoder, scene_cuts=not args.no_scene_cuts, queue_size=getattr(args, "queue", 8),
        metrics_linger=getattr(args, "metrics_linger", 0.0), batch=getattr(args, "batch", 1), deinterlace=getattr(args, "deinterlace", "auto"), live=live, **{k: getattr(args, k) for k in same},
    )


def _progress(args) -> bool | None:
    return {"auto": None, "on": True, "off": False}[args.progress]


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM during a file job: handled like Ctrl-C (no partial output), exit status 143."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def cmd_upscale(args) -> int:
    from .run.file_job import run_file
    from .run.record import JobLog

    if args.input is None:
        args.out = Path("vsr-demo")
        return cmd_demo(args)
    if args.output is None:
        raise VsrError("missing OUTPUT: vsr upscale INPUT OUTPUT (or no arguments for the demo)")
    with JobLog(args.log) as log:
        options = _run_options(args, args.input, args.output)
        log.record(f"vsr upscale {options}")
        source, _ = options.check()
        if source.live:
            return _stream(options, log)
        log.file("input", options.input)
        with _handling(_raise_terminated, signal.SIGTERM):
            summary = run_file(options, log=log, progress=_progress(args))
        _print_record([summary.line()], log)
        log.file("output", options.output)
        if summary.damaged:  # completed, but not everything in the input could be kept
            log(f"warning: {summary.damage}; the output holds everything that could be decoded (exit status {EXIT_DAMAGED})")
            return EXIT_DAMAGED
    return 0


@contextmanager
def _handling(handler, *signums):
    """``handler`` for ``signums`` inside the block (main thread only: elsewhere none is set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)


def _rate(text: str | None, option: str) -> int | None:
    """'20M', '128k', '4000000' -> bits per second."""
    if text is None:
        return None
    units = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}
    try:
        value = float(text[:-1]) * units[text[-1].lower()] if text[-1].lower() in units else float(text)
    except (ValueError, IndexError):
        raise VsrError(f"{option} {text}: not a bitrate (e.g. 20M, 128k)") from None
    if value <= 0:
        raise VsrError(f"{option} {text}: must be positive")
    return int(value)


def cmd_batch(args) -> int:
    from .run.batch import BatchInterrupted, run_batch
    from .run.record import JobLog

    with JobLog(args.log) as log:
        template = _run_options(args, "INPUT", "OUTPUT")  # input and output are set per file
        log.record(f"vsr batch {args.input} {args.output_dir} {template}")
        with _handling(_raise_terminated, signal.SIGTERM):
            try:  # the metrics server's port, host and linger are the template's
                summary = run_batch(template, args.input, args.output_dir, workers=args.workers, ray_address=args.ray_address, log=log, progress=_progress(args), chunk_seconds=args.chunk_seconds)
            except BatchInterrupted as exc:
                _print_record(exc.summary.lines(), log)
                log("interrupted: finished files are kept; run the same command again to do the rest")
                return 143 if isinstance(exc.cause, Terminated) else 130
        _print_record(summary.lines(), log)
        failed = summary.by("failed")
        if failed:
            names = ", ".join(r.key for r in failed[:3]) + (f" and {len(failed) - 3} more" if len(failed) > 3 else "")
            log(f"error: {len(failed)} of {len(summary.results)} files failed: {names} (see the summary)")
        elif summary.damaged:
            log(f"warning: {len(summary.damaged)} inputs were damaged; their outputs hold everything that could be decoded (exit status {EXIT_DAMAGED})")
    return summary.exit_status


def _print_record(lines: list[str], log) -> None:
    """Print a summary on stdout, and write it to the ``--log`` file."""
    print("\n".join(lines), flush=True)
    for line in lines:
        log.record(line)


def cmd_stream(args) -> int:
    from .run.record import JobLog

    with JobLog(args.log) as log:
        options = _run_options(args, args.input, args.output)
        log.record(f"vsr stream {options}")
        return _stream(options, log)


def _stream(options, log) -> int:
    """Run a live job; SIGTERM and Ctrl-C drain, a second signal stops at once."""
    from .run.live_job import run_live

    stop, halt = threading.Event(), threading.Event()
    received: list[int] = []

    def on_signal(signum, frame) -> None:
        received.append(signum)
        if len(received) == 1:
            log(f"{signal.Signals(signum).name}: draining (a second signal stops at once)")
            stop.set()
        else:
            halt.set()

    with _handling(on_signal, signal.SIGTERM, signal.SIGINT):
        summary = run_live(options, log=log, stop=stop, halt=halt)
    _print_record([summary.line()], log)
    return 130 if signal.SIGINT in received else 0


def cmd_demo(args) -> int:
    from .demo import sample_clip, side_by_side
    from .run.file_job import run_file

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    clip = sample_clip()
    target = out / "sample_x2.mp4"
    summary = run_file(_run_options(args, str(clip), str(target)), log=_log, progress=_progress(args))
    print(summary.line())
    png = side_by_side(str(clip), str(target), out / "side_by_side.png")
    print(f"side-by-side (input, Lanczos, ours): {png}")
    return 0


def cmd_info(args) -> int:
    import av
    import torch

    from .engines.mirror import MIRROR_PASSES
    from .engines.select import resolve
    from .models.macs import count_macs
    from .models.weights import default_weights_path, load_network, read_metadata

    path = args.weights or default_weights_path()
    net = load_network(path)
    window = args.window or net.config.window
    params = sum(p.numel() for p in net.parameters())
    print(f"weights: {path}")
    print(f"model: VSRNet {net.config.to_dict()}, {params / 1e3:.1f} k parameters")
    meta = read_metadata(path)
    if "trained_steps" in meta:
        print(f"trained: {meta['trained_steps']} steps on {meta.get('data', '?')}")
    if "soup" in meta:
        print("soup of: " + ", ".join(f"{r['share']:.3g} x {r['file']}" for r in json.loads(meta["soup"])))
    for name, (h, w) in {"720p -> 1440p": (720, 1280), "1080p -> 2160p": (1080, 1920)}.items():
        macs = count_macs(net, h, w, window)
        print(f"cost per frame {name}, window {window}: {macs / 1e12:.3f} TMAC ({macs / (h * w) / 1e3:.1f} kMAC per input pixel; {MIRROR_PASSES * macs / 1e12:.3f} TMAC with the mirror ensemble)")
    backend, device, reason = resolve("auto", "auto")
    print(f"backend auto: {backend} on {device} ({reason}); torch {torch.__version__}, CUDA {'yes' if torch.cuda.is_available() else 'no'}")
    encoders = [c for c in ("libx264", "libx265", "h264_nvenc", "hevc_nvenc", "libsvtav1") if c in av.codecs_available]
    print(f"encoders: {', '.join(encoders)}; PyAV {av.__version__}")
    return 0


def cmd_bench(args) -> int:
    from .bench import BenchConfig, format_table, run_bench
    from .engines.build import parse_size

    sizes = tuple(parse_size(s) for s in args.sizes) if args.sizes else None
    config = BenchConfig(device=args.device, backend=args.backend, sizes=sizes, frames=args.frames, weights=args.weights, window=args.window, threads=args.threads, batch=args.batch, codec=args.codec, preset=args.preset, crf=args.crf, repeat=args.repeat)
    result = run_bench(config, log=_log)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def cmd_engines(args) -> int:
    from .engines.build import DEFAULT_SIZES, BuildConfig, build, parse_size

    if args.engines_command != "build":
        raise VsrError("usage: vsr engines build [--input-size WxH ...] [--precision fp16|fp32] [--cache DIR]")
    sizes = tuple(parse_size(s) for s in args.input_size) if args.input_size else DEFAULT_SIZES
    build(BuildConfig(sizes=sizes, precision=args.precision, cache=args.cache, weights=args.weights, frames=args.frames))
    return 0


def cmd_data(args) -> int:
    from .train.prepare import PrepareConfig, prepare

    if args.data_command == "sample":
        from .train.sample import make_sample

        print(f"sample clip: {make_sample(args.out, args.cache)}")
        return 0
    if args.data_command != "prepare":
        raise VsrError("usage: vsr data prepare [--out DIR] | vsr data sample [--out FILE]")
    if args.footage:
        from .train.footage import FootageConfig, default_shared_root, prepare_footage

        if args.pairs_per_clip < 1:
            raise ConfigError(f"--pairs-per-clip must be 1 or more, got {args.pairs_per_clip}")
        out = args.out or Path("data/footage")
        manifest = prepare_footage(out, args.shared or default_shared_root(), FootageConfig(pairs_per_clip=args.pairs_per_clip, seed=args.seed))
        print(f"prepared real footage {manifest['counts']} (clips per split) in {out} (manifest: {out / 'manifest.json'})")
        return 0
    if not 0 <= args.crf_range[0] <= args.crf_range[1] <= 51:
        raise ConfigError(f"--crf-range must be two CRFs MIN <= MAX in 0..51, got {args.crf_range[0]} {args.crf_range[1]}")
    if args.clips_per_photo < 0 or args.animation_clips < 0:
        raise ConfigError("--clips-per-photo and --animation-clips must be 0 or more")
    cfg = PrepareConfig(clips_per_photo=args.clips_per_photo, compress_prob=args.compress_prob, crf_range=tuple(args.crf_range), animation_clips_per_file=args.animation_clips, seed=args.seed)
    out = args.out or Path("data/vsr")
    manifest = prepare(out, args.cache, cfg)
    print(f"prepared {manifest['counts']} in {out} (manifest: {out / 'manifest.json'})")
    return 0


def cmd_train(args) -> int:
    import dataclasses

    from .train.trainer import TrainConfig, train, train_device

    cfg = TrainConfig.from_json(args.config) if args.config else TrainConfig()
    overrides = {k: getattr(args, k) for k in ("data", "run", "steps", "output", "threads", "device", "init", "lr") if getattr(args, k) is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    train_device(cfg.device)  # a GPU PyTorch cannot see is refused before anything is read or written
    if not (cfg.data / "train.npz").is_file():
        raise VsrError(f"no training data in {cfg.data}: run 'vsr data prepare --out {cfg.data}' first")
    result = train(cfg, log=_log)
    print(f"trained {cfg.steps} steps; weights {cfg.output}; last validation {result}")
    return 0


def cmd_soup(args) -> int:
    from .models.soup import make_soup

    record = make_soup(args.ingredients, args.out, shares=args.shares)
    print(f"soup: {args.out} = " + " + ".join(f"{r['share']:.3g} x {r['file']}" for r in record))
    return 0


def cmd_eval(args) -> int:
    from .train.evaluate import STANDARD_CASES, EvalConfig, evaluate

    standard = args.standard or (args.split != "holdout" and args.conditions is None and args.kernels is None)
    data = args.data if args.data is not None else Path("data/vsr" if args.split == "holdout" else "data/footage")
    cfg = EvalConfig(
        data=data, weights=args.weights, window=args.window, mirror=args.mirror, frames=args.frames, out=args.out, split=args.split,
        conditions=tuple(args.conditions or ("clean", "crf28")), kernels=tuple(args.kernels or ("bicubic",)), cases=STANDARD_CASES if standard else None,
    )
    report = evaluate(cfg, log=_log)
    print(report)
    return 0


def cmd_faces(args) -> int:
    if args.faces_command == "data":
        from .train.face_data import FaceDataConfig, build_face_data
        from .train.footage import default_shared_root

        cfg = FaceDataConfig(photo_samples=args.photo_samples, video_samples=args.video_samples, val_identities=args.val_identities, eval_frames=args.eval_frames, seed=args.seed, limit=args.limit)
        manifest = build_face_data(args.shared or default_shared_root() / "faces", args.out, cfg, cache=args.cache, log=_log)
        print(f"face data in {args.out}: {manifest['counts']['train']} training and {manifest['counts']['val']} validation runs, {len(manifest['files'])} eval clips; manifest {args.out / 'manifest.json'}")
        return 0
    if args.faces_command == "train" and args.face_data is not None:
        from .faces.face_sr import FaceSRConfig
        from .train.face_track_train import TrackTrainConfig, train_face_track

        if args.device != "cpu":
            raise VsrError("--face-data training runs on the CPU (--device cpu)")
        if args.config is not None:
            cfg = TrackTrainConfig.from_json(args.config)
            record = train_face_track(cfg, log=_log)
            print(f"trained {cfg.steps} steps; kept step {record['best']['step']} (validation face gain {record['best']['gain_db']:+.3f} dB); weights {cfg.out}")
            return 0
        try:
            model = FaceSRConfig(channels=args.channels, blocks=args.blocks, frames=args.frames)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        cfg = TrackTrainConfig(
            data=args.face_data, out=args.out, steps=args.steps, batch=args.batch, window=args.window, lr=args.lr,
            val_every=args.val_every, checkpoint_every=args.checkpoint_every, seed=args.seed, threads=args.threads, model=model,
            video_weights="auto" if args.video_weights is None else str(args.video_weights),
        )
        record = train_face_track(cfg, log=_log)
        print(f"trained {cfg.steps} steps; kept step {record['best']['step']} (validation face gain {record['best']['gain_db']:+.3f} dB); weights {args.out}")
        return 0
    if args.faces_command == "train":
        from .train.face_train import FaceTrainConfig, train_face_sr

        from .faces.face_sr import FaceSRConfig

        cfg = FaceTrainConfig(
            cache=args.cache, manifest=args.data / "manifest.json", out=args.out, steps=args.steps, threads=args.threads,
            video_weights=args.video_weights, model=FaceSRConfig(channels=args.channels, blocks=args.blocks), batch=args.batch,
            lr=args.lr, pool=args.pool, compress=args.compress, face_weight=args.face_weight, seed=args.seed,
            face_width=tuple(args.face_width), max_scale=args.max_scale, val_every=args.val_every, device=args.device,
            blur=args.blur, noise=args.noise,
        )
        from .train.trainer import train_device

        train_device(cfg.device)  # refused before the pairs are made
        if not cfg.manifest.is_file():
            raise VsrError(f"no {cfg.manifest}: run 'vsr data prepare --out {args.data}' first")
        record = train_face_sr(cfg, log=_log)
        print(f"trained {cfg.steps} steps; kept step {record['best']['step']} (validation face gain {record['best']['gain_db']:+.3f} dB); weights {args.out}")
        return 0
    if args.faces_command == "eval":
        from .train.face_evaluate import FaceEvalConfig, evaluate_faces

        print(evaluate_faces(FaceEvalConfig(data=args.data, weights=args.weights, mirror=args.mirror, face_weights=args.face_weights, frames=args.frames, conditions=tuple(args.conditions), out=args.out), log=_log))
        return 0
    raise VsrError("usage: vsr faces data | vsr faces train | vsr faces eval")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {"upscale": cmd_upscale, "batch": cmd_batch, "stream": cmd_stream, "demo": cmd_demo, "info": cmd_info, "bench": cmd_bench, "engines": cmd_engines, "data": cmd_data, "train": cmd_train, "soup": cmd_soup, "eval": cmd_eval, "faces": cmd_faces}
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return commands[args.command](args)
    except VsrError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("interrupted: no output written", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:  # an unexpected failure: one line, unless --debug
        if args.debug:
            raise
        print(f"error: internal error: {words(exc)} (run with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
