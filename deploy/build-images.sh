#!/usr/bin/env bash
# Build the fedradval site and coordinator images from this checkout (see docs/containers.md).
#
#   deploy/build-images.sh [--local-base] [--ca-bundle FILE] [--wheels DIR] [--tag TAG] [site] [coordinator]
#
#   --local-base      no image registry: make the Debian 12 base with debootstrap (minbase) and `docker import`
#                     it as local/debian:bookworm (once; needs root and debootstrap), and build FROM it
#   --ca-bundle FILE  CA bundle pip trusts in the build stages (HTTPS proxies that re-sign traffic)
#   --wheels DIR      wheels pip prefers to the index (e.g. the CPU torch wheel); also skips download.pytorch.org
#   --tag TAG         image tag (default: the version in pyproject.toml)
#
# Images: fedradval-site:TAG and fedradval-coordinator:TAG. Reruns reuse Docker's layer cache: only the
# layers after a changed file are rebuilt (the pinned dependencies come before the source).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

local_base=0 ca_bundle="" wheels="" tag="" targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --local-base) local_base=1 ;;
        --ca-bundle) ca_bundle="$2"; shift ;;
        --wheels) wheels="$2"; shift ;;
        --tag) tag="$2"; shift ;;
        site|coordinator) targets+=("$1") ;;
        *) echo "build-images.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done
[ ${#targets[@]} -gt 0 ] || targets=(site coordinator)
[ -n "$tag" ] || tag="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"

build_args=()
if [ "$local_base" = 1 ]; then
    base=local/debian:bookworm
    if ! docker image inspect "$base" >/dev/null 2>&1; then
        mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)"
        mirror="${mirror:-http://deb.debian.org/debian}"
        rootfs="$(mktemp -d /tmp/fedradval-rootfs.XXXXXX)"
        trap 'rm -rf "$rootfs"' EXIT
        echo "debootstrap bookworm from $mirror (about a minute)" >&2
        debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
            || { tail -20 "$rootfs.log" >&2; exit 1; }
        rm -f "$rootfs"/var/cache/apt/archives/*.deb "$rootfs.log"
        tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
        rm -rf "$rootfs"
    fi
    build_args+=(--build-arg "BASE_IMAGE=$base")
fi

support=deploy/build-support
cleanup_support() { rm -rf "$support/ca-certificates.crt" "$support/wheels"; }
trap 'cleanup_support; [ -z "${rootfs:-}" ] || rm -rf "$rootfs"' EXIT
cleanup_support
mkdir -p "$support/wheels"
[ -z "$ca_bundle" ] || cp "$ca_bundle" "$support/ca-certificates.crt"
if [ -n "$wheels" ]; then
    cp "$wheels"/*.whl "$support/wheels/"
    build_args+=(--build-arg "TORCH_INDEX=https://pypi.org/simple")
fi

for target in "${targets[@]}"; do
    echo "building fedradval-$target:$tag" >&2
    docker build --target "$target" -t "fedradval-$target:$tag" "${build_args[@]}" .
done
