"""Offline weights: locating, reading both checkpoint layouts, verifying, installing, fetching.

Checkpoints are generated here (seeded VGG16 features, ~58 MB, written once per module);
nothing touches the network: downloads come from a local http.server on 127.0.0.1.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from plotterd.draw import weights as W
from plotterd.errors import ConfigError, WeightsError


def vgg_features_state(seed: int) -> dict[str, torch.Tensor]:
    """torchvision's own VGG16 features (independent of plotterd's builder), seeded."""
    torch.manual_seed(seed)
    feats = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    return {k: v.detach().clone() for k, v in feats.state_dict().items()}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    state = vgg_features_state(1)
    tv = d / "tv.pth"
    torch.save({f"features.{k}": v for k, v in state.items()}, tv)
    sin = d / "sin.pth.tar"
    sd = {f"features.module.{k}": v for k, v in state.items()}
    sd["classifier.0.weight"] = torch.zeros(4, 3)  # present in the real file; ignored
    # the SIN checkpoint predates the zip format: write the legacy one
    torch.save(
        {"epoch": 60, "arch": "vgg16", "state_dict": sd, "best_prec1": torch.tensor(52.26)},
        sin,
        _use_new_zipfile_serialization=False,
    )
    return {"state": state, "tv": tv, "sin": sin, "dir": d}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Weights dir and torch hub under tmp; no registered extras leak between tests."""
    wd = tmp_path / "weights"
    monkeypatch.setenv("PLOTTERD_WEIGHTS_DIR", str(wd))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(W, "_EXTRA", {})
    monkeypatch.setattr(W, "_FEATURE_CACHE", {})
    return wd


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_features_shapes_are_torchvision_vgg16():
    ref = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"]).state_dict()
    assert W.features_shapes() == {k: tuple(v.shape) for k, v in ref.items()}


def test_read_torchvision_layout(ckpts):
    feats, layout = W.read_features(ckpts["tv"])
    assert layout == "torchvision"
    assert set(feats) == set(ckpts["state"])
    for k, v in ckpts["state"].items():
        assert torch.equal(feats[k], v)


def test_read_sin_layout_drops_module(ckpts):
    feats, layout = W.read_features(ckpts["sin"], "sin")
    assert layout == "sin"
    for k, v in ckpts["state"].items():
        assert torch.equal(feats[k], v)


def test_layout_mismatch_is_an_error(ckpts):
    with pytest.raises(WeightsError, match="'sin' key layout, expected 'torchvision'"):
        W.read_features(ckpts["sin"], "torchvision")


def test_numpy_scalar_in_checkpoint_is_allowed(ckpts, tmp_path):
    sd = {f"features.module.{k}": v for k, v in ckpts["state"].items()}
    p = tmp_path / "np.pth.tar"
    torch.save({"state_dict": sd, "best_prec1": np.float64(52.26)}, p)
    feats, _ = W.read_features(p)
    assert torch.equal(feats["0.weight"], ckpts["state"]["0.weight"])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda s: b"\x00garbage" * 100, "not a loadable PyTorch checkpoint"),
        (lambda s: torch.zeros(3), "not a state dict"),
        (lambda s: {"conv.weight": torch.zeros(3)}, "no VGG16 'features.\\*' keys"),
        (
            lambda s: {f"features.{k}": v for k, v in s.items() if k != "28.bias"},
            "missing features.28.bias",
        ),
        (
            lambda s: {
                **{f"features.{k}": v for k, v in s.items()},
                "features.31.weight": s["0.bias"],
            },
            "unexpected features.31.weight",
        ),
        (
            lambda s: {
                **{f"features.{k}": v for k, v in s.items()},
                "features.2.weight": s["0.weight"],
            },
            r"features.2.weight has shape \(64, 3, 3, 3\), VGG16 needs \(64, 64, 3, 3\)",
        ),
        (
            lambda s: {
                **{f"features.{k}": v for k, v in s.items()},
                "features.0.bias": torch.zeros(64, dtype=torch.int64),
            },
            "expected floating point",
        ),
    ],
    ids=["garbage", "tensor", "no-features", "missing", "unexpected", "shape", "dtype"],
)
def test_bad_checkpoints_name_the_file(ckpts, tmp_path, make, message):
    obj = make(ckpts["state"])
    p = tmp_path / "bad.pth"
    if isinstance(obj, bytes):
        p.write_bytes(obj)
    else:
        torch.save(obj, p)
    with pytest.raises(WeightsError, match=message) as e:
        W.read_features(p)
    assert str(p) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        W.read_features(tmp_path / "nope.pth")


