"""``hubert`` and ``wav2vec2``: hidden states of a self-supervised speech model through Hugging Face ``transformers``
(the optional extra: ``pip install 'lipspace[hf]'``).

Models. ``hubert`` defaults to ``facebook/hubert-large-ls960-ft`` and takes its ``last_hidden_state`` (1024-d), the
feature ER-NeRF, GeneFace and TalkingGaussian use; ``wav2vec2`` defaults to ``facebook/wav2vec2-large-960h``.
``model=`` (``conditioner.audio.backend_kwargs.model``) is a hub id or a local directory with ``config.json`` and the
weights (``model.safetensors`` / ``pytorch_model.bin``, sharded too). The width is the config's ``hidden_size``.

Weights, offline first: a local directory is used as is; a hub id is looked up in the Hugging Face cache
(``$HF_HOME``/hub or ``cache_dir=``) without touching the network. Only when it is not cached, ``download=True``
(default), ``HF_HUB_OFFLINE`` unset and the endpoint (``HF_ENDPOINT``) answers a HEAD request for the model's
config.json within ``PROBE_TIMEOUT_S`` is it downloaded (config + one weights format). Otherwise one LipspaceError
line says how to get it (``hf download <id>`` on a machine with internet, or ``model=<dir>``): no traceback from
transformers, no network wait.

Timing (derived from the config's conv_kernel / conv_stride): the conv front end has a 400-sample receptive field
and a 320-sample hop, so n samples give T = (n - 400) // 320 + 1 frames, frame j covering [320 j, 320 j + 400): rate
50 /s, centred at ``j / 50 + 0.0125`` s (``first_time_s``, as deepspeech). Under 400 samples: zero-padded to one.

Windows. ``lipspace.audio.align`` centres video frame t (25 fps, centre (t + 0.5) / 25 s) on feature 2t, so
``window=16`` covers features 2t-8 ... 2t+7 (0.32 s, AD-NeRF's DeepSpeech window; the conditioners' default).
ER-NeRF / TalkingGaussian reshape the features to [N, 2, 1024] instead, i.e. features 2t, 2t+1 per frame
(AudioNet sees just those two; AudioAttNet smooths over 8 frames); ``window=2`` here gives 2t-1, 2t (20 ms earlier).

Normalisation: zero mean / unit variance over the whole clip (``Wav2Vec2FeatureExtractor``'s ``do_normalize``,
read from ``preprocessor_config.json``, default on), before chunking.

``layer``: None (default) is ``last_hidden_state``; an int k indexes the num_hidden_layers + 1 hidden states as
transformers 5's ``output_hidden_states`` does (0: the transformer's input, k: the output of transformer layer k;
negative counts from the end). The large models apply a final LayerNorm, so ``layer=-1`` is not
``last_hidden_state`` there. The forward pass stops after layer k.

Long audio (``chunk_seconds``, default 20 s; None: one pass). The clip is cut into chunks of that many output
frames, each run with ``context_seconds`` (default 2 s) of extra audio on both sides whose outputs are dropped, so
memory is bounded by chunk + 2 context (self-attention is quadratic in length: 10 min in one pass would need tens
of GB). The frame count and (for the large models' per-frame LayerNorm front end) the convolutional features are
exact; the transformer sees less context than in one pass, and base models' GroupNorm front end normalises per
chunk, so values differ slightly (tests bound it). ER-NeRF cuts 20 s chunks without context.

Cache key (``spec.params``): the model id or resolved path, sha256 of config.json and of the weights files, the
layer, normalisation and chunking. ``device`` (``auto``: cuda when available) is not part of it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from lipspace.utils.assets import file_sha256
from lipspace.audio.features import BACKENDS, AudioBackend, FeatureSpec, backend_class
from lipspace.data.schema import SAMPLE_RATE
from lipspace.utils.errors import LipspaceError

log = logging.getLogger(__name__)

HUBERT_MODEL, WAV2VEC2_MODEL = "facebook/hubert-large-ls960-ft", "facebook/wav2vec2-large-960h"
PROBE_TIMEOUT_S = 3.0
WEIGHT_GLOBS = ("model.safetensors", "model-*-of-*.safetensors", "pytorch_model.bin", "pytorch_model-*-of-*.bin")
INSTALL_HINT = "pip install 'lipspace[hf]' (transformers, pinned in constraints.txt)"
_MODELS: dict[tuple, object] = {}  # (dir, weights sha, device) -> loaded model; the latest two are kept


class _Stop(Exception):
    """Raised by a forward hook once the requested hidden state is captured: the later layers are not run."""


def _endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _offline_reason(model: str) -> str | None:
    """Why ``model`` cannot be downloaded now; None when the endpoint answered a HEAD request for its config.json
    within PROBE_TIMEOUT_S (any status < 400). An HTTP answer is required, not just a TCP connect: transparent
    proxies accept any connection. The probe runs in a daemon thread, so a hanging DNS lookup cannot hang us."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{var} is set"
    import urllib.error
    import urllib.request

    url = f"{_endpoint()}/{model}/resolve/main/config.json"
    result: list = []

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=PROBE_TIMEOUT_S).close()
            result.append(None)
        except urllib.error.HTTPError as e:
            result.append(f"HTTP {e.code} for {url}")
        except Exception as e:  # URLError, socket timeout, ...
            why = " ".join(str(getattr(e, "reason", e)).split())[:80]
            result.append(f"{url} unreachable: {why}")

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(PROBE_TIMEOUT_S + 0.5)
    return result[0] if result else f"{url} did not answer within {PROBE_TIMEOUT_S:g} s"


