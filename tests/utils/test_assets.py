"""Asset resolution: user folder, cache, checksum-verified download (network replaced by a local copy)."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import threading
import time
import urllib.error
from pathlib import Path

import pytest

from lipspace.utils import assets
from lipspace.utils.assets import (KNOWN_ASSETS, AssetUnavailable, DownloadChecksumMismatch, download_mode, file_sha256,
                             resolve_asset, resolve_known)
from lipspace.utils.errors import LipspaceError
from local_http import serve_folder

URL = "https://example.invalid/models/m.bin"
REAL_FETCH = assets._fetch


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Empty user folder and cache, download=auto allowed ($LIPSPACE_OFFLINE unset) with every host answering the
    reachability probe and no remembered probe; any real download fails the test."""
    user, cache = tmp_path / "user", tmp_path / "cache"
    monkeypatch.setenv("LIPSPACE_ASSETS", str(user))
    monkeypatch.setenv("LIPSPACE_CACHE", str(cache))
    monkeypatch.delenv(assets.OFFLINE_ENV, raising=False)
    monkeypatch.setattr(assets, "_REACHABILITY", {})
    monkeypatch.setattr(assets, "_connect", lambda host, port, timeout: None)

    def no_network(url, dest):
        raise AssertionError(f"unexpected download of {url}")

    monkeypatch.setattr(assets, "_fetch", no_network)
    return user, cache


