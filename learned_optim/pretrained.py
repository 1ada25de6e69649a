"""Weight files: update-rule weights in safetensors, beside a JSON card.

A rule named NAME is two files:

    NAME.safetensors   the tensors of ``theta`` (float32), with the architecture
                       config repeated in the safetensors header
    NAME.json          the card: architecture, the task and meta-training config
                       it was trained with, validation history, package version,
                       date, wall time, and the sha256 of NAME.safetensors

Loading reads bytes and JSON only; nothing is ever unpickled. A file whose
sha256 differs from its card (truncated, altered, or another file renamed), a
card whose architecture differs from the header, or tensors of the wrong names,
shapes, dtype or with non-finite values are refused with a ValueError.

Shipped rules live in the top-level ``pretrained/`` folder of the repository,
installed with the package as ``learned_optim.pretrained_weights``;
``pretrained/aliases.json`` maps aliases such as ``default`` to file names.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from .nets import NetConfig, theta_shapes

FORMAT = "learned_optim.weights/1"
SUFFIX = ".safetensors"


@dataclass(frozen=True)
class RuleWeights:
    """A loaded update rule: its network config, its weights and its card."""

    config: NetConfig
    theta: dict[str, torch.Tensor] = field(repr=False)
    card: dict[str, Any] = field(repr=False)
    name: str  # the shipped name, or the path it was loaded from
    sha256: str  # of the tensor file; identifies the weights in optimizer state dicts


def pretrained_dir() -> Path:
    """Folder of the shipped weight files: inside an installed package, else the source tree's."""
    here = Path(__file__).resolve().parent
    installed = here / "pretrained_weights"  # where the wheel puts the repository's pretrained/
    return installed if installed.is_dir() else here.parent / "pretrained"


def aliases() -> dict[str, str]:
    """Alias -> shipped rule name (pretrained/aliases.json): ``default`` among them."""
    path = pretrained_dir() / "aliases.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def shipped_names() -> list[str]:
    """The names of the shipped rules (intermediate ones included), without aliases."""
    # a meta-training checkpoint (NAME.ckpt.safetensors) may sit beside a rule; it is not one
    names = (p.name[: -len(SUFFIX)] for p in pretrained_dir().glob("*" + SUFFIX))
    return sorted(name for name in names if not name.endswith(".ckpt"))


def card_path(weights_path: str | os.PathLike) -> Path:
    """Where the card of a tensor file lives: NAME.safetensors -> NAME.json."""
    path = Path(weights_path)
    stem = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name
    return path.with_name(stem + ".json")


def list_pretrained() -> dict[str, str]:
    """Every shipped rule and alias, mapped to its card's one-line description (an alias's reads "alias of NAME: ...").
    The whole card is ``pretrained_card(name)`` (or ``load_weights(name).card``)."""
    out = {name: pretrained_card(name).get("description", "") for name in shipped_names()}
    for alias, target in aliases().items():
        if target in out:
            out[alias] = f"alias of {target}: {out[target]}"
    return out


def pretrained_card(name: str) -> dict[str, Any]:
    """The full card of a shipped rule or alias (without loading its weights)."""
    _, path = resolve(name)
    if path.parent != pretrained_dir():
        raise ValueError(f"{name!r} is not a shipped rule (available: {', '.join(sorted(list_pretrained()))})")
    return json.loads(card_path(path).read_text())


def resolve(spec: str | os.PathLike | None) -> tuple[str, Path]:
    """(display name, tensor file path) for a shipped name, an alias or a path."""
    if spec is None:
        spec = "default"
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"Invalid weights: {spec!r} (expected a name, a path or RuleWeights)")
    text = os.fspath(spec)
    known_aliases = aliases()
    name = known_aliases.get(text, text)
    shipped = shipped_names()
    if name in shipped:
        return text, pretrained_dir() / (name + SUFFIX)
    path = Path(text).expanduser()
    if path.suffix == SUFFIX or os.sep in text or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"Weights file not found: {path}")
        if not path.name.endswith(SUFFIX):
            raise ValueError(
                f"Invalid weights file: {path} (expected a {SUFFIX} file with its .json card beside it; "
                "pickled files such as .pt or .pth are never loaded)"
            )
        return str(path), path
    available = ", ".join(sorted(set(shipped) | set(known_aliases)))
    raise ValueError(
        f"Unknown weights: {text!r}. Available pretrained weights: {available}; "
        f"or give the path of a {SUFFIX} file with its .json card beside it."
    )


