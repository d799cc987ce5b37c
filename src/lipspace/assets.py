"""Resolve a model file: a user-named folder, the project cache, or the official URL — always checksum-verified.

Lookup order for `resolve_asset(name, sha256, url, subdir)`:
1. `$LIPSPACE_ASSETS/<subdir>/<name>` (a folder the user names, e.g. LIPSPACE_ASSETS=../shared/assets);
2. the project cache `$LIPSPACE_CACHE/<name>` (default `~/.cache/lipspace/<name>`);
3. a download of `url` into the cache (temp file, sha256 checked, then atomic rename).
A file found in (1) or (2) with a wrong checksum is an error, never silently replaced.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lipspace.errors import LipspaceError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_TIMEOUT_S = 60


@dataclass(frozen=True)
class Asset:
    name: str
    sha256: str
    url: str | None
    size: int | None = None
    subdir: str = "models"
    licence: str = ""


KNOWN_ASSETS: dict[str, Asset] = {
    a.name: a for a in (
        Asset("face_landmarker.task", "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
              "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/"
              "face_landmarker.task", 3_758_596, licence="Apache-2.0 (MediaPipe)"),
        Asset("selfie_segmenter.tflite", "191ac9529ae506ee0beefa6b2c945a172dab9d07d1e802a290a4e4038226658b",
              "https://storage.googleapis.com/mediapipe-models/image_segmenter/selfie_segmenter/float16/latest/"
              "selfie_segmenter.tflite", 249_537, licence="Apache-2.0 (MediaPipe)"),
        # MediaPipe's legacy hair_segmentation.tflite with Tasks metadata added: no official URL serves this file.
        Asset("hair_segmenter_derived.tflite", "0ed6652ff18c0705805aaa9badf91486500fe7bf4522c3c2f63c7cee6718b286",
              None, 781_617, licence="Apache-2.0 (MediaPipe, metadata added)"),
        # The face area of the ICT-FaceKit light model converted from its OBJ files (github.com/ICT-VGL/ICT-FaceKit,
        # FaceXModel/); no official URL serves this npz, so it comes from LIPSPACE_ASSETS or the cache.
        Asset("ict_face_light.npz", "1451bdbf28dffbc3c9326fc20e08f904c8f07bbd513e6ac8c006b9973564a082",
              None, 6_510_819, licence="MIT (ICT-FaceKit, USC ICT)"),
        # LPIPS v0.1 (alex): torchvision's ImageNet AlexNet `features` + the lpips package's linear heads in one
        # state dict (no official URL serves the combined file; lipspace.eval.lpips also builds it from the two
        # official files: LPIPS_OFFICIAL_URLS).
        Asset("lpips_alex_v0.1.pth", "63219dfd7603685dd940ede0a36947bbb6a0711795f86858963b9b21f323f0cb",
              None, 9_888_990, licence="BSD-3 (torchvision AlexNet) + BSD-2 (PerceptualSimilarity heads)"),
    )
}

# (resolved path, size, mtime_ns) -> sha256 hex digest; hashing is skipped while a file is unchanged.
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def cache_dir() -> Path:
    """$LIPSPACE_CACHE, else ~/.cache/lipspace."""
    env = os.environ.get("LIPSPACE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lipspace"


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, memoised in-process by (path, size, mtime) so repeated checks of a large file are free."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    digest = _HASH_CACHE.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
        digest = h.hexdigest()
        _HASH_CACHE[key] = digest
    return digest


class ChecksumMismatch(LipspaceError):
    """A model file (local or just downloaded) whose sha256 is not the expected one: never used, never retried."""


def asset_places(name: str, subdir: str = "models") -> list[Path]:
    """Where resolve_asset looks for `name`, in order: $LIPSPACE_ASSETS/<subdir>/<name> (when set), the cache."""
    env = os.environ.get("LIPSPACE_ASSETS")
    return ([Path(env).expanduser() / subdir / name] if env else []) + [cache_dir() / name]


def _verify(p: Path, sha256: str, where: str, url: str | None) -> Path:
    found = file_sha256(p)
    if found != sha256.lower():
        fix = (f"delete it so it is downloaded again from {url}" if url and where == "cache"
               else f"replace it with the official file{f' from {url}' if url else ''}")
        raise ChecksumMismatch(f"{p}: checksum mismatch ({where} copy): expected sha256 {sha256.lower()}, "
                               f"found {found}; the file is corrupted, truncated or a different version: {fix}")
    return p


def _fetch(url: str, dest: Path) -> None:
    """Download url to dest (dest is a temp path; the caller verifies and renames). Replaced in tests."""
    req = urllib.request.Request(url, headers={"User-Agent": "lipspace"})
    with urllib.request.urlopen(req, timeout=_TIMEOUT_S) as r, open(dest, "wb") as f:
        shutil.copyfileobj(r, f, _CHUNK)


def resolve_asset(name: str, sha256: str, url: str | None, subdir: str = "models") -> Path:
    """Path of a verified local copy of `name` (see module doc for the lookup order)."""
    places = asset_places(name, subdir)
    tried = [str(p) for p in places]
    for p in places:
        if p.is_file():
            return _verify(p, sha256, "cache" if p == places[-1] else "LIPSPACE_ASSETS", url)
    cached = places[-1]
    cdir = cached.parent

    place = f"put it at {cached} or in $LIPSPACE_ASSETS/{subdir}/{name}"
    if url is None:
        raise LipspaceError(f"{name}: model file not found (looked in {', '.join(tried)}) and it has no official "
                            f"download URL; supply it yourself: {place} (expected sha256 {sha256.lower()})")
    try:
        cdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LipspaceError(f"{name}: cannot create the cache folder {cdir} ({e.strerror or e}); set LIPSPACE_CACHE "
                            f"to a writable folder or download {url} into $LIPSPACE_ASSETS/{subdir}/") from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=cdir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        log.info("downloading %s from %s into %s", name, url, cdir)
        try:
            _fetch(url, tmp)
        except (urllib.error.URLError, OSError, ValueError) as e:
            why = " ".join(str(getattr(e, "reason", None) or e).split())[:200]
            raise LipspaceError(f"{name}: model file not found locally and the download from {url} failed ({why}); "
                                f"if offline, download it on another machine and {place}") from None
        found = file_sha256(tmp)
        if found != sha256.lower():
            raise ChecksumMismatch(f"{name}: the file downloaded from {url} has sha256 {found}, expected "
                                   f"{sha256.lower()}; the server holds another version or the transfer broke: "
                                   f"retry, or fetch the right file yourself and {place}")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache is shared by the user's tools
        os.replace(tmp, cached)
        st = cached.stat()  # rename keeps the content: remember its hash under the final path
        _HASH_CACHE[(str(cached.resolve()), st.st_size, st.st_mtime_ns)] = found
    finally:
        tmp.unlink(missing_ok=True)
    return cached


def resolve_known(name: str) -> Path:
    """resolve_asset for an entry of KNOWN_ASSETS."""
    try:
        a = KNOWN_ASSETS[name]
    except KeyError:
        raise LipspaceError(f"{name}: not a known asset; known: {', '.join(sorted(KNOWN_ASSETS))}") from None
    return resolve_asset(a.name, a.sha256, a.url, a.subdir)
