"""Paired comparisons of the default with the other rows of the committed base-task results, and where its MNIST
curve sits against l2l-mnist's.

    python benchmarks/results/mlp_family_screen/session21/base_task_pairs.py > benchmarks/results/mlp_family_screen/session21/base_task_pairs.out
"""
import json
import math

data = json.load(open("benchmarks/results/base_tasks.json"))["tasks"]
DEFAULT = "LearnedOptimizer (l2l-mlp-family-plus)"


def paired(task, other, key):
    ours, theirs = data[task]["results"][DEFAULT][key], data[task]["results"][other][key]
    diff = [a - b for a, b in zip(ours, theirs)]
    mean = sum(diff) / len(diff)
    se = math.sqrt(sum((d - mean) ** 2 for d in diff) / (len(diff) - 1) / len(diff))
    return f"{mean:+.3f} ± {se:.3f}"


for task, others in (("mnist_mlp", ("LearnedOptimizer (l2l-mnist)", "LearnedOptimizer (l2l-mlp-family)", "NAG (lr=0.3, tuned)")),
                     ("quadratic", ("LearnedOptimizer (l2l-mlp-family)",))):
    for other in others:
        print(f"{task}: default - {other}: sum of losses {paired(task, other, 'per_seed_sum_of_losses')}, "
              f"final loss {paired(task, other, 'per_seed_final_loss')}")
ours = data["mnist_mlp"]["results"][DEFAULT]["curve_mean"]
theirs = data["mnist_mlp"]["results"]["LearnedOptimizer (l2l-mnist)"]["curve_mean"]
above = [t for t, (a, b) in enumerate(zip(ours, theirs)) if a > b]
print(f"mnist_mlp mean curve above l2l-mnist's at steps {above}")
late = [t for t in range(17, len(ours)) if ours[t] < theirs[t]]
print(f"strictly below at {sum(a < b for a, b in zip(ours, theirs))} of {len(ours)} steps, at {len(late)} of steps "
      f"17-{len(ours) - 1}; at step 5 {ours[5]:.3f} vs {theirs[5]:.3f}")
print(f"difference of the mean curves summed over steps 0-32: {sum(a - b for a, b in zip(ours[:33], theirs[:33])):+.2f}, "
      f"over 33-99: {sum(a - b for a, b in zip(ours[33:], theirs[33:])):+.2f}")
accuracy = {k: v["test_accuracy"]["mean"] for k, v in data["mnist_mlp"]["results"].items() if k.startswith("Learned")}
print("test accuracy:", {k: round(v, 4) for k, v in accuracy.items()})