def weights_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """A safetensors blob of ``tensors`` and ``metadata`` whose bytes depend on nothing else: safetensors writes the
    header's keys in its hash map's order, which changes from process to process, so the same weights written twice
    would hash apart. The header is rewritten with sorted keys (padded with spaces to 8 bytes, as the format allows);
    the tensors' bytes and offsets are safetensors' own."""
    data = save_safetensors_bytes(dict(tensors), metadata=dict(metadata))
    (length,) = struct.unpack("<Q", data[:8])
    header = json.dumps(json.loads(data[8 : 8 + length]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data[8 + length :]


def header_metadata(data: bytes, where: Path) -> dict[str, str]:
    """The __metadata__ of a safetensors blob, read without the safetensors parser."""
    if len(data) < 8:
        raise ValueError(f"{where} is not a safetensors file (only {len(data)} bytes)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8:
        raise ValueError(f"{where} is not a valid safetensors file (header runs past the end)")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{where} is not a valid safetensors file ({exc})") from None
    return header.get("__metadata__", {}) if isinstance(header, dict) else {}


def load_weights(spec: "str | os.PathLike | RuleWeights | None" = None) -> RuleWeights:
    """Load a rule by shipped name, alias (``"default"``) or path, checking it end to end."""
    if isinstance(spec, RuleWeights):
        return spec
    name, path = resolve(spec)
    card_file = card_path(path)
    if not card_file.is_file():
        raise FileNotFoundError(f"Card not found for {path}: expected {card_file} beside it")
    try:
        card = json.loads(card_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"Card {card_file} is not valid JSON ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise ValueError(f"Card {card_file} is not a learned_optim card (format must be {FORMAT!r})")

    # 1. the bytes are exactly the ones the card was written for
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != card.get("sha256"):
        raise ValueError(
            f"Weights file {path} does not match its card: sha256 {digest[:16]}... != "
            f"{str(card.get('sha256'))[:16]}... (the file is truncated, altered or not the one "
            f"the card describes)"
        )
    # 2. the card's architecture is the one the tensors were saved with
    meta = header_metadata(data, path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a learned_optim weight file (header format {meta.get('format')!r})")
    try:
        config = NetConfig.from_dict(card.get("architecture", {}))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Card {card_file} has an invalid architecture: {exc}") from None
    # compared as configs: a file written before a config field existed has that field's default
    try:
        stored = NetConfig.from_dict(json.loads(meta["architecture"]))
    except (KeyError, TypeError, ValueError, json.JSONDecodeError):
        stored = None
    if stored != config:
        raise ValueError(f"Card {card_file} does not match the architecture stored in {path}")
    # 3. the tensors are the ones that architecture needs
    try:
        theta = load_safetensors_bytes(data)
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{path} could not be parsed as safetensors ({exc})") from None
    _check_theta(theta, config, str(path))
    # the architecture's order, not the parser's (which varies with PYTHONHASHSEED): a meta-training run started
    # from this file indexes its meta-optimizer's state by position, and must find the same order on --resume
    theta = {key: theta[key] for key in theta_shapes(config)}
    return RuleWeights(config=config, theta=theta, card=card, name=name, sha256=digest)


def _check_theta(theta: Mapping[str, torch.Tensor], config: NetConfig, where: str) -> None:
    expected = theta_shapes(config)
    if set(theta) != set(expected):
        missing, extra = sorted(set(expected) - set(theta)), sorted(set(theta) - set(expected))
        raise ValueError(f"{where}: tensors do not match the architecture (missing {missing}, unexpected {extra})")
    for key, shape in expected.items():
        tensor = theta[key]
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{where}: tensor {key} has shape {tuple(tensor.shape)}, expected {shape}")
        if tensor.dtype != torch.float32:
            raise ValueError(f"{where}: tensor {key} has dtype {tensor.dtype}, expected torch.float32")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{where}: tensor {key} has non-finite values")


def _temporary_name(path: Path, pid: "int | str") -> Path:
    return path.with_name(f".{path.name}.{pid}.tmp")


def remove_stale_temporaries(*paths: Path) -> None:
    """Remove the temporary files that ``atomic_write`` of these paths left when its process was killed."""
    for path in paths:
        for stale in path.parent.glob(_temporary_name(path, "*").name):
            stale.unlink(missing_ok=True)


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new bytes, never a torn file."""
    tmp = _temporary_name(path, os.getpid())
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def save_weights(
    path: str | os.PathLike,
    theta: Mapping[str, torch.Tensor],
    config: NetConfig,
    card: Mapping[str, Any] | None = None,
) -> RuleWeights:
    """Write NAME.safetensors and its card NAME.json; returns the rule as it will load."""
    path = Path(path)
    if not path.name.endswith(SUFFIX):
        raise ValueError(f"Invalid weights path: {str(path)!r} (must end with {SUFFIX})")
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in theta.items()}
    _check_theta(tensors, config, str(path))
    metadata = {"format": FORMAT, "architecture": json.dumps(config.to_dict(), sort_keys=True)}
    data = weights_bytes(tensors, metadata)
    digest = hashlib.sha256(data).hexdigest()
    full_card = {"format": FORMAT, **dict(card or {}), "architecture": config.to_dict(), "sha256": digest}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
    atomic_write(card_path(path), (json.dumps(full_card, indent=2, sort_keys=False) + "\n").encode())
    return RuleWeights(config=config, theta=tensors, card=full_card, name=str(path), sha256=digest)


def random_weights(config: NetConfig | None = None, seed: int = 0) -> RuleWeights:
    """Untrained weights (torch's default init) as a rule, for tests and as a meta-training start."""
    from .nets import init_theta

    config = config or NetConfig()
    theta = init_theta(config, torch.Generator().manual_seed(seed))
    data = weights_bytes(theta, {"format": FORMAT, "architecture": json.dumps(config.to_dict())})
    digest = hashlib.sha256(data).hexdigest()
    card = {"format": FORMAT, "architecture": config.to_dict(), "sha256": digest, "description": f"random init, seed {seed}"}
    return RuleWeights(config=config, theta=theta, card=card, name=f"random-{seed}", sha256=digest)
