#!/usr/bin/env bash
# Every CUDA path of CNN Mode, on CIFAR-10, in one go: about 8 minutes on one H100-class GPU (less with
# R50_EPOCHS=3; CHECKS="aug-per-image aug-batched" alone takes about 2). Run it as it is whenever a GPU
# machine is at hand; it needs only this repository, PyTorch with CUDA, the packages of requirements.txt (or at
# least those `train`, `bench` and `serve` import) and the CIFAR-10 copy.
#
#   bash benchmarks/cuda_check.sh [CIFAR10.tar.gz] [OUT_DIR]
#
# Prints one line per path, `PASS name  figures` or `FAIL name  reason`, then the log tail of each failure:
#   aug-per-image   the `cnnmode-resnet50` recipe (ResNet-50, CIFAR stem, 80 px, AutoAugment, batch 64) for one
#                   epoch on a fifth of the training images with aug.batched=false: img/s, GPU busy %, memory
#   aug-batched     the same with the batched policies (the default): img/s, GPU busy %, memory
#   recipe-r50      the whole recipe, R50_EPOCHS (default 15) epochs on all 50,000 images: test accuracy, wall
#                   time, img/s, GPU busy %, peak memory (NVML and torch's allocator)
#   speed-airbench  `train --recipe speed` beside the public airbench94_muon run unmodified (its file at AIRBENCH, default
#                   .devdata/airbench94_muon.py; fetch it from github.com/KellerJordan/cifar10-airbench, never commit
#                   it), RUNS (default 3) runs each on the same JPEG copy: test accuracy and training time
#   train-fp16      ResNet-18, fp16 autocast + GradScaler, channels-last, TF32, cudnn.benchmark
#   train-bf16      the same in bf16 (no scaler)
#   train-compile   bf16 + torch.compile
#   ddp-nccl        torchrun DDP with NCCL over every visible GPU (one rank per GPU), SyncBatchNorm
#   bench-cuda      `cnnmode bench --device cuda` (eager, eager-bf16, torchscript; batch 1, 64, 512)
#   serve-cuda      `cnnmode serve --device cuda` with dynamic batching, driven by 32 concurrent clients
# CHECKS="train-fp16 ddp-nccl" runs only those; EPOCHS=N (default 2) sets the training length.
# ResNet-18 at 32 px without per-image AutoAugment, so the figures are the GPU's, not the data pipeline's.
# Exit status: the number of failed paths.
set -u
cd "$(dirname "$0")/.."
DATA=${1:-../shared/datasets/cifar10-jpeg.tar.gz}
OUT=${2:-/tmp/cnnmode-cuda-check}
PY=${PYTHON:-python3}
EPOCHS=${EPOCHS:-2}
R50_EPOCHS=${R50_EPOCHS:-15}
CHECKS=${CHECKS:-aug-per-image aug-batched recipe-r50 speed-airbench train-fp16 train-bf16 train-compile ddp-nccl bench-cuda serve-cuda}
want() { [[ " $CHECKS " == *" $1 "* ]]; }
mkdir -p "$OUT"
FAILED=0
FAILURES=()
export PYTHONUNBUFFERED=1 COLUMNS=160

GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" = "0" ]; then echo "FAIL cuda  no CUDA GPU visible to PyTorch"; exit 1; fi
$PY -c "import torch; print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} x', torch.cuda.get_device_name(0))"

COMMON="data.path=$DATA data.root=$OUT/data run.dir=$OUT/runs model.name=resnet18 train.epochs=$EPOCHS
        train.batch_size=512 optim.name=sgd optim.lr=0.2 sched.name=onecycle train.channels_last=true data.img_size=32
        aug.autoaugment=false aug.crop_padding=4"

result() {  # result NAME STATUS FIGURES LOG
  if [ "$2" = 0 ]; then echo "PASS $1  $3"; else echo "FAIL $1  exit $2 (log: $4)"; FAILED=$((FAILED + 1)); FAILURES+=("$4"); fi
}

metrics() {  # one line from a run folder's metrics.json
  $PY - "$1" <<'EOF'
import json, sys
m = json.load(open(f"{sys.argv[1]}/metrics.json"))
print(f"test acc {100 * m['test']['accuracy']:.2f}%, {m['images_per_s']:.0f} img/s training, "
      f"{m['train_time_s']:.1f} s for {m['epochs_run']} epochs, {m['environment']['precision']}")
EOF
}

train_check() {  # train_check NAME overrides...
  local name=$1; shift
  want "$name" || return 0
  local log="$OUT/$name.log"
  rm -rf "$OUT/runs/$name"
  $PY -m cnnmode train $COMMON run.name=$name "$@" >"$log" 2>&1
  local rc=$?
  local fig=""
  [ $rc = 0 ] && fig="$(metrics "$OUT/runs/$name") | $(grep -m1 -o 'device [^|]*' "$log")"
  result "$name" $rc "$fig" "$log"
}

