#!/usr/bin/env bash
# Every GPU measurement of #14 and #18 in one command, on a GPU machine without internet that has torch,
# Lightning and timm but not this project's other dependencies. Carry beside the checkout:
#   .whl/   wheels of jsonargparse, docstring-parser, typeshed-client, litdata and its needs (boto3, botocore,
#           s3transfer, jmespath, obstore), downloaded for the machine's Python with `pip download --no-deps`;
#   data/FashionMNIST/raw/   the four IDX .gz files (docs/small_data.md). The pixel row is taken from
#           benchmarks/results/reproduce_fashion_mnist.json, so the pixel probe is not recomputed.
# Runs benchmarks/gpu.py, then reproduce.py for METHODS in parallel (small models do not fill the GPU),
# each at most MINUTES of training, and writes everything under OUT (default ./gpu_out) in five files
# (the device tool brings back eight): gpu.py's two, gpu_log.txt, repro.json (every method's scores) and repro_logs.txt.
#   OUT=gpu_out METHODS="vicreg ijepa" MINUTES=3.5 bash benchmarks/gpu_offline_run.sh
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_out}; METHODS=${METHODS:-vicreg ijepa lejepa barlow}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
python3 -c "import json; rows = json.load(open('benchmarks/results/reproduce_fashion_mnist.json'));
json.dump([r for r in rows if r['kind'] == 'pixels'], open('/tmp/pixels.json', 'w'))" || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu_log.txt"
timeout "${GPU_SECONDS:-240}" python3 benchmarks/gpu.py --out "$OUT" --sync-debug 2>&1 | tee -a "$OUT/gpu_log.txt"
for m in $METHODS; do
  mkdir -p "/tmp/r_$m/fashion_mnist"; cp /tmp/pixels.json "/tmp/r_$m/fashion_mnist/results.json"
  ( OMP_NUM_THREADS=3 timeout "${REPRO_SECONDS:-330}" python3 benchmarks/reproduce.py --device cuda --methods "$m" \
      --epochs 100 --minutes "${MINUTES:-3.5}" --checkpoints 10 --no-supervised --no-publish --out "/tmp/r_$m" \
      --data-dir data --data.init_args.batched_views=true --data.init_args.num_workers=3 > "/tmp/r_$m.log" 2>&1
    echo "$m exit $?" >> "/tmp/r_$m.log"
  ) &
done
wait
python3 -c "import json, sys; json.dump([row for path in sys.argv[1:] for row in json.load(open(path))
  if row['kind'] != 'pixels'], open('$OUT/repro.json', 'w'), indent=1)" /tmp/r_*/fashion_mnist/results.json
for m in $METHODS; do echo "=== $m"; grep -vi warn "/tmp/r_$m.log" | tail -n 25; done > "$OUT/repro_logs.txt"