def test_directories(tmp_path, monkeypatch, isolated):
    assert W.default_weights_dir() == isolated
    assert W.hub_checkpoints_dir() == tmp_path / "torch" / "hub" / "checkpoints"
    assert W.search_dirs() == [isolated, tmp_path / "torch" / "hub" / "checkpoints"]
    assert W.search_dirs(tmp_path / "x")[0] == tmp_path / "x"
    monkeypatch.delenv("PLOTTERD_WEIGHTS_DIR")
    assert W.default_weights_dir().parts[-2:] == ("plotterd", "weights")


def test_locate_prefers_weights_dir_then_hub(tmp_path, isolated):
    hub = W.hub_checkpoints_dir()
    hub.mkdir(parents=True)
    (hub / "vgg16-397923af.pth").write_bytes(b"x")
    assert W.locate("imagenet") == hub / "vgg16-397923af.pth"
    isolated.mkdir(parents=True)
    (isolated / "vgg16-397923af.pth").write_bytes(b"y")
    assert W.locate("imagenet") == isolated / "vgg16-397923af.pth"
    assert W.locate("sin") is None


def test_sha256_file_and_sidecar_cache(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(3 << 20) + b"tail")
    seen = []
    assert W.sha256_file(p, seen.append) == sha(p)
    assert seen and seen[-1].done == p.stat().st_size
    # a sidecar newer than the file is trusted (that is what makes it a cache) ...
    q = tmp_path / "g.bin"
    q.write_bytes(b"data")
    side = tmp_path / "g.bin.sha256"
    side.write_text("ab" * 32 + "  g.bin\n")
    os.utime(side, ns=(q.stat().st_mtime_ns + 10**9,) * 2)
    assert W.sha256_file(q) == "ab" * 32
    # ... one older than the file is not
    r = tmp_path / "h.bin"
    r.write_bytes(b"other")
    (tmp_path / "h.bin.sha256").write_text("cd" * 32 + "  h.bin\n")
    os.utime(tmp_path / "h.bin.sha256", ns=(r.stat().st_mtime_ns - 10**9,) * 2)
    assert W.sha256_file(r) == sha(r)
    # ... and a damaged (binary) one is ignored, not a UnicodeDecodeError
    b = tmp_path / "b.bin"
    b.write_bytes(b"bytes")
    (tmp_path / "b.bin.sha256").write_bytes(b"\xff\xfe garbage")
    os.utime(tmp_path / "b.bin.sha256", ns=(b.stat().st_mtime_ns + 10**9,) * 2)
    assert W.sha256_file(b) == sha(b)


def test_known_backbones():
    im, sin = W.get_backbone("imagenet"), W.get_backbone("sin")
    assert im.filename == "vgg16-397923af.pth" and im.url.endswith("/vgg16-397923af.pth")
    assert im.sha256 == "397923af" and im.layout == "torchvision"
    assert sin.filename == "vgg16_train_60_epochs_lr0.01-6c6fcc9f.pth.tar"
    assert sin.sha256 == "6c6fcc9f" and sin.layout == "sin" and sin.url.endswith(sin.filename)
    with pytest.raises(ConfigError, match="unknown backbone 'vgg19'"):
        W.get_backbone("vgg19")


def test_register_backbone_validation(tmp_path):
    b = W.register_backbone("mine", tmp_path / "m.pth", sha256="AB" * 32, layout="sin")
    assert W.get_backbone("mine") == b and b.sha256 == "ab" * 32
    bad = [
        (dict(name="imagenet", file="x"), "built in"),
        (dict(name="a b", file="x"), "backbone name"),
        (dict(name="m2", file=""), "m2.file"),
        (dict(name="m2", file="x", sha256="xyz"), "m2.sha256"),
        (dict(name="m2", file="x", layout="caffe"), "m2.layout"),
        (dict(name="m2", file="x", url="ftp://a"), "m2.url"),
    ]
    for kw, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            W.register_backbone(**kw)
    with pytest.raises(ConfigError, match="m3.size: unknown key"):
        W.register_backbones({"m3": {"file": "x", "size": 3}})
    with pytest.raises(ConfigError, match="m3.file: missing"):
        W.register_backbones({"m3": {"url": "https://x/y"}})
    with pytest.raises(ConfigError, match="must be a mapping"):
        W.register_backbones(["m3"])
    assert "m3" not in W.backbones()


