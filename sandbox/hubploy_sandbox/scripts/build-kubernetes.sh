#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager and kube-scheduler from Debian bookworm's
# `kubernetes` source package (the only offline-buildable source: it ships vendor/).
# Usage: build-kubernetes.sh CACHE_DIR
# Result: CACHE_DIR/k8s-<version>/{kube-apiserver,kube-controller-manager,kube-scheduler}
# Uses a private apt sources list and lists dir; the system's apt sources are never changed.
set -euo pipefail
cache=${1:?usage: build-kubernetes.sh CACHE_DIR}
version=1.20.2
dest=$cache/k8s-$version
if [ -x "$dest/kube-apiserver" ] && [ -x "$dest/kube-controller-manager" ] && [ -x "$dest/kube-scheduler" ]; then
  echo "kubernetes $version: cached in $dest"
  exit 0
fi
mirror=$(sed -n 's/^URIs:[[:space:]]*\(http[^ ]*debian\)[[:space:]]*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
work=$cache/build-k8s
rm -rf "$work"; mkdir -p "$work/lists/partial" "$work/etc"
cat > "$work/etc/src.sources" <<SRC
Types: deb-src
URIs: $mirror
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/etc" -o "Dir::State::Lists=$work/lists")
start=$(date +%s)
apt-get "${opts[@]}" update -qq
(cd "$work" && apt-get "${opts[@]}" source --download-only kubernetes >/dev/null)
tar -C "$work" -xzf "$work"/kubernetes_*.orig.tar.gz
src=$(find "$work" -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
echo "building kubernetes $version in $src (about 10 minutes on 2 cores)"
make -C "$src" WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler"
mkdir -p "$dest.tmp"
cp "$src"/_output/bin/kube-apiserver "$src"/_output/bin/kube-controller-manager "$src"/_output/bin/kube-scheduler "$dest.tmp/"
rm -rf "$dest"; mv "$dest.tmp" "$dest"
rm -rf "$work"
echo "kubernetes $version built in $(( $(date +%s) - start )) s into $dest"