def weight_files(root: Path) -> list[Path]:
    """The weights files of a model directory: safetensors when present, else PyTorch .bin (sharded or not)."""
    st = sorted(p for g in WEIGHT_GLOBS[:2] for p in root.glob(g))
    return st or sorted(p for g in WEIGHT_GLOBS[2:] for p in root.glob(g))


def resolve_model(model: str, who: str, download: bool = True, cache_dir: str | None = None) -> tuple[Path, str]:
    """(directory with config.json + weights, where it came from: local / hf-cache / downloaded)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve(), "local"
    if path.exists() or model.startswith(("/", ".", "~")) or model.count("/") != 1:
        raise LipspaceError(f"audio backend '{who}': model {model!r} is neither a model directory (config.json + "
                            f"weights) nor a hub id like 'facebook/hubert-large-ls960-ft'")
    from huggingface_hub import HfApi, constants, snapshot_download

    try:
        return Path(snapshot_download(model, cache_dir=cache_dir, local_files_only=True)), "hf-cache"
    except Exception:  # LocalEntryNotFoundError and friends: not (completely) in the cache
        pass
    reason = "download=False" if not download else _offline_reason(model)
    cache = cache_dir or constants.HF_HUB_CACHE
    if reason is None:
        log.info("audio backend '%s': downloading %s into %s", who, model, cache)
        try:
            files = HfApi(endpoint=_endpoint()).list_repo_files(model)
            weights = [f for f in files if f.endswith(".safetensors")] or [f for f in files if f.endswith(".bin")]
            return Path(snapshot_download(model, cache_dir=cache_dir, endpoint=_endpoint(),
                                          allow_patterns=["*.json", *weights])), "downloaded"
        except Exception as e:
            reason = f"download failed: {type(e).__name__}: {' '.join(str(e).split())[:120]}"
    raise LipspaceError(f"audio backend '{who}': model '{model}' is not in the Hugging Face cache ({cache}) and "
                        f"cannot be fetched ({reason}); on a machine with internet run `hf download {model}` "
                        f"(older huggingface_hub: `huggingface-cli download {model}`) and copy its HF_HOME here, or "
                        f"set ++conditioner.audio.backend_kwargs.model=<directory with config.json and the weights>")


class HFSpeechBackend(AudioBackend):
    """Hidden states of a transformers speech encoder (see the module docstring); subclasses name the model."""

    backend = ""
    default_model = ""
    model_types: tuple[str, ...] = ()
    model_class = ""

    def __init__(self, model: str | None = None, layer: int | None = None, device: str = "auto",
                 chunk_seconds: float | None = 20.0, context_seconds: float = 2.0, download: bool = True,
                 cache_dir: str | None = None):
        if importlib.util.find_spec("transformers") is None:  # checked without importing it (~5 s)
            raise LipspaceError(f"audio backend '{self.backend}' needs Hugging Face transformers: {INSTALL_HINT}")
        self.model_id = str(model or self.default_model)
        self.dir, self.source = resolve_model(self.model_id, self.backend, download, cache_dir)
        cfg_file = self.dir / "config.json"
        weights = weight_files(self.dir)
        if not cfg_file.is_file() or not weights:
            raise LipspaceError(f"audio backend '{self.backend}': {self.dir} lacks config.json or weights "
                                f"({', '.join(WEIGHT_GLOBS)}); download the model again or point model= at a full copy")
        self.config = json.loads(cfg_file.read_text())
        mtype = self.config.get("model_type")
        if mtype not in self.model_types:
            other = [c.backend for c in (HubertBackend, Wav2Vec2Backend) if mtype in c.model_types]
            hint = f"; use audio backend '{other[0]}'" if other else ""
            raise LipspaceError(f"audio backend '{self.backend}': {self.model_id} is a '{mtype}' model, not "
                                f"{'/'.join(self.model_types)}{hint}")
        n_states = int(self.config["num_hidden_layers"]) + 1
        if layer is not None and not -n_states <= int(layer) < n_states:
            raise LipspaceError(f"audio backend '{self.backend}': layer={layer} is out of range; {self.model_id} has "
                                f"{n_states} hidden states (0 .. {n_states - 1}, or null for last_hidden_state)")
        self.layer = None if layer is None else int(layer) % n_states
        self.stride = int(np.prod(self.config.get("conv_stride", (5, 2, 2, 2, 2, 2, 2))))
        self.kernel, jump = 1, 1  # receptive field of the conv stack
        for k, s in zip(self.config.get("conv_kernel", (10, 3, 3, 3, 3, 2, 2)),
                        self.config.get("conv_stride", (5, 2, 2, 2, 2, 2, 2)), strict=True):
            self.kernel, jump = self.kernel + (k - 1) * jump, jump * s
        pre = self.dir / "preprocessor_config.json"
        self.normalize = bool(json.loads(pre.read_text()).get("do_normalize", True)) if pre.is_file() else True
        if chunk_seconds is not None and chunk_seconds <= 0 or context_seconds < 0:
            raise LipspaceError(f"audio backend '{self.backend}': chunk_seconds={chunk_seconds} must be > 0 (or null) "
                                f"and context_seconds={context_seconds} >= 0")
        self.chunk_seconds, self.context_seconds = chunk_seconds, float(context_seconds)
        self.device = device
        self.weights_sha256 = hashlib.sha256("".join(file_sha256(w) for w in weights).encode()).hexdigest() \
            if len(weights) > 1 else file_sha256(weights[0])
        rate = SAMPLE_RATE / self.stride
        ident = self.model_id if self.source != "local" else str(self.dir)
        self.spec = FeatureSpec(self.backend, int(self.config["hidden_size"]), rate,
                                first_time_s=self.kernel / 2 / SAMPLE_RATE,
                                params=(("model", ident), ("config_sha256", file_sha256(cfg_file)),
                                        ("weights_sha256", self.weights_sha256), ("layer", self.layer),
                                        ("normalize", self.normalize), ("chunk_seconds", chunk_seconds),
                                        ("context_seconds", self.context_seconds)))

    def model(self):
        """The loaded model, memoised per (directory, weights, device)."""
        import torch

        device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else str(self.device)
        if device.startswith("cuda") and not torch.cuda.is_available() or device.split(":")[0] not in ("cpu", "cuda"):
            raise LipspaceError(f"audio backend '{self.backend}': device={self.device!r} is not available here; use "
                                f"auto, cpu or cuda[:N] (with a GPU)")
        key = (str(self.dir), self.weights_sha256, device)
        if key not in _MODELS:
            import transformers

            cls = getattr(transformers, self.model_class)
            level, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
            transformers.logging.set_verbosity_error()  # a CTC checkpoint's unused lm_head is expected
            transformers.logging.disable_progress_bar()
            try:
                model = cls.from_pretrained(str(self.dir), local_files_only=True, dtype=torch.float32)
            except Exception as e:
                raise LipspaceError(f"audio backend '{self.backend}': cannot load {self.dir} ({type(e).__name__}: "
                                    f"{' '.join(str(e).split())[:160]}); download the model again") from None
            finally:
                transformers.logging.set_verbosity(level)
                if bars:
                    transformers.logging.enable_progress_bar()
            for old in list(_MODELS)[:-1]:
                del _MODELS[old]
            _MODELS[key] = model.eval().to(device)
        return _MODELS[key]

    def _run(self, model, x: np.ndarray) -> np.ndarray:
        """[frames, dim] for one stretch of (normalised) samples."""
        import torch

        got: list = []

        def grab_input(module, args, kwargs):  # layer 0: the first transformer layer's input
            got.append(args[0] if args else kwargs["hidden_states"])
            raise _Stop

        def grab_output(module, args, out):  # layer k: transformer layer k's output
            got.append(out[0] if isinstance(out, tuple) else out)
            raise _Stop

        layers = model.encoder.layers
        hook = None
        if self.layer == 0:
            hook = layers[0].register_forward_pre_hook(grab_input, with_kwargs=True)
        elif self.layer is not None:
            hook = layers[self.layer - 1].register_forward_hook(grab_output)
        inp = torch.from_numpy(np.ascontiguousarray(x, np.float32))[None].to(next(model.parameters()).device)
        try:
            with torch.inference_mode():
                h = model(input_values=inp).last_hidden_state
        except _Stop:
            h = got[0]
        finally:
            if hook is not None:
                hook.remove()
        return h[0].float().cpu().numpy()

    def compute(self, audio: np.ndarray) -> np.ndarray:
        x = np.asarray(audio, np.float32).reshape(-1)
        if self.normalize and len(x):
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        if len(x) < self.kernel:
            x = np.concatenate([x, np.zeros(self.kernel - len(x), np.float32)])
        total = (len(x) - self.kernel) // self.stride + 1
        model = self.model()
        chunk = total if self.chunk_seconds is None else max(1, int(round(self.chunk_seconds * self.rate)))
        ctx = int(round(self.context_seconds * self.rate))
        out = []
        for a in range(0, total, chunk):
            b = min(total, a + chunk)
            lo, hi = max(0, a - ctx), min(total, b + ctx)
            end = len(x) if hi == total else (hi - 1) * self.stride + self.kernel  # a tail < 1 hop adds no frame
            h = self._run(model, x[lo * self.stride:end])
            if len(h) != hi - lo:
                raise LipspaceError(f"audio backend '{self.backend}': {self.model_id} gave {len(h)} frames for "
                                    f"{hi - lo}; its conv_kernel/conv_stride config does not match the model")
            out.append(h[a - lo:b - lo])
        return np.concatenate(out).astype(np.float32)

    def metadata(self) -> dict:
        import transformers

        return {**super().metadata(), "model_dir": str(self.dir), "source": self.source,
                "transformers": transformers.__version__}


class HubertBackend(HFSpeechBackend):
    backend, default_model, model_types, model_class = "hubert", HUBERT_MODEL, ("hubert",), "HubertModel"


class Wav2Vec2Backend(HFSpeechBackend):
    backend, default_model, model_types, model_class = "wav2vec2", WAV2VEC2_MODEL, ("wav2vec2",), "Wav2Vec2Model"


def default_model(backend: str | None) -> str | None:
    """The model id a backend uses when no ``model=`` is given (None for backends that are not HF models)."""
    if backend not in BACKENDS:
        return None
    return backend_class(backend).default_model or None
