#!/usr/bin/env bash
# NNCodec 2.x (Fraunhofer HHI's reference implementation of ISO/IEC 15938-17), for the rate-accuracy
# benchmark only (scripts/rate_accuracy.py); squeezelab never needs it.
#   scripts/install_nncodec.sh DIR      then run the benchmark with PYTHONPATH=DIR
# Installed into DIR with --no-deps beside the project's environment: nncodec 2.1.3 pins numpy<2, which
# would downgrade the project's numpy; the parts the benchmark calls (compress / decompress of a
# parameter dict) run on numpy 2 (checked by the benchmark's round trip). Its C++ extension (DeepCABAC)
# compiles here: about 3 CPU minutes.
set -euo pipefail
dir=${1:?usage: scripts/install_nncodec.sh DIR}
py=${PYTHON:-python}
"$py" -m pip install -q --no-deps --target "$dir" nncodec==2.1.3 pandas pytz tzdata h5py click \
    opencv-python-headless ptflops torchmetrics lightning-utilities
PYTHONPATH="$dir" "$py" -c "from nncodec.nnc import compression; print('nncodec importable from $dir')"
