"""Model soups: one network whose weights are the average of several fine-tuned copies.

Networks fine-tuned from the same start (here: the ``compressed`` weights, on differently
compressed data) stay in one basin of the loss, and the average of their weights is a network
of the same size and cost that is usually better than each of them (Wortsman et al., "Model
soups", ICML 2022). Nothing is run twice at inference: the soup is an ordinary weights file.
"""

from __future__ import annotations

import json
from pathlib import Path

from .._files import file_sha256
from ..errors import ConfigError
from .weights import load_config, load_network, save_weights


def make_soup(ingredients: list[Path], out: Path, *, shares: list[float] | None = None) -> list[dict]:
    """Average the weights of ``ingredients`` (same network config) into ``out``, atomically.

    Args:
        ingredients: two or more weights files of the same :class:`~.vsrnet.VSRNetConfig`.
        out: the soup's weights file; its header records the ingredients (file name, SHA-256,
            share) under ``soup``.
        shares: each ingredient's weight in the average (normalised to sum to 1); equal by default.

    Returns:
        The ``soup`` record written to the header: ``[{"file", "sha256", "share"}, ...]``.

    Raises:
        ConfigError: fewer than two ingredients, unreadable files, different networks, bad shares,
            ``out`` a folder.
    """
    import torch

    if out.is_dir():
        raise ConfigError(f"{out} is a folder: name the soup's .safetensors file")
    if len(ingredients) < 2:
        raise ConfigError(f"a soup needs two or more weights files, got {len(ingredients)}")
    shares = [1.0] * len(ingredients) if shares is None else list(shares)
    if len(shares) != len(ingredients) or any(s <= 0 for s in shares):
        raise ConfigError(f"--shares needs one positive number per weights file ({len(ingredients)}), got {shares}")
    total = sum(shares)
    shares = [s / total for s in shares]
    first = load_config(ingredients[0])
    for path in ingredients[1:]:
        if load_config(path) != first:
            raise ConfigError(f"{path} is a different network from {ingredients[0]} (config differs); only copies of one network can be averaged")
    soup, *others = [load_network(p) for p in ingredients]
    states = [soup.state_dict()] + [net.state_dict() for net in others]
    with torch.no_grad():  # integer buffers (none today) are taken from the first ingredient
        soup.load_state_dict({name: sum(share * state[name].double() for share, state in zip(shares, states)).to(t.dtype) if t.is_floating_point() else t for name, t in states[0].items()})
    record = [{"file": p.name, "sha256": file_sha256(p), "share": round(s, 6)} for p, s in zip(ingredients, shares)]
    save_weights(soup, out, extra={"soup": json.dumps(record)})
    return record
