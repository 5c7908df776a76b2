"""The classifier: architecture params flow into timm, save/load, weights files, predict_proba, geometry checks."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pandas as pd
import pytest
import timm
import torch

from fracture.base.errors import ConfigError, InputError
from fracture.config import load_params
from fracture.model.core import build_model, load_model_dir, model_config, predict_proba, save_model_dir

REPO = Path(__file__).resolve().parents[3]
THRESHOLDS = {"youden": 0.4, "f1_max": 0.45, "target_sensitivity": 0.3, "fixed": 0.5}
# A second tiny Swin with other geometry: 96 px, window 3 -> token grids 24, 12, 6, 3.
OTHER_ARCH = {
    "base": {"image_size": 96},
    "model": {
        "backbone_kwargs": {"window_size": 3, "embed_dim": 24, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 4]},
        "head_hidden": 16,
    },
}


@pytest.fixture(autouse=True)
def _seeded_one_thread():
    """Seeded, and one intra-op thread (spinning OMP threads crawl on a shared 2-core runner)."""
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_demo_arch_forward_gives_one_finite_logit_per_image(params):
    size = params.base.image_size
    model = build_model(params.model, size).eval()
    logits = model(torch.randn(3, 1, size, size))
    assert logits.shape == (3,)
    assert torch.isfinite(logits).all()
    assert model.backbone.patch_embed.proj.in_channels == 1
    assert model.head[0].in_features == 8 * params.model.backbone_kwargs["embed_dim"]


def test_other_arch_params_reach_timm(make_params):
    params = make_params(OTHER_ARCH)
    model = build_model(params.model, 96).eval()
    stages = model.backbone.layers
    assert [s.blocks[0].window_size for s in stages] == [(3, 3)] * 4
    assert [s.blocks[0].input_resolution for s in stages] == [(24, 24), (12, 12), (6, 6), (3, 3)]
    assert model.backbone.num_features == 8 * 24
    assert model.head[0].out_features == 16
    logits = model(torch.randn(2, 1, 96, 96))
    assert logits.shape == (2,) and torch.isfinite(logits).all()


def test_image_size_that_breaks_swin_arithmetic_is_refused_by_name(make_params):
    with pytest.raises(ConfigError, match=r"base\.image_size: 100 is not divisible by 32"):
        make_params({"base": {"image_size": 100}})
    with pytest.raises(ConfigError, match=r"base\.image_size: 96 gives a 6x6 token grid at Swin stage 3"):
        make_params({"base": {"image_size": 96}})  # window 4 of the demo arch
    with pytest.raises(ConfigError, match=r"model\.backbone_kwargs\.img_size"):
        make_params({"model": {"backbone_kwargs": {"img_size": 128}}})


def _save(model, params, out: Path) -> None:
    config = model_config(params.model, params.base.image_size, THRESHOLDS, "youden")
    history = pd.DataFrame(
        [{"epoch": 1, "train_loss": 0.7, "val_loss": 0.7, "val_auroc": 0.5, "lr": 1e-3, "seconds": 1}]
    )
    save_model_dir(out, model, config, {"val_auroc": 0.5}, history, params)


def test_save_load_round_trip_gives_identical_logits(make_params, tmp_path):
    params = make_params(OTHER_ARCH)
    model = build_model(params.model, 96).eval()
    _save(model, params, tmp_path)
    loaded, config = load_model_dir(tmp_path)
    x = torch.randn(4, 1, 96, 96)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert config["threshold"] == 0.4 and config["thresholds"] == THRESHOLDS
    assert not loaded.training
    assert isinstance(torch.load(tmp_path / "model.pt", weights_only=True), dict)


def test_same_weights_save_to_the_same_bytes(make_params, tmp_path):
    """model.pt is a DVC output and the registry fingerprint: no temporary file name inside the zip."""
    params = make_params(OTHER_ARCH)
    model = build_model(params.model, 96).eval()
    _save(model, params, tmp_path / "a")
    _save(model, params, tmp_path / "b")
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()


def test_predict_proba_is_the_sigmoid_of_the_normalised_forward(params):
    size = params.base.image_size
    model = build_model(params.model, size).eval()
    images = np.random.default_rng(0).integers(0, 256, (5, size, size), dtype=np.uint8)
    probs = predict_proba(model, images, 0.5, 0.25, batch_size=2)
    x = (torch.from_numpy(images).float()[:, None] / 255 - 0.5) / 0.25
    with torch.no_grad():
        expected = torch.sigmoid(model(x)).numpy()
    assert probs.shape == (5,)
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)


def test_predict_proba_refuses_images_of_the_wrong_size_or_type(params):
    model = build_model(params.model, params.base.image_size)
    with pytest.raises(InputError, match="uint8"):
        predict_proba(model, np.zeros((2, 32, 32), np.uint8), 0.5, 0.5, 4)
    with pytest.raises(InputError, match="uint8"):
        predict_proba(model, np.zeros((2, 64, 64), np.float32), 0.5, 0.5, 4)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not a checkpoint", "not a readable weights file"),
        ("tensor", "not a state dict"),
        ("other_arch", "keys/shapes do not match"),
    ],
)
def test_corrupt_or_mismatched_weights_are_input_errors(params, make_params, tmp_path, content, message):
    model = build_model(params.model, params.base.image_size)
    _save(model, params, tmp_path)
    weights = tmp_path / "model.pt"
    if content == "tensor":
        torch.save(torch.zeros(3), weights)
    elif content == "other_arch":
        other = make_params(OTHER_ARCH)
        torch.save(build_model(other.model, 96).state_dict(), weights)
    else:
        weights.write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        load_model_dir(tmp_path)
    assert "model.pt" in str(err.value)


@pytest.mark.parametrize("in_chans", [1, 3])
def test_local_pretrained_weights_are_loaded(params, tmp_path, in_chans):
    """A headless backbone checkpoint (ours, or a 3-channel one whose stem is summed to 1 channel)."""
    mp, size = params.model, params.base.image_size
    kwargs = {**mp.backbone_kwargs, "img_size": size, "in_chans": in_chans, "num_classes": 0}
    source = timm.create_model(mp.backbone, **kwargs)
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    model = build_model(mp.model_copy(update={"pretrained": True, "weights_path": str(path)}), size)
    got, want = model.backbone.state_dict(), source.state_dict()
    stem = "patch_embed.proj.weight"
    assert torch.equal(got[stem], want[stem].sum(dim=1, keepdim=True))
    assert all(torch.equal(got[k], want[k]) for k in want if k != stem)


def test_local_weights_for_another_architecture_are_refused(params, make_params, tmp_path):
    other = make_params(OTHER_ARCH)
    path = tmp_path / "other.pth"
    torch.save(build_model(other.model, 96).backbone.state_dict(), path)
    mp = params.model.model_copy(update={"pretrained": True, "weights_path": str(path)})
    with pytest.raises(InputError, match=r"other\.pth: keys/shapes do not match"):
        build_model(mp, params.base.image_size)
    with pytest.raises(InputError, match="does not exist"):
        build_model(mp.model_copy(update={"weights_path": str(tmp_path / "missing.pth")}), params.base.image_size)


def test_pretrained_without_network_or_file_says_what_to_do(params, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail at once, as with no network
    mp = params.model.model_copy(update={"pretrained": True, "weights_path": None})
    with pytest.raises(InputError, match="model.weights_path") as err:
        build_model(mp, params.base.image_size)
    assert "network" in str(err.value)


def test_unknown_backbone_is_named(params):
    with pytest.raises(InputError, match="model.backbone: 'swin_gigantic'"):
        build_model(params.model.model_copy(update={"backbone": "swin_gigantic"}), 64)


def test_production_profile_loads():
    params = load_params(REPO / "configs" / "production.yaml")
    assert params.base.image_size == 384 and params.train.num_workers == 8
    assert params.model.backbone.startswith("swin_large_patch4_window12_384") and params.model.pretrained
    paths = params.paths
    raw = ("data/raw/GRAZPEDWRI-DX", "data/raw/MURA-v1.1", "data/raw/hospital")
    assert (paths.kaggle, paths.mura, paths.hospital) == raw
    assert paths.synth == {} and params.train.devices == "auto"


def test_production_profile_builds_swin_large_384_grayscale():
    """Swin-L/384 with a 1-channel stem (random init, no forward: ~8 s per image on 2 CPU cores)."""
    params = load_params(REPO / "configs" / "production.yaml")
    model = build_model(params.model, params.base.image_size, pretrained=False)
    n_params = sum(p.numel() for p in model.parameters())
    assert 190e6 < n_params < 200e6, n_params  # Swin-L: ~195M
    assert model.backbone.num_features == 1536
    assert model.backbone.patch_embed.proj.in_channels == 1
    assert model.backbone.layers[-1].blocks[0].input_resolution == (12, 12)
    assert model.head[0].out_features == 256
