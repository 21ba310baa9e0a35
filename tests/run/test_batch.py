"""``vsr batch``: a folder of small clips upscaled on a real local Ray cluster and locally,
resumed after SIGKILL without touching finished outputs, failures and damage reported in the
summary and the exit status, odd names, outputs kept inside OUTPUT_DIR, Prometheus metrics."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import ffmpeg, ffprobe_json, run_on_terminal
from vsr_pipeline.cli import main
from vsr_pipeline.errors import InputError
from vsr_pipeline.run.batch import BatchMetrics, find_inputs, plan, run_batch
from vsr_pipeline.run.journal import JOURNAL_NAME, Journal
from vsr_pipeline.run.options import RunOptions

VSR = [sys.executable, "-m", "vsr_pipeline"]
NAMES = ("a.mp4", "sub dir/b c.mp4", "deep/x/odd #'%é [1].mkv", "z.mov")


def make_clip(path: Path, *, frames: int = 10, fmt: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=s=64x48:r=10:d={frames / 10}", "-c:v", "libx264", "-pix_fmt", "yuv420p", *(["-f", fmt] if fmt else []), str(path))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Four 10-frame 64x48 clips in a tree, with a space, quotes, '#', '%', '[' and non-ASCII in names; and a text file."""
    root = tmp_path_factory.mktemp("batch") / "in"
    for name in NAMES:
        make_clip(root / name)
    (root / "notes.txt").write_text("not a video")
    return root


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """6 s at 10 fps (60 frames, 64x48), a keyframe every 10 frames, with an AAC track."""
    path = tmp_path_factory.mktemp("long") / "long one.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=10:d=6", "-f", "lavfi", "-i", "sine=f=440:d=6", "-c:v", "libx264", "-g", "10", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path))
    return path


def pictures(path: Path) -> list[tuple[int, np.ndarray]]:
    """(pts, planes) of every decoded video frame."""
    with av.open(str(path)) as c:
        return [(f.pts, f.to_ndarray()) for f in c.decode(video=0)]


def audio_packets(path: Path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as c:
        return [(p.pts, bytes(p)) for p in c.demux(audio=0) if p.size]


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def probe(path: Path) -> tuple[int, int, int]:
    """(width, height, decoded frames) of the output's video."""
    s = ffprobe_json(path, "-count_frames", "-select_streams", "v:0")["streams"][0]
    return s["width"], s["height"], int(s["nb_read_frames"])


def journal(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / JOURNAL_NAME).read_text().splitlines() if line.strip()]


def args(src, out, weights, *extra) -> list[str]:
    return ["batch", str(src), str(out), "--weights", str(weights), "--threads", "1", "--progress", "off", *map(str, extra)]


def assert_all_complete(out: Path, names=NAMES) -> None:
    for name in names:
        assert probe(out / name) == (128, 96, 10), name
    leftovers = [p.name for p in out.rglob("*") if ".vsr-partial" in p.name]
    assert not leftovers, leftovers


