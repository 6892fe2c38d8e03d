#!/usr/bin/env bash
# The checks that need a GPU, as one command for a machine lent for minutes (not yet run on
# one, so its duration is unknown): the CUDA tests, the speed sections on CUDA, and the
# accuracy of precision=bf16 against float32 after a whole run at CPU scale.
#
#   bash benchmarks/gpu_check.sh OUT_DIR [CIFAR10_JPG_ARCHIVE]
#
# The archive (the CIFAR-10 copy, ../shared/data/cifar10-jpg.tar.gz here) must travel with the
# command where the machine has no cache. Each step writes under OUT_DIR as it ends, so a step
# cut short keeps what the earlier ones measured.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR [CIFAR10_JPG_ARCHIVE]}
archive=${2:-}
data=()
[ -n "$archive" ] && data=("dataset.loader.archive=$archive")
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"

echo "== CUDA tests"
python -m pytest -q -m cuda -p no:cacheprovider 2>&1 | tee "$out/tests.log"

echo "== speed sections on CUDA"
python benchmarks/run.py --only speed,speed_options,fuse --device cuda --out "$out/speed" \
    -- "${data[@]}" 2>&1 | tail -n 40 | tee "$out/speed.log"

echo "== precision: DM at cpu_cifar10, float32 and bf16, seed 0"
python launch.py -m experiment=cpu_cifar10 precision=32,bf16 seed=0 device=cuda logger=none \
    eval.every=0 "${data[@]}" hydra.sweep.dir="$out/precision" 2>&1 | tail -n 20 | tee "$out/precision.log"
python -m cmidd.report "$out/precision" 2>&1 | tee "$out/precision_report.md"

echo "== the paper's DM CIFAR-10 IPC 10 row, with and without CMI (4 ConvNet proxies, not 200)"
python launch.py -m experiment=paper method=dm dataset=cifar10_jpg proxy=convnet cmi.weight=0,auto \
    proxy.pool_size=4 proxy.build_if_missing=true iterations=2000 eval.every=500 seed=0 device=cuda logger=none \
    "${data[@]}" hydra.sweep.dir="$out/paper_dm" 2>&1 | tail -n 20 | tee "$out/paper_dm.log"
python -m cmidd.report "$out/paper_dm" 2>&1 | tee "$out/paper_dm_report.md"
