"""The pipeline's stages that touch frames (lipspace.prep.pipeline.Preprocessor.stage_*), streamed so that peak memory
does not grow with the clip: decode counts the 25 fps frames without keeping them, track feeds decoded frames to the
landmarker one by one, crop decodes the video a second time and writes the cropped frames in chunks (decoding again
is cheaper than holding the clip), parsing reads frames/ in hair_stride-aligned chunks (identical maps to one
whole-clip call) and background reads only the frames it samples.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

import cv2
import numpy as np

from lipspace.data.schema import FPS, SAMPLE_RATE
from lipspace.prep.pipeline import BACKGROUND_FRAMES, Preprocessor, _bar
from lipspace.prep.runs import evenly_spaced
from lipspace.prep.video_frames import prefetched

log = logging.getLogger("lipspace.prep.pipeline")  # the pipeline's logger: its messages keep their logger name


def decode(prep: Preprocessor) -> dict:
    import soundfile as sf

    from lipspace.prep.io import extract_audio_16k, probe_video

    info = probe_video(prep.video)
    if not info.has_audio:  # fail before spending time on the video
        extract_audio_16k(prep.video)  # raises the clear no-audio error
    video = prep.video_frames(pixels=False, warn=True)
    for _ in video:  # decoding only: the frame count, size and start time (no RGB conversion, nothing kept)
        pass
    n, vinfo = video.n_frames, video.info
    # audio_offset_s > 0 (audio late): audio sample 0 is taken from that much after video frame 0
    audio = extract_audio_16k(prep.video, n_frames=n, fps=FPS, video_start_s=vinfo.start_s + prep.opt.audio_offset_s)
    sf.write(str(prep.out / "audio.wav"), audio, SAMPLE_RATE, subtype="PCM_16")
    if info.fps and abs(info.fps - FPS) > 0.01:
        log.info("%s: %.3f fps source resampled to %d fps by presentation time", prep.video, info.fps, FPS)
    return {"n_frames": n, "source": asdict(info), "source_hw": list(video.frame_hw),
            "video_start_s": vinfo.start_s}


def track(prep: Preprocessor) -> dict:
    from lipspace.prep.face import invalid_ranges, track_faces

    model = prep._model_path("face_landmarker.task", None)
    n = prep.n_frames
    with _bar(n, "track", prep.opt.progress) as bar:
        tr = track_faces(prefetched(prep.video_frames()), model, prep.opt.max_invalid_fraction, source=str(prep.video),
                         progress=bar.update, n_frames=n)
    prep.cache.save_arrays("track", landmarks=tr.landmarks, blendshapes=tr.blendshapes,
                           transforms=tr.transforms, valid=tr.valid, n_faces=tr.n_faces)
    return {"valid_fraction": float(tr.valid.mean()), "invalid_ranges_s": invalid_ranges(tr.valid, FPS),
            "multi_face_frames": int((tr.n_faces > 1).sum())}


def crop(prep: Preprocessor) -> dict:
    from lipspace.prep.crop import crop_frames, face_crop_box
    from lipspace.prep.pngio import PngSink, chunk_frames

    tr = prep.cache.load_arrays("track")
    src_hw = tuple(prep.cache.marker("decode")["info"]["source_hw"])
    size = prep.opt.size
    # the box comes from the whole track: no frame is needed until the second decoding pass below crops them
    box = face_crop_box(tr["landmarks"], tr["valid"], src_hw, face_scale=prep.opt.face_scale, source=str(prep.video))
    lmk = box.apply_to_landmarks(tr["landmarks"], size)
    n = prep.n_frames
    with _bar(n, "frames", prep.opt.progress) as bar, \
            PngSink(prep.out / "frames", rgb=True, chunk=chunk_frames(size * size * 3), progress=bar.update) as sink:
        for frame in prefetched(prep.video_frames()):
            sink.add(crop_frames(frame[None], box, size)[0])
    if sink.n != n:  # the file changed under us since the decode stage
        raise _changed(prep, sink.n)
    prep.cache.save_arrays("crop", landmarks=lmk)
    return {"box": {"x0": box.x0, "y0": box.y0, "side": box.side}, "scale": size / box.side}


def _changed(prep: Preprocessor, got: int):
    from lipspace.utils.errors import LipspaceError

    return LipspaceError(f"{prep.video}: decoded {got} frames now, {prep.n_frames} at the decode stage; the file "
                         f"changed while it was prepared — re-run to start again")


def parsing(prep: Preprocessor) -> dict:
    from lipspace.prep.parsing_clip import parse_frames
    from lipspace.prep.pngio import chunk_frames, write_pngs
    from lipspace.prep.segment import Segmenters

    tr = prep.cache.load_arrays("track")
    lmk = prep.cache.load_arrays("crop")["landmarks"]
    o = prep.opt
    n = prep.n_frames
    # chunks start and end on hair_stride blocks: each frame sees the same hair key frame as in one whole-clip call
    step = chunk_frames(o.size * o.size * 3, multiple=o.hair_stride)
    counts = np.zeros(10, np.int64)
    with Segmenters(prep._model_path("selfie_segmenter.tflite", None),
                    prep._model_path("hair_segmenter_derived.tflite", None),
                    multiclass=o.multiclass_model) as seg, _bar(n, "parsing", o.progress) as bar:
        for first in range(0, n, step):
            idx = range(first, min(first + step, n))
            maps = parse_frames(prep.crop_frames(idx), lmk, tr["valid"], seg, hair_stride=o.hair_stride,
                                progress=bar.update, first=first)
            write_pngs(prep.out / "parsing", maps, rgb=False, first=first, prune=idx.stop == n)
            # the class fractions are measured on every (n // 50)-th frame, as on the whole clip
            stride = max(1, n // 50)
            picked = maps[(-first) % stride::stride]
            counts += np.bincount(picked.reshape(-1), minlength=10)[:10]
    return {"class_fraction": {str(k): round(float(c) / counts.sum(), 5) for k, c in enumerate(counts)}}


def background(prep: Preprocessor) -> dict:
    from lipspace.prep.background import estimate_background

    # The background is static: a median over BACKGROUND_FRAMES frames spread over the clip gives the same image
    # as over all of them (on the 71 s clip a spot uncovered for > 0.5 s is still seen) at a fraction of
    # the cost; only those frames are read.
    idx = evenly_spaced(np.arange(prep.n_frames), BACKGROUND_FRAMES)
    bg, filled = estimate_background(prep.crop_frames(idx), prep.parsing_maps(idx) == 0, source=str(prep.video))
    cv2.imwrite(str(prep.out / "background.png"), np.ascontiguousarray(bg[:, :, ::-1]))
    return {"inpainted_fraction": round(float(filled.mean()), 5)}
