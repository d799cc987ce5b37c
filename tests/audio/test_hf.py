"""hubert / wav2vec2 backends (lipspace.audio.hf) with SMALL random-weight models built from a config and saved with
save_pretrained (the real facebook/* weights are not obtainable here): declared width / 50 Hz timing, agreement with
the transformers forward pass and its feature extractor, video-frame alignment, chunked long audio, cache keys per
model, offline-first loading from the HF cache, and one-line errors that never wait on the network."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time

import numpy as np
import pytest
import soundfile as sf

transformers = pytest.importorskip("transformers", reason="the [hf] extra (transformers) is not installed")
import torch  # noqa: E402

from lipspace.audio.features import audio_windows, backend_class, dataset_features, get_backend  # noqa: E402
from lipspace.audio.hf import HubertBackend, Wav2Vec2Backend  # noqa: E402
from lipspace.audio.inputs import AudioInput, audio_track  # noqa: E402
from lipspace.utils.errors import LipspaceError  # noqa: E402

SR = 16000
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7,
             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


def save_small(path, kind="hubert", seed=0, **over):
    torch.manual_seed(seed)
    if kind == "hubert":  # the large checkpoints' layout: layer-norm front end, stable (pre-LN) transformer
        cfg = transformers.HubertConfig(**{**SMALL, "feat_extract_norm": "layer", "do_stable_layer_norm": True,
                                           **over})
        model = transformers.HubertModel(cfg)
    else:  # the base layout: group-norm front end, post-LN transformer
        model = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**{**SMALL, "hidden_size": 24, **over}))
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    return save_small(tmp_path_factory.mktemp("hf") / "hubert_a")


@pytest.fixture(scope="module")
def w2v(tmp_path_factory):
    return save_small(tmp_path_factory.mktemp("hf") / "w2v", kind="wav2vec2")


def speech_like(seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.2 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t)) +
            0.02 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("n", [0, 1, 399, 400, 719, 720, 32000, 32079, 32080])
def test_declared_width_and_50hz_length(hub, n):
    b = get_backend("hubert", model=str(hub))
    assert backend_class("hubert") is HubertBackend and backend_class("wav2vec2") is Wav2Vec2Backend
    assert (b.name, b.dim, b.rate, b.spec.first_time_s) == ("hubert", 32, 50.0, 0.0125)
    f = b.compute(speech_like(n / SR) if n else np.zeros(0, np.float32))
    # conv front end: receptive field 400 samples, hop 320 -> (n - 400) // 320 + 1 frames (one for n < 400)
    assert f.dtype == np.float32 and f.shape == (max(n - 400, 0) // 320 + 1, 32) and np.isfinite(f).all()


@pytest.mark.parametrize("kind", ["hubert", "wav2vec2"])
def test_features_are_the_models_hidden_states(hub, w2v, kind):
    path = hub if kind == "hubert" else w2v
    y = speech_like(1.3)
    b = get_backend(kind, model=str(path))
    model = b.model()
    # the input is what Wav2Vec2FeatureExtractor(do_normalize=True) gives, as ER-NeRF's processor call
    x = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)(y, sampling_rate=SR, return_tensors="pt").input_values
    with torch.inference_mode():
        out = model(x, output_hidden_states=True)
    np.testing.assert_allclose(b.compute(y), out.last_hidden_state[0].numpy(), atol=1e-5)
    n_states = len(out.hidden_states)
    assert n_states == 3
    for k in [0, 1, 2, -1, -3]:
        fk = get_backend(kind, model=str(path), layer=k).compute(y)
        np.testing.assert_allclose(fk, out.hidden_states[k][0].numpy(), atol=1e-5)
    if kind == "hubert":  # stable layer norm: the last layer's output is not last_hidden_state (final LayerNorm)
        assert not np.allclose(get_backend(kind, model=str(path), layer=-1).compute(y), b.compute(y), atol=1e-3)
    with pytest.raises(LipspaceError, match=r"layer=3 is out of range.*3 hidden states"):
        get_backend(kind, model=str(path), layer=3)


@pytest.mark.parametrize("layer", [0, None])
def test_a_click_lands_in_the_window_of_its_video_frame_like_mel(hub, layer):
    """A click at the centre of video frame 30 (t = 1.22 s): the feature frames it changes most are centred in
    frame 30's window for the hubert backend, as for mel."""
    base = 0.05 * np.random.default_rng(0).standard_normal(3 * SR).astype(np.float32)  # loud enough that the
    # clip-wide normalisation hardly changes with the click
    click = base.copy()
    t = (30 + 0.5) / 25
    click[int(t * SR):int(t * SR) + 16] += 0.8
    n_frames = 75
    for b in (get_backend("hubert", model=str(hub), layer=layer), get_backend("mel")):
        diff = np.abs(b.compute(click) - b.compute(base)).sum(1, keepdims=True)
        peak = int(np.argmax(diff[:, 0]))
        if b.name == "hubert":  # the two frames most changed are the two whose 400-sample field holds the click
            s0 = int(t * SR)
            assert set(np.argsort(diff[:, 0])[-2:]) == {j for j in range(len(diff)) if 320 * j <= s0 < 320 * j + 400}
        assert abs((b.spec.first_time_s + peak / b.rate) - t) <= 1.5 / b.rate  # the feature frame covering t
        centre = audio_windows(diff, b.spec, n_frames, window=16)[:, 8, 0]  # each video frame's centre feature
        assert int(np.argmax(centre)) == 30, b.name


