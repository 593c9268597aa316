"""Packers on small real inputs written here with PyAV and PIL: odd aspect ratios, 24/30/60 fps, short and
corrupt clips, numeric-order traps, dataset layouts, splits, resume, verify."""

from __future__ import annotations

import io
import json
import tarfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from vsyn.errors import VsynError

from .helpers import pack_procedural, shards_cli


def _write_video(path: Path, frames: np.ndarray, fps: int) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if path.suffix != ".webm" else "libvpx-vp9", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _counting_frames(n: int, h: int, w: int) -> np.ndarray:
    """Frame i is a flat grey of level 4 i: the index survives lossy coding and can be read back."""
    return np.broadcast_to((np.arange(n) * 4).astype(np.uint8)[:, None, None, None], (n, h, w, 3)).copy()


def _samples(out: Path) -> list[dict]:
    """Every sample of a pack as {member suffix: bytes}."""
    samples = []
    for shard in json.loads((out / "manifest.json").read_text())["shards"]:
        with tarfile.open(out / shard["name"]) as tar:
            current: dict = {}
            for member in tar:
                key, suffix = member.name.split(".", 1)
                if current.get("__key__") != key:
                    current = {"__key__": key}
                    samples.append(current)
                current[suffix] = tar.extractfile(member).read()
    return samples


def _meta(sample: dict) -> dict:
    return json.loads(sample["json"])


def _frames_npy(sample: dict) -> np.ndarray:
    return np.load(io.BytesIO(sample["frames.npy"]))


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    _write_video(root / "wide30.mp4", _counting_frames(60, 54, 96), 30)  # 16:9, 2 s
    _write_video(root / "tall24.mp4", _counting_frames(24, 80, 50), 24)  # portrait, 1 s
    _write_video(root / "fast60.webm", _counting_frames(30, 40, 40), 60)  # 0.5 s
    _write_video(root / "short.mp4", _counting_frames(5, 32, 32), 30)  # too short for any clip
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00 ftypisom" + b"\x13" * 500)
    return root


