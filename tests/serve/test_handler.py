"""The handler in process, with a stand-in for TorchServe's context: batch grouping and failure isolation."""

from __future__ import annotations

import json

import numpy as np
import torch
import pytest
from serve_helpers import encode_image, landscape

import serve.handler
from serve.handler import VsynHandler
from vsyn.errors import VsynError
from vsyn.video import decode_video


class FakeContext:
    """The part of ts.context.Context the handler touches (verified against TorchServe 0.12 in test_rest.py)."""

    def __init__(self, model_dir, headers=(), handler_options=None):
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None}
        self.model_yaml_config = {"handler": handler_options or {}}
        self.headers = list(headers)
        self.status: dict[int, int] = {}
        self.types: dict[int, str] = {}
        self.response_headers: dict[int, dict[str, str]] = {}

    def get_all_request_header(self, idx):
        return self.headers[idx]

    def set_response_status(self, code=200, phrase="", idx=0):
        self.status[idx] = code

    def set_response_content_type(self, idx, value):
        self.types[idx] = value

    def set_response_header(self, idx, key, value):
        self.response_headers.setdefault(idx, {})[key] = value


def request(frames: int, fmt: str = "mp4", seed: int = 0) -> tuple[dict, dict]:
    headers = {"body": {"content-type": "image/png"}, "X-Vsyn-Frames": str(frames), "X-Vsyn-Format": fmt,
               "X-Vsyn-Seed": str(seed)}  # fmt: skip
    return {"body": bytearray(encode_image(landscape()))}, headers


@pytest.fixture(scope="module")
def handler(checkpoint) -> VsynHandler:
    h = VsynHandler()
    h.initialize(FakeContext(checkpoint, handler_options={"precision": "fp32", "max_frames": 16}))
    return h


def test_groups_by_frame_count_and_isolates_bad_requests(handler) -> None:
    junk = ({"body": bytearray(b"junk")}, {"content-type": "application/octet-stream"})
    reqs = [request(4), junk, request(6, "gif"), request(4, "webm", seed=9)]
    ctx = FakeContext(".", [h for _, h in reqs])
    out = handler.handle([d for d, _ in reqs], ctx)
    assert ctx.status == {1: 415} and json.loads(out[1])["code"] == 415
    assert [decode_video(out[i]).shape[0] for i in (0, 2, 3)] == [4, 6, 4]
    assert ctx.types == {0: "video/mp4", 1: "application/json", 2: "image/gif", 3: "video/webm"}
    assert [ctx.response_headers[i]["X-Vsyn-Batch-Size"] for i in (0, 2, 3)] == ["2", "1", "2"]
    assert ctx.response_headers[3]["X-Vsyn-Seed"] == "9"


def test_a_failing_group_does_not_take_the_batch_down(handler, monkeypatch) -> None:
    real = serve.handler.animate

    def flaky(generator, images, *, num_frames, **kw):
        if num_frames == 5:
            raise RuntimeError("simulated failure")
        return real(generator, images, num_frames=num_frames, **kw)

    monkeypatch.setattr(serve.handler, "animate", flaky)
    reqs = [request(5), request(3), request(5)]
    ctx = FakeContext(".", [h for _, h in reqs])
    out = handler.handle([d for d, _ in reqs], ctx)
    assert ctx.status == {0: 500, 2: 500}
    assert json.loads(out[0]) == {"code": 500, "type": "InternalServerError", "message": "generation failed"}
    assert decode_video(out[1]).shape[0] == 3
    monkeypatch.undo()
    ctx = FakeContext(".", [reqs[0][1]])
    assert decode_video(handler.handle([reqs[0][0]], ctx)[0]).shape[0] == 5  # and the next call works


def test_limits_come_from_model_config(handler) -> None:
    data, headers = request(17)
    ctx = FakeContext(".", [headers])
    out = handler.handle([data], ctx)
    assert ctx.status == {0: 400} and "2..16" in json.loads(out[0])["message"]


def test_encoder_preset_comes_from_model_config(handler, checkpoint) -> None:
    fast = VsynHandler()
    fast.initialize(FakeContext(checkpoint, handler_options={"precision": "fp32", "encoder_preset": "ultrafast"}))
    assert (handler.encoder_preset, fast.encoder_preset) == ("medium", "ultrafast")
    outs = []
    for h in (handler, fast):  # same fp32 generator, same seed: the frames are equal, only the encoder differs
        data, headers = request(6, seed=3)
        ctx = FakeContext(".", [headers])
        outs.append(h.handle([data], ctx)[0])
        assert ctx.status == {}
    assert outs[0] != outs[1]
    assert b"subme=7" in outs[0] and b"subme=0" in outs[1]  # x264's own record of the preset it ran
    medium, ultrafast = decode_video(outs[0]), decode_video(outs[1])
    assert medium.shape == ultrafast.shape and medium.shape[0] == 6
    assert np.abs(medium.astype(int) - ultrafast).mean() < 3  # both close to the same frames (CRF 17)
    with pytest.raises(VsynError, match="unknown x264 preset 'quick'"):
        VsynHandler().initialize(FakeContext(checkpoint, handler_options={"encoder_preset": "quick"}))


