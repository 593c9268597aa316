"""The .mar builder and the config.properties writer, without starting a server."""

from __future__ import annotations

import re
import zipfile

import pytest
import yaml

from serve.archive import ServingOptions, export
from serve.config import ServerSettings, render_properties
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
    assert props["inference_address"] == "http://127.0.0.1:8080"
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


def test_settings_validate_and_round_trip(tmp_path) -> None:
    with pytest.raises(VsynError, match="distinct"):
        ServerSettings(model_store=tmp_path, run_dir=tmp_path, inference_port=9000, metrics_port=9000)
    settings = ServerSettings(model_store=tmp_path, run_dir=tmp_path / "run", host="0.0.0.0", inference_port=9100)
    settings.run_dir.mkdir()
    settings.save()
    assert ServerSettings.load(settings.run_dir) == settings
    assert settings.url() == "http://127.0.0.1:9100"  # a client of an all-interfaces server uses loopback