def test_videos_resample_crop_and_skip(video_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert shards_cli("pack", "videos", video_folder, out, "--size", 32, "--frames", 8, "--fps", 15,
                      "--layout", "npy", "--workers", 1) == 0
    summary = capsys.readouterr()
    assert "dropped: 1 short, 1 unreadable" in summary.out and "broken.mp4" in summary.err
    by_video: dict[str, list[dict]] = {}
    for sample in _samples(out):
        by_video.setdefault(_meta(sample)["video_id"], []).append(sample)
    # 2 s at 30 fps -> 30 ticks at 15 fps -> 3 clips; 1 s at 24 fps -> 15 -> 1; 0.5 s at 60 fps -> 8 -> 1
    assert {v: len(s) for v, s in by_video.items()} == {"wide30": 3, "tall24": 1, "fast60": 1}
    first = _meta(by_video["wide30"][0])
    assert first["fps"] == 15 and first["frame_indices"] == list(range(0, 16, 2)) and first["size"] == [32, 32]
    assert _meta(by_video["fast60"][0])["frame_indices"] == list(range(0, 32, 4))
    levels = _frames_npy(by_video["wide30"][1]).mean(axis=(1, 2, 3)) / 4  # the grey level says the source frame
    np.testing.assert_allclose(levels, range(16, 32, 2), atol=0.6)
    assert all(_frames_npy(s[0]).shape == (8, 32, 32, 3) for s in by_video.values())


def test_aspect_is_kept_by_centre_crop(tmp_path):
    wide = np.zeros((10, 32, 96, 3), np.uint8)
    wide[:, :, :32, 0] = wide[:, :, 32:64, 1] = wide[:, :, 64:, 2] = 255  # red | green | blue thirds
    _write_video(tmp_path / "in" / "rgb.mp4" if (tmp_path / "in").mkdir() is None else None, wide, 30)
    out = tmp_path / "out"
    assert shards_cli("pack", "videos", tmp_path / "in", out, "--size", 16, "--frames", 8, "--layout", "npy",
                      "--workers", 1) == 0
    frame = _frames_npy(_samples(out)[0])[0].astype(int)
    assert frame[..., 1].mean() > 200 and frame[..., 0].mean() < 40 and frame[..., 2].mean() < 40  # all green


def test_csv_rows_with_start_and_end(video_folder, tmp_path):
    csv = tmp_path / "clips.csv"
    csv.write_text(f"video_id,file,start,end\nw,{video_folder / 'wide30.mp4'},1.0,2.0\n"
                   f"t,{video_folder / 'tall24.mp4'},,\n")
    out = tmp_path / "out"
    assert shards_cli("pack", "csv", csv, out, "--size", 16, "--frames", 8, "--layout", "npy",
                      "--workers", 1) == 0
    metas = [_meta(s) for s in _samples(out)]
    w = [m for m in metas if m["video_id"] == "w"]
    assert len(w) == 3 and w[0]["frame_indices"][0] == 30 and w[-1]["frame_indices"][-1] < 60
    assert sum(m["video_id"] == "t" for m in metas) == 3


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(VsynError, match="no such file"):
        shards_cli("pack", "videos", tmp_path / "nope", tmp_path / "out")
    (tmp_path / "bad.csv").write_text("name,path\n")
    with pytest.raises(VsynError, match="lacks column"):
        shards_cli("pack", "csv", tmp_path / "bad.csv", tmp_path / "out")
    with pytest.raises(VsynError, match="shards pack csv"):
        shards_cli("pack", "videos", tmp_path / "bad.csv", tmp_path / "out")
    with pytest.raises(VsynError, match=r"no .*train,test"):
        shards_cli("pack", "sky", tmp_path, tmp_path / "out")


def _image_folder(folder: Path, n: int, size: tuple[int, int] = (20, 12)) -> None:
    folder.mkdir(parents=True)
    for i in range(n):  # 0.png, 1.png, ..., 10.png: lexicographic order would put 10 before 2
        Image.fromarray(np.full((size[1], size[0], 3), i * 15, np.uint8)).save(folder / f"{i}.png")


def test_bair_frames_in_numeric_order(tmp_path):
    root = tmp_path / "bair"
    _image_folder(root / "train" / "traj_0_to_255" / "0", 12)
    _image_folder(root / "test" / "traj_0_to_255" / "3", 12)
    _image_folder(root / "train" / "traj_0_to_255" / "1", 5)  # shorter than T: skipped
    out = tmp_path / "out"
    assert shards_cli("pack", "bair", root, out, "--size", 8, "--frames", 12, "--layout", "npy",
                      "--workers", 1) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"] == {"train": 1, "val": 1}
    assert sorted(s["name"] for s in manifest["shards"]) == ["train-000000.tar", "val-000000.tar"]
    for sample in _samples(out):
        levels = _frames_npy(sample).mean(axis=(1, 2, 3))
        np.testing.assert_array_equal(levels, np.arange(12) * 15)


def test_sky_layout_chunks_and_official_split(tmp_path):
    root = tmp_path / "sky"
    _image_folder(root / "train" / "v1" / "c1", 17)  # two 8-frame chunks, remainder dropped
    _image_folder(root / "train" / "v1" / "c2", 8)
    _image_folder(root / "test" / "v2" / "c1", 9)
    out = tmp_path / "out"
    assert shards_cli("pack", "sky", root, out, "--size", 8, "--frames", 8, "--workers", 2) == 0
    metas = [_meta(s) for s in _samples(out)]
    assert sorted((m["video_id"], m["split"], m["frame_indices"][0]) for m in metas) == [
        ("test/v2", "val", 0), ("train/v1", "train", 0), ("train/v1", "train", 0), ("train/v1", "train", 8)]


def test_split_is_by_video_and_static_clips_are_dropped(tmp_path):
    root = tmp_path / "frames"
    for v in range(8):
        _image_folder(root / f"video{v}", 16)  # changes every frame
    still = root / "still"
    still.mkdir()
    for i in range(16):
        Image.fromarray(np.full((12, 20, 3), 90, np.uint8)).save(still / f"{i}.png")
    out = tmp_path / "out"
    assert shards_cli("pack", "frames", root, out, "--size", 8, "--frames", 4, "--val-fraction", 0.5,
                      "--min-motion", 0.1, "--motion-gap", 2, "--layout", "npy", "--workers", 1) == 0
    metas = [_meta(s) for s in _samples(out)]
    assert "still" not in {m["video_id"] for m in metas}
    split_of: dict[str, set] = {}
    for m in metas:
        split_of.setdefault(m["video_id"], set()).add(m["split"])
    assert all(len(s) == 1 for s in split_of.values()) and {"train", "val"} == set().union(*split_of.values())


def test_resume_keeps_verified_shards_and_rebuilds_the_rest(tmp_path, capsys):
    out = pack_procedural(tmp_path / "out", clips=12, per_shard=4)
    before = json.loads((out / "manifest.json").read_text())["shards"]
    keys = [s["__key__"] for s in _samples(out)]
    (out / "train-000001.tar").unlink()
    (out / "train-000002.tar.tmp").write_bytes(b"half a shard")  # what an interrupted run leaves
    capsys.readouterr()
    pack_procedural(out, clips=12, per_shard=4)
    assert "1 shard(s) kept from an earlier run" in capsys.readouterr().out
    after = json.loads((out / "manifest.json").read_text())["shards"]
    assert after[0] == before[0] and [(s["name"], s["num_samples"]) for s in after] == [
        (s["name"], s["num_samples"]) for s in before]
    assert [s["__key__"] for s in _samples(out)] == keys and not list(out.glob("*.tmp"))
    pack_procedural(out, clips=12, per_shard=4)
    assert "packed 0 clips into 0 shard(s)" in capsys.readouterr().out
    with pytest.raises(VsynError, match="other settings"):
        pack_procedural(out, clips=13, per_shard=4)


def test_verify_catches_damage(tmp_path, capsys):
    from vsyn.cli import main

    out = pack_procedural(tmp_path / "out", clips=8, per_shard=4)
    assert main(["shards", "verify", str(out)]) == 0
    data = bytearray((out / "train-000001.tar").read_bytes())
    data[1000] ^= 0xFF
    (out / "train-000001.tar").write_bytes(bytes(data))
    (out / "stray.tar").write_bytes(b"")
    assert main(["shards", "verify", str(out)]) == 1
    report = capsys.readouterr().out
    assert "train-000001.tar: sha256 mismatch" in report and "stray.tar: shard not in the manifest" in report
