#!/usr/bin/env bash
# The service's container image, from the bento that `make build` makes: the model tag pinned (the
# embedded default unless MODEL / PYRAMIDNET_MODEL names another), containerized and tagged
#   <REPOSITORY>/<bento name>:<package version>-<model version>
# which it prints last on stdout (everything else goes to stderr). Run it through `make image`:
#
#   make image                                                  # GPU image (torch): pyramidnet-cifar10
#   make image BENTOFILE=bentofile.cpu.yaml                     # CPU image (OpenVINO, no torch): pyramidnet-cifar10-cpu
#   make image BENTOFILE=bentofile.cpu.yaml REGISTRY=registry.example.com/ml
#
# With Docker when a Docker engine answers, else with buildah (Docker format, so the HEALTHCHECK is
# kept; the image lands in the storage podman reads). On a normal machine the base image
# (python:3.11-slim) is pulled from Docker Hub. Where no registry can be reached, and only then, this
# script first builds a LOCAL STAND-IN for that base image from Debian packages (debootstrap of
# Debian bookworm, whose Python is 3.11) and tags it under the base image's name, saying so loudly.
# Needs: docker, or buildah (and debootstrap for the stand-in) as root.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${PYRAMIDNET_MODEL:?"the model tag to pin: run this through make image"}
BENTOFILE=${1:-bentofile.yaml}
REPOSITORY=${2:-localhost}
BASE=python:3.11-slim
BIN=${BIN:-.venv/bin}

build_stand_in_base() {
    echo "!! ${BASE} cannot be pulled here: building a LOCAL STAND-IN for it from Debian packages." >&2
    echo "!! (a machine that can reach Docker Hub uses the real ${BASE}; nothing else changes)" >&2
    local rootfs
    rootfs=$(mktemp -d /var/tmp/pyramidnet-base.XXXXXX)
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" http://deb.debian.org/debian >&2
    # What python:3.11-slim offers that Debian's python3 does not: `python` and a pip that may
    # install into the system interpreter.
    ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
    ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip"
    rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    # Where package registries are reached through a TLS-inspecting proxy, the build steps need
    # this machine's CA certificates (pip and uv are pointed at them below).
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
    chroot "$rootfs" update-ca-certificates >/dev/null
    local ctr
    ctr=$(buildah from scratch)
    buildah copy "$ctr" "$rootfs" / >/dev/null
    buildah config --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
        --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
        --env UV_NATIVE_TLS=1 \
        --cmd python3 --label org.opencontainers.image.description="local stand-in for ${BASE}" "$ctr"
    buildah commit --rm "$ctr" "docker.io/library/${BASE}" >&2
    rm -rf "$rootfs"
}

if docker info >/dev/null 2>&1; then
    backend=docker
else
    backend=buildah
    export BUILDAH_FORMAT=docker       # the OCI format has no HEALTHCHECK
    export BUILDAH_ISOLATION=chroot    # no user namespaces or runc needed to build
    if ! buildah inspect --type image "docker.io/library/${BASE}" >/dev/null 2>&1; then
        timeout 120 buildah pull "docker.io/library/${BASE}" >&2 || build_stand_in_base
    fi
fi

BENTO=$(PYRAMIDNET_MODEL=$MODEL "$BIN/bentoml" build -f "$BENTOFILE" -o tag | tail -n 1 | sed 's/^__tag__://')
VERSION=$("$BIN/python" -c 'import model_store; print(model_store.__version__)')
IMAGE="${REPOSITORY}/${BENTO%%:*}:${VERSION}-${MODEL##*:}"
echo "bento ${BENTO} (model ${MODEL}) -> image ${IMAGE}" >&2

# containerize needs the current directory to contain $TMPDIR when the bento has a Dockerfile
# template (BentoML refuses "files outside of the current working directory" otherwise).
export TMPDIR=${TMPDIR:-/tmp}
(cd "$TMPDIR" && "$OLDPWD/$BIN/bentoml" containerize --backend "$backend" -t "$IMAGE" "$BENTO" >&2)
echo "$IMAGE"