def test_backbones_yaml_in_weights_dir(isolated):
    isolated.mkdir(parents=True)
    (isolated / "backbones.yaml").write_text(
        "mine:\n  file: mine.pth\n  layout: torchvision\n  sha256: 0123abcd\n"
    )
    b = W.get_backbone("mine")
    assert b.file == "mine.pth" and b.sha256 == "0123abcd"
    assert W.locate("mine") is None
    (isolated / "backbones.yaml").write_text("mine:\n  file: mine.pth\n  layout: [1]\n")
    with pytest.raises(ConfigError, match=r"backbones.yaml: backbones.mine.layout"):
        W.backbones()
    (isolated / "backbones.yaml").write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(ConfigError, match=r"backbones.yaml: backbones: cannot read"):
        W.backbones()


def test_install_verifies_and_is_atomic(ckpts, isolated):
    W.register_backbone("tv", "tv-copy.pth", sha256=sha(ckpts["tv"]))
    seen = []
    dest = W.install("tv", ckpts["tv"], progress=seen.append)
    assert dest == isolated / "tv-copy.pth"
    assert dest.read_bytes() == ckpts["tv"].read_bytes()
    assert (isolated / "tv-copy.pth.sha256").read_text().split()[0] == sha(ckpts["tv"])
    assert [p.name for p in isolated.iterdir() if p.name.endswith(".part")] == []
    assert seen[-1].stage == "import" and seen[-1].done == seen[-1].total
    info = W.inspect("tv")
    assert info.found and info.hash_ok is True and info.hash_note == "ok"
    # the sin layout installs under its own name
    W.register_backbone("s", "s.pth.tar", layout="sin")
    assert W.install("s", ckpts["sin"]).name == "s.pth.tar"
    assert W.inspect("s").hash_note == "no published hash"


def test_install_rejects_wrong_hash_and_leaves_nothing(ckpts, isolated):
    with pytest.raises(WeightsError, match=r"does not match the published 397923af") as e:
        W.install("imagenet", ckpts["tv"])
    assert str(ckpts["tv"]) in str(e.value)
    assert list(isolated.iterdir()) == []
    W.register_backbone("tv", "tv.pth", sha256="0" * 64)
    with pytest.raises(WeightsError, match="does not match"):
        W.install("tv", ckpts["tv"])
    with pytest.raises(WeightsError, match="no such file"):
        W.install("imagenet", ckpts["dir"] / "absent.pth")
    with pytest.raises(ConfigError, match="unknown backbone"):
        W.install("nope", ckpts["tv"])


@pytest.mark.skipif(not Path("/proc/self/mem").is_file(), reason="needs Linux /proc")
def test_install_of_an_unreadable_file_is_a_weights_error(isolated):
    # /proc/self/mem is a regular file whose read at offset 0 fails with EIO (even as root)
    with pytest.raises(WeightsError, match="cannot copy /proc/self/mem"):
        W.install("imagenet", "/proc/self/mem")
    assert [p.name for p in isolated.iterdir()] == []


def test_install_rejects_wrong_layout(ckpts, isolated, tmp_path):
    W.register_backbone("s", "s.pth.tar", layout="sin")
    with pytest.raises(WeightsError, match="'torchvision' key layout, expected 'sin'"):
        W.install("s", ckpts["tv"])
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match=f"{junk}: not a loadable PyTorch checkpoint"):
        W.install("imagenet", junk)
    assert not any(isolated.iterdir())


def test_load_backbone_missing_names_file_source_and_command():
    with pytest.raises(WeightsError) as e:
        W.load_backbone("imagenet")
    msg = str(e.value)
    assert "vgg16-397923af.pth" in msg
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in msg
    assert "plotterd weights import imagenet" in msg
    assert "\n" not in msg
    with pytest.raises(WeightsError, match="plotterd weights import sin"):
        W.load_backbone("sin")


def test_load_backbone_random_only_when_allowed():
    state = torch.random.get_rng_state()
    a = W.load_backbone("sin", allow_random=True)
    b = W.load_backbone("sin", allow_random=True)
    assert torch.equal(torch.random.get_rng_state(), state)  # caller's stream untouched
    assert a.random and a.metadata() == {"backbone": "sin", "weights": "random", "seed": 0}
    assert torch.equal(a.features["28.weight"], b.features["28.weight"])  # seeded
    assert set(a.features) == set(W.features_shapes())


