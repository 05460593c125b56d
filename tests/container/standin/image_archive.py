"""Write a `docker load` archive of one root filesystem tarball, for any architecture.

`docker import` labels an image with the engine's own architecture (its --platform is honoured
only by experimental engines), so an arm64 root filesystem imported on an x86_64 host would claim
to be amd64 and BuildKit would refuse it for linux/arm64. This writes the archive `docker save`
would: the layer, an image config naming the architecture, and the manifest with the tag.

Usage: image_archive.py ROOTFS.tar TAG ARCH OUT.tar   (ARCH: amd64 or arm64)
"""

import hashlib
import json
import sys
import tarfile
import time
from io import BytesIO


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    archive.addfile(info, BytesIO(data))


def main(rootfs: str, tag: str, arch: str, out: str) -> None:
    layer = sha256_of(rootfs)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    config = {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer}"]},
        "history": [{"created": created, "created_by": f"root filesystem {rootfs.rsplit('/', 1)[-1]}"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [f"{layer}/layer.tar"]}]
    with tarfile.open(out, "w") as archive:
        archive.add(rootfs, arcname=f"{layer}/layer.tar")
        add_bytes(archive, config_name, config_bytes)
        add_bytes(archive, "manifest.json", json.dumps(manifest).encode())


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[3] not in ("amd64", "arm64"):
        sys.exit(__doc__)
    main(*sys.argv[1:])
