"""Checkpoints of a meta-training run: everything ``--resume`` needs, in one safetensors file, written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from ..pretrained import atomic_write, header_metadata

CHECKPOINT_FORMAT = "learned_optim.checkpoint/1"


def checkpoint_path(out: Path) -> Path:
    stem = out.name[: -len(".safetensors")] if out.name.endswith(".safetensors") else out.name
    return out.with_name(stem + ".ckpt.safetensors")


def log_path(out: Path) -> Path:
    stem = out.name[: -len(".safetensors")] if out.name.endswith(".safetensors") else out.name
    return out.with_name(stem + ".log.jsonl")


def save_checkpoint(path: Path, progress: dict[str, Any], theta, best_theta, meta_opt) -> None:
    """Everything a resumed run needs, in one safetensors file (tensors + JSON metadata)."""
    tensors = {f"theta.{k}": v.detach().cpu().contiguous() for k, v in theta.items()}
    tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best_theta.items()})
    opt_state = meta_opt.state_dict()
    plain_state: dict[str, dict[str, Any]] = {}
    for index, values in opt_state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"meta_opt.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain_state.setdefault(str(index), {})[key] = value
    meta = {
        "format": CHECKPOINT_FORMAT,
        "progress": json.dumps(progress),
        "meta_opt_groups": json.dumps(opt_state["param_groups"]),
        "meta_opt_plain": json.dumps(plain_state),
    }
    atomic_write(path, save_safetensors_bytes(tensors, metadata=meta))


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict, dict, dict]:
    """(progress, theta, best_theta, meta-optimizer state dict) from a checkpoint file."""
    data = path.read_bytes()
    try:
        tensors = load_safetensors_bytes(data)
        meta = header_metadata(data, path)
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        progress = json.loads(meta["progress"])
        groups = json.loads(meta["meta_opt_groups"])
        plain = json.loads(meta["meta_opt_plain"])
    except Exception as exc:
        raise ValueError(f"Checkpoint {path} is unreadable ({exc}); delete it to start over") from None
    theta = {k[len("theta.") :]: v for k, v in tensors.items() if k.startswith("theta.")}
    best = {k[len("best.") :]: v for k, v in tensors.items() if k.startswith("best.")}
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("meta_opt."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in plain.items():
        state.setdefault(int(index), {}).update(values)
    return progress, theta, best, {"state": state, "param_groups": groups}
