set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD LEARNED_OPTIM_DATA=$PWD/.gpu/data
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
rm -rf /tmp/r; cp -r .gpu/r /tmp/r
C="--task mixture --family mlp-family --grad-norm tensor --grad-norm-target 0.0015 --device cuda --val-problems 8 --runs-per-epoch 16 --data-root .gpu/data"
declare -A V=( [A]="--steps 100" [B]="--steps 200" )
for k in A B; do
  timeout -s INT ${TRAIN_S:-355} python3 -m learned_optim.metatrain $C ${V[$k]} --epochs 1000 --resume --name mix-$k --out /tmp/r/mix-$k.safetensors > /tmp/r/train2-$k.log 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"; sleep 1
el "training stopped"
for k in A B; do
  n=$(python3 -c "from learned_optim.metatrain import load_checkpoint; print(load_checkpoint(__import__('pathlib').Path('/tmp/r/mix-$k.ckpt.safetensors'))[0]['epochs_done'])")
  echo "mix-$k epochs_done=$n"
  python3 -m learned_optim.metatrain $C ${V[$k]} --epochs $n --resume --name mix-$k --out /tmp/r/mix-$k.safetensors > /tmp/r/final2-$k.log 2>&1 &
done
wait; el "finalized"; grep -h "wrote" /tmp/r/final2-*.log
for k in A B; do
  timeout ${EVAL_S:-170} python3 .gpu/grid_eval.py /tmp/r/mix-$k.safetensors /tmp/r/grid2-$k.json 5x300,1x20-relu,3x120,5x20,4x20,3x20 10 > /tmp/r/grid2-$k.log 2>&1 &
done
wait; el "evaluated"
cat /tmp/r/grid2-*.log
tar czf $OUT/call2.tgz -C /tmp r
el done