def test_load_backbone_found_and_hash_checked(ckpts, isolated):
    isolated.mkdir(parents=True)
    # a file under the imagenet name that is not torchvision's: refused, not silently used
    (isolated / "vgg16-397923af.pth").write_bytes(ckpts["tv"].read_bytes())
    with pytest.raises(WeightsError, match="does not match the published 397923af"):
        W.load_backbone("imagenet")
    W.register_backbone("mine", ckpts["sin"], layout="sin")  # absolute path
    got = W.load_backbone("mine")
    assert got.path == ckpts["sin"] and got.sha256 == sha(ckpts["sin"])
    assert got.metadata() == {
        "backbone": "mine",
        "weights": str(ckpts["sin"]),
        "sha256": got.sha256,
    }
    assert torch.equal(got.features["0.weight"], ckpts["state"]["0.weight"])
    assert W.load_backbone("mine").features is got.features  # cached per file
    # the digest is kept beside the file for the next process (each job is one)
    side = ckpts["sin"].with_name(ckpts["sin"].name + ".sha256")
    assert side.read_text().split()[0] == got.sha256


def test_check_weights(ckpts):
    W.check_weights({"type": "blurmse", "sigma": 1.0})  # not perceptual: nothing needed
    W.check_weights({"type": "lpips", "allow_random_weights": True})
    with pytest.raises(WeightsError, match="vgg16-397923af.pth"):
        W.check_weights({"type": "lpips"})
    with pytest.raises(WeightsError, match="6c6fcc9f"):
        W.check_weights({"type": "feature", "backbone": "sin"})
    W.register_backbone("mine", ckpts["tv"])
    W.check_weights({"type": "feature", "backbone": "mine"})
    with pytest.raises(ConfigError, match="loss.backbone"):
        W.check_weights({"type": "feature", "backbone": "nope"})


# ------------------------------------------------------------------------------ fetch


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connecting is refused at once
    return port


@pytest.fixture(scope="module")
def server(ckpts):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    handler = functools.partial(Quiet, directory=str(ckpts["dir"]))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_fetch_offline_fails_clearly(isolated):
    url = f"http://127.0.0.1:{closed_port()}/vgg16-397923af.pth"
    with pytest.raises(WeightsError) as e:
        W.fetch("imagenet", url=url, timeout=5)
    msg = str(e.value)
    assert "could not download" in msg and url in msg
    assert "plotterd weights import imagenet" in msg
    assert [p for p in isolated.iterdir() if p.is_file()] == []


def test_fetch_from_local_server(ckpts, server, isolated):
    W.register_backbone("srv", "srv.pth", url=f"{server}/tv.pth", sha256=sha(ckpts["tv"])[:8])
    seen = []
    dest = W.fetch("srv", progress=seen.append)
    assert dest == isolated / "srv.pth" and sha(dest) == sha(ckpts["tv"])
    assert seen[-1].stage == "fetch" and seen[-1].done == seen[-1].total == dest.stat().st_size
    assert W.inspect("srv").hash_note.startswith("ok (prefix")
    assert [p.name for p in isolated.iterdir() if p.name.endswith(".part")] == []


def test_fetch_http_error_and_wrong_hash(ckpts, server, isolated):
    with pytest.raises(WeightsError, match="HTTP 404"):
        W.fetch("imagenet", url=f"{server}/absent.pth")
    with pytest.raises(WeightsError, match="does not match the published 397923af"):
        W.fetch("imagenet", url=f"{server}/tv.pth")
    assert [p for p in isolated.iterdir() if p.is_file()] == []
    W.register_backbone("nourl", "n.pth")
    with pytest.raises(WeightsError, match="has no download URL"):
        W.fetch("nourl")


def test_features_only_cache_for_later_jobs(ckpts, isolated, monkeypatch):
    W.register_backbone("mine", ckpts["sin"], layout="sin")
    first = W.load_backbone("mine")
    cache = isolated / ".cache" / f"{first.sha256}.features.pt"
    assert cache.is_file()
    # a new process (empty in-memory cache) reads the small copy, not the checkpoint
    monkeypatch.setattr(W, "_FEATURE_CACHE", {})
    real = W.read_features

    def no_full_read(path, *a, **k):
        assert Path(path) != ckpts["sin"], "read the full checkpoint again"
        return real(path, *a, **k)

    monkeypatch.setattr(W, "read_features", no_full_read)
    again = W.load_backbone("mine")
    for k, v in ckpts["state"].items():
        assert torch.equal(again.features[k], v)
    # a damaged copy is ignored and rebuilt from the checkpoint
    monkeypatch.setattr(W, "read_features", real)
    monkeypatch.setattr(W, "_FEATURE_CACHE", {})
    cache.write_bytes(b"damaged")
    third = W.load_backbone("mine")
    assert torch.equal(third.features["28.weight"], ckpts["state"]["28.weight"])
    assert W.read_features(cache, "torchvision")[0].keys() == ckpts["state"].keys()
