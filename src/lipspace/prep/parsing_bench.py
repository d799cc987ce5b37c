"""Speed of the parsing stage (``bench``: ms/frame of the person and hair models, parse_frame and parse_frames on the
first n frames of the shared may_en clip, best of ``repeats``; ``python -m lipspace.prep.parsing_bench --bench [n]
[hair_stride]``). Measured at 512x512 on 2 shared cores, best of 3 on 50 frames: person model 3.3 ms, hair model 16.5
ms, parse_frame 1.9 ms (1.2 without the neck colour test); parse_frames 22.7 ms/frame at hair_stride=1, 14.5 at 2, 11.9
at 3 (parse_frames' default; head+neck IoU vs stride 1: 0.994-0.997, hair IoU 0.93-0.97 on two clips).
"""

from __future__ import annotations

import time

from lipspace.prep.parsing import parse_frame
from lipspace.prep.parsing_clip import parse_frames


def bench(n: int = 50, size: int = 512, hair_stride: int = 1, threads: bool = True, repeats: int = 3) -> dict:
    """ms/frame of each piece on the first n frames of the shared may_en clip (needs ../shared/assets)."""
    from lipspace.utils.assets import resolve_known
    from lipspace.prep.crop import crop_frames, face_crop_box
    from lipspace.prep.face import track_faces
    from lipspace.prep.io import decode_video_25fps
    from lipspace.prep.segment import Segmenters

    clip = resolve_known("face_landmarker.task").parents[1] / "video" / "may_en_25fps_5s.mp4"
    frames, _ = decode_video_25fps(clip, max_seconds=n / 25)
    tr = track_faces(frames, resolve_known("face_landmarker.task"))
    box = face_crop_box(tr.landmarks, tr.valid, frames.shape[1:3])
    frames = crop_frames(frames, box, size)
    lm = tr.landmarks.copy()
    lm[..., 0] = (lm[..., 0] - box.x0) * size / box.side
    lm[..., 1] = (lm[..., 1] - box.y0) * size / box.side

    def best(fn) -> float:
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return 1000 * min(ts) / len(frames)

    res = {}
    with Segmenters(resolve_known("selfie_segmenter.tflite"), resolve_known("hair_segmenter_derived.tflite")) as s:
        people = [s.person(f) for f in frames]
        hairs = [s.hair(f) for f in frames]
        res["person_ms"] = best(lambda: [s.person(f) for f in frames])
        res["hair_ms"] = best(lambda: [s.hair(f) for f in frames])
        res["parse_frame_ms"] = best(lambda: [parse_frame(p, h, q) for p, h, q in zip(people, hairs, lm)])
        for k in sorted({1, hair_stride}):
            for th in sorted({False, threads}):
                res[f"parse_frames_stride{k}_{'threads' if th else 'serial'}_ms"] = best(
                    lambda k=k, th=th: parse_frames(frames, lm, tr.valid, s, hair_stride=k, threads=th))
    return {k: round(v, 2) for k, v in res.items()}


if __name__ == "__main__":  # python -m lipspace.prep.parsing_bench --bench [n] [hair_stride]
    import sys

    if len(sys.argv) > 1 and sys.argv[1] == "--bench":
        args = [int(a) for a in sys.argv[2:4]]
        print(bench(*(args[:1]), **({"hair_stride": args[1]} if len(args) > 1 else {})))
