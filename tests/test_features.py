import pytest
import torch
from torch import nn

from tl_helpers import data, features, models


@pytest.fixture
def tensors(fake_root, tmp_path):
    return data.decode_samples(fake_root, data.scan_folder(fake_root).samples, cache=tmp_path / "c", progress=False)


@pytest.fixture(scope="module")
def backbone():
    return models.load_backbone("efficientnet_lite0")


def test_pooled_features_shape_timm_and_torchvision(backbone):
    x = torch.randn(2, 3, 64, 64)
    assert features.pooled_features(backbone.eval(), x).shape == (2, 1280)
    tv = models.load_backbone("torchvision/resnet18", pretrained=False).eval()
    assert features.pooled_features(tv, x).shape == (2, 512)
    assert isinstance(tv.fc, nn.Linear)  # the head was put back


def test_feature_cache_hit_and_keying(backbone, tensors, tmp_path):
    cache = tmp_path / "feat"
    X1, y1 = features.cached_features(backbone, tensors, cache=cache, progress=False, name="t")
    assert X1.shape == (len(tensors), 1280) and torch.equal(y1, tensors.labels)
    files = sorted(cache.glob("*.pt"))
    assert len(files) == 1
    X2, _ = features.cached_features(backbone, tensors, cache=cache, progress=False, name="t")
    assert torch.equal(X1, X2) and sorted(cache.glob("*.pt")) == files
    features.cached_features(backbone, tensors, cache=cache, progress=False, name="t", image_size=96)
    assert len(list(cache.glob("*.pt"))) == 2  # a different input size is a different cache entry
    other = models.load_backbone("efficientnet_lite0", pretrained=False)
    Xr, _ = features.cached_features(other, tensors, cache=cache, progress=False, name="t")
    assert len(list(cache.glob("*.pt"))) == 3 and not torch.allclose(Xr, X1)


def test_corrupt_feature_cache_is_rebuilt(backbone, tensors, tmp_path):
    cache = tmp_path / "feat"
    X1, _ = features.cached_features(backbone, tensors, cache=cache, progress=False)
    f = next(cache.glob("*.pt"))
    f.write_bytes(b"broken")
    with pytest.warns(UserWarning, match="unreadable"):
        X2, _ = features.cached_features(backbone, tensors, cache=cache, progress=False)
    assert torch.allclose(X1, X2)


def test_linear_probe_and_torch_head_learn(backbone, tensors, tmp_path):
    X, y = features.cached_features(backbone, tensors, cache=tmp_path / "f", progress=False)
    clf = features.fit_logistic_regression(X[::2], y[::2])
    assert clf.score(X[1::2].numpy(), y[1::2].numpy()) > 0.8
    head = features.train_linear_head(X[::2], y[::2], 10, epochs=50)
    assert features.head_accuracy(head, X[1::2], y[1::2]) > 0.6  # chance: 0.1
    mlp = features.train_linear_head(X[::2], y[::2], 10, epochs=50, hidden=64, dropout=0.1)
    assert features.head_accuracy(mlp, X[1::2], y[1::2]) > 0.6


def test_nearest_class_mean():
    Xs = torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]])
    ys = torch.tensor([0, 0, 3, 3])
    pred = features.nearest_class_mean(Xs, ys, torch.tensor([[1.0, 0.2], [0.2, 1.0]]))
    assert pred.tolist() == [0, 3]


def test_layer_outputs(backbone):
    maps = features.layer_outputs(backbone, torch.randn(1, 3, 64, 64), ["conv_stem", "blocks.5"])
    assert maps["conv_stem"].shape == (1, 32, 32, 32) and maps["blocks.5"].shape[1] == 192
    with pytest.raises(KeyError, match="nope"):
        features.layer_outputs(backbone, torch.randn(1, 3, 64, 64), ["nope"])


def test_feature_cache_invalidated_by_preprocessing_and_data(backbone, tensors, tmp_path):
    cache = tmp_path / "feat"
    X1, _ = features.cached_features(backbone, tensors, cache=cache, progress=False)
    X2, _ = features.cached_features(
        backbone, tensors, cache=cache, progress=False, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    )
    assert len(list(cache.glob("*.pt"))) == 2 and not torch.allclose(X1, X2)
    features.cached_features(backbone, tensors.subset(range(10)), cache=cache, progress=False)
    assert len(list(cache.glob("*.pt"))) == 3


def test_feature_cache_is_keyed_on_the_code_that_runs_the_weights(backbone, tensors, tmp_path):
    import copy

    from tl_helpers.pointwise import use_plain_pointwise

    cache = tmp_path / "feat"
    X1, _ = features.cached_features(backbone, tensors, cache=cache, progress=False)
    plain = copy.deepcopy(backbone)
    assert use_plain_pointwise(plain) > 0  # the same weights, run by nn.Conv2d: an entry of its own
    X2, _ = features.cached_features(plain, tensors, cache=cache, progress=False)
    assert len(list(cache.glob("*.pt"))) == 2
    torch.testing.assert_close(X1, X2, rtol=1e-4, atol=1e-4)  # equal to float32 rounding, and no more


def test_feature_cache_is_keyed_on_pixels_not_file_names(backbone, tensors, tmp_path):
    """Same file names and labels, other pixels (a transformed copy): other features, never the first ones."""
    cache = tmp_path / "feat"
    X1, _ = features.cached_features(backbone, tensors, cache=cache, progress=False, name="t")
    shifted = data.ImageTensors(
        (255 - tensors.images).contiguous(), tensors.labels.clone(), list(tensors.files), tensors.classes
    )
    assert shifted.files == tensors.files
    X2, _ = features.cached_features(backbone, shifted, cache=cache, progress=False, name="t")
    assert len(list(cache.glob("*.pt"))) == 2
    assert not torch.allclose(X1, X2)
    fresh, _ = features.extract_features(backbone, data.make_loader(shifted, batch_size=128), "cpu", progress=False)
    assert torch.allclose(X2, fresh, atol=1e-5)
    # the same pixels again (an equal copy, not the same object) hit the cache
    copy = data.ImageTensors(tensors.images.clone(), tensors.labels.clone(), list(tensors.files), tensors.classes)
    X3, _ = features.cached_features(backbone, copy, cache=cache, progress=False, name="t")
    assert torch.equal(X3, X1) and len(list(cache.glob("*.pt"))) == 2


def test_feature_cache_is_keyed_on_labels(backbone, tensors, tmp_path):
    cache = tmp_path / "feat"
    _, y1 = features.cached_features(backbone, tensors, cache=cache, progress=False)
    relabelled = data.ImageTensors(tensors.images, (tensors.labels + 1) % 10, list(tensors.files), tensors.classes)
    _, y2 = features.cached_features(backbone, relabelled, cache=cache, progress=False)
    assert torch.equal(y2, relabelled.labels) and not torch.equal(y1, y2)


def test_logistic_regression_fits_with_one_blas_thread(monkeypatch):
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_info

    seen = []
    real_fit = LogisticRegression.fit

    def spy(self, X, y, *args, **kwargs):
        seen.append({info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"})
        return real_fit(self, X, y, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", spy)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    y = (X[:, 0] > 0).astype(int)
    assert features.fit_logistic_regression(X, y).score(X, y) > 0.9
    assert seen == [{1}]
    features.fit_logistic_regression(X, y, blas_threads=None)
    assert len(seen) == 2
