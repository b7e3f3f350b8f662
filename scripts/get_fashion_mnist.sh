#!/usr/bin/env bash
# Installs Fashion-MNIST from Debian (package dataset-fashion-mnist) when we are root and apt is here.
# Elsewhere the data comes from the Hub dataset zalando-datasets/fashion_mnist at run time.
set -u
dir=/usr/share/datasets/fashion-mnist
if ls "$dir"/train-images-idx3-ubyte* >/dev/null 2>&1; then
  echo "Fashion-MNIST found in $dir"; exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Fashion-MNIST from Debian (dataset-fashion-mnist)..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
    && { echo "Fashion-MNIST installed in $dir"; exit 0; }
fi
echo "Fashion-MNIST is not installed in $dir and could not be installed (need root and apt);" \
     "the demo will try the Hub dataset zalando-datasets/fashion_mnist instead."
exit 0
