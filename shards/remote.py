"""``vsyn shards upload`` and ``vsyn shards ls``: shards to and from object storage.

boto3 takes its endpoint and credentials only from the standard AWS environment/config (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``~/.aws/...``): nothing here names a server.
"""

from __future__ import annotations

import json
import posixpath
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError
from tqdm import tqdm

from shards.manifest import MANIFEST, load_manifest
from vsyn.data.streams import read_bytes, s3_client, split_s3_url
from vsyn.errors import VsynError


def _already_there(bucket: str, key: str, size: int, sha256: str) -> bool:
    try:
        head = s3_client().head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    return head["ContentLength"] == size and head.get("Metadata", {}).get("sha256") == sha256


def upload(out: Path, url: str, workers: int = 4) -> tuple[int, int]:
    """Upload shards, then the manifest last (a manifest in the bucket means its shards are there).
    Shards already present with the same size and sha256 are skipped. Returns (uploaded, skipped)."""
    if not url.startswith("s3://") or not split_s3_url(url)[0]:
        raise VsynError(f"upload target must look like s3://bucket/prefix, not {url!r}")
    manifest = load_manifest(out)
    bucket, prefix = split_s3_url(url)
    entries = manifest["shards"]
    config = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20, max_concurrency=4)
    bar = tqdm(total=sum(e["bytes"] for e in entries), unit="B", unit_scale=True, desc="upload", disable=None)

    def put(entry: dict) -> bool:
        key = posixpath.join(prefix, entry["name"])
        if _already_there(bucket, key, entry["bytes"], entry["sha256"]):
            bar.update(entry["bytes"])
            return False
        s3_client().upload_file(str(out / entry["name"]), bucket, key, Config=config, Callback=bar.update,
                                ExtraArgs={"Metadata": {"sha256": entry["sha256"]}})
        return True

    try:
        with ThreadPoolExecutor(workers) as pool:
            uploaded = sum(pool.map(put, entries))
        s3_client().upload_file(str(out / MANIFEST), bucket, posixpath.join(prefix, MANIFEST))
    except (BotoCoreError, ClientError) as exc:
        raise VsynError(f"upload to {url} failed: {exc}") from None
    finally:
        bar.close()
    return uploaded, len(entries) - uploaded


def _s3_objects(url: str) -> list[tuple[str, int]]:
    bucket, prefix = split_s3_url(url)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [(obj["Key"][len(prefix):], obj["Size"]) for page in pages for obj in page.get("Contents", [])]


def listing(url: str) -> list[str]:
    """Lines describing the shards at ``url`` (folder, s3:// prefix, or http(s):// prefix with a manifest)."""
    base = url.rstrip("/")
    try:
        if url.startswith("s3://"):
            objects = dict(_s3_objects(base))
            manifest = json.loads(read_bytes(f"{base}/{MANIFEST}")) if MANIFEST in objects else None
        elif "://" in url:
            manifest, objects = json.loads(read_bytes(f"{base}/{MANIFEST}")), {}
        else:
            folder = Path(url)
            if not folder.is_dir():
                raise VsynError(f"{url}: no such folder")
            objects = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
            manifest = load_manifest(folder) if MANIFEST in objects else None
    except (BotoCoreError, ClientError, OSError, ValueError) as exc:
        raise VsynError(f"cannot list {url}: {type(exc).__name__}: {exc}") from None
    lines = []
    if manifest is not None:
        for e in manifest["shards"]:
            present = "" if not objects or e["name"] in objects else "  MISSING"
            lines.append(f"{e['name']:<24} {e.get('split', ''):<6} {e['num_samples']:>8} clips {e['bytes']:>14,} B{present}")
        splits = ", ".join(f"{k} {v}" for k, v in manifest.get("splits", {}).items())
        lines.append(f"{len(manifest['shards'])} shard(s), {manifest['num_samples']} clips ({splits})")
    else:
        tars = sorted((k, v) for k, v in objects.items() if k.endswith(".tar"))
        lines += [f"{k:<40} {v:>14,} B" for k, v in tars]
        lines.append(f"{len(tars)} shard(s), no {MANIFEST}")
    return lines