def blob(path: Path, data: bytes = b"model bytes " * 1000) -> tuple[Path, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_user_folder_first(env, tmp_path):
    user, cache = env
    p, sha = blob(user / "models" / "m.bin")
    blob(cache / "m.bin")  # also in the cache: the user's folder wins
    assert resolve_asset("m.bin", sha, URL) == p
    q, sha2 = blob(user / "other" / "n.bin")
    assert resolve_asset("n.bin", sha2, URL, subdir="other") == q


def test_cache_second(env, monkeypatch):
    user, cache = env
    p, sha = blob(cache / "m.bin")
    assert resolve_asset("m.bin", sha, URL) == p
    monkeypatch.delenv("LIPSPACE_ASSETS")
    assert resolve_asset("m.bin", sha.upper(), URL) == p


def test_default_cache_is_home(monkeypatch, tmp_path):
    monkeypatch.delenv("LIPSPACE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert assets.cache_dir() == tmp_path / ".cache" / "lipspace"


def test_wrong_checksum_user_folder(env):
    user, _ = env
    p, sha = blob(user / "models" / "m.bin")
    with pytest.raises(LipspaceError) as e:
        resolve_asset("m.bin", "0" * 64, URL)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "0" * 64 in msg and sha in msg and "replace it" in msg and URL in msg


def test_wrong_checksum_cache_says_delete(env):
    _, cache = env
    p, sha = blob(cache / "m.bin")
    with pytest.raises(LipspaceError, match=r"checksum mismatch \(cache copy\).*delete it") as e:
        resolve_asset("m.bin", "f" * 64, URL)
    assert str(p) in str(e.value) and sha in str(e.value)


def test_download_into_cache(env, monkeypatch, tmp_path):
    _, cache = env
    src, sha = blob(tmp_path / "server" / "m.bin")
    calls = []

    def fake_fetch(url, dest):
        calls.append(url)
        assert Path(dest).parent == cache and Path(dest).name != "m.bin"  # temp file beside the target
        shutil.copyfile(src, dest)

    monkeypatch.setattr(assets, "_fetch", fake_fetch)
    p = resolve_asset("m.bin", sha, URL)
    assert p == cache / "m.bin" and p.read_bytes() == src.read_bytes() and calls == [URL]
    assert sorted(x.name for x in cache.iterdir()) == ["m.bin"]  # no temp file left
    assert resolve_asset("m.bin", sha, URL) == p and calls == [URL]  # second call: from the cache


def test_download_bad_checksum_leaves_nothing(env, monkeypatch, tmp_path):
    _, cache = env
    src, sha = blob(tmp_path / "server" / "m.bin")
    monkeypatch.setattr(assets, "_fetch", lambda url, dest: shutil.copyfile(src, dest))
    with pytest.raises(LipspaceError) as e:
        resolve_asset("m.bin", "1" * 64, URL)
    msg = str(e.value)
    assert "\n" not in msg and "m.bin" in msg and URL in msg and sha in msg and "1" * 64 in msg
    assert list(cache.iterdir()) == []


def test_offline_error_says_where_to_put_it(env, monkeypatch):
    _, cache = env

    def offline(url, dest):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(assets, "_fetch", offline)
    with pytest.raises(LipspaceError) as e:
        resolve_asset("m.bin", "2" * 64, URL)
    msg = str(e.value)
    assert "\n" not in msg and URL in msg and str(cache / "m.bin") in msg and "LIPSPACE_ASSETS" in msg
    assert "name resolution" in msg and list(cache.iterdir()) == []


# ------------------------------------------------------------------------------------ download = auto / true / false
REAL_CONNECT = assets._connect


def _closed_port() -> int:
    """A localhost port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_mode_values():
    for value, mode in ((True, "true"), (False, "false"), ("auto", "auto"), ("Auto", "auto"), ("true", "true"),
                        ("yes", "true"), ("1", "true"), ("false", "false"), ("no", "false"), ("off", "false")):
        assert download_mode(value) == mode
    for bad in (None, "maybe", 2, ""):
        with pytest.raises(LipspaceError, match=r"download=.*: must be auto \(.*\), true \(.*\) or false"):
            download_mode(bad)


def test_auto_on_a_closed_port_is_fast_probed_once_and_says_why(env, monkeypatch):
    _, cache = env
    calls = []
    monkeypatch.setattr(assets, "_connect", lambda *a: calls.append(a) or REAL_CONNECT(*a))
    port = _closed_port()
    url = f"http://127.0.0.1:{port}/m.bin"
    t0 = time.monotonic()
    with pytest.raises(AssetUnavailable) as e:
        resolve_asset("m.bin", "3" * 64, url)  # download="auto" is the default
    assert time.monotonic() - t0 < assets.CONNECT_TIMEOUT_S + 1
    msg = str(e.value)
    assert e.value.reason == "unreachable" and "\n" not in msg
    assert f"127.0.0.1:{port} is not reachable (connection refused)" in msg and "download=auto" in msg
    assert url in msg and str(cache / "m.bin") in msg and "LIPSPACE_ASSETS" in msg
    with pytest.raises(AssetUnavailable, match="is not reachable"):
        resolve_asset("other.bin", "3" * 64, f"http://127.0.0.1:{port}/other.bin")
    assert len(calls) == 1  # the answer is remembered for the process
    assert not cache.exists() or list(cache.iterdir()) == []


def test_auto_with_a_hanging_resolver_returns_within_the_bound(env, monkeypatch):
    """getaddrinfo has no timeout: an offline resolver that hangs must not hang the evaluation."""
    release = threading.Event()
    monkeypatch.setattr(assets, "_connect", lambda host, port, timeout: release.wait(30))
    monkeypatch.setattr(assets, "CONNECT_TIMEOUT_S", 0.3)
    try:
        t0 = time.monotonic()
        with pytest.raises(AssetUnavailable) as e:
            resolve_asset("m.bin", "4" * 64, "https://weights.example.org/m.bin")
        assert time.monotonic() - t0 < 1.5
    finally:
        release.set()
    assert e.value.reason == "unreachable"
    assert "weights.example.org:443 is not reachable (no answer within 0.3 s)" in str(e.value)


def test_auto_goes_through_a_proxy_when_urllib_would(env, monkeypatch):
    seen = []
    monkeypatch.setattr(assets, "_connect", lambda host, port, timeout: seen.append((host, port)))
    monkeypatch.setenv("https_proxy", "http://proxy.internal:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert assets.unreachable("https://weights.example.org/m.bin") is None
    assert seen == [("proxy.internal", 3128)]


def test_auto_respects_lipspace_offline(env, monkeypatch):
    monkeypatch.setattr(assets, "_connect", lambda *a: pytest.fail("LIPSPACE_OFFLINE: no probe"))
    monkeypatch.setenv(assets.OFFLINE_ENV, "1")
    with pytest.raises(AssetUnavailable) as e:
        resolve_asset("m.bin", "5" * 64, URL)
    assert e.value.reason == "offline" and "LIPSPACE_OFFLINE is set" in str(e.value) and URL in str(e.value)
    monkeypatch.setenv(assets.OFFLINE_ENV, "0")  # 0 / false / no: not offline
    assert not assets.offline()


def test_false_never_touches_the_network(env, monkeypatch):
    _, cache = env
    monkeypatch.setattr(assets, "_connect", lambda *a: pytest.fail("download=false: no probe"))
    with pytest.raises(AssetUnavailable) as e:
        resolve_asset("m.bin", "6" * 64, URL, download=False)
    msg = str(e.value)
    assert e.value.reason == "missing" and "download=false never touches the network" in msg
    assert URL in msg and str(cache / "m.bin") in msg and "download=auto or true" in msg


def test_true_skips_the_probe_and_says_the_download_was_requested(env, monkeypatch):
    monkeypatch.setattr(assets, "_connect", lambda *a: pytest.fail("download=true: no probe"))

    def offline(url, dest):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(assets, "_fetch", offline)
    with pytest.raises(AssetUnavailable) as e:
        resolve_asset("m.bin", "7" * 64, URL, download="true")
    assert e.value.reason == "failed"
    assert f"the requested download (download=true) from {URL} failed (Name or service not known)" in str(e.value)


def test_auto_downloads_from_a_local_server_into_the_cache_checksummed(env, monkeypatch, tmp_path):
    _, cache = env
    monkeypatch.setattr(assets, "_connect", REAL_CONNECT)  # the real probe and the real urllib download
    monkeypatch.setattr(assets, "_fetch", REAL_FETCH)
    www = tmp_path / "www"
    www.mkdir()
    data = os.urandom(300_000)
    (www / "m.bin").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    (www / "w.bin").write_bytes(b"another version of the file")
    with serve_folder(www) as srv:
        p = resolve_asset("m.bin", sha, f"{srv.url}/m.bin")
        assert p == cache / "m.bin" and p.read_bytes() == data and oct(p.stat().st_mode & 0o777) == "0o644"
        assert sorted(x.name for x in cache.iterdir()) == ["m.bin"] and srv.requested == ["/m.bin"]
        assert resolve_asset("m.bin", sha, f"{srv.url}/m.bin") == p and srv.requested == ["/m.bin"]  # the cache
        with pytest.raises(DownloadChecksumMismatch) as e:
            resolve_asset("w.bin", sha, f"{srv.url}/w.bin", download="true")
        msg, other = str(e.value), hashlib.sha256(b"another version of the file").hexdigest()
        assert f"downloaded from {srv.url}/w.bin has sha256 {other}" in msg and f"expected {sha}" in msg
        assert sorted(x.name for x in cache.iterdir()) == ["m.bin"]  # nothing kept, no temp file left
        with pytest.raises(AssetUnavailable, match=r"the download from .*/gone.bin failed \(HTTP 404 File not found\)"):
            resolve_asset("gone.bin", sha, f"{srv.url}/gone.bin")
        assert srv.requested == ["/m.bin", "/w.bin", "/gone.bin"]


def test_no_url_error_says_supply_it(env):
    with pytest.raises(LipspaceError, match="no official download URL; supply it yourself") as e:
        resolve_known("hair_segmenter_derived.tflite")
    assert KNOWN_ASSETS["hair_segmenter_derived.tflite"].sha256 in str(e.value) and "\n" not in str(e.value)


def test_unknown_asset():
    with pytest.raises(LipspaceError, match="not a known asset.*face_landmarker.task"):
        resolve_known("nope.bin")


def test_known_assets_registry():
    assert set(KNOWN_ASSETS) == {"face_landmarker.task", "selfie_segmenter.tflite", "hair_segmenter_derived.tflite",
                                 "ict_face_light.npz", "lpips_alex_v0.1.pth"}
    for a in KNOWN_ASSETS.values():
        assert len(a.sha256) == 64 and int(a.sha256, 16) >= 0
        assert a.url is None or (a.url.startswith("https://storage.googleapis.com/mediapipe-models/")
                                 and a.url.endswith(a.name))
    assert KNOWN_ASSETS["hair_segmenter_derived.tflite"].url is None
    assert KNOWN_ASSETS["ict_face_light.npz"].url is None  # converted from ICT-FaceKit's OBJ files
    assert KNOWN_ASSETS["lpips_alex_v0.1.pth"].url is None  # combined file; lipspace.eval.lpips builds it otherwise


def test_hash_is_cached_by_path_size_mtime(tmp_path, monkeypatch):
    p, sha = blob(tmp_path / "big.bin")
    assert file_sha256(p) == sha
    want = hashlib.sha256(b"changed!" * 10).hexdigest()
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(assets.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    assert file_sha256(p) == sha and calls == []  # unchanged: no re-hash
    st = p.stat()
    p.write_bytes(b"changed!" * 10)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert file_sha256(p) == want and calls == [1]  # changed size/mtime: hashed again


def test_real_shared_assets_verify(monkeypatch, tmp_path):
    root = Path(__file__).resolve().parents[3] / "shared" / "assets"
    root = Path(os.environ.get("LIPSPACE_ASSETS", root))
    if not (root / "models").is_dir():
        pytest.skip(f"shared assets not present ({root}/models; set LIPSPACE_ASSETS)")
    monkeypatch.setenv("LIPSPACE_ASSETS", str(root))
    monkeypatch.setenv("LIPSPACE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(assets, "_fetch", lambda url, dest: pytest.fail("must not download"))
    for name, a in KNOWN_ASSETS.items():
        p = resolve_known(name)
        assert p == root / "models" / name and p.stat().st_size == a.size
