"""The serving examples of README.md and serve/README.md, run as written against a real server.

Every ```bash block of the two files that talks to a server (it names http://127.0.0.1:808x) is taken from the
Markdown, not copied here, and run by bash with `set -euo pipefail` in one shell session, as a user would paste them:
serve/README.md's quick start first (`vsyn export runs/sky128` on the test checkpoint, `vsyn serve start`, its
requests), then every other block of serve/README.md and README.md, then the quick start's last line
(`vsyn serve stop`). The only rewrite: the default ports become free ones (`127.0.0.1:8080` -> the port the
server was started on, and `vsyn serve start` gets the matching port flags). Every video a block writes (`-o
FILE`) must decode.
"""

from __future__ import annotations

import os
import re
import subprocess

import numpy as np
import pytest
from serve_helpers import ROOT, encode_image, free_ports, landscape, requires_java

pytestmark = [pytest.mark.service, pytest.mark.slow]

DOCS = (ROOT / "serve" / "README.md", ROOT / "README.md")
DEFAULT_PORTS = {"inference": 8080, "management": 8081, "metrics": 8082}


def bash_blocks(path) -> list[str]:
    """The ```bash blocks of a Markdown file that talk to a server over HTTP, in order (indented ones too)."""
    blocks = re.findall(r"^( *)```bash\n(.*?)^\1```", path.read_text(), flags=re.M | re.S)
    out = []
    for indent, body in blocks:
        body = "\n".join(line[len(indent):] for line in body.splitlines())
        if re.search(r"http://127\.0\.0\.1:808[0-3]", body):
            out.append(body)
    return out


def rewrite_ports(script: str, ports: dict[str, int]) -> str:
    for api, default in DEFAULT_PORTS.items():
        script = script.replace(f"127.0.0.1:{default}", f"127.0.0.1:{ports[api]}")
    flags = (f"--port {ports['inference']} --management-port {ports['management']} --metrics-port {ports['metrics']} "
             f"--backend-port {ports['backend']} --grpc-port {ports['grpc']} --grpc-management-port {ports['grpcm']}")
    return script.replace("vsyn serve start", f"vsyn serve start {flags}")


def test_every_serving_example_runs_as_written(checkpoint, nginx, tmp_path) -> None:
    requires_java()
    serve_blocks, readme_blocks = (bash_blocks(p) for p in DOCS)
    quick = [b for b in serve_blocks if "vsyn serve start" in b]
    assert len(quick) == 1 and quick[0].rstrip().splitlines()[-1].startswith("vsyn serve stop")
    start, stop = quick[0].rstrip().rsplit("\n", 1)
    others = [b for b in serve_blocks if b is not quick[0]] + readme_blocks
    assert len(others) >= 6, others  # key renewal, health probe, three request shapes, the README's block

    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "sky128").symlink_to(checkpoint)
    rng = np.random.default_rng(0)  # a noisy 400x300 photo: its PNG is well over the shell's ~96 KB argument limit
    photo = (landscape(400, 300).astype(np.int16) + rng.integers(-40, 40, (300, 400, 3))).clip(0, 255)
    (tmp_path / "photo.png").write_bytes(encode_image(photo.astype(np.uint8)))
    assert (tmp_path / "photo.png").stat().st_size > 200_000
    (tmp_path / "photo.jpg").write_bytes(encode_image(landscape(320, 240), "JPEG", quality=90))
    mask = np.zeros((300, 400), np.uint8)
    mask[:150] = 255  # the sky may move
    (tmp_path / "sky-mask.png").write_bytes(encode_image(mask))

    names = ("inference", "management", "metrics", "backend", "grpc", "grpcm")
    ports = dict(zip(names, free_ports(len(names))))
    steps = [start, *others, stop]
    # Between blocks (not inside them): keep each block's videos under its own name, so none is overwritten.
    keep = 'for f in clip.*; do [ -e "$f" ] && mv "$f" "step$1-$f"; done; true\n'
    script = f"set -euo pipefail\nkeep() {{ {keep}}}\nset -x\n" + "\n".join(
        f"{rewrite_ports(block, ports)}\nkeep {i}" for i, block in enumerate(steps))
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    try:
        result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=600)  # fmt: skip
    finally:  # a failed block must not leave the server running
        subprocess.run(["bash", "-c", rewrite_ports(stop, ports) + " || true"], cwd=tmp_path, env=env,
                       capture_output=True, timeout=180)  # fmt: skip
    assert result.returncode == 0, result.stderr[-6000:]
    assert '"status": "Healthy"' in result.stdout and "READY" in result.stdout
    assert "ts_inference_requests_total" in result.stdout

    from vsyn.video import decode_video

    written = [f"step{i}-{out}" for i, block in enumerate(steps) for out in re.findall(r"-o (\S+)", block)]
    assert len(written) >= 6 and {w.split("-", 1)[1] for w in written} == {"clip.mp4", "clip.webm", "clip.gif"}
    for name in written:
        assert decode_video((tmp_path / name).read_bytes()).shape[0] >= 2, name
