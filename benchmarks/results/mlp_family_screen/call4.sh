# usage: TRAIN_S=seconds bash .gpu/train.sh  -- trains (or resumes) every job below for TRAIN_S, finalizes, tars /tmp/r to $OUT
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD LEARNED_OPTIM_DATA=$PWD/.gpu/data
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
rm -rf /tmp/r; cp -r .gpu/r /tmp/r
GRU="--cell gru --layers 1 --preprocess none --meta-grad-clip 1.0 --val-problems 20"
MIX="--task mixture --grad-norm tensor --grad-norm-target 0.0015 --steps 100 --runs-per-epoch 16 --val-problems 8 --device cuda"
declare -A J=(
  [re-mnist-cnn]="--task mnist_cnn $GRU --device cuda"
  [mix-A]="$MIX --family mlp-family"
  [mix-P]="$MIX --family mlp-family-plus"
  [re-rosenbrock]="--task rosenbrock $GRU --device cpu"
  [re-rosenbrock-lr1e-3]="--task rosenbrock $GRU --device cpu --lr 0.001"
  [re-two-moons-gpu]="--task two_moons $GRU --device cpu --runs-per-epoch 40"
)
for k in "${!J[@]}"; do
  r=""; [ -f /tmp/r/$k.ckpt.safetensors ] && r="--resume"
  OMP_NUM_THREADS=2 timeout -s INT ${TRAIN_S:-480} python3 -m learned_optim.metatrain ${J[$k]} --epochs 2000 $r --name $k --out /tmp/r/$k.safetensors >> /tmp/r/train-$k.log 2>&1 &
done
wait; sleep 1; el "training stopped"
for k in "${!J[@]}"; do
  n=$(python3 -c "from learned_optim.metatrain import load_checkpoint; print(load_checkpoint(__import__('pathlib').Path('/tmp/r/$k.ckpt.safetensors'))[0]['epochs_done'])")
  echo "$k epochs_done=$n"
  OMP_NUM_THREADS=2 python3 -m learned_optim.metatrain ${J[$k]} --epochs $n --resume --name $k --out /tmp/r/$k.safetensors > /tmp/r/final-$k.log 2>&1 &
done
wait; el "finalized"; tail -n 2 /tmp/r/final-*.log
tar czf $OUT/r.tgz -C /tmp r
el done
