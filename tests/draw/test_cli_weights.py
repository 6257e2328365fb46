"""`plotterd weights list|import|fetch` through the real entry point (exit status, messages).

No network: the offline case uses a closed port on 127.0.0.1, the download a local server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import sys
import threading

import pytest
import torch
import torchvision

from plotterd.cli import main
from plotterd.draw import weights as W


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-ckpt")
    torch.manual_seed(5)
    feats = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, d / "mine.pth")
    (d / "junk.pth").write_text("hello")
    return d


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    wd = tmp_path / "weights"
    monkeypatch.setenv("PLOTTERD_WEIGHTS_DIR", str(wd))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(W, "_EXTRA", {})
    return wd


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["plotterd", "weights", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("plotterd:")]
    assert len(lines) == 1, err
    return lines[0]


def test_list_reports_missing_with_where_and_how(monkeypatch, capsys, env):
    code, out, _ = run(monkeypatch, capsys, "list")
    assert code == 0
    assert "imagenet: MISSING" in out and "sin: MISSING" in out
    assert str(env) in out and "hub/checkpoints" in out
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in out
    assert "plotterd weights import sin /path/to/vgg16_train_60_epochs_lr0.01-6c6fcc9f" in out


def test_import_then_list_shows_found_size_and_hash(monkeypatch, capsys, env, ckpt_dir):
    digest = hashlib.sha256((ckpt_dir / "mine.pth").read_bytes()).hexdigest()
    env.mkdir(parents=True)
    (env / "backbones.yaml").write_text(f"mine:\n  file: mine.pth\n  sha256: {digest}\n")
    code, out, _ = run(monkeypatch, capsys, "import", "mine", str(ckpt_dir / "mine.pth"))
    assert code == 0 and f"installed as {env / 'mine.pth'}" in out
    code, out, _ = run(monkeypatch, capsys, "list")
    assert code == 0
    block = out[out.index("mine: found") :]
    size = (ckpt_dir / "mine.pth").stat().st_size
    assert f"{size:,} bytes" in block and digest in block and "[ok]" in block
    code, out, _ = run(monkeypatch, capsys, "list", "--no-hash")
    assert "[not checked]" in out


def test_import_errors_exit_2_with_one_line(monkeypatch, capsys, ckpt_dir, env):
    code, _, err = run(monkeypatch, capsys, "import", "imagenet", str(ckpt_dir / "mine.pth"))
    assert code == 2
    line = error_line(err)
    assert str(ckpt_dir / "mine.pth") in line and "does not match the published 397923af" in line
    code, _, err = run(monkeypatch, capsys, "import", "sin", str(ckpt_dir / "junk.pth"))
    assert code == 2 and "not a loadable PyTorch checkpoint" in error_line(err)
    code, _, err = run(monkeypatch, capsys, "import", "resnet", str(ckpt_dir / "mine.pth"))
    assert code == 2 and "unknown backbone 'resnet'" in error_line(err)
    assert not env.exists() or not any(env.iterdir())


def test_fetch_offline_exit_2(monkeypatch, capsys):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    url = f"http://127.0.0.1:{port}/vgg16-397923af.pth"
    code, _, err = run(monkeypatch, capsys, "fetch", "imagenet", "--url", url, "--timeout", "5")
    assert code == 2
    line = error_line(err)
    assert "could not download" in line and "plotterd weights import imagenet" in line


def test_fetch_from_local_server(monkeypatch, capsys, ckpt_dir, env):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(ckpt_dir))
    )
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/mine.pth"
        W.register_backbone("mine", "mine.pth", url=url)
        code, out, _ = run(monkeypatch, capsys, "fetch", "mine")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert code == 0 and "downloaded, verified and installed" in out
    assert (env / "mine.pth").read_bytes() == (ckpt_dir / "mine.pth").read_bytes()
