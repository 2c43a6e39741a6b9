"""Model building: names, user weights (weights_only), resolution limits."""

from __future__ import annotations

import os

import pytest
import torch
import torchvision

from sweep.config import ModelConfig
from sweep.errors import ConfigError
from sweep.models import build_model, check_resolution


def test_unknown_model_suggests_names():
    with pytest.raises(ConfigError) as e:
        build_model(ModelConfig(name="resnet19"))
    assert "model.name='resnet19'" in str(e.value) and "resnet18" in str(e.value)


def test_user_weights_are_loaded(tmp_path):
    src = torchvision.models.resnet18(num_classes=10)
    path = tmp_path / "ft.pth"
    torch.save(src.state_dict(), path)
    model = build_model(ModelConfig(name="resnet18", weights=str(path), num_classes=10))
    assert torch.equal(model.fc.weight, src.fc.weight)


def test_wrapped_checkpoint_with_module_prefix_is_loaded(tmp_path):
    src = torchvision.models.resnet18(num_classes=10)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    model = build_model(ModelConfig(name="resnet18", weights=str(path), num_classes=10))
    assert torch.equal(model.conv1.weight, src.conv1.weight)


def test_missing_weights_file():
    with pytest.raises(ConfigError) as e:
        build_model(ModelConfig(weights="/nonexistent/model.pth"))
    assert "model.weights='/nonexistent/model.pth'" in str(e.value)
    assert "no such file" in str(e.value)


def test_weights_that_do_not_fit_say_why(tmp_path):
    path = tmp_path / "ft10.pth"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
    with pytest.raises(ConfigError) as e:
        build_model(ModelConfig(name="resnet18", weights=str(path)))
    msg = str(e.value)
    assert "fc.weight (10, 512) vs (1000, 512)" in msg and "num_classes" in msg
    with pytest.raises(ConfigError) as e:
        build_model(ModelConfig(name="resnet50", weights=str(path), num_classes=10))
    assert "missing keys" in str(e.value)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": _RunsCode()}, path)
    with pytest.raises(ConfigError) as e:
        build_model(ModelConfig(weights=str(path)))
    assert "weights_only=True" in str(e.value)


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError) as e:
        build_model(ModelConfig(weights=str(path)))
    assert "not a readable PyTorch file" in str(e.value)


def test_resolution_too_small_for_the_model():
    with pytest.raises(ConfigError) as e:
        check_resolution(ModelConfig(name="vit_b_16"), 112)
    assert "resolution=112" in str(e.value) and "at least 224" in str(e.value)
    check_resolution(ModelConfig(name="resnet18"), 32)
