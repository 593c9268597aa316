"""The .mar builder and the config.properties writer, without starting a server."""

from __future__ import annotations

import re
import zipfile

import pytest
import yaml

from serve.archive import ServingOptions, export
from serve.config import ServerSettings, render_log_config, render_properties
from vsyn.errors import VsynError
from vsyn.inference import load_generator


def test_export_builds_a_self_contained_mar(checkpoint, tmp_path) -> None:
    options = ServingOptions(batch_size=4, device="cpu", encoder_preset="veryfast", torch_threads=2,
                             channels_last=True, encode_processes=3, generate_chunk=2)
    mar = export(checkpoint, tmp_path, name="sky", version="2.1", options=options)
    assert mar == tmp_path / "sky.mar"
    with zipfile.ZipFile(mar) as z:
        names = set(z.namelist())
        assert {"handler.py", "generator_ema.safetensors", "config.json", "meta.json", "model-config.yaml"} <= names
        assert not any(n.endswith((".pt", ".pth", ".pkl")) for n in names)  # no pickles in the archive
        manifest = yaml.safe_load(z.read("MAR-INF/MANIFEST.json"))
        model_config = yaml.safe_load(z.read("model-config.yaml"))
        z.extractall(tmp_path / "unpacked")
    assert manifest["model"]["modelName"] == "sky" and manifest["model"]["modelVersion"] == "2.1"
    assert manifest["model"]["handler"] == "handler.py"
    assert model_config["batchSize"] == 4 and model_config["deviceType"] == "cpu"
    assert model_config["handler"]["max_image_pixels"] == 25_000_000
    assert model_config["handler"]["encoder_preset"] == "veryfast"
    assert model_config["handler"]["torch_threads"] == 2
    assert model_config["handler"]["channels_last"] is True
    assert model_config["handler"]["encode_processes"] == 3
    assert model_config["handler"]["generate_chunk"] == 2
    # The unpacked archive is a snapshot: the handler loads it with vsyn's own loader.
    generator, cfg = load_generator(tmp_path / "unpacked")
    assert cfg.name == "tiny-cpu"
    assert not list(tmp_path.glob(".export-*"))  # staging cleaned up


def test_export_refuses_to_overwrite_and_bad_options(checkpoint, tmp_path) -> None:
    export(checkpoint, tmp_path)
    with pytest.raises(VsynError, match="--force"):
        export(checkpoint, tmp_path)
    export(checkpoint, tmp_path, force=True)
    with pytest.raises(VsynError, match="device"):
        export(checkpoint, tmp_path, force=True, options=ServingOptions(device="tpu"))
    with pytest.raises(VsynError, match="does not exist"):
        export(tmp_path / "missing", tmp_path, force=True)
    with pytest.raises(VsynError, match="unknown x264 preset 'quick'.*ultrafast"):  # checked before any loading
        export(tmp_path / "missing", tmp_path, force=True, options=ServingOptions(encoder_preset="quick"))
    with pytest.raises(VsynError, match="torch_threads"):
        export(tmp_path / "missing", tmp_path, force=True, options=ServingOptions(torch_threads=-1))