def test_chunked_long_audio_matches_one_pass(hub, monkeypatch):
    y = speech_like(7.0, seed=3)
    one = get_backend("hubert", model=str(hub), chunk_seconds=None).compute(y)
    lengths = []
    b = get_backend("hubert", model=str(hub), chunk_seconds=2.0, context_seconds=1.0)
    run = type(b)._run
    monkeypatch.setattr(type(b), "_run", lambda self, m, x: lengths.append(len(x)) or run(self, m, x))
    chunked = b.compute(y)
    assert chunked.shape == one.shape == (349, 32)
    # 349 frames in chunks of 100 (+ 50 context frames each side): 4 passes, none longer than 200 frames of audio
    assert len(lengths) == 4 and max(lengths) <= (200 - 1) * 320 + 400
    # the transformer sees 1 s less context at each cut: close, not equal (random weights attend broadly)
    err = np.abs(chunked - one)
    assert err.max() < 0.1 * one.std() and err.mean() < 0.02 * one.std(), (err.max(), err.mean(), one.std())
    no_context = get_backend("hubert", model=str(hub), chunk_seconds=2.0, context_seconds=0.0).compute(y)
    assert np.abs(no_context - one).mean() > err.mean()  # the context is what keeps the cuts invisible
    # below the transformer (conv features + 16-tap positional conv) the context covers everything: exact
    monkeypatch.undo()
    exact = get_backend("hubert", model=str(hub), layer=0, chunk_seconds=2.0, context_seconds=1.0).compute(y)
    np.testing.assert_allclose(exact, get_backend("hubert", model=str(hub), layer=0, chunk_seconds=None).compute(y),
                               atol=1e-5)


def test_cache_key_and_cache_files_per_model(hub, tmp_path):
    other = save_small(tmp_path / "hubert_b", seed=1)
    a, b = get_backend("hubert", model=str(hub)), get_backend("hubert", model=str(other))
    assert a.spec.key() != b.spec.key()
    assert get_backend("hubert", model=str(hub)).spec.key() == a.spec.key()
    assert get_backend("hubert", model=str(hub), layer=1).spec.key() != a.spec.key()
    params = dict(a.spec.params)
    assert params["model"] == str(hub.resolve()) and len(params["weights_sha256"]) == 64
    # new weights at the same path: a new key
    save_small(other, seed=2)
    assert get_backend("hubert", model=str(other)).spec.key() != b.spec.key()

    ds = tmp_path / "ds"
    ds.mkdir()
    sf.write(ds / "audio.wav", speech_like(1.0), SR, subtype="PCM_16")
    fa, fb = dataset_features(ds, a), dataset_features(ds, get_backend("hubert", model=str(other)))
    assert fa.shape == fb.shape == (49, 32) and not np.allclose(fa, fb)
    files = sorted((ds / "features").glob("hubert-*.npy"))
    assert len(files) == 2
    meta = [json.loads(f.with_suffix(".json").read_text()) for f in files]
    assert {m["model_dir"] for m in meta} == {str(hub.resolve()), str(other.resolve())}
    assert all(m["source"] == "local" and m["transformers"] == transformers.__version__ for m in meta)
    np.testing.assert_array_equal(dataset_features(ds, a), fa)  # cached


