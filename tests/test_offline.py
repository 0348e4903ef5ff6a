"""The core path never touches the network when the assets are present."""

import subprocess
import sys
import textwrap
import zipfile

import torch

from tests.helpers import make_fake_eurosat
from tl_helpers import archive as archive_mod
from tl_helpers import data, features, models, train
from tl_helpers.files import sha256_file


def test_core_path_with_sockets_blocked(no_network, isolated_env, tmp_path, monkeypatch):
    src = make_fake_eurosat(tmp_path / "src", per_class=8)
    archive = isolated_env / "EuroSAT_RGB.zip"
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(src.rglob("*.jpg")):
            zf.write(f, "2750/" + str(f.relative_to(src)))
    monkeypatch.setattr(archive_mod, "KNOWN_SHA256", {sha256_file(archive): "fake"})
    d = data.load_eurosat(train_per_class=4, val_per_class=2, test_per_class=2, progress=False)
    model = models.load_backbone(num_classes=10)
    X, y = features.cached_features(model, d["train"], progress=False)
    assert X.shape == (40, 1280)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    h = train.fit(
        model,
        data.make_loader(d["train"], batch_size=8, train=True),
        data.make_loader(d["val"], batch_size=20),
        opt,
        epochs=1,
        device="cpu",
        progress=False,
    )
    assert h.epochs == 1


def test_importing_the_package_has_no_side_effects():
    code = textwrap.dedent("""
        import random, torch, numpy
        state = torch.random.get_rng_state().clone(); r = random.getstate(); n = numpy.random.get_state()[1].copy()
        import tl_helpers, tl_helpers.data, tl_helpers.models, tl_helpers.train, tl_helpers.features
        import tl_helpers.plots, tl_helpers.device, tl_helpers.cli
        assert torch.equal(state, torch.random.get_rng_state()), "torch RNG touched"
        assert r == random.getstate() and (n == numpy.random.get_state()[1]).all(), "RNG touched"
        assert not [k for k in vars(tl_helpers.device) if k.lower() in ('device', 'default_device')]
        print('clean')
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and "clean" in r.stdout, r.stderr