def test_properties_are_safe_by_default(tmp_path) -> None:
    settings = ServerSettings(model_store=tmp_path / "store", run_dir=tmp_path / "run")
    props = dict(line.split("=", 1) for line in render_properties(settings).splitlines() if "=" in line)
    assert props["inference_address"] == "http://127.0.0.1:8083"  # behind the front: its backend port, loopback
    assert props["management_address"] == "http://127.0.0.1:8081"
    assert props["metrics_address"] == "http://127.0.0.1:8082"
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    assert props["disable_token_authorization"] == "false"
    assert props["enable_model_api"] == "false"
    assert props["metrics_mode"] == "prometheus"
    assert props["enable_envvars_config"] == "false"
    assert int(props["max_response_size"]) >= 100 * 1024 * 1024
    assert int(props["max_request_size"]) == 16 * 1024 * 1024
    allowed = re.compile(props["allowed_urls"].replace("\\\\", "\\"))  # undo the Properties escaping
    assert allowed.fullmatch(f"file://{tmp_path / 'store'}/vsyn.mar")
    assert not allowed.fullmatch("https://example.com/vsyn.mar")
    assert not allowed.fullmatch(f"file://{tmp_path}/elsewhere/vsyn.mar")
    assert props["load_models"] == "vsyn=vsyn.mar"
    assert props["decode_input_request"] == "false"  # the handler parses JSON itself (duplicates, long numbers)
    exposed = ServerSettings(model_store=tmp_path, run_dir=tmp_path / "run", host="0.0.0.0", front="none")
    props = dict(line.split("=", 1) for line in render_properties(exposed).splitlines() if "=" in line)
    assert props["inference_address"] == "http://0.0.0.0:8080" and props["management_address"] == "http://0.0.0.0:8081"
    fronted = ServerSettings(model_store=tmp_path, run_dir=tmp_path / "run", host="0.0.0.0")
    props = dict(line.split("=", 1) for line in render_properties(fronted).splitlines() if "=" in line)
    assert props["inference_address"] == "http://127.0.0.1:8083"  # only the front binds 0.0.0.0
    assert props["management_address"] == "http://127.0.0.1:8081"


def test_log_config_rotates_every_log_and_keeps_requests_off_the_console(tmp_path) -> None:
    import xml.etree.ElementTree as ET

    settings = ServerSettings(model_store=tmp_path, run_dir=tmp_path / "run", log_max_mib=2, log_backups=3)
    root = ET.fromstring(render_log_config(settings))
    files = root.findall("./Appenders/RollingFile")
    assert {f.get("name") for f in files} == {"access_log", "model_log", "model_metrics", "ts_log", "ts_metrics"}
    for f in files:
        assert f.find("./Policies/SizeBasedTriggeringPolicy").get("size") == str(2 * 1024 * 1024)
        assert f.find("./DefaultRolloverStrategy").get("max") == "3" and "%i" in f.get("filePattern")
    for logger in root.findall("./Loggers/Logger"):
        for ref in logger.findall("AppenderRef"):  # the console gets errors only, never a line per request
            assert ref.get("ref") != "STDOUT" or ref.get("level") == "error"
    assert all(lg.get("additivity") == "false" for lg in root.findall("./Loggers/Logger") if lg.find("AppenderRef") is not None)


def test_log_pump_rotates_and_keeps_the_backups(tmp_path) -> None:
    import os
    import subprocess
    import sys

    target = tmp_path / "console.log"
    lines = b"".join(f"line {i:05d}\n".encode() for i in range(3000))  # 33 kB
    result = subprocess.run([sys.executable, "-m", "serve.logpump", str(target), "--max-bytes", "4096", "--backups",
                             "2"], input=lines, capture_output=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["console.log", "console.log.1", "console.log.2"]
    assert all((tmp_path / name).stat().st_size <= 4096 for name in kept)
    tail = b"".join((tmp_path / n).read_bytes() for n in ("console.log.2", "console.log.1", "console.log"))
    assert lines.endswith(tail)  # the newest output, in order, nothing lost inside what is kept
    assert os.path.getsize(target) > 0


def test_settings_validate_and_round_trip(tmp_path) -> None:
    with pytest.raises(VsynError, match="distinct"):
        ServerSettings(model_store=tmp_path, run_dir=tmp_path, inference_port=9000, metrics_port=9000)
    settings = ServerSettings(model_store=tmp_path, run_dir=tmp_path / "run", host="0.0.0.0", inference_port=9100)
    settings.run_dir.mkdir()
    settings.save()
    assert ServerSettings.load(settings.run_dir) == settings
    assert settings.url() == "http://127.0.0.1:9100"  # a client of an all-interfaces server uses loopback
