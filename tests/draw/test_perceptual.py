"""Perceptual losses: layer naming, the VGG16 slice, LPIPS against the lpips package, the
feature loss against a direct computation, registry/validation, and missing weights.

Backbones are seeded random VGG16 features written to tmp (no real weights are needed)."""

from __future__ import annotations

import warnings

import lpips
import pytest
import torch
import torchvision

from plotterd.draw import perceptual as P
from plotterd.draw import weights as W
from plotterd.draw.losses import build_loss, check_loss_config
from plotterd.errors import ConfigError, InputError, WeightsError

torch.set_num_threads(2)


def vgg_features(seed: int) -> torch.nn.Sequential:
    """torchvision's own VGG16 features module (the reference), seeded."""
    torch.manual_seed(seed)
    return torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"]).eval()


@pytest.fixture(scope="module")
def ref_features():
    return vgg_features(3)


@pytest.fixture(scope="module")
def ckpt(ref_features, tmp_path_factory):
    p = tmp_path_factory.mktemp("vgg") / "vgg16-test.pth"
    torch.save({f"features.{k}": v for k, v in ref_features.state_dict().items()}, p)
    return p


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, ckpt):
    monkeypatch.setenv("PLOTTERD_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(W, "_EXTRA", {})
    W.register_backbone("test", ckpt, layout="torchvision")


def images(c: int, h: int = 40, w: int = 56, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, c, h, w, generator=g), torch.rand(1, c, h, w, generator=g)


# ------------------------------------------------------------------------------ layers


def test_layer_table_matches_torchvision(ref_features):
    assert P.LAYERS["conv1_1"] == 0 and P.LAYERS["relu1_2"] == 3
    assert [P.LAYERS[n] for n in P.LPIPS_LAYERS] == [3, 8, 15, 22, 29]
    assert P.LAYERS["pool5"] == 30 and len(P.LAYERS) == len(ref_features) == 31
    kinds = {"conv": torch.nn.Conv2d, "relu": torch.nn.ReLU, "pool": torch.nn.MaxPool2d}
    for name, i in P.LAYERS.items():
        assert isinstance(ref_features[i], kinds[name[:4]]), name


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("relu1_2..relu3_3", ["relu1_2", "relu2_2", "relu3_3"]),
        (["relu1_2..relu5_3"], P.LPIPS_LAYERS),
        ("conv1_1..conv3_1", ["conv1_1", "conv2_2", "conv3_1"]),
        ("relu2_1..relu2_2, pool4", ["relu2_1", "relu2_2", "pool4"]),
        ("pool1..pool3", ["pool1", "pool2", "pool3"]),
        (["conv4_2", "relu1_1"], ["conv4_2", "relu1_1"]),
    ],
)
def test_parse_layers(spec, expected):
    assert P.parse_layers(spec) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ("relu6_1", "unknown layer 'relu6_1'"),
        ("relu1_2..conv3_3", "mixes relu and conv"),
        ("relu3_3..relu1_2", "goes backwards"),
        ("relu1_2, relu1_2", "given twice"),
        ("relu1_2..relu3_3, relu2_2", "given twice"),
        ([], "no layers"),
        (3, "must be a list"),
        ("relu1_2..relu9_9", "unknown layer 'relu9_9'"),
    ],
)
def test_parse_layers_errors(spec, message):
    with pytest.raises(ConfigError, match=message) as e:
        P.parse_layers(spec)
    assert e.value.key == "loss.layers"


# ------------------------------------------------------------------------------ network


