"""The `vsyn` command as a user meets it: every bad invocation is one `vsyn: error:` line, exit code 2, and leaves
the working directory exactly as it was; --version, -v anywhere, and sub-commands with their own help."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from vsyn import __version__
from vsyn.cli import build_parser, main
from vsyn.config import load_config
from vsyn.nn import build_generator
from vsyn.snapshot import COMPLETE_MARKER, save_snapshot

REPO = Path(__file__).resolve().parents[1]


def tree(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Every path under root with (is a folder, size, mtime): any write shows up."""
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's folder: a photo, a TIFF, an odd-size mask, a bad CSV, an empty folder, a folder with a broken video,
    a tiny trained snapshot."""
    Image.new("RGB", (48, 32), (90, 140, 200)).save(tmp_path / "photo.jpg")
    Image.new("RGB", (48, 32), (90, 140, 200)).save(tmp_path / "photo.tiff")
    Image.new("L", (8, 8), 255).save(tmp_path / "small-mask.png")
    (tmp_path / "bad.csv").write_text("name,path\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"not a video")
    cfg = load_config("tiny-cpu", ["model.ch_g=4"])
    torch.manual_seed(0)
    gen = build_generator(cfg.model)
    save_snapshot(tmp_path / "run" / "checkpoints" / "ckpt-000000001", gen, gen, cfg, step=1, kimg=0.008)
    (tmp_path / "run" / "checkpoints" / "ckpt-000000001" / COMPLETE_MARKER).touch()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "no-slurm.conf"))  # no cluster answers, even one installed
    return tmp_path


# argv, a phrase the one line must hold. Each row is a mistake a user makes; several were tracebacks once.
BAD_INVOCATIONS = [
    (["info", "photo.jpg"], "is not a YAML or JSON text file"),
    (["info", "folder"], "is a folder without config.json"),
    (["train", "photo.jpg"], "is not a YAML or JSON text file"),
    (["train", "tiny-cpu", "model.resolution=48"], "power of two"),
    (["train", "tiny-cpu", "model.nope=1"], "unknown config key 'model.nope'"),
    (["train", "tiny-cpu"], "data.train is empty"),
    (["train", "tiny-cpu", "data.train=data/nope"], "no readable clips in data/nope"),  # before any network is built
    (["train", "tiny-cpu", "data.train=photo.jpg", "train.run_dir=runs/err1"], "no readable clips"),
    (["shards", "verify", "photo.jpg"], "is not a shard manifest"),
    (["shards", "verify", "nope"], "nope does not exist"),
    (["shards", "pack", "procedural", "photo.jpg"], "exists and is not a folder"),
    (["shards", "pack", "videos", "nope", "out"], "no such file or folder"),
    (["shards", "pack", "videos", "bad.csv", "out"], "vsyn shards pack csv"),
    (["shards", "pack", "csv", "bad.csv", "out"], "lacks column(s) file, video_id"),
    (["shards", "pack", "sky", "folder", "out"], "no folder/{train,test}"),
    (["shards", "pack", "videos", "photo.jpg", "out"], "neither a folder nor a video file"),
    (["shards", "pack", "frames", "folder", "out", "--workers", "1"], "frames: no image folders under folder"),
    (["shards", "pack", "videos", "videos", "out", "--workers", "1"], "no clips to pack"),  # refused mid-pack
    (["export", "run", "--model-store", "photo.jpg"], "exists and is not a folder"),
    (["export", "nope", "--model-store", "store"], "checkpoint 'nope' does not exist"),
    (["animate", "nope", "photo.jpg", "-o", "out.mp4"], "checkpoint 'nope' does not exist"),
    (["animate", "run", "folder", "-o", "out.mp4"], "is a folder, not an image file"),
    (["animate", "run", "nope.png", "-o", "out.mp4"], "image 'nope.png' does not exist"),
    (["animate", "run", "photo.tiff", "-o", "out.mp4"], "is not a PNG, JPEG or WebP image"),
    (["animate", "run", "photo.jpg", "--mask", "small-mask.png", "-o", "out.mp4"], "mask is 8x8; it must match"),
    (["animate", "run", "photo.jpg", "-o", "out.xyz"], "cannot tell the video format"),
    (["eval", "nope", "--data", "data/nope", "--metrics", "psnr"], "checkpoint 'nope' does not exist"),
    (["eval", "copy-frame0", "--data", "data/nope", "--metrics", "psnr", "--resolution", "32"], "no readable clips"),
    (["jobs", "status", "12345"], "job 12345 is unknown"),
    (["jobs", "status", "photo.jpg"], "neither a run directory nor a job id"),
    (["launch", "tiny-cpu", "--profile", "nope"], "no profile 'nope'"),
    (["launch", "tiny-cpu", "--profile", "local", "data.train=x"], "SLURM"),  # no cluster: nothing written
    (["serve", "status", "--run-dir", "nope"], "no server.json"),
    (["serve", "stop", "--run-dir", "folder"], "no server.json"),
]


@pytest.mark.parametrize("argv, phrase", BAD_INVOCATIONS, ids=[" ".join(a) for a, _ in BAD_INVOCATIONS])
def test_bad_invocation_is_one_line_exit_2_and_leaves_nothing(workdir, capsys, argv, phrase):
    before = tree(workdir)
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith("vsyn: error: ") and phrase in lines[0], err
    assert "Traceback" not in out
    assert tree(workdir) == before  # nothing created, nothing rewritten


@pytest.mark.parametrize("argv, phrase", [
    (["info", "photo.jpg"], "is not a YAML or JSON text file"),
    (["train", "tiny-cpu", "data.train=data/nope"], "no readable clips in data/nope"),
    (["shards", "pack", "procedural", "photo.jpg"], "exists and is not a folder"),
])
def test_real_process_prints_one_line_and_no_library_noise(workdir, argv, phrase):
    """As a shell runs it: nothing on stdout, one line on stderr (no DeepSpeed or warnings chatter), exit 2."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "vsyn", *argv], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and phrase in proc.stderr, proc.stderr