# -- Ray --------------------------------------------------------------------------------------------
def test_ray_local_cluster_upscales_every_file_in_parallel_into_a_mirrored_tree(clips, long_clip, tiny_weights, tmp_path):
    src = copy_tree(clips, tmp_path / "in")
    (src / "long").mkdir()
    shutil.copy(long_clip, src / "long" / long_clip.name)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen([*VSR, *args(src, out, tiny_weights, "--ray-address", "local", "--workers", "2", "--chunk-seconds", "2")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    proc.stdout, proc.stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "ray: started a local cluster" in proc.stderr
    assert_all_complete(out)
    assert not (out / "notes.txt").exists()
    long = f"long/{long_clip.name}"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")) == sorted([*NAMES, long])
    records = journal(out)
    assert sorted(r["key"] for r in records if r["event"] == "done" and "chunk" not in r) == sorted([*NAMES, long])
    # the long file went in three 2-second chunks, one Ray task each, and was joined whole
    assert sorted(r["key"] for r in records if "chunk" in r) == [f"{long}#chunk {i} of 3 (2 s)" for i in (1, 2, 3)]
    assert [pts for pts, _ in pictures(out / long)] == [pts for pts, _ in pictures(long_clip)]
    assert audio_packets(out / long) == audio_packets(long_clip)
    workers = {r["worker"].rsplit(":", 1)[1] for r in records if r.get("worker")}
    assert str(proc.pid) not in workers  # Ray worker processes did the work, not the driver
    assert len(workers) >= 2, workers  # tasks ran side by side in several Ray workers
    assert "5 done, 0 failed, 0 skipped" in proc.stdout


def test_without_ray_installed_ray_address_is_one_line_error(clips, tiny_weights, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as when it is not installed
    rc = main(args(clips, tmp_path / "out", tiny_weights, "--ray-address", "local"))
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err and "Error" not in err.replace("error: ", "")
    assert err.strip().splitlines()[-1].startswith("error: --ray-address needs Ray")
    assert "pip install 'vsr_pipeline[cluster]'" in err


# -- resume ---------------------------------------------------------------------------------------------
def test_sigkill_part_way_then_rerun_redoes_only_unfinished_work(clips, tiny_weights, tmp_path):
    src = tmp_path / "in"
    names = [f"clip {i:02d}.mp4" for i in range(6)]
    src.mkdir()
    for name in names:
        shutil.copy(clips / "a.mp4", src / name)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [*VSR, *args(src, out, tiny_weights, "--workers", "1")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    done_before: list[str] = []
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / JOURNAL_NAME).exists():
            done_before = [r["key"] for r in journal(out) if r["event"] == "done"]
            if done_before:
                break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the batch ended before it could be killed part way"
    done_before = [r["key"] for r in journal(out) if r["event"] == "done"]
    assert 1 <= len(done_before) < len(names), done_before
    before = {k: ((out / k).read_bytes(), (out / k).stat().st_mtime_ns) for k in done_before}
    time.sleep(0.05)  # a rewrite would get a later mtime

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert rerun.returncode == 0, rerun.stderr
    for k, (data, mtime) in before.items():
        assert (out / k).read_bytes() == data, k
        assert (out / k).stat().st_mtime_ns == mtime, k
    assert_all_complete(out, names)
    assert f"{len(names) - len(done_before)} done, 0 failed, {len(done_before)} skipped" in rerun.stdout
    redone = [r["key"] for r in journal(out) if r["event"] == "done"]
    assert sorted(set(redone)) == sorted(names) and len(redone) == len(names)  # nothing done twice


def test_sigterm_stops_the_running_files_cleanly_and_keeps_the_finished_ones(long_clip, tiny_weights, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        shutil.copy(long_clip, src / f"take {i}.mp4")
    out = tmp_path / "out"
    proc = subprocess.Popen([*VSR, *args(src, out, tiny_weights, "--workers", "2")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not list(out.glob(".*.vsr-partial.mp4")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr and "terminate called" not in stderr
    assert "interrupted: finished files are kept" in stderr
    assert "batch: interrupted; 4 files:" in stdout and "left for a rerun" in stdout
    assert not list(out.glob(".*.vsr-partial.*"))  # the files being written were removed
    for r in journal(out) if (out / JOURNAL_NAME).exists() else []:  # what finished before the signal is whole
        assert probe(out / r["key"])[2] == 60


def test_journal_ignores_a_torn_line_and_redoes_work_whose_output_changed(tmp_path):
    src, out = tmp_path / "a.mp4", tmp_path / "out.mp4"
    src.write_bytes(b"in")
    out.write_bytes(b"out")
    j = Journal(tmp_path)
    j.append("a.mp4", "done", source=[2, src.stat().st_mtime_ns], output_stamp=[3, out.stat().st_mtime_ns])
    with open(tmp_path / JOURNAL_NAME, "ab") as f:
        f.write(b'{"v":1,"key":"b.mp4","ev')  # torn by a crash mid-write
    j = Journal(tmp_path)
    assert j.finished("a.mp4", src, out) is not None
    assert "b.mp4" not in j.records
    j.append("c.mp4", "failed", error="x")
    assert [json.loads(line)["key"] for line in (tmp_path / JOURNAL_NAME).read_text().splitlines() if line.startswith("{") and line.endswith("}")] == ["a.mp4", "c.mp4"]
    out.write_bytes(b"changed")
    assert Journal(tmp_path).finished("a.mp4", src, out) is None
    out.unlink()
    assert Journal(tmp_path).finished("a.mp4", src, out) is None


# -- failures, damage, names, paths -----------------------------------------------------------------------
def test_a_corrupt_file_is_named_in_the_summary_and_fails_the_batch_but_not_the_others(clips, tiny_weights, tmp_path, capsys):
    src = copy_tree(clips, tmp_path / "in")
    (src / "sub dir" / "broken.mp4").write_bytes(os.urandom(4000))
    out = tmp_path / "out"
    rc = main(args(src, out, tiny_weights, "--workers", "2"))
    cap = capsys.readouterr()
    assert rc == 2
    assert re.search(r"^  failed   sub dir/broken\.mp4: .+", cap.out, re.M), cap.out
    assert "4 done, 1 failed, 0 skipped" in cap.out
    assert cap.err.strip().splitlines()[-1] == "error: 1 of 5 files failed: sub dir/broken.mp4 (see the summary)"
    assert "Traceback" not in cap.err
    assert_all_complete(out)
    assert not (out / "sub dir" / "broken.mp4").exists()
    # a rerun retries only the failed file
    assert main(args(src, out, tiny_weights)) == 2
    assert "0 done, 1 failed, 4 skipped" in capsys.readouterr().out


def test_damaged_input_completes_with_status_3(clips, tiny_weights, tmp_path, capsys):
    src = tmp_path / "in"
    make_clip(src / "whole.ts", fmt="mpegts")
    data = (src / "whole.ts").read_bytes()
    (src / "cut.ts").write_bytes(data[: len(data) * 6 // 10 // 188 * 188 + 77])  # truncated mid transport packet
    rc = main(args(src, tmp_path / "out", tiny_weights))
    cap = capsys.readouterr()
    assert rc == 3, cap.err
    assert re.search(r"^  done     cut\.ts \(\d+ frames, .*damaged input", cap.out, re.M), cap.out
    assert "2 done, 0 failed" in cap.out


def test_a_glob_input_mirrors_from_its_fixed_prefix(clips, tiny_weights, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(args(f"{clips}/**/*.m*", out, tiny_weights)) == 0  # .mp4, .mkv, .mov
    assert_all_complete(out)
    assert "4 done" in capsys.readouterr().out


def test_an_output_that_would_escape_through_a_link_is_refused(clips, tiny_weights, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub dir").symlink_to(outside, target_is_directory=True)
    rc = main(args(clips, out, tiny_weights))
    cap = capsys.readouterr()
    assert rc == 2
    assert re.search(r"^  failed   sub dir/b c\.mp4: refused: its output would be written outside the output folder", cap.out, re.M), cap.out
    assert list(outside.iterdir()) == []
    assert_all_complete(out, [n for n in NAMES if not n.startswith("sub dir/")])


def test_plan_refuses_sources_outside_the_base_and_outputs_onto_inputs(tmp_path):
    base = tmp_path / "in"
    items, refused = plan(base, [tmp_path / "elsewhere.mp4", base / "ok.mp4"], tmp_path / "out")
    assert [i.key for i in items] == ["ok.mp4"] and items[0].target == tmp_path / "out" / "ok.mp4"
    assert [r.key for r in refused] == ["../elsewhere.mp4"] and "outside the output folder" in refused[0].error
    items, refused = plan(base, [base / "ok.mp4"], base)
    assert not items and "replace the input" in refused[0].error


def test_output_dir_equal_to_input_is_a_one_line_error(clips, tmp_path, capsys):
    assert main(["batch", str(clips), str(clips)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: OUTPUT_DIR") and "input folder" in err[0]


def test_find_inputs_skips_the_output_folder_partials_and_the_journal(tmp_path):
    make_clip(tmp_path / "in" / "a.mp4")
    (tmp_path / "in" / "up").mkdir()
    (tmp_path / "in" / "up" / "a.mp4").write_bytes(b"x")
    (tmp_path / "in" / ".a.vsr-partial.mp4").write_bytes(b"x")
    base, found = find_inputs(str(tmp_path / "in"), tmp_path / "in" / "up")
    assert base == tmp_path / "in" and found == [tmp_path / "in" / "a.mp4"]


# -- progress and metrics ---------------------------------------------------------------------------------
def test_batch_metrics_are_served_and_count_files_and_frames(clips, tiny_weights, tmp_path, capsys):
    src = copy_tree(clips, tmp_path / "in")
    (src / "bad.mp4").write_bytes(b"not a video at all")
    template = RunOptions(input="-", output="-", weights=tiny_weights, threads=1)
    metrics = BatchMetrics()
    lines: list[str] = []
    scraped: list[str] = []

    def scrape() -> None:  # while the batch runs (and lingers), until the final counts show
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            url = next((line.split()[-1] for line in lines if line.startswith("metrics: ")), None)
            if url:
                scraped.append(urllib.request.urlopen(url, timeout=5).read().decode())
                if 'status="done"} 4.0' in scraped[-1] and 'status="failed"} 1.0' in scraped[-1]:
                    return
            time.sleep(0.05)

    t = threading.Thread(target=scrape, daemon=True)
    t.start()
    summary = run_batch(replace(template, metrics_port=0, metrics_linger=1.0), str(src), tmp_path / "out", workers=2, log=lines.append, progress=True, metrics=metrics)
    t.join(10)
    assert summary.exit_status == 2 and [r.key for r in summary.by("failed")] == ["bad.mp4"]
    text = scraped[-1]
    assert 'vsr_batch_files_total{status="done"} 4.0' in text
    assert 'vsr_batch_files_total{status="failed"} 1.0' in text
    assert "vsr_batch_frames_total 40.0" in text
    assert "vsr_batch_input_files 5.0" in text
    assert "vsr_batch_workers 2.0" in text
    assert "vsr_batch_chunks_in_flight" in text and "vsr_batch_throughput_fps" in text
    bar = capsys.readouterr().err
    assert "batch:" in bar and "40/40" in bar and "files 5/5, failed 1" in bar  # the overall bar: frames and files
    assert "worker 1: " in bar and "worker 2: " in bar  # a line per worker: the file it is on


def test_ray_tasks_ask_for_one_gpu_where_the_cluster_has_gpus_else_one_cpu(monkeypatch):
    from types import SimpleNamespace

    from vsr_pipeline.run.batch import RayRunner

    for resources, shares, workers in (({"CPU": 16.0, "GPU": 4.0}, {"num_gpus": 1}, 4), ({"CPU": 6.0}, {"num_cpus": 1}, 6)):
        asked: dict = {}

        class Remote:
            def options(self, **kw):
                asked.update(kw)
                return self

        fake = SimpleNamespace(is_initialized=lambda: True, cluster_resources=lambda: resources, remote=lambda fn: Remote())
        monkeypatch.setitem(sys.modules, "ray", fake)
        runner = RayRunner("auto", None, log=lambda line: None)
        assert {k: v for k, v in asked.items() if k != "max_retries"} == shares
        assert runner.workers == workers  # default parallelism: one task per GPU, else per CPU
        assert RayRunner("auto", 2, log=lambda line: None).workers == 2  # --workers bounds it


def test_a_rerun_with_other_settings_keeps_finished_files_and_says_so(clips, tiny_weights, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(args(clips, out, tiny_weights, "--crf", "30")) == 0
    stamps = {n: (out / n).stat().st_mtime_ns for n in NAMES}
    capsys.readouterr()
    assert main(args(clips, out, tiny_weights, "--crf", "20")) == 0
    cap = capsys.readouterr()
    assert "note: 4 finished files were made with other settings" in cap.err
    assert "0 done, 0 failed, 4 skipped" in cap.out
    assert stamps == {n: (out / n).stat().st_mtime_ns for n in NAMES}


# -- chunks -------------------------------------------------------------------------------------------
LOSSLESS = ("--crf", "0", "--mirror", "off")


def with_subtitles(clip: Path, folder: Path) -> Path:
    """``clip`` remuxed into Matroska with an SRT track (two cues)."""
    srt = folder / "cues.srt"
    srt.write_text("1\n00:00:00,500 --> 00:00:02,500\nhello\n\n2\n00:00:03,000 --> 00:00:05,000\nworld\n")
    path = folder / "in" / (clip.stem + ".mkv")
    path.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg("-i", str(clip), "-i", str(srt), "-map", "0", "-map", "1", "-c:v", "copy", "-c:a", "copy", "-c:s", "srt", str(path))
    return path


def subtitle_packets(path: Path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as c:
        return [(p.pts, bytes(p)) for p in c.demux(subtitles=0) if p.size]


@pytest.mark.parametrize("container", ["mp4", "mkv with subtitles"])
def test_a_chunked_file_is_frame_and_timestamp_exact_and_equals_an_unsplit_run(container, long_clip, tiny_weights, tmp_path, capsys):
    src = tmp_path / "in"
    if container == "mp4":
        src.mkdir()
        shutil.copy(long_clip, src / long_clip.name)
    else:
        long_clip = with_subtitles(long_clip, tmp_path)
        assert len(subtitle_packets(long_clip)) == 2
    assert main(args(src, tmp_path / "whole", tiny_weights, *LOSSLESS)) == 0
    assert main(args(src, tmp_path / "chunked", tiny_weights, *LOSSLESS, "--chunk-seconds", "2", "--workers", "2")) == 0
    records = journal(tmp_path / "chunked")
    assert sorted(r["chunk"] for r in records if "chunk" in r and r["event"] == "done") == [1, 2, 3]
    whole, chunked = pictures(tmp_path / "whole" / long_clip.name), pictures(tmp_path / "chunked" / long_clip.name)
    assert len(chunked) == len(whole) == 60
    assert [pts for pts, _ in chunked] == [pts for pts, _ in whole] == [pts for pts, _ in pictures(long_clip)]
    different = [i for i, ((_, a), (_, b)) in enumerate(zip(whole, chunked)) if not np.array_equal(a, b)]
    assert different == []  # the seams (frames 19/20 and 39/40) included
    assert audio_packets(tmp_path / "chunked" / long_clip.name) == audio_packets(long_clip) == audio_packets(tmp_path / "whole" / long_clip.name)
    if container != "mp4":
        assert subtitle_packets(tmp_path / "chunked" / long_clip.name) == subtitle_packets(long_clip)
    assert not (tmp_path / "chunked" / ".vsr-chunks").exists()


def test_without_the_halo_the_seams_would_differ(long_clip, tiny_weights, tmp_path, monkeypatch):
    """The check above can fail: chunks decoded without their neighbours' frames give other pictures at the seams."""
    from vsr_pipeline.run import chunks as chunks_mod

    real = chunks_mod.plan_chunks

    def no_halo(path, seconds, halo=None):  # planned without neighbours (the window check told otherwise)
        return [replace(c, span=replace(c.span, halo=chunks_mod.HALO)) for c in real(path, seconds, 0)]

    monkeypatch.setattr(chunks_mod, "plan_chunks", no_halo)
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(long_clip, src / long_clip.name)
    assert main(args(src, tmp_path / "whole", tiny_weights, *LOSSLESS)) == 0
    assert main(args(src, tmp_path / "chunked", tiny_weights, *LOSSLESS, "--chunk-seconds", "2")) == 0
    whole, chunked = pictures(tmp_path / "whole" / long_clip.name), pictures(tmp_path / "chunked" / long_clip.name)
    assert [i for i, ((_, a), (_, b)) in enumerate(zip(whole, chunked)) if not np.array_equal(a, b)] == [19, 20, 39, 40]


def test_a_rerun_redoes_only_the_chunks_not_finished(long_clip, tiny_weights, tmp_path, monkeypatch, capsys):
    from vsr_pipeline.run import file_job

    real = file_job.run_file

    def third_fails(options, **kw):
        if Path(options.output).name.startswith("00002."):  # the third chunk's part
            raise InputError("simulated failure")
        return real(options, **kw)

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(long_clip, src / long_clip.name)
    out = tmp_path / "out"
    monkeypatch.setattr(file_job, "run_file", third_fails)
    assert main(args(src, out, tiny_weights, *LOSSLESS, "--chunk-seconds", "2")) == 2
    assert f"failed   {long_clip.name}: chunk 3 of 3: simulated failure" in capsys.readouterr().out
    assert not (out / long_clip.name).exists()
    parts = sorted((out / ".vsr-chunks").rglob("*.mp4"))
    assert len(parts) == 2
    monkeypatch.setattr(file_job, "run_file", real)
    assert main(args(src, out, tiny_weights, *LOSSLESS, "--chunk-seconds", "2")) == 0
    done = [r["key"] for r in journal(out) if r["event"] == "done"]
    assert sorted(done) == sorted([long_clip.name, *(f"{long_clip.name}#chunk {i} of 3 (2 s)" for i in (1, 2, 3))])  # chunks 1 and 2 not redone
    assert [pts for pts, _ in pictures(out / long_clip.name)] == [pts for pts, _ in pictures(long_clip)]


def test_the_bar_and_worker_lines_show_on_a_terminal_and_not_without_one(clips, tiny_weights, tmp_path):
    """A real pseudo-terminal (which may report a size of 0 x 0): the overall bar (frames, files)
    and one line per worker; with output to a pipe, neither."""
    cmd = [*VSR, "batch", str(clips), str(tmp_path / "out"), "--weights", str(tiny_weights), "--threads", "1", "--workers", "2"]
    status, text = run_on_terminal(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert status == 0, text
    assert "batch: 100%" in text and "40/40" in text and "files 4/4, failed 0" in text, text
    assert "worker 1: " in text and "worker 2: " in text, text
    r = subprocess.run([*cmd[:5], str(tmp_path / "out2"), *cmd[6:]], capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0 and "%|" not in r.stderr and "worker 1" not in r.stderr
