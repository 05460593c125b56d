#!/usr/bin/env bash
# Build a local stand-in for the AWS Lambda Python 3.11 base image
# (public.ecr.aws/lambda/python:3.11), which cannot be pulled here.
#
#   Debian bookworm minbase + python3 (debootstrap, loaded as an image archive
#   whose config names the target architecture: image_archive.py)
#   + awslambdaric (PyPI wheels, installed on the host into /var/runtime)
#   + the AWS Lambda Runtime Interface Emulator (from the aws-sam-cli wheel)
#   + the official image's entrypoint contract (see README.md)
#
# Usage: build.sh [--rebuild] [--no-cache]
#   --rebuild   rebuild the image even if an up-to-date one exists
#   --no-cache  also discard the cached root filesystem and downloads
# Prints the image tag on stdout; progress goes to stderr.
#
# Environment:
#   DOCKER_HOST              engine to use (e.g. from .ci/docker-up)
#   LMS_STANDIN_ARCH         target: x86_64 or arm64 (default: this host's). A
#                            foreign one needs qemu-user-static and binfmt_misc's
#                            entry for it (.ci/qemu-binfmt): debootstrap's second
#                            stage runs the target's binaries
#   LMS_STANDIN_PYTHON       3.11 (default; Debian bookworm) or 3.13 (Debian trixie)
#   LMS_STANDIN_TAG          image tag (lambda-ml-serve/standin-python:PYTHON, with
#                            -arm64 or -x86_64 appended for a foreign target)
#   LMS_CACHE                cache dir (~/.cache/lambda-ml-serve)
#   LMS_DEBIAN_MIRROR        Debian mirror (default: the one apt uses)
#   LMS_STANDIN_EXTRA_PACKAGES  extra Debian packages for the rootfs, comma
#                            or space separated (e.g. python3-pip)
#   LMS_AWSLAMBDARIC_VERSION awslambdaric version (4.2.2)
#   LMS_SAM_CLI_VERSION      aws-sam-cli version the RIE is taken from (1.170.0)
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${LMS_CACHE:-${HOME:-/root}/.cache/lambda-ml-serve}"
PYVER="${LMS_STANDIN_PYTHON:-3.11}"
# The Debian release whose python3 is that version (Debian packages no 3.12).
case "$PYVER" in
  3.11) SUITE=bookworm ;;
  3.13) SUITE=trixie ;;
  *) printf 'standin: ERROR: LMS_STANDIN_PYTHON must be 3.11 (bookworm) or 3.13 (trixie), not %s\n' "$PYVER" >&2; exit 1 ;;
esac
ABI="cp${PYVER/./}"
RIC_VERSION="${LMS_AWSLAMBDARIC_VERSION:-4.2.2}"
SAM_VERSION="${LMS_SAM_CLI_VERSION:-1.170.0}"
EXTRA_PACKAGES="${LMS_STANDIN_EXTRA_PACKAGES:-}"
# Bump when the rootfs recipe below changes (invalidates the cached tarball).
ROOTFS_RECIPE=1
LABEL_KEY=org.lambda-ml-serve.standin.recipe

say() { printf 'standin: %s\n' "$*" >&2; }
trap 'say "failed: command at line $LINENO exited with status $?"' ERR
die() { printf 'standin: ERROR: %s\n' "$*" >&2; exit 1; }

rebuild=0
nocache=0
for arg in "$@"; do
  case "$arg" in
    --rebuild) rebuild=1 ;;
    --no-cache) rebuild=1; nocache=1 ;;
    -h | --help) sed -n '2,31p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done

T0=$SECONDS
elapsed() { printf '%ss' "$((SECONDS - T0))"; }

# ------------------------------------------------------------ prerequisites ---
command -v docker >/dev/null 2>&1 || die "docker client not found (run .ci/docker-up first)"
docker info >/dev/null 2>&1 ||
  die "no Docker engine at ${DOCKER_HOST:-the default socket}; run: eval \"\$(.ci/docker-up)\""
command -v python3 >/dev/null 2>&1 || die "python3 not found on the host"

case "$(uname -m)" in
  x86_64) HOST_ARCH=x86_64 ;;
  aarch64) HOST_ARCH=arm64 ;;
  *) die "unsupported host architecture $(uname -m)" ;;
esac
ARCH="${LMS_STANDIN_ARCH:-$HOST_ARCH}"
case "$ARCH" in
  x86_64) DEB_ARCH=amd64; RIE_ARCH=x86_64; WHEEL_PLATFORM=manylinux2014_x86_64; QEMU=qemu-x86_64 ;;
  arm64) DEB_ARCH=arm64; RIE_ARCH=arm64; WHEEL_PLATFORM=manylinux2014_aarch64; QEMU=qemu-aarch64 ;;
  *) die "LMS_STANDIN_ARCH must be x86_64 or arm64, not '$ARCH'" ;;
