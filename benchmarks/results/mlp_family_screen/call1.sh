set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD LEARNED_OPTIM_DATA=$PWD/.gpu/data
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p /tmp/r
(timeout 150 python3 -m pytest -q -p no:cacheprovider -x -k "cuda" tests > $OUT/pytest_cuda.log 2>&1; echo "pytest rc $?" >> $OUT/pytest_cuda.log) &
C="--task mixture --family mlp-family --grad-norm tensor --grad-norm-target 0.0015 --device cuda --val-problems 8 --runs-per-epoch 16 --data-root .gpu/data"
declare -A V=( [A]="--steps 100" [B]="--steps 200" [C]="--steps 200 --problems-per-step 4" [D]="--steps 100 --problems-per-step 4" )
for k in A B C D; do
  timeout -s INT ${TRAIN_S:-330} python3 -m learned_optim.metatrain $C ${V[$k]} --epochs 1000 --name mix-$k --out /tmp/r/mix-$k.safetensors > /tmp/r/train-$k.log 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"; sleep 2
el "training stopped"; tail -n 3 /tmp/r/train-*.log
for k in A B C D; do
  n=$(python3 -c "from learned_optim.metatrain import load_checkpoint; print(load_checkpoint(__import__('pathlib').Path('/tmp/r/mix-$k.ckpt.safetensors'))[0]['epochs_done'])")
  echo "mix-$k epochs_done=$n"
  python3 -m learned_optim.metatrain $C ${V[$k]} --epochs $n --resume --name mix-$k --out /tmp/r/mix-$k.safetensors > /tmp/r/final-$k.log 2>&1 &
done
wait; el "finalized"
CELLS=5x300,1x20-relu,3x120,5x20,4x20,1x1000,2x1000,3x20,2x100,1x20,2x20,1x40,1x60
for k in A B C D; do
  timeout ${EVAL_S:-190} python3 .gpu/grid_eval.py /tmp/r/mix-$k.safetensors /tmp/r/grid-$k.json $CELLS 10 > /tmp/r/grid-$k.log 2>&1 &
done
wait; el "evaluated"
cat /tmp/r/grid-*.log
wait
tar czf $OUT/call1.tgz -C /tmp r
el done
