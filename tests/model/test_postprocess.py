"""Render-time post-processing (lipspace.model.postprocess): SyncTalk's Portrait-Sync paste and LipNeRF's neck-gap
inpainting on synthetic arrays with known masks, and the evaluation path with ``postprocess`` on a tiny trained run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from lipspace.model import postprocess as P
from lipspace.utils.errors import LipspaceError

H = W = 64
FAST = ["debug=fast", "logger=csv", "renderer.n_coarse=8", "renderer.n_fine=8", "renderer.field.hidden=32",
        "renderer.field.n_layers=3", "renderer.field.skips=[]"]


def _scene(seed: int = 0):
    """Parsing of a portrait: face disc (skin, a mouth), hair cap, neck below the chin, torso at the bottom; a random
    source frame, a random render (never equal to its background), and a flat blue background."""
    yy, xx = np.mgrid[0:H, 0:W]
    lab = np.zeros((H, W), np.uint8)
    lab[(yy > 40) & (np.abs(xx - 32) < 8)] = P.NECK_CLASS
    lab[yy >= 52] = P.TORSO_CLASS
    face = (xx - 32) ** 2 + (yy - 26) ** 2 < 14 ** 2
    lab[face & (yy < 18)] = 1  # hair
    lab[face & (yy >= 18)] = 2
    lab[(np.abs(xx - 32) < 4) & (np.abs(yy - 32) < 2)] = 3  # lips
    rng = np.random.default_rng(seed)
    source = torch.from_numpy(rng.uniform(0, 1, (H, W, 3)).astype(np.float32))
    render = torch.from_numpy(rng.uniform(0.3, 0.7, (H, W, 3)).astype(np.float32))
    background = torch.tensor([0.0, 0.0, 1.0]).expand(H, W, 3).contiguous()
    return torch.from_numpy(lab), source, render, background


def _distance_to(mask: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)


def test_portrait_sync_keeps_the_source_outside_and_the_render_inside_with_a_smooth_band():
    lab, source, render, bg = _scene()
    pad, blur = 2, 4
    out = P.portrait_sync(render, source, lab, bg, pad_px=pad, blur_px=blur).numpy()
    face = np.isin(lab.numpy(), P.FACE_CLASSES)
    far = _distance_to(face) > pad + blur + 1
    deep = _distance_to(~face) > blur + 1
    assert far.sum() > 1000 and deep.sum() > 100
    np.testing.assert_array_equal(out[far], source.numpy()[far])  # hair, neck, torso, background: the source's
    np.testing.assert_array_equal(out[deep], render.numpy()[deep])  # inside the face: the render's
    alpha = P.paste_mask(lab.numpy(), pad, blur)
    band = (alpha > 0) & (alpha < 1)
    assert band.sum() > 50 and len(np.unique(np.round(alpha[band], 3))) > 5  # a gradual band, not a hard edge
    mix = alpha[..., None] * render.numpy() + (1 - alpha[..., None]) * source.numpy()
    np.testing.assert_allclose(out[band], mix[band], atol=1e-6)
    row = alpha[26, 32:]  # from the face's centre rightwards: 1, falling smoothly, then 0
    assert row[0] == 1 and row[-1] == 0 and np.all(np.diff(row) <= 1e-7)
    assert np.abs(np.diff(row)).max() < 0.5


def test_portrait_sync_fills_the_neck_gap_with_the_neck_colour():
    lab, source, render, bg = _scene()
    neck = lab.numpy() == P.NECK_CLASS
    yy = np.mgrid[0:H, 0:W][0]
    gap = neck & (yy <= 42)  # right under the chin the render shows its background: neither head nor torso
    render[torch.from_numpy(gap)] = bg[0, 0]
    out = P.portrait_sync(render, source, lab, bg, pad_px=2, blur_px=4).numpy()
    alpha = P.paste_mask(lab.numpy(), 2, 4)
    filled = gap & (alpha > 0)
    assert filled.sum() > 5
    np.testing.assert_allclose(out[filled], np.broadcast_to(source.numpy()[neck].mean(0), out[filled].shape),
                               atol=1e-6)
    np.testing.assert_array_equal(out[gap & (alpha == 0)], source.numpy()[gap & (alpha == 0)])


@pytest.mark.parametrize("method", ["telea", "ns"])
def test_inpaint_neck_fills_the_hole_from_its_surroundings_and_nothing_else(method):
    lab, _, _, bg = _scene()
    yy, xx = np.mgrid[0:H, 0:W]
    skin = np.array([0.8, 0.6, 0.5], np.float32)
    render = torch.from_numpy((skin + 0.02 * np.sin(xx / 5.0)[..., None]).astype(np.float32))  # a smooth skin
    render[torch.from_numpy(yy < 8)] = bg[0, 0]  # true background at the top: uncovered but no neck, left alone
    hole = (lab.numpy() == P.NECK_CLASS) & (yy >= 43) & (yy <= 47)
    render[torch.from_numpy(hole)] = bg[0, 0]
    out = P.inpaint_neck(render, lab, bg, method=method).numpy()
    assert np.abs(out[hole] - skin).max() < 0.06  # close to the surrounding skin, far from the blue it was
    np.testing.assert_array_equal(out[~hole], render.numpy()[~hole])
    untouched = P.inpaint_neck(render.clone().fill_(0.5), lab, bg)  # no uncovered neck: the render itself
    assert torch.equal(untouched, torch.full_like(render, 0.5))


def test_unknown_option_is_one_clear_error():
    with pytest.raises(LipspaceError, match="evaluation.postprocess='portait_sync'.*portrait_sync.*inpaint_neck"):
        P.check_postprocess("portait_sync")
    assert P.check_postprocess(None) == "none"
    with pytest.raises(LipspaceError, match="method='fast'"):
        P.inpaint_neck(torch.zeros(4, 4, 3), torch.zeros(4, 4, dtype=torch.uint8), torch.zeros(4, 4, 3), "fast")


def test_parsing_at_a_downscale_is_the_majority_class_of_each_block():
    lab = torch.zeros(1, 4, 6, dtype=torch.uint8)
    lab[0, :2, :2] = 2
    lab[0, 0, 2] = 8  # one neck pixel among three background ones
    clip = SimpleNamespace(parsing=lab)
    small = P.parsing_at(clip, 0, (2, 3), downscale=2)
    assert small.tolist() == [[2, 0, 0], [0, 0, 0]]
    assert torch.equal(P.parsing_at(clip, 0, (4, 6)), lab[0])


def test_generated_head_motion_refuses_portrait_sync(tmp_path):
    """A dub pastes into the playback frames; a conditioner that generates its own head motion cannot (two faces)."""
    from lipspace.model.playback import frames_from_audio

    wav = tmp_path / "speech.wav"
    sf.write(wav, (0.1 * np.random.default_rng(0).normal(size=16000)).astype(np.float32), 16000)
    system = SimpleNamespace(conditioner=SimpleNamespace(name="lipblink", generates_motion=True))
    dm = SimpleNamespace(clip=SimpleNamespace(meta={"fps": 25}, n_frames=10), split=SimpleNamespace(test=np.arange(5)))
    with pytest.raises(LipspaceError, match="portrait_sync.*'lipblink' generates its own head motion"):
        frames_from_audio(system, dm, wav, postprocess="portrait_sync")


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset, tmp_path_factory):
    from lipspace.tasks.train import train
    from lipspace.utils.config import compose_train

    out = tmp_path_factory.mktemp("postprocess_run") / "run"
    train(compose_train(["data=dir", f"data.root={tiny_dataset}", *FAST, "conditioner=deepspeech",
                         "conditioner.audio.window=8"], out), out)
    return out


def test_evaluation_rows_say_which_postprocess_and_portrait_sync_scores_higher(tiny_run, tmp_path):
    from lipspace.tasks.evaluate import evaluate

    wav = tmp_path / "dub.wav"
    sf.write(wav, (0.1 * np.random.default_rng(1).normal(size=8000)).astype(np.float32), 16000)
    metrics = {"lpips": False, "face": False, "lse": False, "lse_local": False}
    kw = {"videos": False, "settings": metrics, "dub_audio": [wav], "dub_seconds": 0.3}
    base = evaluate(tiny_run, **kw)
    pasted = evaluate(tiny_run, postprocess="portrait_sync", **kw)
    assert set(base["postprocess"]) == {"none"} and set(pasted["postprocess"]) == {"portrait_sync"}
    assert set(base["head_pose"]) == {"fitted"}  # the tiny dataset is neither generated nor stabilised
    scored = base["eval_set"].isin(["test_tail", "heldout/utt_00"])
    assert scored.sum() >= 2 and list(base["eval_set"]) == list(pasted["eval_set"])
    assert (pasted.loc[scored, "psnr"].to_numpy() > base.loc[scored, "psnr"].to_numpy() + 1.0).all()
    np.testing.assert_array_equal(pasted.loc[scored, "baseline_mean_frame_psnr"],
                                  base.loc[scored, "baseline_mean_frame_psnr"])  # the baseline is never pasted
    dub = pasted[pasted["eval_set"] == "dub/dub"].iloc[0]
    assert dub["dub_status"] == "ok" and dub["n_frames"] > 0  # pasted into the playback frames
    with pytest.raises(LipspaceError, match="unknown render post-processing"):
        evaluate(tiny_run, postprocess="synctalk", **kw)