recipe_check() {  # recipe_check NAME overrides...: the cnnmode-resnet50 recipe under the NVML sampler
  local name=$1; shift
  want "$name" || return 0
  local log="$OUT/$name.log"
  rm -rf "$OUT/runs/$name"
  $PY benchmarks/gpu_busy.py -- $PY -m cnnmode train --recipe cnnmode-resnet50 data.path=$DATA data.root=$OUT/data \
    run.dir=$OUT/runs run.name=$name "$@" >"$log" 2>&1
  local rc=$?
  local fig=""
  if [ $rc = 0 ]; then
    local peak
    peak=$($PY -c "import csv,sys; print(max(float(r['peak_mem_mb']) for r in csv.DictReader(open(sys.argv[1]))))" \
      "$OUT/runs/$name/history.csv" 2>/dev/null)
    fig="$(metrics "$OUT/runs/$name") | $(grep -m1 '^GPU busy' "$log") | torch peak ${peak:-?} MB"
  fi
  result "$name" $rc "$fig" "$log"
}

recipe_check aug-per-image aug.batched=false train.epochs=1 data.subset=0.2
recipe_check aug-batched aug.batched=true train.epochs=1 data.subset=0.2
recipe_check recipe-r50 train.epochs=$R50_EPOCHS

if want speed-airbench; then
  log="$OUT/speed-airbench.log"
  $PY benchmarks/airbench_side_by_side.py --gpu --runs "${RUNS:-3}" --airbench "${AIRBENCH:-.devdata/airbench94_muon.py}" \
    --data "$DATA" >"$log" 2>&1
  rc=$?
  result speed-airbench $rc "$(grep '^MEDIAN' "$log" | tr '\n' ';')" "$log"
fi

train_check train-fp16 train.amp=fp16
train_check train-bf16 train.amp=bf16
train_check train-compile train.amp=bf16 train.compile=true

if want ddp-nccl; then
log="$OUT/ddp-nccl.log"
rm -rf "$OUT/runs/ddp-nccl"
$PY -m torch.distributed.run --standalone --nproc-per-node "$GPUS" -m cnnmode train $COMMON run.name=ddp-nccl \
  train.amp=bf16 train.sync_bn=true >"$log" 2>&1
rc=$?
fig=""
[ $rc = 0 ] && fig="$GPUS rank(s): $(metrics "$OUT/runs/ddp-nccl") | $(grep -m1 -o 'device [^|]*|[^|]*|[^|]*' "$log")"
result ddp-nccl $rc "$fig" "$log"
fi

if want bench-cuda; then
log="$OUT/bench-cuda.log"
$PY -m cnnmode bench "$OUT/runs/train-fp16" --device cuda --backends eager,eager-bf16,torchscript \
  --batch-sizes 1,64,512 --out "$OUT/bench.json" >"$log" 2>&1
rc=$?
result bench-cuda $rc "$(tail -n 12 "$log" | tr -s ' ' | tr '\n' ';' | cut -c1-900)" "$log"
fi

if want serve-cuda; then
log="$OUT/serve-cuda.log"
$PY - "$OUT/runs/train-fp16" >"$log" 2>&1 <<'EOF'
"""Start `cnnmode serve --device cuda`, drive it with 32 concurrent clients (one test image per request), print
req/s, latency percentiles and the mean batch size the server formed (from /metrics)."""
import asyncio, base64, io, re, socket, statistics, subprocess, sys, time
import httpx
from PIL import Image

run = sys.argv[1]
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
server = subprocess.Popen([sys.executable, "-m", "cnnmode", "serve", run, "--device", "cuda", "--port", str(port),
                           "--max-batch-size", "64", "--max-wait-ms", "5", "--max-queue", "8192"])
url = f"http://127.0.0.1:{port}"
try:
    for _ in range(240):
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        sys.exit("server not ready after 120 s")
    images = []
    for i in range(64):
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (i * 4 % 256, 80, 200 - i)).save(buf, "PNG")
        images.append(base64.b64encode(buf.getvalue()).decode())

    async def drive(n: int, clients: int) -> list[float]:
        latencies, todo = [], iter(range(n))
        async with httpx.AsyncClient(timeout=30) as http:
            async def client():
                for i in todo:
                    t = time.perf_counter()
                    r = await http.post(f"{url}/v1/predict", json={"images": [images[i % 64]]})
                    r.raise_for_status()
                    latencies.append(time.perf_counter() - t)
            await asyncio.gather(*(client() for _ in range(clients)))
        return latencies

    asyncio.run(drive(256, 32))  # warm-up
    start = time.perf_counter()
    lat = sorted(asyncio.run(drive(4000, 32)))
    took = time.perf_counter() - start
    text = httpx.get(f"{url}/metrics").text
    total = float(re.search(r"^cnnmode_batch_size_sum\{[^}]*\} (\S+)", text, re.M).group(1))
    calls = float(re.search(r"^cnnmode_batch_size_count\{[^}]*\} (\S+)", text, re.M).group(1))
    print(f"RESULT {4000 / took:.0f} req/s with 32 clients, p50 {1000 * lat[len(lat) // 2]:.1f} ms, "
          f"p99 {1000 * lat[int(len(lat) * 0.99)]:.1f} ms, mean batch {total / calls:.1f} images")
finally:
    server.terminate()
    server.wait(timeout=30)
EOF
rc=$?
result serve-cuda $rc "$(grep -m1 '^RESULT' "$log" | cut -c8-)" "$log"
fi

for log in "${FAILURES[@]}"; do
  echo "----- $log (last 25 lines)"
  grep -v '^\[W\|^W[0-9]' "$log" | tail -n 25
done
echo "cuda_check: $FAILED failed"
exit $FAILED
