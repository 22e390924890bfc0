#!/usr/bin/env bash
# On a lent GPU machine: unpack the kit that scripts/gpu_kit.py packed (once per machine), then run a command with
# it, from the checkout's root (docs/training.md#on-a-gpu):
#
#   bash scripts/gpu.sh python3 -m bench.gpu --data .gpu/cifar10 --out "$OUT"
#   bash scripts/gpu.sh python3 scripts/train.py --data .gpu/cifar10 --run runs/gpu --epochs 300 --cutout 16 ...
set -euo pipefail
cd "$(dirname "$0")/.."
want=$(python3 -c 'import json; print(json.load(open(".gpu/kit.json"))["python"])' 2>/dev/null) || {
  echo "gpu.sh: no kit here (.gpu/kit.json): run scripts/gpu_kit.py where PyPI can be reached, and carry .gpu" >&2
  exit 2
}
have=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$want" != "$have" ]; then
  echo "gpu.sh: the kit was packed for Python $want and this python3 is $have: pack it again with --python-version $have" >&2
  exit 2
fi
# The kit's archives a call carried unpack into one site, each once per machine (a training call carries train.tar.xz
# alone: pydantic, all that training needs beyond the machine's image).
site=${PYRAMIDNET_GPU_SITE:-/tmp/pyramidnet-site}
mkdir -p "$site"
for archive in .gpu/site.tar.xz .gpu/openvino.tar.xz .gpu/train.tar.xz; do
  unpacked="$site/.$(basename "$archive").unpacked"
  if [ -f "$archive" ] && [ ! -f "$unpacked" ]; then
    tar xJf "$archive" -C "$site" && touch "$unpacked"
  fi
done
export PYTHONPATH="$site:$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="$PWD/.gpu/bin:$PATH"
export BENTOML_DO_NOT_TRACK=true PYTHONUNBUFFERED=1
exec "$@"