def test_usage_mistakes_exit_2_with_argparse_line(workdir, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "start"])
    assert exc.value.code == 2 and "the following arguments are required: --model-store" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"vsyn {__version__}"


@pytest.mark.parametrize("argv", [["-v", "info", "tiny-cpu"], ["info", "-v", "tiny-cpu"], ["info", "tiny-cpu", "-v"],
                                  ["shards", "pack", "procedural", "out", "-v"], ["serve", "status", "--verbose"],
                                  ["train", "tiny-cpu", "a=1", "-v", "b=2"], ["shards", "pack", "videos", "a", "-v", "b",
                                                                              "out"]])
def test_verbose_anywhere(argv):
    args = build_parser().parse_args(argv)
    assert args.verbose is True
    quiet = build_parser().parse_args([a for a in argv if a not in ("-v", "--verbose")])
    assert quiet.verbose is False and vars(quiet) == {**vars(args), "verbose": False}  # positionals unaffected


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


def test_each_pack_source_has_its_own_help_with_defaults(capsys):
    listing = _help(capsys, "shards", "pack")
    for source in ("procedural", "sky", "bair", "videos", "frames", "csv"):
        assert f"    {source}" in listing
    assert "--clips CLIPS" in _help(capsys, "shards", "pack", "procedural")
    videos = _help(capsys, "shards", "pack", "videos")
    assert "folders searched" in videos and "--clips" not in videos and "INPUT [INPUT ...] OUT" in videos
    assert "--source-fps" in _help(capsys, "shards", "pack", "frames")
    csv = _help(capsys, "shards", "pack", "csv")
    assert "video_id,file,start,end" in csv and "(default: 128)" in csv  # columns and defaults in the help


def test_serve_actions_are_subcommands_with_their_own_help(capsys):
    start = _help(capsys, "serve", "start")
    assert "--model-store MODEL_STORE" in start and "(default: 8080)" in start and "{start,stop,status}" not in start
    stop = _help(capsys, "serve", "stop")
    assert "--run-dir" in stop and "--model-store" not in stop
    assert "exit 0" in _help(capsys, "serve", "status").replace("\n", " ").lower()


NOISE = """
from vsyn.console import configure
configure(verbose={verbose})
from deepspeed.accelerator import get_accelerator
get_accelerator()  # DeepSpeed's "Setting accelerator to CPU" on a machine without a GPU
import warnings
warnings.warn("Grad strides do not match bucket view strides. This may indicate grad was not created ...")
print("ok")
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_known_library_noise_is_filtered_unless_verbose(verbose):
    """Against the real libraries: the known lines are gone by default and back with -v."""
    env = {k: v for k, v in os.environ.items() if k != "VSYN_VERBOSE"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", NOISE.format(verbose=verbose)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr
    both = proc.stdout + proc.stderr
    assert ("Setting accelerator to CPU" in both) is verbose
    assert ("Grad strides do not match" in both) is verbose


def test_every_option_and_argument_has_help():
    from vsyn.cli import _all_parsers

    skip = (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)
    missing = [f"{p.prog} {a.option_strings or a.dest}" for p in _all_parsers(build_parser()) for a in p._actions
               if not isinstance(a, skip) and not a.help]
    assert missing == []
