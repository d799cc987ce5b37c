"""Resolve a model file: a user-named folder, the project cache, or the official URL — always checksum-verified.

Lookup order for `resolve_asset(name, sha256, url, subdir)`:
1. `$LIPSPACE_ASSETS/<subdir>/<name>` (a folder the user names, e.g. LIPSPACE_ASSETS=../shared/assets);
2. the project cache `$LIPSPACE_CACHE/<name>` (default `~/.cache/lipspace/<name>`);
3. a download of `url` into the cache (temp file, sha256 checked, then atomic rename), as `download` allows:
   ``auto`` (default) downloads only when the host answers a TCP connection within CONNECT_TIMEOUT_S seconds
   (probed once per process and host, remembered: offline, nothing waits longer than that) and ``$LIPSPACE_OFFLINE``
   is unset; ``true`` always tries (a failure says the download was requested); ``false`` never touches the network.
A file found in (1) or (2) with a wrong checksum is an error, never silently replaced.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lipspace.utils.errors import LipspaceError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_TIMEOUT_S = 60  # per socket operation of a download once the host has answered
CONNECT_TIMEOUT_S = 3.0  # download=auto: how long the reachability probe waits for a host (DNS included)
OFFLINE_ENV = "LIPSPACE_OFFLINE"  # set (not 0/false/no): download=auto never touches the network
DOWNLOAD_MODES = ("auto", "true", "false")
_MODE_ALIASES = {"auto": "auto", "true": "true", "yes": "true", "on": "true", "1": "true",
                 "false": "false", "no": "false", "off": "false", "0": "false"}


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


class DownloadChecksumMismatch(ChecksumMismatch):
    """A file just downloaded whose sha256 is not the expected one (nothing was written to the cache)."""


class AssetUnavailable(LipspaceError):
    """A model file not found locally and not downloaded. ``reason``: ``missing`` (no URL, or download=false),
    ``offline`` ($LIPSPACE_OFFLINE), ``unreachable`` (download=auto: the host did not answer) or ``failed`` (the
    download itself failed)."""

    def __init__(self, message: str, reason: str, detail: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.detail = detail or message  # what happened, without where it looked (callers add their own)


def download_mode(value, what: str = "download") -> str:
    """``auto`` | ``true`` | ``false`` from a bool or a string (auto/true/false/yes/no/on/off/1/0, any case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.strip().lower() in _MODE_ALIASES:
        return _MODE_ALIASES[value.strip().lower()]
    raise LipspaceError(f"{what}={value!r}: must be auto (download missing weights when their host answers within "
                        f"{CONNECT_TIMEOUT_S:g} s), true (always try to download) or false (never touch the network)")


def offline() -> bool:
    """$LIPSPACE_OFFLINE is set to something other than 0 / false / no / off / ''."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


# (host, port) probed -> None (answered) or why not; one probe per process and host (download=auto)
_REACHABILITY: dict[tuple[str, int], str | None] = {}
_REACH_LOCK = threading.Lock()


def _connect(host: str, port: int, timeout: float) -> None:
    """Open and close a TCP connection (name resolution included). Replaced in tests."""
    socket.create_connection((host, port), timeout=timeout).close()


def _probe_target(url: str) -> tuple[str, int, str]:
    """(host, port, label) a download of url connects to first: the url's host, or the proxy urllib would use."""
    u = urllib.parse.urlsplit(url)
    if not u.hostname:
        raise LipspaceError(f"{url}: not a download URL (no host)")
    port = u.port or (443 if u.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(u.scheme)
    if proxy and not urllib.request.proxy_bypass(u.hostname):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if p.hostname:
            return p.hostname, p.port or 80, f"{u.hostname} through the proxy {p.hostname}:{p.port or 80}"
    return u.hostname, port, f"{u.hostname}:{port}"


def unreachable(url: str, timeout: float | None = None) -> str | None:
    """None when the host of ``url`` (or its proxy) accepts a TCP connection within ``timeout`` seconds
    (CONNECT_TIMEOUT_S); otherwise why not, e.g. "www.robots.ox.ac.uk:80 is not reachable (cannot resolve the
    name: ...)". Probed once per process and host: the answer is remembered. The probe runs in a daemon thread, so
    a name resolver that hangs offline (getaddrinfo has no timeout) costs ``timeout`` seconds at most."""
    timeout = CONNECT_TIMEOUT_S if timeout is None else float(timeout)
    host, port, label = _probe_target(url)
    with _REACH_LOCK:
        if (host, port) in _REACHABILITY:
            return _REACHABILITY[(host, port)]
        box: list = []

        def probe():
            try:
                _connect(host, port, timeout)
                box.append(None)
            except socket.gaierror as e:
                box.append(f"cannot resolve the name: {e.strerror or e}")
            except ConnectionRefusedError:
                box.append("connection refused")
            except (socket.timeout, TimeoutError):
                box.append(f"no answer within {timeout:g} s")
            except OSError as e:
                box.append(e.strerror or str(e) or type(e).__name__)

        t = threading.Thread(target=probe, name=f"lipspace-probe-{host}", daemon=True)
        t.start()
        t.join(timeout + 0.25)
        why = box[0] if box else f"no answer within {timeout:g} s"
        result = None if why is None else f"{label} is not reachable ({why})"
        _REACHABILITY[(host, port)] = result
        return result


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


def _failure(e: BaseException) -> str:
    """One short line for a failed download: 'HTTP 404 Not Found', 'Name or service not known', 'timed out'."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    reason = getattr(e, "reason", None) or e
    text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return " ".join(str(text).split())[:200]


def download_checked(name: str, url: str, dest: Path, *, sha256: str | None = None,
                     sha256_prefix: str | None = None, download="auto", place: str = "") -> Path:
    """Download ``url`` to ``dest`` as ``download`` allows (module doc), through a temp file beside it: checked
    against ``sha256`` (or only its first characters, ``sha256_prefix``: torchvision's file names carry one), then
    renamed into place. Raises AssetUnavailable (not downloaded: why, and ``place``, how to supply the file by
    hand) or DownloadChecksumMismatch (nothing is written)."""
    mode = download_mode(download)
    place = place or f"put it at {dest}"

    def unavailable(detail: str, reason: str, fix: str) -> AssetUnavailable:
        return AssetUnavailable(f"{name}: {detail}; {fix}", reason, detail)

    if mode == "false":
        raise unavailable("not downloaded: download=false never touches the network", "missing",
                          f"get {url} yourself and {place}, or allow the download (download=auto or true)")
    if mode == "auto":
        if offline():
            raise unavailable(f"not downloaded: download=auto and ${OFFLINE_ENV} is set", "offline",
                              f"get {url} yourself and {place}, or unset {OFFLINE_ENV}")
        why = unreachable(url)
        if why:
            raise unavailable(f"not downloaded: {why}; download=auto probes each host once per process, "
                              f"{CONNECT_TIMEOUT_S:g} s at most", "unreachable",
                              f"on a machine with network get {url} and {place}")
    cdir = dest.parent
    try:
        cdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise unavailable(f"cannot create the folder {cdir} ({e.strerror or e})", "failed",
                          f"set LIPSPACE_CACHE to a writable folder, or get {url} yourself and {place}") from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=cdir)
    os.close(fd)
    tmp = Path(tmp_name)
    asked = "the requested download (download=true)" if mode == "true" else "the download"
    try:
        log.info("downloading %s from %s into %s", name, url, cdir)
        try:
            _fetch(url, tmp)
        except (urllib.error.URLError, OSError, ValueError) as e:
            why = _failure(e)
            raise unavailable(f"{asked} from {url} failed ({why})", "failed",
                              f"if offline, download it on another machine and {place}") from None
        found = file_sha256(tmp)
        want = (sha256 or sha256_prefix or "").lower()
        if want and not found.startswith(want):
            expected = f"expected {want}" if sha256 else f"expected a digest starting {want}"
            raise DownloadChecksumMismatch(f"{name}: the file downloaded from {url} has sha256 {found}, {expected}; "
                                           f"the server holds another version or the transfer broke: retry, or "
                                           f"fetch the right file yourself and {place}")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache is shared by the user's tools
        os.replace(tmp, dest)
        st = dest.stat()  # rename keeps the content: remember its hash under the final path
        _HASH_CACHE[(str(dest.resolve()), st.st_size, st.st_mtime_ns)] = found
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def resolve_asset(name: str, sha256: str, url: str | None, subdir: str = "models", download="auto") -> Path:
    """Path of a verified local copy of `name` (see module doc for the lookup order and ``download``). Raises
    ChecksumMismatch for a local copy with the wrong digest, DownloadChecksumMismatch for a downloaded one, and
    AssetUnavailable (``reason`` says why) when the file is neither here nor downloaded."""
    places = asset_places(name, subdir)
    tried = [str(p) for p in places]
    for p in places:
        if p.is_file():
            return _verify(p, sha256, "cache" if p == places[-1] else "LIPSPACE_ASSETS", url)
    cached = places[-1]
    place = f"put it at {cached} or in $LIPSPACE_ASSETS/{subdir}/{name}"
    if url is None:
        raise AssetUnavailable(f"{name}: model file not found (looked in {', '.join(tried)}) and it has no official "
                               f"download URL; supply it yourself: {place} (expected sha256 {sha256.lower()})",
                               "missing")
    try:
        return download_checked(name, url, cached, sha256=sha256, download=download, place=place)
    except AssetUnavailable as e:  # say where it looked, too
        raise AssetUnavailable(f"{name}: model file not found locally (looked in {', '.join(tried)}); "
                               f"{str(e).removeprefix(name + ': ')}", e.reason, e.detail) from None


def resolve_known(name: str, download="auto") -> Path:
    """resolve_asset for an entry of KNOWN_ASSETS."""
    try:
        a = KNOWN_ASSETS[name]
    except KeyError:
        raise LipspaceError(f"{name}: not a known asset; known: {', '.join(sorted(KNOWN_ASSETS))}") from None
    return resolve_asset(a.name, a.sha256, a.url, a.subdir, download=download)