def test_vgg_slice_matches_torchvision_and_stops_early(ref_features):
    sd = {k: v for k, v in ref_features.state_dict().items()}
    layers = ["conv2_1", "relu1_2", "relu3_3"]  # a conv output next to its in-place ReLU
    net = P.VGG16Features(sd, layers)
    assert len(net.body) == P.LAYERS["relu3_3"] + 1
    x = torch.rand(1, 3, 32, 40, generator=torch.Generator().manual_seed(1))
    got = net(x)
    want, h = {}, x
    with torch.no_grad():
        for i, m in enumerate(ref_features):
            h = m(h.clone())
            want[i] = h
    for name, f in zip(layers, got, strict=True):
        torch.testing.assert_close(f, want[P.LAYERS[name]], rtol=1e-5, atol=1e-6)
    assert all(not p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training


# ------------------------------------------------------------------------------ lpips


@pytest.fixture(scope="module")
def lpips_ref(ref_features):
    """lpips.LPIPS(net="vgg") with its own heads and our test backbone copied in."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's 'pretrained' deprecation
        ref = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    slices = [ref.net.slice1, ref.net.slice2, ref.net.slice3, ref.net.slice4, ref.net.slice5]
    for sl in slices:
        for name, m in sl.named_children():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.data.copy_(ref_features[int(name)].weight)
                m.bias.data.copy_(ref_features[int(name)].bias)
    return ref.eval()


@pytest.mark.parametrize("channels", [3, 1])
def test_lpips_matches_the_lpips_package(lpips_ref, channels):
    target, image = images(channels)
    loss = P.LPIPSLoss(target, backbone="test", precision="float32")
    mine = loss(image.clone().requires_grad_(True))
    ref_img = image.clone().requires_grad_(True)
    rep = (lambda t: t.repeat(1, 3, 1, 1)) if channels == 1 else (lambda t: t)
    ref = lpips_ref(rep(ref_img), rep(target), normalize=True).squeeze()
    assert mine.ndim == 0
    torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-6)
    # and the gradients the optimiser follows
    img = image.clone().requires_grad_(True)
    loss(img).backward()
    ref.backward()
    torch.testing.assert_close(img.grad, ref_img.grad, rtol=1e-4, atol=1e-8)


def test_lpips_zero_on_target_and_target_features_computed_once():
    target, image = images(1)
    loss = P.LPIPSLoss(target, backbone="test", precision="float32")
    assert float(loss(target)) == pytest.approx(0.0, abs=1e-9)
    calls = []
    loss.net.register_forward_hook(lambda *a: calls.append(1))
    loss(image)
    loss(image)
    assert len(calls) == 2  # one pass per call: the target side is never recomputed
    assert all(getattr(loss, f"target_feat{i}").grad_fn is None for i in range(5))


def test_lpips_metadata_names_weights_and_heads(ckpt):
    target, _ = images(1)
    md = P.LPIPSLoss(target, backbone="test").metadata()
    assert md["weights"] == str(ckpt) and len(md["sha256"]) == 64
    assert md["heads"].endswith("vgg.pth") and "v0.1" in md["heads"]
    assert md["layers"] == P.LPIPS_LAYERS


# ------------------------------------------------------------------------------ feature


def reference_feature_loss(features, image, target, layers, weights):
    """The second paper's loss written out directly on torchvision's module."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def feats(x):
        x = (x.expand(-1, 3, -1, -1) - mean) / std
        out = {}
        for i, m in enumerate(features):
            x = m(x.clone())
            out[i] = x
        return out

    fi, ft = feats(image), feats(target)
    total = 0.0
    for name, w in zip(layers, weights, strict=True):
        a, b = fi[P.LAYERS[name]], ft[P.LAYERS[name]]
        a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        total = total + w * ((a - b) ** 2).sum(dim=1).mean()
    return total


@pytest.mark.parametrize(
    "layers, layer_weights, expect_weights",
    [
        (None, None, [1.0] * 5),
        ("relu1_2..relu3_3", [0.5, 1, 2], [0.5, 1.0, 2.0]),
        (["conv2_2", "pool1"], {"pool1": 3}, [1.0, 3.0]),
        ("relu2_2", 0.25, [0.25]),
    ],
)
def test_feature_loss_matches_direct_computation(
    ref_features, layers, layer_weights, expect_weights
):
    target, image = images(1)
    loss = P.FeatureLoss(target, layers=layers, layer_weights=layer_weights, backbone="test",
                         precision="float32")
    names = P.parse_layers(layers or P.DEFAULT_LAYERS)
    with torch.no_grad():
        want = reference_feature_loss(ref_features, image, target, names, expect_weights)
    torch.testing.assert_close(loss(image), want, rtol=1e-5, atol=1e-6)
    md = loss.metadata()
    assert md["layers"] == names and md["layer_weights"] == expect_weights


def test_feature_loss_grey_equals_repeated_rgb_and_gradients_reach_image():
    target, image = images(1)
    grey = P.FeatureLoss(target, layers="relu1_2..relu3_3", backbone="test")
    rgb = P.FeatureLoss(target.repeat(1, 3, 1, 1), layers="relu1_2..relu3_3", backbone="test")
    torch.testing.assert_close(grey(image), rgb(image.repeat(1, 3, 1, 1)))
    img = image.clone().requires_grad_(True)
    v = grey(img)
    v.backward()
    assert v > 0 and img.grad is not None and img.grad.abs().sum() > 0
    assert all(p.grad is None for p in grey.net.parameters())
    assert float(grey(target)) == pytest.approx(0.0, abs=1e-9)


def test_image_too_small_for_layers():
    with pytest.raises(InputError, match="need at least 16x16"):
        P.FeatureLoss(torch.ones(1, 1, 12, 40), layers="relu5_3", backbone="test")
    loss = P.FeatureLoss(torch.ones(1, 1, 12, 40), layers="relu2_2", backbone="test")
    with pytest.raises(InputError, match=r"rendering must be a \(N, C, H, W\)"):
        loss(torch.ones(1, 2, 12, 40))


# ------------------------------------------------------------------------------ registry


def test_registered_params_and_validation():
    full = check_loss_config({"type": "feature", "backbone": "test"})
    assert full["layers"] == P.DEFAULT_LAYERS and full["allow_random_weights"] is False
    assert full["weights_dir"] is None and full["layer_weights"] is None
    assert set(check_loss_config({"type": "lpips"})) == {
        "backbone", "allow_random_weights", "weights_dir", "precision",
    }  # fmt: skip
    bad = [
        ({"type": "lpips", "layers": "relu1_2"}, "loss.layers"),
        ({"type": "feature", "layers": "relu7_1"}, "loss.layers"),
        ({"type": "feature", "layers": "relu1_2", "layer_weights": [1, 2]}, "loss.layer_weights"),
        ({"type": "feature", "layer_weights": {"relu9_9": 1}}, "loss.layer_weights.relu9_9"),
        ({"type": "feature", "layer_weights": -1}, "loss.layer_weights"),
        ({"type": "feature", "layer_weights": float("nan")}, "loss.layer_weights"),
        ({"type": "lpips", "backbone": "vgg19"}, "loss.backbone"),
        ({"type": "lpips", "allow_random_weights": "yes"}, "loss.allow_random_weights"),
        ({"type": "lpips", "weights_dir": 3}, "loss.weights_dir"),
    ]
    for cfg, key in bad:
        with pytest.raises(ConfigError) as e:
            check_loss_config(cfg)
        assert e.value.key == key, cfg


def test_build_loss_fails_before_optimising_without_weights():
    target, _ = images(1)
    with pytest.raises(WeightsError) as e:
        build_loss({"type": "lpips"}, target)
    assert "vgg16-397923af.pth" in str(e.value) and "plotterd weights import" in str(e.value)
    with pytest.raises(WeightsError, match="6c6fcc9f"):
        build_loss({"type": "feature", "backbone": "sin"}, target)


def test_random_weights_only_when_allowed_and_metadata_says_so():
    target, image = images(1)
    loss = build_loss({"type": "feature", "backbone": "sin", "allow_random_weights": True}, target)
    assert loss.metadata()["weights"] == "random"
    again = build_loss({"type": "feature", "backbone": "sin", "allow_random_weights": True}, target)
    assert float(loss(image)) == float(again(image))  # seeded: reproducible runs
    lp = build_loss({"type": "lpips", "allow_random_weights": True}, target)
    assert lp.metadata()["weights"] == "random" and "sha256" not in lp.metadata()


def test_weights_dir_param(ckpt, tmp_path):
    d = tmp_path / "elsewhere"
    d.mkdir()
    (d / "backbones.yaml").write_text(f"local:\n  file: {ckpt.name}\n")
    (d / ckpt.name).write_bytes(ckpt.read_bytes())
    target, _ = images(1)
    loss = build_loss({"type": "lpips", "backbone": "local", "weights_dir": str(d)}, target)
    assert loss.metadata()["weights"] == str(d / ckpt.name)


# ------------------------------------------------------------------------------ pipelines


def test_shipped_pipelines():
    from plotterd.pipeline import load_pipeline

    lp = load_pipeline("lines-lpips")
    assert lp.loss["type"] == "lpips" and lp.loss["backbone"] == "imagenet"
    assert lp.strokes[0].count == 1000 and lp.height == 200
    sin = load_pipeline("lines-sin-conv3")
    assert sin.loss["type"] == "feature" and sin.loss["backbone"] == "sin"
    assert P.parse_layers(sin.loss["layers"]) == ["relu1_2", "relu2_2", "relu3_3"]


def test_optimiser_runs_perceptual_pipeline_and_records_weights():
    from plotterd.draw.optimise import optimise
    from plotterd.pipeline import pipeline_from_dict

    raw = {
        "strokes": [{"kind": "line", "count": 20, "width_px": 1.0}],
        "loss": {"type": "feature", "backbone": "sin", "layers": "relu1_2..relu2_2"},
        "resolution": {"height": 32},
        "iterations": 3,
        "seed": 0,
    }
    target = images(1, 32, 40)[0]
    seen = []
    with pytest.raises(WeightsError, match="plotterd weights import sin"):
        optimise(target, pipeline_from_dict(raw), device="cpu", progress=seen.append)
    assert seen == []  # failed before the first iteration
    res = optimise(target, pipeline_from_dict({**raw, "allow_random_weights": True}), device="cpu")
    md = res.strokes.metadata["loss_metadata"]
    assert md["weights"] == "random" and md["layers"] == ["relu1_2", "relu2_2"]
    assert len(res.losses) == 3


@pytest.mark.parametrize("kind", ["lpips", "feature"])
def test_bfloat16_trunk_stays_close_to_float32(kind):
    """precision bfloat16 runs the VGG trunk under autocast: the value and the gradient that
    drives the strokes must stay close to float32's."""
    gen = torch.Generator().manual_seed(5)
    target = torch.rand(1, 1, 40, 48, generator=gen)
    image = torch.rand(1, 1, 40, 48, generator=gen)
    cls = P.LPIPSLoss if kind == "lpips" else P.FeatureLoss
    grads, values = [], []
    for precision in ("float32", "bfloat16"):
        loss = cls(target, backbone="test", precision=precision)
        assert loss.metadata()["precision"] == precision
        x = image.clone().requires_grad_(True)
        v = loss(x)
        v.backward()
        assert v.dtype == torch.float32
        values.append(float(v))
        grads.append(x.grad.flatten())
    assert values[1] == pytest.approx(values[0], rel=2e-2)
    cos = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert cos > 0.98


def test_precision_is_validated():
    with pytest.raises(ConfigError, match="loss.precision"):
        check_loss_config({"type": "lpips", "precision": "float16"})
