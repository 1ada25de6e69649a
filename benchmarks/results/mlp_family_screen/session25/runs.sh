# Session 25: the structure input (tensor_count_input) against a control, both fine-tuned from the default on
# mlp-depth over whole runs; one thread each, side by side (about 5 GB each, 50-100 s per epoch).
# From the repository root, venv active.
for arm in count ctrl; do
  flag=""; [ $arm = count ] && flag="--tensor-count-input"
  OMP_NUM_THREADS=1 python -m learned_optim.metatrain --task mixture --family mlp-depth --grad-norm tensor \
    --grad-norm-target 0.0015 --tensor-rms-input $flag --steps 100 --unroll 100 --runs-per-epoch 16 \
    --val-problems 12 --lr 0.001 --epochs 20 --init-from l2l-mlp-family-plus --device cpu \
    --data-root ../shared/data --name depth-$arm --out runs/s25/depth-$arm.safetensors > runs/s25/depth-$arm.stdout.log 2>&1 &
done
wait
# the control continued to epoch 40: the same command with --epochs 40 --resume
S=benchmarks/results/mlp_family_screen
export PYTHONPATH=.
for arm in count ctrl; do   # the last epoch's weights (not the best validation: see screen.md)
  python $S/session7/snapshot.py runs/s25/depth-$arm.ckpt.safetensors \
    "$(python -c "import json;print(json.dumps(json.load(open('runs/s25/depth-$arm.json'))['metatrain']['net']))")" \
    $S/session25/depth-$arm-e20.safetensors theta
  python $S/session6/evaluate.py $S/session25/depth-$arm-e20.safetensors
  python $S/session6/grid.py $S/session25/depth-$arm-e20.safetensors 1x20-relu,5x20 runs/s25/grid-$arm-e20.jsonl
done
# the control's 40th epoch, and its whole grid (two processes, one thread each)
python $S/session7/snapshot.py runs/s25/depth-ctrl.ckpt.safetensors \
  "$(python -c "import json;print(json.dumps(json.load(open('runs/s25/depth-ctrl.json'))['metatrain']['net']))")" \
  $S/session25/depth-ctrl-e40.safetensors theta
python $S/session6/evaluate.py $S/session25/depth-ctrl-e40.safetensors
python $S/session6/grid.py $S/session25/depth-ctrl-e40.safetensors 1x20-relu,5x20,5x300 runs/s25/grid-ctrl-e40.jsonl
python $S/session6/grid.py $S/session25/depth-ctrl-e40.safetensors 2x1000,1x20,1x40,2x20,3x20 runs/s25/grid-ctrl-e40-a.jsonl &
python $S/session6/grid.py $S/session25/depth-ctrl-e40.safetensors 1x1000,3x120,2x100,1x60,4x20 runs/s25/grid-ctrl-e40-b.jsonl
wait
python $S/session25/compare_default.py runs/s25/grid-ctrl-e40*.jsonl
# one-layer pair: from depth-ctrl-e40, 20 epochs on 1x24 / 1x16 sigmoid and 1x24 / 1x32 ReLU (35 s per epoch)
python $S/session25/metatrain_pair.py --task mixture --family one-layer-pair --grad-norm tensor --grad-norm-target 0.0015 \
  --tensor-rms-input --steps 100 --unroll 100 --runs-per-epoch 16 --val-problems 4 --lr 0.001 --epochs 20 \
  --init-from $S/session25/depth-ctrl-e40.safetensors --device cpu --data-root ../shared/data --name pair-ft \
  --out runs/s25/pair-ft.safetensors
python $S/session7/snapshot.py runs/s25/pair-ft.ckpt.safetensors \
  "$(python -c "import json;print(json.dumps(json.load(open('runs/s25/pair-ft.json'))['metatrain']['net']))")" \
  $S/session25/pair-ft-e20.safetensors theta
python $S/session6/evaluate.py $S/session25/pair-ft-e20.safetensors
python $S/session6/grid.py $S/session25/pair-ft-e20.safetensors 1x20-relu,5x20 runs/s25/grid-pair-e20.jsonl
# a second training seed of the control (--seed 1, --keep last, 40 epochs asked), stopped after epoch 21 for session
# time; its epoch-21 weights from the checkpoint
python -m learned_optim.metatrain --task mixture --family mlp-depth --grad-norm tensor --grad-norm-target 0.0015 \
  --tensor-rms-input --steps 100 --unroll 100 --runs-per-epoch 16 --val-problems 12 --lr 0.001 --epochs 40 --seed 1 \
  --keep last --init-from l2l-mlp-family-plus --device cpu --data-root ../shared/data --name depth-ctrl-s1 \
  --out runs/s25/depth-ctrl-s1.safetensors
python $S/session7/snapshot.py runs/s25/depth-ctrl-s1.ckpt.safetensors \
  "$(python -c "import json;print(json.dumps(json.load(open('runs/s25/depth-ctrl.json'))['metatrain']['net']))")" \
  $S/session25/depth-ctrl-s1-snap.safetensors theta
python $S/session6/evaluate.py $S/session25/depth-ctrl-s1-snap.safetensors
python $S/session6/grid.py $S/session25/depth-ctrl-s1-snap.safetensors 1x20-relu,5x20 runs/s25/grid-s1.jsonl
