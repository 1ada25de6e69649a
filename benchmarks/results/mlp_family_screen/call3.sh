export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD LEARNED_OPTIM_DATA=$PWD/.gpu/data
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
rm -rf /tmp/r; cp -r .gpu/r /tmp/r
C="--task mixture --family mlp-family --grad-norm tensor --grad-norm-target 0.0015 --device cuda --val-problems 8 --runs-per-epoch 16 --data-root .gpu/data --steps 100"
timeout -s INT 290 python3 -m learned_optim.metatrain $C --epochs 1000 --resume --name mix-A --out /tmp/r/mix-A.safetensors > /tmp/r/train3-A.log 2>&1
n=$(python3 -c "from learned_optim.metatrain import load_checkpoint; print(load_checkpoint(__import__('pathlib').Path('/tmp/r/mix-A.ckpt.safetensors'))[0]['epochs_done'])")
python3 -m learned_optim.metatrain $C --epochs $n --resume --name mix-A --out /tmp/r/mix-A.safetensors 2>&1 | tail -1
el "trained to $n"
tar czf $OUT/call3.tgz -C /tmp r
timeout 130 python3 -m benchmarks.step_cost --device cuda --sizes 1e6 1e7 1e8 --repeats 3 --out $OUT/sc 2>&1 | tail -15
el done
