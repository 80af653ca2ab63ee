#!/usr/bin/env bash
# Make sure Fashion-MNIST is available: the Debian package dataset-fashion-mnist, or a directory in DATA_ROOT.
set -eu
debian=/usr/share/datasets/fashion-mnist
if [ -n "${DATA_ROOT:-}" ] || [ -s "$debian/train-images-idx3-ubyte.gz" ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing the Debian package dataset-fashion-mnist ..."
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null && exit 0
fi
echo "Fashion-MNIST not found: install the Debian package dataset-fashion-mnist, or pass --data-root DIR (make DATA_ROOT=DIR ...)" >&2
exit 2
