"""``vsr soup``: averaging the weights of copies of one network."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest
import torch
from conftest import TINY

from vsr_pipeline._files import is_partial
from vsr_pipeline.cli import main
from vsr_pipeline.errors import ConfigError
from vsr_pipeline.models.soup import make_soup
from vsr_pipeline.models.vsrnet import VSRNet
from vsr_pipeline.models.weights import load_network, read_metadata, save_weights


def _random_net(path, seed: int, config=TINY):
    torch.manual_seed(seed)
    net = VSRNet(config)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)
    save_weights(net, path)
    return net


def test_soup_is_the_weighted_mean_and_records_its_ingredients(tmp_path):
    a, b = _random_net(tmp_path / "a.safetensors", 1), _random_net(tmp_path / "b.safetensors", 2)
    record = make_soup([tmp_path / "a.safetensors", tmp_path / "b.safetensors"], tmp_path / "s.safetensors", shares=[3, 1])
    soup = load_network(tmp_path / "s.safetensors")
    sa, sb = a.state_dict(), b.state_dict()
    for name, tensor in soup.state_dict().items():
        torch.testing.assert_close(tensor, 0.75 * sa[name] + 0.25 * sb[name], rtol=0, atol=1e-6)
    assert soup.config == TINY
    stored = json.loads(read_metadata(tmp_path / "s.safetensors")["soup"])
    assert stored == record
    assert [r["share"] for r in stored] == [0.75, 0.25]
    assert stored[0]["sha256"] == hashlib.sha256((tmp_path / "a.safetensors").read_bytes()).hexdigest()
    assert not [p for p in tmp_path.iterdir() if is_partial(p)]


def test_equal_shares_by_default(tmp_path):
    nets = [_random_net(tmp_path / f"{i}.safetensors", i) for i in range(3)]
    make_soup([tmp_path / f"{i}.safetensors" for i in range(3)], tmp_path / "s.safetensors")
    soup = load_network(tmp_path / "s.safetensors").state_dict()
    name = "tail.weight"
    torch.testing.assert_close(soup[name], sum(n.state_dict()[name] for n in nets) / 3, rtol=0, atol=1e-6)


def test_soup_refuses_what_cannot_be_averaged(tmp_path):
    _random_net(tmp_path / "a.safetensors", 1)
    _random_net(tmp_path / "wide.safetensors", 2, replace(TINY, channels=12))
    with pytest.raises(ConfigError, match="different network"):
        make_soup([tmp_path / "a.safetensors", tmp_path / "wide.safetensors"], tmp_path / "s.safetensors")
    with pytest.raises(ConfigError, match="two or more"):
        make_soup([tmp_path / "a.safetensors"], tmp_path / "s.safetensors")
    with pytest.raises(ConfigError, match="positive"):
        make_soup([tmp_path / "a.safetensors", tmp_path / "a.safetensors"], tmp_path / "s.safetensors", shares=[1, 0])
    with pytest.raises(ConfigError, match="not found"):
        make_soup([tmp_path / "a.safetensors", tmp_path / "missing.safetensors"], tmp_path / "s.safetensors")
    with pytest.raises(ConfigError, match="is a folder"):
        make_soup([tmp_path / "a.safetensors", tmp_path / "a.safetensors"], tmp_path)
    assert not (tmp_path / "s.safetensors").exists()


def test_cli_soup(tmp_path, capsys):
    _random_net(tmp_path / "a.safetensors", 1)
    _random_net(tmp_path / "b.safetensors", 2)
    assert main(["soup", str(tmp_path / "s.safetensors"), str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")]) == 0
    assert "0.5 x a.safetensors + 0.5 x b.safetensors" in capsys.readouterr().out
    assert main(["info", "--weights", str(tmp_path / "s.safetensors")]) == 0
    assert "soup of: 0.5 x a.safetensors, 0.5 x b.safetensors" in capsys.readouterr().out
    assert main(["soup", str(tmp_path / "t.safetensors"), str(tmp_path / "a.safetensors"), str(tmp_path / "nope.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: weights file not found") and err.count("\n") == 1
    assert not (tmp_path / "t.safetensors").exists()