def test_torch_threads_come_from_model_config(checkpoint) -> None:
    """torch_threads sets the worker's intra-op pool (on a GPU the default is 1: the model runs there)."""
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1  # differs from what the process had
    try:
        VsynHandler().initialize(FakeContext(checkpoint, handler_options={"precision": "fp32", "torch_threads": wanted}))
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)


def test_channels_last_is_a_gpu_option(checkpoint) -> None:
    """channels_last only changes the layout on a GPU: on a CPU the weights stay in the default layout."""
    h = VsynHandler()
    h.initialize(FakeContext(checkpoint, handler_options={"precision": "fp32", "channels_last": True}))
    assert h.channels_last is False
    assert all(p.is_contiguous() for p in h.generator.parameters())


def test_encode_processes_give_the_same_bytes_as_threads(handler, checkpoint) -> None:
    """encode_processes moves the encodes into spawned processes (no shared GIL); the videos are byte-identical."""
    from concurrent.futures import ProcessPoolExecutor

    reqs = [request(4, seed=1), request(5, "webm", seed=2), request(4, "gif", seed=3)]
    reqs[0] = ({"body": bytearray(encode_image(landscape(64, 32)))}, {**reqs[0][1], "X-Vsyn-Size": "input"})
    pooled = VsynHandler()
    pooled.initialize(FakeContext(checkpoint, handler_options={"precision": "fp32", "max_frames": 16,
                                                                "encode_processes": 2}))
    try:
        assert isinstance(pooled.encoder, ProcessPoolExecutor)
        outs = [h.handle([d for d, _ in reqs], FakeContext(".", [hd for _, hd in reqs])) for h in (handler, pooled)]
    finally:
        pooled.encoder.shutdown()
    assert outs[0] == outs[1] and all(isinstance(o, bytes) and o for o in outs[1])
    assert decode_video(outs[1][0]).shape[1:3] == (32, 64)  # the input's aspect: resized in a pool process


def test_generate_chunk_pipelines_the_same_videos(handler, checkpoint) -> None:
    """generate_chunk splits a group into generator calls whose encodes overlap the next call: every request gets
    its own video, in order, byte for byte the one a single call gives (one seed per video; on this CPU the batch
    size does not change a video's bits)."""
    reqs = [request(4, seed=s) for s in range(5)] + [request(4, "gif", seed=7)]
    chunked = VsynHandler()
    chunked.initialize(FakeContext(checkpoint, handler_options={"precision": "fp32", "max_frames": 16,
                                                                 "generate_chunk": 2}))
    calls = []
    animate = chunked._animate
    chunked._animate = lambda frames, part: calls.append(len(part)) or animate(frames, part)
    whole, parts = (h.handle([d for d, _ in reqs], FakeContext(".", [hd for _, hd in reqs]))
                    for h in (handler, chunked))
    assert calls == [2, 2, 2]
    assert chunked.last_batch[0] == 6
    assert whole == parts
    assert len({bytes(v) for v in parts}) == len(parts)  # distinct seeds: no request got a neighbour's video


def test_generate_chunk_must_not_be_negative(checkpoint) -> None:
    with pytest.raises(VsynError, match="generate_chunk"):
        VsynHandler().initialize(FakeContext(checkpoint, handler_options={"generate_chunk": -1}))


def grpc_request(frames: int, seed: int = 0) -> tuple[dict, dict]:
    """A request as TorchServe hands over one that came over gRPC: parameters only, no HTTP headers."""
    return ({"image": bytearray(encode_image(landscape())), "frames": bytearray(str(frames).encode()),
             "seed": bytearray(str(seed).encode())},
            {"image": {"content-type": ""}, "frames": {"content-type": ""}, "seed": {"content-type": ""}})  # fmt: skip


def test_grpc_requests_are_refused_with_a_batch_status_unless_grpc_is_on(handler, monkeypatch) -> None:
    """TorchServe gives a gRPC client a status code only for a failed batch: a batch of refused gRPC requests fails
    as a whole with the refusal's status; a gRPC request beside REST ones is refused on its own (JSON)."""
    from ts.utils.util import PredictionException

    with pytest.raises(PredictionException) as info:
        handler.handle([grpc_request(4)[0]], FakeContext(".", [grpc_request(4)[1]]))
    assert info.value.error_code == 403 and "gRPC is off" in info.value.message
    reqs = [request(4), grpc_request(4)]
    ctx = FakeContext(".", [h for _, h in reqs])
    out = handler.handle([d for d, _ in reqs], ctx)
    assert ctx.status == {1: 403} and decode_video(out[0]).shape[0] == 4
    monkeypatch.setattr(handler, "grpc", True)
    out = handler.handle([grpc_request(5, seed=2)[0]], FakeContext(".", [grpc_request(5)[1]]))
    assert decode_video(out[0]).shape[0] == 5
    with pytest.raises(PredictionException) as info:  # frames out of range: INVALID_ARGUMENT for the client
        handler.handle([grpc_request(1)[0]], FakeContext(".", [grpc_request(1)[1]]))
    assert info.value.error_code == 400 and "frames" in info.value.message
