"""Video encode/decode through PyAV: round trips, exact sizes and frame counts, byte-identical re-encodes."""

import numpy as np
import pytest

from vsyn.errors import VsynError
from vsyn.video import X264_PRESETS, decode_video, encode_video, video_grid, write_video


def smooth_clip(t=12, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.random(3) * 6
    frames = [
        np.stack([np.sin((x + 2 * k) / 7 + phase[0]), np.cos((y - k) / 9 + phase[1]), np.sin((x + y) / 11 + phase[2])], -1)
        for k in range(t)
    ]
    return ((np.stack(frames) * 0.45 + 0.5) * 255).astype(np.uint8)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("fmt, min_psnr", [("mp4", 32.0), ("webm", 32.0), ("gif", 25.0)])
def test_round_trip(fmt, min_psnr):
    clip = smooth_clip()
    data = encode_video(clip, fps=25, fmt=fmt)
    back = decode_video(data)
    assert back.shape == clip.shape
    assert psnr(back, clip) > min_psnr  # lossy 4:2:0 (mp4, webm) or 256-colour palette (gif)
    assert encode_video(clip, fps=25, fmt=fmt) == data  # bit-exact: same frames, same bytes


def test_different_frames_give_different_bytes():
    assert encode_video(smooth_clip(seed=0)) != encode_video(smooth_clip(seed=1))


def test_odd_sizes_are_padded_to_even_for_420_codecs():
    clip = smooth_clip(h=33, w=31)
    assert decode_video(encode_video(clip, fmt="mp4")).shape == (12, 34, 32, 3)
    assert decode_video(encode_video(clip, fmt="gif")).shape == (12, 33, 31, 3)


def test_errors_are_clear(tmp_path):
    with pytest.raises(VsynError, match="unsupported video format"):
        encode_video(smooth_clip(), fmt="avi")
    with pytest.raises(VsynError, match="cannot decode"):
        decode_video(b"not a video at all")
    path = write_video(tmp_path / "a.webm", smooth_clip(t=3))
    assert decode_video(path).shape[0] == 3


@pytest.mark.parametrize("preset", X264_PRESETS)
def test_every_x264_preset_decodes_and_repeats(preset):
    clip = smooth_clip(t=9, h=48, w=64, seed=3)
    data = encode_video(clip, preset=preset)
    back = decode_video(data)
    assert back.shape == clip.shape
    assert psnr(back, clip) > 30.0  # same CRF 17 under every preset; only speed and size change
    assert encode_video(clip, preset=preset) == data  # deterministic per preset


def test_preset_reaches_x264_and_defaults_to_medium():
    clip = smooth_clip(t=12, h=64, w=64, seed=4)
    default = encode_video(clip)
    assert encode_video(clip, preset="medium") == default  # the default bytes are medium's
    ultrafast = encode_video(clip, preset="ultrafast")
    assert ultrafast != default and b"subme=0" in ultrafast  # x264 writes its settings into the stream
    assert psnr(decode_video(ultrafast), clip) > 32.0
    # webm and gif take no preset: a valid one leaves their bytes unchanged
    assert encode_video(clip, fmt="webm", preset="ultrafast") == encode_video(clip, fmt="webm")
    assert encode_video(clip, fmt="gif", preset="ultrafast") == encode_video(clip, fmt="gif")


@pytest.mark.parametrize("fmt", ["mp4", "webm", "gif"])
def test_unknown_preset_is_refused_with_the_allowed_ones(fmt):
    with pytest.raises(VsynError, match="unknown x264 preset 'quick'.*ultrafast.*veryslow"):
        encode_video(smooth_clip(t=2), fmt=fmt, preset="quick")


def test_grid_places_each_clip():
    clips = np.stack([np.full((2, 4, 4, 3), 50 * (i + 1), np.uint8) for i in range(3)])
    grid = video_grid(clips, columns=2, pad=1)
    assert grid.shape == (2, 1 + 2 * 5, 1 + 2 * 5, 3)
    assert (grid[:, 1:5, 1:5] == 50).all() and (grid[:, 1:5, 6:10] == 100).all() and (grid[:, 6:10, 1:5] == 150).all()


def test_contact_sheet_panels_and_difference():
    from vsyn.video import contact_sheet

    a = np.zeros((6, 8, 3), np.uint8)
    b = a.copy()
    b[2, 3] = (40, 40, 40)  # one pixel changed by 40 levels
    sheet = contact_sheet({0: a, 12: a, 24: b}, gain=4.0, pad=1)
    assert sheet.shape == (8, 1 + 4 * 9, 3)
    diff = sheet[1:7, 1 + 3 * 9 : 1 + 3 * 9 + 8, 0]
    assert diff[2, 3] == 160 and diff.sum() == 160  # 4 x 40 where it moved, black elsewhere
    assert np.array_equal(sheet[1:7, 1 + 2 * 9 : 1 + 2 * 9 + 8], b)
