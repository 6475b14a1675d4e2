#!/usr/bin/env bash
# `make gpu-check`: the GPU path checked on one CUDA machine, one summary table at the end (issue 18).
#   1. the GPU-marked tests, the device-loader and bench tests (on CUDA when there is one)
#   2. a host-sync audit of the per-step pieces (python -m fer_lightning.tools.sync_audit)
#   3. make bench on CUDA for mini_xception and resnet18 (experiments/bench/<machine>.md / .json)
#   4. a short real-data ResNet-18 run (experiment=resnet_depth trainer=gpu: the device data path), with GPU
#      utilisation sampled by nvidia-smi every second and Lightning's simple profiler
# Budget: the steps' timeouts add up to 8 min (tests 150 s, sync audit 60 s, bench 150 s, training 150 s).
# Without a CUDA device visible to torch it prints why and exits 0 (nothing ran, nothing failed); a CUDA machine
# whose torch is a CPU build exits 1. Exit status otherwise: 1 when any step failed.
# Environment: PY (default .venv/bin/python), DATA (FER2013 csv / csv.gz; default: the first of shared/data/fer2013/,
# ../shared/data/fer2013/, data/fer2013/ that exists; none: bench on the embedded data, training skipped),
# EPOCHS (training epochs, default 3), OUT (default logs/gpu_check), TRAIN_ARGS (extra Hydra overrides).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-logs/gpu_check}
EPOCHS=${EPOCHS:-3}

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    if "$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda is None else 1)" && command -v nvidia-smi >/dev/null \
        && nvidia-smi -L >/dev/null 2>&1 && [ -n "${CUDA_VISIBLE_DEVICES-unset}" ]; then
        echo "gpu-check: this machine has a GPU but $PY's torch is a CPU build: reinstall torch (make clean install)"
        exit 1
    fi
    echo "gpu-check: skipped, no CUDA GPU visible to torch on this machine (nothing ran; exit 0)"
    exit 0
fi

mkdir -p "$OUT"
exec > >(tee "$OUT/all.log") 2>&1
SUMMARY="$OUT/summary.tsv"
printf 'step\tstatus\tseconds\tresult\n' > "$SUMMARY"
FAILED=0
# step NAME TIMEOUT_S COMMAND...: runs it, records pass/fail and its time; `result` is filled in by the caller
step() {
    local name=$1 limit=$2 started=$SECONDS status=ok
    shift 2
    echo "=== $name (timeout ${limit} s)"
    timeout "$limit" "$@" || { status="FAILED ($?)"; FAILED=1; }
    LAST_STATUS=$status LAST_SECONDS=$((SECONDS - started))
    echo "=== $name: $LAST_STATUS in $LAST_SECONDS s"
}
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$LAST_STATUS" "$LAST_SECONDS" "$2" >> "$SUMMARY"; }

DATA=${DATA:-}
for candidate in shared/data/fer2013/fer2013.csv.gz ../shared/data/fer2013/fer2013.csv.gz data/fer2013/fer2013.csv; do
    [ -z "$DATA" ] && [ -f "$candidate" ] && DATA=$candidate
done
[ -n "$DATA" ] && DATA=$(realpath "$DATA")
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
command -v cc >/dev/null || echo "no C compiler: torch.compile (Triton) would fail; nothing here compiles"

step tests 150 "$PY" -m pytest -q -p no:cacheprovider -m "gpu or not slow" tests/data/test_device_aug.py \
    tests/data/test_mixup.py tests/data/test_device_loader.py tests/bench/test_framework.py tests/tools/test_sync_audit.py
record tests "$(grep -aEo '[0-9]+ (passed|failed|skipped)[^=]*' "$OUT/all.log" | tail -1)"

step sync-audit 60 "$PY" -m fer_lightning.tools.sync_audit --batch 128
record sync-audit "$(awk -F'\t' 'NF == 3 && $2 ~ /^[0-9]+$/ {printf "%s%s: %s syncs, %s ms", sep, $1, $2, $3; sep="; "}' "$OUT/all.log")"

BENCH_DATA=data=synthetic
[ -n "$DATA" ] && BENCH_DATA="data=fer2013 data.path=$DATA"
step bench 150 "$PY" -m fer_lightning.bench --models mini_xception resnet18 --batches 100 --repeats 20 aug=heavy \
    $BENCH_DATA --out experiments/bench --name gpu_check
record bench "experiments/bench/gpu_check.md ($BENCH_DATA)"

if [ -n "$DATA" ]; then
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -l 1 > "$OUT/gpu_util.csv" &
    SAMPLER=$!
    step train 150 "$PY" train.py experiment=resnet_depth trainer=gpu data.path="$DATA" trainer.max_epochs="$EPOCHS" \
        trainer.profiler=simple logger=csv hydra.run.dir="$OUT/resnet18" ${TRAIN_ARGS:-}
    kill "$SAMPLER"
    UTIL=$(awk -F', ' '$1 > 0 {s += $1; n++} END {if (n) printf "GPU busy %.0f%% (mean of %d busy seconds)", s / n, n}' \
        "$OUT/gpu_util.csv")
    record train "$("$PY" - "$OUT/resnet18/metrics.json" <<'EOF'
import json, sys
try:
    m = json.load(open(sys.argv[1]))
except OSError:
    sys.exit(print("no metrics.json"))
print(f"{m.get('train_images_per_s', 0):.0f} train img/s, val/acc {m.get('val/acc', 0):.4f}, "
      f"test/acc {m.get('test/acc', 0):.4f}, {m.get('epochs')} epochs in {m.get('wall_time_s', 0):.0f} s")
EOF
), $UTIL"
else
    echo "=== train: skipped, no FER2013 file (set DATA=<fer2013.csv.gz>)"
    LAST_STATUS=skipped LAST_SECONDS=0 record train "no FER2013 file: set DATA"
fi

echo
echo "gpu-check summary ($OUT/summary.tsv; bench table: experiments/bench/gpu_check.md):"
column -t -s $'\t' "$SUMMARY"
[ -f experiments/bench/gpu_check.md ] && cat experiments/bench/gpu_check.md
exit $FAILED