esac
if [[ "$ARCH" == "$HOST_ARCH" ]]; then
  TAG="${LMS_STANDIN_TAG:-lambda-ml-serve/standin-python:$PYVER}"
else
  TAG="${LMS_STANDIN_TAG:-lambda-ml-serve/standin-python:$PYVER-$ARCH}"
  grep -qx enabled "/proc/sys/fs/binfmt_misc/$QEMU" 2>/dev/null ||
    die "a $ARCH stand-in on this $HOST_ARCH host needs qemu: binfmt_misc has no enabled $QEMU entry (run .ci/qemu-binfmt)"
fi

include_pkgs="python3"
if [[ -n "$EXTRA_PACKAGES" ]]; then
  include_pkgs="python3,$(printf '%s' "$EXTRA_PACKAGES" | tr -s ' ,' ',,' | sed 's/^,//; s/,$//')"
fi

sha() { sha256sum | cut -c1-16; }
ROOTFS_KEY="$(printf '%s|%s|minbase|%s|%s' "$SUITE" "$DEB_ARCH" "$include_pkgs" "$ROOTFS_RECIPE" | sha)"
ROOTFS_IMAGE="lambda-ml-serve/standin-rootfs:$ROOTFS_KEY"
RECIPE="$(
  {
    printf '%s|%s|%s|%s|%s\n' "$ROOTFS_KEY" "$RIC_VERSION" "$SAM_VERSION" "$WHEEL_PLATFORM" "$TAG"
    cat "$HERE/build.sh" "$HERE/Dockerfile" "$HERE/image_archive.py" "$HERE"/files/*
  } | sha
)"

# --------------------------------------------------------- up to date? ---
current_recipe() { docker image inspect -f "{{ index .Config.Labels \"$LABEL_KEY\" }}" "$TAG" 2>/dev/null || true; }
if ((!rebuild)); then
  have="$(current_recipe)"
  if [[ "$have" == "$RECIPE" ]]; then
    say "$TAG is up to date (recipe $RECIPE); nothing to do ($(elapsed))"
    printf '%s\n' "$TAG"
    exit 0
  fi
  if [[ -n "$have" ]]; then say "$TAG exists but its recipe differs; rebuilding"; fi
fi

# Below here we do real work: make sure the tools exist, lock the cache.
missing=()
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v flock >/dev/null 2>&1 || missing+=(util-linux)
if ((${#missing[@]})); then
  say "installing ${missing[*]} with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${missing[@]}" >&2 ||
    { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}" >&2; } ||
    die "could not install ${missing[*]}"
fi
PIP=(python3 -m pip)
if ! "${PIP[@]}" --version >/dev/null 2>&1; then
  if /usr/bin/python3 -m pip --version >/dev/null 2>&1; then
    PIP=(/usr/bin/python3 -m pip)
  else
    say "installing python3-pip with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      -o DPkg::Lock::Timeout=600 python3-pip >&2 || die "could not install python3-pip"
    PIP=(/usr/bin/python3 -m pip)
  fi
fi

SCACHE="$CACHE/standin"
mkdir -p "$SCACHE"
exec 9>"$SCACHE/.lock"
flock -w 1800 9 || die "timed out waiting for the lock on $SCACHE"
if ((!rebuild)) && [[ "$(current_recipe)" == "$RECIPE" ]]; then
  say "$TAG was built meanwhile by another run ($(elapsed))"
  printf '%s\n' "$TAG"
  exit 0
fi

WORK="$(mktemp -d "$SCACHE/work.XXXXXX")"
DEBOOT_DIR=""
cleanup() {
  local rc=$?
  if [[ -n "$DEBOOT_DIR" && -d "$DEBOOT_DIR" ]]; then
    # debootstrap mounts /proc and /sys in the target; never delete through them.
    awk -v r="$DEBOOT_DIR" 'index($5, r "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r |
      while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  fi
  rm -rf --one-file-system "$WORK" 2>/dev/null || say "could not remove $WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ((nocache)); then
  say "--no-cache: dropping cached rootfs and downloads"
  rm -f "$SCACHE"/rootfs-*.tar
  rm -rf "$SCACHE/wheels" "$SCACHE/rie"
fi

# ------------------------------------------------------------------ mirror ---
detect_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    awk -v suite="$SUITE" '
      BEGIN { RS = ""; FS = "\n" }
      {
        types = ""; uris = ""; suites = ""; enabled = "yes"
        for (i = 1; i <= NF; i++) {
          line = $i
          if (line ~ /^Types:/) { sub(/^Types:[ \t]*/, "", line); types = " " line " " }
          else if (line ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", line); uris = line }
          else if (line ~ /^Suites:/) { sub(/^Suites:[ \t]*/, "", line); suites = " " line " " }
          else if (line ~ /^Enabled:/) { sub(/^Enabled:[ \t]*/, "", line); enabled = line }
        }
        if (enabled != "no" && types ~ / deb / && suites ~ (" " suite " ")) {
          split(uris, u, /[ \t]+/); print u[1]; exit
        }
      }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    sed -E 's/\[[^]]*\]//' "$f" | awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2 }'
  done
}
MIRROR="${LMS_DEBIAN_MIRROR:-$(detect_mirror | awk 'NR == 1')}"
# A host of another release lists only its own suite; the archive serves every release.
[[ -n "$MIRROR" ]] || MIRROR="$(SUITE="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")" detect_mirror | awk 'NR == 1')"
[[ -n "$MIRROR" ]] || die "no Debian mirror for $SUITE in /etc/apt/sources.list*; set LMS_DEBIAN_MIRROR"