def test_hub_id_loads_from_the_hf_cache_offline(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap = tmp_path / "cache" / "models--lipspace-test--tiny-hubert" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    for f in hub.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("a" * 40)
    b = get_backend("hubert", model="lipspace-test/tiny-hubert", cache_dir=str(tmp_path / "cache"))
    assert b.source == "hf-cache" and b.dir == snap and dict(b.spec.params)["model"] == "lipspace-test/tiny-hubert"
    y = speech_like(0.5)
    np.testing.assert_allclose(b.compute(y), get_backend("hubert", model=str(hub)).compute(y), atol=1e-6)


@contextlib.contextmanager
def _local_endpoint(head_status=200):
    """A local HTTP server standing in for the hub: HEAD -> head_status, every GET -> 404."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(head_status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _one_line_error(match, seconds, **kwargs):
    t = time.perf_counter()
    with pytest.raises(LipspaceError, match=match) as e:
        get_backend(kwargs.pop("backend", "hubert"), **kwargs)
    assert "\n" not in str(e.value) and e.value.__cause__ is None
    assert time.perf_counter() - t < seconds
    return str(e.value)


def test_missing_weights_is_one_fast_line(tmp_path, monkeypatch, hub):
    import huggingface_hub  # noqa: F401  (its import time is not the error's)

    cache = str(tmp_path / "empty_cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg = _one_line_error(r"'facebook/hubert-large-ls960-ft' is not in the Hugging Face cache", 2.0, cache_dir=cache)
    assert "HF_HUB_OFFLINE is set" in msg and "`hf download facebook/hubert-large-ls960-ft`" in msg
    assert "conditioner.audio.backend_kwargs.model=" in msg
    _one_line_error(r"'facebook/wav2vec2-large-960h' is not in the Hugging Face cache", 2.0, backend="wav2vec2",
                    cache_dir=cache)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    _one_line_error(r"cannot be fetched \(download=False\)", 2.0, cache_dir=cache, download=False)
    # nothing answers (a closed port), or an address that is black-holed (or, here, answered by a proxy): the probe
    # gives up within its timeout
    for endpoint in ("http://127.0.0.1:9", "http://10.255.255.1:81"):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        _one_line_error(rf"cannot be fetched \((HTTP \d+ for |){endpoint}/facebook/hubert-large-ls960-ft/resolve/main/"
                        rf"config.json( unreachable| did not answer|\))", 6.0, cache_dir=cache)
    # an endpoint that answers the probe but has no such model: the hub client's error, as one line
    with _local_endpoint(head_status=200) as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        _one_line_error(r"cannot be fetched \(download failed: \w+: ", 6.0, cache_dir=cache)
    _one_line_error(r"model '/no/such/dir' is neither a model directory", 1.0, model="/no/such/dir")
    empty = tmp_path / "no_weights"
    empty.mkdir()
    (empty / "config.json").write_text((hub / "config.json").read_text())
    _one_line_error(r"no_weights lacks config.json or weights", 1.0, model=str(empty))
    _one_line_error(r"is a 'hubert' model, not wav2vec2; use audio backend 'hubert'", 1.0, backend="wav2vec2",
                    model=str(hub))


def test_without_transformers_one_line_says_pip_install(monkeypatch, hub):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    _one_line_error(r"audio backend 'hubert' needs Hugging Face transformers: pip install 'lipspace\[hf\]'", 1.0,
                    model=str(hub))


def test_bad_options_are_one_line(hub):
    _one_line_error(r"chunk_seconds=0 must be > 0", 1.0, model=str(hub), chunk_seconds=0)
    _one_line_error(r"context_seconds=-1 >= 0", 1.0, model=str(hub), context_seconds=-1)
    with pytest.raises(LipspaceError, match=r"device='tpu' is not available here; use auto, cpu or cuda"):
        get_backend("hubert", model=str(hub), device="tpu").compute(np.zeros(800, np.float32))
    if not torch.cuda.is_available():
        with pytest.raises(LipspaceError, match=r"device='cuda' is not available here"):
            get_backend("hubert", model=str(hub), device="cuda").compute(np.zeros(800, np.float32))


def test_width_mismatch_is_caught_at_start_up(hub, tmp_path):
    spec = AudioInput(backend="hubert", window=16, backend_kwargs={"model": str(hub)})
    with pytest.raises(LipspaceError, match=r"expects audio features of width 1024, but backend 'hubert' gives 32 "
                                            r"per frame; set .*conditioner.inputs.audio\) to 32"):
        audio_track(tmp_path, 10, spec, declared_dim=1024, who="conditioner deepspeech")


def test_run_info_records_the_audio_backend_and_model(hub, tmp_path):
    from lipspace.utils.config import compose_train
    from lipspace.tasks.train import run_info

    base = ["experiment=adnerf", "conditioner.audio.backend=hubert", "conditioner.inputs.audio=1024"]
    info = run_info(compose_train(base, tmp_path))
    assert (info["audio_backend"], info["audio_model"]) == ("hubert", "facebook/hubert-large-ls960-ft")
    info = run_info(compose_train(base + [f"+conditioner.audio.backend_kwargs.model={hub}"], tmp_path))
    assert info["audio_model"] == str(hub)
    info = run_info(compose_train(["experiment=adnerf", "conditioner.audio.backend=mel"], tmp_path))
    assert (info["audio_backend"], info["audio_model"]) == ("mel", None)


@pytest.mark.slow
def test_adnerf_trains_on_hubert_features(hub, tiny_dataset, tmp_path):
    from lipspace.utils.config import compose_train
    from lipspace.tasks.train import train

    out = tmp_path / "run"
    cfg = compose_train(["data=dir", f"data.root={tiny_dataset}", "debug=fast", "logger=csv", "experiment=adnerf",
                         "conditioner.audio.backend=hubert", "conditioner.inputs.audio=32",
                         f"+conditioner.audio.backend_kwargs.model={hub}"], out)
    metrics = train(cfg, out)
    assert metrics["global_step"] == 6 and np.isfinite(metrics["train/loss"])
    run = json.loads((out / "run.json").read_text())
    assert (run["audio_backend"], run["audio_model"]) == ("hubert", str(hub))
    assert list((tiny_dataset / "features").glob("hubert-*.npy"))
    from lipspace.tasks.evaluate import evaluate

    df = evaluate(out, videos=False, max_heldout=1, max_tail_frames=2,  # result rows name the backend and model
                  settings={"lpips": False, "face": False, "lse": False, "lse_local": False})
    assert len(df) and (df.audio_backend == "hubert").all() and (df.audio_model == str(hub)).all()
