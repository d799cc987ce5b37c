"""SyncTalk's blendshape_av conditioner: lip (audio) + upper-face (7 blendshapes) codes as declared regions, its
neutral-face + blink drive by audio, and experiment=synctalk end to end with a random-init AVE checkpoint."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lipspace.conditioners.blendshape_av import UPPER_FACE, BlendshapeAVConditioner
from lipspace.data.schema import MP_BLENDSHAPE_NAMES
from lipspace.utils.errors import LipspaceError

AVE = {"inputs": {"audio": 256, "blendshapes": 52}, "audio": {"backend": "ave", "window": 1, "context": 8}}


def test_condition_is_lip_then_exp_code_with_declared_regions():
    torch.manual_seed(0)
    mel = BlendshapeAVConditioner()  # default: mel windows of 16 through AudioNet, 8-frame attention
    c = mel({"audio": torch.randn(3, 8, 16, 80), "blendshapes": torch.rand(3, 52)})
    assert c.shape == (3, mel.out_dim) == (3, 48)
    assert mel.regions == {"lip": (slice(0, 32), (3, 4)), "exp": (slice(32, 48), (5, 6))}
    ave = BlendshapeAVConditioner(**AVE)
    bs = torch.rand(2, 52)
    a = torch.randn(2, 8, 1, 256)
    c1 = ave({"audio": a, "blendshapes": bs})
    bs2 = bs.clone()
    bs2[:, MP_BLENDSHAPE_NAMES.index("jawOpen")] += 1  # a lower-face coefficient: not read
    torch.testing.assert_close(ave({"audio": a, "blendshapes": bs2}), c1)
    bs2[:, MP_BLENDSHAPE_NAMES.index("eyeBlinkLeft")] += 1  # an upper-face one moves only the exp code
    c2 = ave({"audio": a, "blendshapes": bs2})
    torch.testing.assert_close(c2[:, :32], c1[:, :32])
    assert not torch.allclose(c2[:, 32:], c1[:, 32:])
    assert [MP_BLENDSHAPE_NAMES[i] for i in ave.upper_idx] == list(UPPER_FACE) and len(UPPER_FACE) == 7


@pytest.mark.parametrize("kwargs,match", [
    ({"out_dim": 16}, "out_dim must be null"),
    ({"inputs": {"audio": 80}}, "reads exactly 'audio' and 'blendshapes'"),
    ({"inputs": {"audio": 80, "blendshapes": 7}}, "conditioner.inputs.blendshapes=52"),
    ({"upper_face": ["browDownLeft", "eyebrowUp"]}, "eyebrowUp"),
])
def test_bad_settings_fail_in_one_line(kwargs, match):
    with pytest.raises(LipspaceError, match=match) as e:
        BlendshapeAVConditioner(**kwargs)
    assert "\n" not in str(e.value)


def test_wrong_audio_window_shape_is_a_clear_error():
    cond = BlendshapeAVConditioner(**AVE)
    with pytest.raises(LipspaceError, match=r"audio input must be \[F, 8, 1, dim\]"):
        cond({"audio": torch.randn(2, 1, 256), "blendshapes": torch.rand(2, 52)})


def test_driving_by_audio_uses_neutral_upper_face_and_blinks():
    cond = BlendshapeAVConditioner(**AVE)
    assert cond.can_drive_by_audio() and not cond.audio_only()
    rng = np.random.default_rng(0)
    bs = rng.uniform(0, 0.3, (200, 52)).astype(np.float32)
    blink = MP_BLENDSHAPE_NAMES.index("eyeBlinkLeft")
    bs[::20, blink] = 0.9  # the clip blinks now and then
    train_idx = np.arange(150)
    cond.prepare(SimpleNamespace(tracks={"blendshapes": bs}), train_idx)
    upper = [MP_BLENDSHAPE_NAMES.index(n) for n in UPPER_FACE]
    np.testing.assert_allclose(cond.neutral_upper.numpy(), bs[:150][:, upper].mean(0), rtol=1e-5)
    inputs = {"audio": torch.randn(250, 8, 1, 256), "blendshapes": torch.zeros(250, 52)}
    assert cond.prepare_sequence(inputs) is inputs  # not driving: tracked blendshapes are used as they are
    with cond.driving_by_audio():
        driven = cond.prepare_sequence(inputs)["blendshapes"]
    col = driven[:, blink]
    peaks = torch.nonzero(col == col.max()).flatten().tolist()
    assert peaks == [52, 152]  # one blink every 4 s (100 frames), the first at half a period, peak mid-blink
    assert col.max() == pytest.approx(float(np.percentile(bs[:150, blink], 95)))
    still = [i for i in range(250) if not any(abs(i - p) <= 2 for p in peaks)]
    torch.testing.assert_close(driven[still][:, upper], cond.neutral_upper.expand(len(still), -1))
    assert (driven[:, [i for i in range(52) if i not in upper]] == 0).all()


def test_synctalk_with_a_named_but_missing_ave_checkpoint_fails_at_start_up(tiny_dataset, tmp_path, monkeypatch):
    """A checkpoint the user names ($LIPSPACE_AVE_WEIGHTS) that is not there is an error, never silently replaced by
    the automatically trained expert (that one is for when nothing is named: tests/av/test_auto.py)."""
    from hydra.utils import instantiate

    from lipspace.utils.config import compose_train
    from lipspace.model.build import build_system

    missing = tmp_path / "no_ave.pt"
    monkeypatch.setenv("LIPSPACE_AVE_WEIGHTS", str(missing))
    cfg = compose_train(["data=dir", f"data.root={tiny_dataset}", "experiment=synctalk"], tmp_path / "run")
    with pytest.raises(LipspaceError, match="lipspace.av.train") as e:
        build_system(cfg, instantiate(cfg.data))
    assert str(missing) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
def test_synctalk_trains_and_is_driven_by_a_new_wav(tiny_dataset, tmp_path, monkeypatch):
    """experiment=synctalk (ave features from a random-init checkpoint) trains a few steps with the masking loss
    and renders a new wav through the neutral upper face + blinks."""
    import av
    import soundfile as sf

    from lipspace.av.sync import AVEncoder, save
    from lipspace.utils.config import compose_train
    from lipspace.tasks.render import render
    from lipspace.tasks.train import train

    torch.manual_seed(0)
    ckpt = save(AVEncoder(width=4), tmp_path / "ave.pt", {"weights": "random init for lipspace tests"})
    monkeypatch.setenv("LIPSPACE_AVE_WEIGHTS", str(ckpt))
    out = tmp_path / "run"
    metrics = train(compose_train(["data=dir", f"data.root={tiny_dataset}", "debug=fast", "logger=csv",
                                   "experiment=synctalk"], out), out)
    assert metrics["global_step"] == 6 and "train/region_att_outside" in metrics
    t = np.arange(int(1.3 * 16000)) / 16000
    wav = tmp_path / "dub.wav"
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32), 16000,
             subtype="PCM_16")
    video = render(out, str(wav))
    with av.open(str(video)) as c:
        assert sum(1 for _ in c.decode(video=0)) == int(1.3 * 25)
