"""experiment=dfanerf end to end on the tiny dataset: prepare (cached) -> train -> evaluate with generated head motion
-> render driven by a new wav with generated poses."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from tiny_sizes import TINY_LIPBLINK_CONDITIONER

from lipspace.utils.config import compose_train
from lipspace.tasks.evaluate import evaluate
from lipspace.tasks.render import render
from lipspace.tasks.train import train

TINY_LIPBLINK = ["experiment=dfanerf", "debug=fast", "logger=csv", *TINY_LIPBLINK_CONDITIONER,
                 "renderer.field.hidden=32", "renderer.field.n_layers=2", "renderer.field.skips=[]"]


@pytest.fixture(scope="module")
def trained_run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("lipblink_run") / "run"
    cfg = compose_train(["data=dir", f"data.root={tiny_dataset}", *TINY_LIPBLINK], out)
    train(cfg, out, {"conditioner": "lipblink", "renderer": "mlp", "experiment": "dfanerf"})
    return out


def test_prepare_caches_and_evaluate_reports_generated_motion(trained_run, tiny_dataset):
    assert list((tiny_dataset / "features").glob("lipblink-*.pt")), "prepare caches its stages"
    df = evaluate(trained_run, videos=False)
    assert list(df.driver) == ["tracked_inputs", "audio", "oracle_inputs", "audio"]
    audio_row = df[(df.driver == "audio") & df.eval_set.str.startswith("heldout/")].iloc[0]
    for key in ("d_rot_deg", "d_pos", "d_pos_cm", "blinks_per_s", "gt_blinks_per_s", "psnr"):
        assert np.isfinite(audio_row[key]), key
    assert audio_row["d_pos_cm"] == pytest.approx(11.0 * audio_row["d_pos"])


def test_render_driven_by_a_new_wav_with_generated_poses(trained_run, tmp_path):
    import av

    t = np.arange(int(0.6 * 16000)) / 16000
    wav = tmp_path / "dub.wav"
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32), 16000,
             subtype="PCM_16")
    video = render(trained_run, str(wav))
    with av.open(str(video)) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n == int(0.6 * 25) and video.name == "dub.mp4"


def test_posed_playback_takes_generated_poses_and_playback_backgrounds(tiny_dataset):
    import torch

    from lipspace.data.clip import load_clip
    from lipspace.data.sampling import frame_rays
    from lipspace.model.playback import posed_playback

    clip = load_clip(tiny_dataset)
    poses = clip.pose[[0, 0, 0]].clone()
    poses[:, 0, 3] = torch.tensor([0.0, 0.1, 0.2])
    view = posed_playback(clip, np.array([5, 3, 5]), poses)
    assert view.n_frames == 3 and torch.equal(view.frames[1], clip.frames[3])
    assert torch.equal(view.pose, poses) and clip.pose[0, 0, 3] == 0.0  # the clip itself is untouched
    assert torch.allclose(frame_rays(view, 2)["rays_o"][0], -poses[2, :3, :3].T @ poses[2, :3, 3], atol=1e-5)