# ------------------------------------------------------------------ rootfs ---
ROOTFS_TAR="$SCACHE/rootfs-$SUITE-$DEB_ARCH-$ROOTFS_KEY.tar"
make_rootfs() {
  local t=$SECONDS
  DEBOOT_DIR="$WORK/rootfs"
  say "debootstrap $SUITE ($DEB_ARCH, minbase, +$include_pkgs) from $MIRROR"
  if ! debootstrap --variant=minbase --arch="$DEB_ARCH" --include="$include_pkgs" \
    "$SUITE" "$DEBOOT_DIR" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    say "debootstrap failed; last lines:"
    tail -n 20 "$WORK/debootstrap.log" >&2
    [[ -f "$DEBOOT_DIR/debootstrap/debootstrap.log" ]] &&
      tail -n 20 "$DEBOOT_DIR/debootstrap/debootstrap.log" >&2
    die "debootstrap of $SUITE from $MIRROR failed (set LMS_DEBIAN_MIRROR to override)"
  fi
  local r="$DEBOOT_DIR"
  # Trim what an image does not need: package caches and lists, man pages,
  # translations, docs (licence files are kept).
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin "$r"/var/lib/apt/lists/* \
    "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/var/log/*.log "$r"/var/log/apt/*
  find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  find "$r/usr/share/doc" -type f ! -name copyright -delete
  # The official image's interpreter is not "externally managed" (PEP 668).
  rm -f "$r"/usr/lib/python3*/EXTERNALLY-MANAGED
  tar --numeric-owner -C "$r" -cf "$WORK/rootfs.tar" \
    --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' \
    --exclude='./tmp/*' --exclude='./debootstrap' .
  mv "$WORK/rootfs.tar" "$ROOTFS_TAR"
  rm -rf --one-file-system "$DEBOOT_DIR"
  DEBOOT_DIR=""
  say "rootfs cached at $ROOTFS_TAR ($(du -h "$ROOTFS_TAR" | cut -f1), $((SECONDS - t))s)"
}

if ((rebuild)) || ! docker image inspect "$ROOTFS_IMAGE" >/dev/null 2>&1; then
  [[ -s "$ROOTFS_TAR" ]] || make_rootfs
  say "loading rootfs as $ROOTFS_IMAGE ($DEB_ARCH)"
  python3 "$HERE/image_archive.py" "$ROOTFS_TAR" "$ROOTFS_IMAGE" "$DEB_ARCH" "$WORK/rootfs-image.tar" ||
    die "writing the image archive of the rootfs failed"
  docker load --quiet --input "$WORK/rootfs-image.tar" >/dev/null || die "docker load of the rootfs failed"
  rm -f "$WORK/rootfs-image.tar"
else
  say "rootfs image $ROOTFS_IMAGE present"
fi

# ------------------------------------------------------------- downloads ---
WHEELS="$SCACHE/wheels/awslambdaric-$RIC_VERSION-$ABI-$WHEEL_PLATFORM"
if [[ ! -f "$WHEELS/.complete" ]]; then
  say "downloading awslambdaric==$RIC_VERSION wheels ($ABI, $WHEEL_PLATFORM)"
  rm -rf "$WHEELS"
  mkdir -p "$WHEELS"
  "${PIP[@]}" download --quiet --disable-pip-version-check --dest "$WHEELS" \
    --only-binary=:all: --platform "$WHEEL_PLATFORM" --python-version "$PYVER" \
    --implementation cp --abi $ABI "awslambdaric==$RIC_VERSION" >&2 ||
    die "pip download awslambdaric==$RIC_VERSION failed"
  touch "$WHEELS/.complete"
fi

RIE_BIN="$SCACHE/rie/aws-lambda-rie-$RIE_ARCH-sam-$SAM_VERSION"
if [[ ! -s "$RIE_BIN" ]]; then
  say "downloading aws-sam-cli==$SAM_VERSION to extract the Runtime Interface Emulator"
  mkdir -p "$SCACHE/rie" "$WORK/sam"
  "${PIP[@]}" download --quiet --disable-pip-version-check --no-deps --dest "$WORK/sam" \
    --only-binary=:all: "aws-sam-cli==$SAM_VERSION" >&2 ||
    die "pip download aws-sam-cli==$SAM_VERSION failed"
  python3 - "$WORK/sam" "samcli/local/rapid/aws-lambda-rie-$RIE_ARCH" "$RIE_BIN.tmp" <<'PY' ||
import glob, shutil, sys, zipfile
wheel_dir, member, dest = sys.argv[1:]
(wheel,) = glob.glob(wheel_dir + "/aws_sam_cli-*.whl")
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
PY
    die "could not extract the RIE from the aws-sam-cli wheel"
  chmod 0755 "$RIE_BIN.tmp"
  mv "$RIE_BIN.tmp" "$RIE_BIN"
  rm -rf "$WORK/sam"
fi

# ------------------------------------------------------- build context ---
CTX="$WORK/context"
O="$CTX/overlay"
mkdir -p "$O/var/runtime" "$O/var/task" "$O/opt" "$O/var/lang/bin" \
  "$O/var/lang/lib/python$PYVER/site-packages" "$O/usr/local/bin" \
  "$O/usr/local/lib/python$PYVER/dist-packages"
cp "$HERE/Dockerfile" "$CTX/Dockerfile"
install -m 0755 "$HERE/files/lambda-entrypoint.sh" "$O/lambda-entrypoint.sh"
sed "s/python3\.11/python$PYVER/g" "$HERE/files/bootstrap" >"$O/var/runtime/bootstrap"
chmod 0755 "$O/var/runtime/bootstrap"
install -m 0644 "$HERE/files/bootstrap.py" "$O/var/runtime/bootstrap.py"
install -m 0755 "$RIE_BIN" "$O/usr/local/bin/aws-lambda-rie"
# Same interpreter names as the official image (/var/lang/bin first on PATH).
ln -s /usr/bin/python$PYVER "$O/var/lang/bin/python$PYVER"
ln -s python$PYVER "$O/var/lang/bin/python3"
ln -s python$PYVER "$O/var/lang/bin/python"
ln -s /usr/bin/python3 "$O/usr/local/bin/python"
# The official interpreter's site-packages lives under /var/lang; keep that
# directory importable (with its .pth files) for code installed there.
printf 'import site; site.addsitedir("/var/lang/lib/python%s/site-packages")\n' "$PYVER" \
  >"$O/usr/local/lib/python$PYVER/dist-packages/lambda-standin.pth"
env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL "${PIP[@]}" install --quiet \
  --disable-pip-version-check --no-index --find-links "$WHEELS" --target "$O/var/runtime" \
  --only-binary=:all: --platform "$WHEEL_PLATFORM" --python-version "$PYVER" \
  --implementation cp --abi $ABI --no-warn-script-location --root-user-action=ignore "awslambdaric==$RIC_VERSION" >&2 ||
  die "installing awslambdaric into the build context failed"
rm -rf "$O/var/runtime/bin"
chmod -R u=rwX,go=rX "$O"

# ------------------------------------------------------------------ build ---
say "building $TAG"
# The classic builder works with every client/engine pairing used here and
# the Dockerfile has no RUN step, so BuildKit buys nothing.
if ! DOCKER_BUILDKIT=0 docker build --quiet --force-rm --platform "linux/$DEB_ARCH" \
  --build-arg "ROOTFS_IMAGE=$ROOTFS_IMAGE" \
  --label "$LABEL_KEY=$RECIPE" \
  --label "org.lambda-ml-serve.standin.awslambdaric=$RIC_VERSION" \
  --label "org.lambda-ml-serve.standin.rie-from-aws-sam-cli=$SAM_VERSION" \
  -t "$TAG" "$CTX" >"$WORK/build.log" 2>&1; then
  cat "$WORK/build.log" >&2
  die "docker build of $TAG failed"
fi
# Drop the untagged previous build, if any, so images do not pile up.
docker image prune --force --filter "label=$LABEL_KEY" >/dev/null 2>&1 || true

say "built $TAG (recipe $RECIPE) in $(elapsed)"
printf '%s\n' "$TAG"
