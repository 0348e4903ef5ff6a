"""The real EuroSAT RGB archive: found, verified, split as pinned, trainable offline."""

import pytest
import torch

from tl_helpers import data, models, train

pytestmark = [pytest.mark.real_data]

# sha256 over the quick-check file lists (train 5,000 / val 1,000 / test 3,000, seed 0).
PINNED_SPLIT = "4862b99b789e"


@pytest.fixture(scope="module")
def real_root(real_eurosat_archive):
    return data.find_eurosat(archive=real_eurosat_archive)


def test_archive_verifies(real_eurosat_archive):
    assert data.verify_archive(real_eurosat_archive) in data.KNOWN_SHA256


def test_27000_images_in_10_classes(real_root):
    samples = data.scan_folder(real_root).samples
    assert len(samples) == 27_000
    counts = torch.bincount(torch.tensor([label for _, label in samples])).tolist()
    assert counts == [3000, 3000, 3000, 2500, 2500, 2000, 2500, 3000, 2500, 3000]


def test_quick_check_split_is_pinned_balanced_and_disjoint(real_root):
    split = data.make_split(data.scan_folder(real_root).samples)
    assert (len(split.train), len(split.val), len(split.test)) == (5000, 1000, 3000)
    for part in (split.train, split.val, split.test):
        counts = torch.bincount(torch.tensor([label for _, label in part])).tolist()
        assert len(set(counts)) == 1
    train_files = {p for p, _ in split.train}
    assert not train_files & {p for p, _ in split.test} and not train_files & {p for p, _ in split.val}
    assert not {p for p, _ in split.val} & {p for p, _ in split.test}
    assert split.digest().startswith(PINNED_SPLIT), split.digest()


def test_load_eurosat_tensors(real_root):
    d = data.load_eurosat(progress=False)
    assert d["train"].images.shape == (5000, 3, 64, 64) and d["test"].images.dtype == torch.uint8
    assert torch.bincount(d["train"].labels).tolist() == [500] * 10


@pytest.mark.slow
def test_short_fit_on_real_slice_improves_and_is_deterministic(real_root, no_network):
    d = data.load_eurosat(("train", "val"), progress=False)
    train_slice = d["train"].per_class(40, seed=0)
    val_slice = d["val"].per_class(20, seed=0)

    def run():
        torch.manual_seed(0)
        model = models.load_backbone("efficientnet_lite0", num_classes=10)
        vl = data.make_loader(val_slice, batch_size=100)
        before = train.evaluate(model, vl, "cpu").accuracy
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        tl = data.make_loader(train_slice, batch_size=32, train=True, seed=0)
        h = train.fit(model, tl, vl, opt, epochs=2, device="cpu", seed=0, progress=False)
        return before, h

    before, h1 = run()
    assert h1.val_acc[-1] > before + 0.3, (before, h1.val_acc)
    _, h2 = run()
    assert h1.val_acc == h2.val_acc and h1.train_loss == h2.train_loss
