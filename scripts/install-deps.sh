#!/usr/bin/env bash
# install-deps.sh installs what regfs's tests and benchmarks need on Debian:
# FUSE 3, distribution/registry (docker-registry), and compressors for fixtures.
set -euo pipefail
pkgs=(fuse3 docker-registry pigz gzip tar zstd file jq curl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian's package starts a registry on :5000 where an init system runs; the tests start their own.
command -v go >/dev/null || { echo "install Go 1.26+ first (https://go.dev/doc/install)" >&2; exit 1; }
go mod download
