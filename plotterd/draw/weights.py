"""Pretrained VGG16 backbones, offline: where the files are, verifying and installing them.

plotterd never downloads weights behind the user's back. A backbone is a checkpoint with
torchvision's VGG16 ``features`` layout, known by name:

- ``imagenet``: torchvision's ``vgg16-397923af.pth`` (keys ``features.N.weight|bias``);
- ``sin``: Geirhos et al.'s Stylized-ImageNet ``vgg16_train_60_epochs_lr0.01-6c6fcc9f.pth.tar``
  (a dict whose ``state_dict`` has keys ``features.module.N.weight|bias``);
- anything registered with :func:`register_backbone` / :func:`register_backbones`.

Files are looked for in the weights directory (``weights_dir`` argument, else
``$PLOTTERD_WEIGHTS_DIR``, else ``platformdirs.user_data_dir("plotterd")/weights``) and then
in torch's hub cache (``torch.hub.get_dir()/checkpoints``, where torchvision puts its own).
``plotterd weights import NAME FILE`` verifies a file and installs it atomically;
``plotterd weights fetch NAME`` downloads it from the official URL when online.

A loss asks :func:`load_backbone`; a missing file is a :class:`WeightsError` naming the file,
its official source and the import command, unless ``allow_random`` is set, in which case the
backbone is seeded random weights and its metadata says ``"weights": "random"``.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import os
import pickle
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from plotterd.errors import ConfigError, WeightsError
from plotterd.progress import Progress, ProgressCallback

__all__ = [
    "Backbone",
    "LoadedWeights",
    "WeightsInfo",
    "VGG16_CFG",
    "backbones",
    "check_weights",
    "default_weights_dir",
    "features_shapes",
    "fetch",
    "get_backbone",
    "hub_checkpoints_dir",
    "inspect",
    "install",
    "list_weights",
    "load_backbone",
    "locate",
    "read_features",
    "register_backbone",
    "register_backbones",
    "search_dirs",
    "sha256_file",
]

LAYOUTS = ("torchvision", "sin")
RANDOM_SEED = 0  # random backbones (allow_random_weights) are seeded: runs stay reproducible

# torchvision's VGG16 ("D") features: conv widths, "M" = 2x2 max pool
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


def features_shapes() -> dict[str, tuple[int, ...]]:
    """``{"N.weight": shape, "N.bias": shape}`` of torchvision's ``vgg16().features``."""
    shapes: dict[str, tuple[int, ...]] = {}
    idx, c_in = 0, 3
    for v in VGG16_CFG:
        if v == "M":
            idx += 1
            continue
        shapes[f"{idx}.weight"] = (int(v), c_in, 3, 3)
        shapes[f"{idx}.bias"] = (int(v),)
        c_in = int(v)
        idx += 2  # conv then ReLU
    return shapes


@dataclass(frozen=True)
class Backbone:
    name: str
    file: str  # a file name searched for in the weights dirs, or an absolute path
    url: str | None = None  # official download
    sha256: str | None = None  # full hex digest, or the published prefix (>= 8 hex digits)
    layout: str | None = None  # "torchvision" | "sin" | None = detect from the keys
    source: str = ""  # where a person gets it, for messages and docs

    @property
    def filename(self) -> str:
        return Path(self.file).name


KNOWN: dict[str, Backbone] = {
    "imagenet": Backbone(
        "imagenet",
        "vgg16-397923af.pth",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        # torchvision publishes only the first 8 hex digits of the SHA-256 (in the name)
        sha256="397923af",
        layout="torchvision",
        source="torchvision (VGG16_Weights.IMAGENET1K_V1)",
    ),
    "sin": Backbone(
        "sin",
        "vgg16_train_60_epochs_lr0.01-6c6fcc9f.pth.tar",
        # the URL used by the texture-vs-shape model loaders; the project README also points
        # at a Google Drive folder (see docs/weights.md)
        url="https://bitbucket.org/robert_geirhos/texture-vs-shape-pretrained-models/raw/"
        "0008049cd10f74a944c6d5e90d4639927f8620ae/vgg16_train_60_epochs_lr0.01-6c6fcc9f.pth.tar",
        sha256="6c6fcc9f",
        layout="sin",
        source="Geirhos et al. 2019, github.com/rgeirhos/texture-vs-shape (VGG16 trained on SIN)",
    ),
}
_EXTRA: dict[str, Backbone] = {}
_LOCK = threading.Lock()


# ------------------------------------------------------------------------------ registry


def backbones(weights_dir: str | os.PathLike[str] | None = None) -> dict[str, Backbone]:
    """Every known backbone by name: built in, registered, then those listed in the weights
    directory's ``backbones.yaml``."""
    return {**KNOWN, **_EXTRA, **_file_entries(weights_dir)}


def get_backbone(
    name: str, key: str = "loss.backbone", weights_dir: str | os.PathLike[str] | None = None
) -> Backbone:
    if not isinstance(name, str):
        raise ConfigError(key, f"must be a backbone name, got {name!r}")
    known = backbones(weights_dir)
    found = known.get(name)
    if found is None:
        raise ConfigError(key, f"unknown backbone {name!r} (known: {', '.join(known)})")
    return found


_HEX = re.compile(r"^[0-9a-f]{8,64}$")


def _make_backbone(
    name: Any,
    file: Any,
    url: Any = None,
    sha256: Any = None,
    layout: Any = None,
    key: str = "weights.backbones",
    source: str | None = None,
) -> Backbone:
    k = f"{key}.{name}"
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(
            key, f"backbone name must be letters, digits, '_', '.', '-': {name!r}", source
        )
    if name in KNOWN:
        raise ConfigError(k, f"{name!r} is built in and cannot be redefined", source)
    if not isinstance(file, (str, os.PathLike)) or not os.fspath(file):
        raise ConfigError(f"{k}.file", f"must be a file name or path, got {file!r}", source)
    if url is not None and not (isinstance(url, str) and re.match(r"^(https?|file)://", url)):
        raise ConfigError(f"{k}.url", f"must be an http(s):// or file:// URL, got {url!r}", source)
    if sha256 is not None:
        if not isinstance(sha256, str) or not _HEX.match(sha256.lower()):
            raise ConfigError(f"{k}.sha256", f"must be 8 to 64 hex digits, got {sha256!r}", source)
        sha256 = sha256.lower()
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(
            f"{k}.layout", f"must be one of {', '.join(LAYOUTS)}, got {layout!r}", source
        )
    origin = f"registered in {source}" if source else f"registered as {name!r}"
    return Backbone(name, os.fspath(file), url, sha256, layout, source=origin)


def _parse_entries(entries: Any, key: str, source: str | None = None) -> dict[str, Backbone]:
    if not isinstance(entries, Mapping):
        raise ConfigError(key, "must be a mapping of name -> {file, url, sha256, layout}", source)
    out = {}
    for name, spec in entries.items():
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{key}.{name}", "must be a mapping with at least 'file'", source)
        unknown = set(spec) - {"file", "url", "sha256", "layout"}
        if unknown:
            raise ConfigError(
                f"{key}.{name}.{sorted(unknown)[0]}",
                "unknown key (accepted: file, url, sha256, layout)",
                source,
            )
        if "file" not in spec:
            raise ConfigError(f"{key}.{name}.file", "missing", source)
        out[name] = _make_backbone(
            name,
            spec["file"],
            spec.get("url"),
            spec.get("sha256"),
            spec.get("layout"),
            key,
            source,
        )
    return out


def register_backbone(
    name: str,
    file: str | os.PathLike[str],
    url: str | None = None,
    sha256: str | None = None,
    layout: str | None = None,
    key: str = "weights.backbones",
) -> Backbone:
    """Add (or replace) a backbone with the VGG16 features layout under ``name``, for this
    process. The built-in ``imagenet`` and ``sin`` cannot be replaced: their meaning is fixed.
    ``file``: a file name looked for in the weights dirs, or an absolute path."""
    b = _make_backbone(name, file, url, sha256, layout, key)
    with _LOCK:
        _EXTRA[name] = b
    return b


def register_backbones(
    entries: Mapping[str, Any], key: str = "weights.backbones"
) -> list[Backbone]:
    """Register config entries ``name -> {file, url?, sha256?, layout?}`` (all or none)."""
    parsed = _parse_entries(entries, key)
    with _LOCK:
        _EXTRA.update(parsed)
    return list(parsed.values())


REGISTRY_FILE = "backbones.yaml"
_FILE_CACHE: dict[str, tuple[int, dict[str, Backbone]]] = {}


def _file_entries(weights_dir: str | os.PathLike[str] | None) -> dict[str, Backbone]:
    """Backbones listed in ``<weights dir>/backbones.yaml`` (same form as register_backbones);
    one place that the CLI, the daemon and its worker processes all read."""
    path = search_dirs(weights_dir)[0] / REGISTRY_FILE
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return {}
    with _LOCK:
        hit = _FILE_CACHE.get(str(path))
    if hit is not None and hit[0] == mtime:
        return hit[1]
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError("backbones", f"cannot read: {e}", str(path)) from None
    parsed = _parse_entries(raw, "backbones", str(path))
    with _LOCK:
        _FILE_CACHE[str(path)] = (mtime, parsed)
    return parsed


# ------------------------------------------------------------------------------ locations


def default_weights_dir() -> Path:
    env = os.environ.get("PLOTTERD_WEIGHTS_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("plotterd")) / "weights"


def hub_checkpoints_dir() -> Path:
    """Where torchvision's own downloads land (torch.hub.load_state_dict_from_url)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def search_dirs(weights_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    first = Path(weights_dir).expanduser() if weights_dir else default_weights_dir()
    return [first, hub_checkpoints_dir()]


def _candidates(b: Backbone, weights_dir: str | os.PathLike[str] | None) -> list[Path]:
    f = Path(b.file).expanduser()
    if f.is_absolute():  # that path, else a copy imported into the weights dirs
        return [f] + [d / f.name for d in search_dirs(weights_dir)]
    return [d / f for d in search_dirs(weights_dir)]


def locate(
    backbone: str | Backbone, weights_dir: str | os.PathLike[str] | None = None
) -> Path | None:
    b = get_backbone(backbone, "backbone", weights_dir) if isinstance(backbone, str) else backbone
    for p in _candidates(b, weights_dir):
        if p.is_file():
            return p
    return None


# ------------------------------------------------------------------------------ hashing

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def sha256_file(path: str | os.PathLike[str], progress: ProgressCallback | None = None) -> str:
    """SHA-256 hex digest of a file.

    Half a gigabyte takes seconds, and every job's loss wants the digest for its metadata, so
    it is remembered per (path, size, mtime) in memory and in ``FILE.sha256`` (sha256sum's
    format) next to installed files; a sidecar older than the file is ignored.
    """
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    with _LOCK:
        if key in _HASH_CACHE:
            return _HASH_CACHE[key]
    side = _sidecar(p)
    try:
        if side.stat().st_mtime_ns >= st.st_mtime_ns:
            m = re.match(r"^([0-9a-f]{64})\s", side.read_text(encoding="utf-8"))
            if m:
                with _LOCK:
                    _HASH_CACHE[key] = m.group(1)
                return m.group(1)
    except (OSError, UnicodeDecodeError):  # no usable sidecar: hash the file
        pass
    h = hashlib.sha256()
    done, t0 = 0, time.monotonic()
    with open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(Progress("hash", done, st.st_size, time.monotonic() - t0))
    digest = h.hexdigest()
    with _LOCK:
        _HASH_CACHE[key] = digest
    return digest


def _write_sidecar(path: Path, digest: str) -> None:
    try:
        _sidecar(path).write_text(f"{digest}  {path.name}\n")
    except OSError:  # a read-only directory only loses the cache
        pass


def hash_matches(b: Backbone, digest: str) -> bool | None:
    """True/False against the published digest (or prefix); None when none is published."""
    if not b.sha256:
        return None
    return digest.lower().startswith(b.sha256.lower())


def _hash_note(b: Backbone, digest: str | None) -> str:
    if digest is None:
        return "not checked"
    ok = hash_matches(b, digest)
    if ok is None:
        return "no published hash"
    if not ok:
        return f"MISMATCH (expected {b.sha256}..., got {digest[:16]}...)"
    return "ok" if len(b.sha256 or "") == 64 else f"ok (prefix {b.sha256})"


# ------------------------------------------------------------------------------ reading


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # Old training checkpoints sometimes keep a numpy scalar (e.g. best accuracy) next to
        # the tensors; allow exactly numpy's scalar/dtype types, never arbitrary pickles.
        if "numpy" not in str(e):
            raise
        import numpy as np

        core = getattr(np, "_core", None) or np.core
        safe = [core.multiarray.scalar, np.dtype]
        safe += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32")]
        with torch.serialization.safe_globals(safe):
            return torch.load(path, map_location="cpu", weights_only=True)


def _detect_layout(keys: list[str]) -> str | None:
    if any(k.startswith("features.module.") for k in keys):
        return "sin"
    if any(k.startswith("features.") for k in keys):
        return "torchvision"
    return None


def read_features(
    path: str | os.PathLike[str], layout: str | None = None, label: str | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    """Load a checkpoint and return its VGG16 ``features`` as ``{"N.weight"|"N.bias": tensor}``
    (float32, CPU) and the layout found. Raises WeightsError naming the file when it is not a
    PyTorch checkpoint or does not hold VGG16 features of the right shapes (``label``: the
    name to use for it in messages, when reading a temporary copy)."""
    path = Path(path)
    p = label or str(path)
    if not path.is_file():
        raise WeightsError(f"{p}: no such file")
    try:
        obj = _torch_load(path)
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(
            f"{p}: not a loadable PyTorch checkpoint ({type(e).__name__}: {first})"
        ) from None
    sd = obj.get("state_dict", obj) if isinstance(obj, Mapping) else obj
    if not isinstance(sd, Mapping) or not all(isinstance(k, str) for k in sd):
        raise WeightsError(f"{p}: not a state dict (found {type(sd).__name__})")
    keys = list(sd)
    found = _detect_layout(keys)
    if found is None:
        shown = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")
        raise WeightsError(
            f"{p}: no VGG16 'features.*' keys (found: {shown or 'nothing'}); "
            "expected torchvision's vgg16 layout or the SIN checkpoint's"
        )
    if layout is not None and found != layout:
        raise WeightsError(f"{p}: has the {found!r} key layout, expected {layout!r}")
    prefix = "features.module." if found == "sin" else "features."
    feats = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    expected = features_shapes()
    missing = [k for k in expected if k not in feats]
    extra = [k for k in feats if k not in expected]
    if missing or extra:
        what = []
        if missing:
            what.append(f"missing {', '.join(prefix + k for k in missing[:3])}")
        if extra:
            what.append(f"unexpected {', '.join(prefix + k for k in extra[:3])}")
        raise WeightsError(f"{p}: not VGG16 features ({'; '.join(what)})")
    for k, shape in expected.items():
        t = feats[k]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise WeightsError(f"{p}: {prefix}{k} has shape {got}, VGG16 needs {shape}")
        if not t.is_floating_point():
            raise WeightsError(f"{p}: {prefix}{k} is {t.dtype}, expected floating point")
    return {k: feats[k].detach().to(torch.float32).contiguous() for k in expected}, found


# ------------------------------------------------------------------------------ status


@dataclass
class WeightsInfo:
    backbone: Backbone
    searched: list[Path]
    path: Path | None = None
    size: int | None = None
    sha256: str | None = None
    hash_ok: bool | None = None  # None: not checked or nothing published
    hash_note: str = "missing"

    @property
    def found(self) -> bool:
        return self.path is not None


def inspect(
    name: str,
    weights_dir: str | os.PathLike[str] | None = None,
    check_hash: bool = True,
    progress: ProgressCallback | None = None,
) -> WeightsInfo:
    b = get_backbone(name, "backbone", weights_dir)
    info = WeightsInfo(b, _candidates(b, weights_dir))
    path = locate(b, weights_dir)
    if path is None:
        return info
    info.path, info.size = path, path.stat().st_size
    if check_hash:
        info.sha256 = sha256_file(path, progress)
        info.hash_ok = hash_matches(b, info.sha256)
    info.hash_note = _hash_note(b, info.sha256)
    return info


def list_weights(
    weights_dir: str | os.PathLike[str] | None = None,
    check_hash: bool = True,
    progress: ProgressCallback | None = None,
) -> list[WeightsInfo]:
    return [inspect(n, weights_dir, check_hash, progress) for n in backbones(weights_dir)]


def missing_message(b: Backbone, searched: list[Path]) -> str:
    where = ", ".join(str(p.parent) for p in searched)
    src = f"official source: {b.url}" if b.url else f"source: {b.source or 'not published'}"
    fetch_hint = f" (or `plotterd weights fetch {b.name}` where online)" if b.url else ""
    return (
        f"weights for backbone {b.name!r} not found: {b.filename} (looked in {where}); "
        f"{src}; download it on a machine with internet access and run "
        f"`plotterd weights import {b.name} /path/to/{b.filename}`{fetch_hint}; "
        "or set allow_random_weights: true to run on random weights (testing only)"
    )


# ------------------------------------------------------------------------------ loading

_FEATURE_CACHE: dict[tuple[str, int, int], dict[str, torch.Tensor]] = {}


@dataclass(frozen=True)
class LoadedWeights:
    backbone: str
    path: Path | None  # None: random weights
    sha256: str | None
    features: dict[str, torch.Tensor] = field(repr=False)  # "N.weight" -> tensor, CPU float32

    @property
    def random(self) -> bool:
        return self.path is None

    def metadata(self) -> dict[str, Any]:
        if self.path is None:
            return {"backbone": self.backbone, "weights": "random", "seed": RANDOM_SEED}
        return {"backbone": self.backbone, "weights": str(self.path), "sha256": self.sha256}


@functools.lru_cache(maxsize=2)
def random_features(seed: int = RANDOM_SEED) -> dict[str, torch.Tensor]:
    """VGG16 features with torch's default initialisation, seeded, without touching the
    caller's random stream. Cached: callers must not modify the tensors (losses copy them)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = {}
        for k, shape in features_shapes().items():
            if k.endswith(".weight"):
                conv = torch.nn.Conv2d(shape[1], shape[0], 3, padding=1)
                out[k] = conv.weight.detach().clone()
                out[k.replace(".weight", ".bias")] = conv.bias.detach().clone()
    return out


CACHE_DIR = ".cache"  # in the weights dir: features-only copies, named by the source's digest


def _features_cache_path(digest: str, weights_dir: str | os.PathLike[str] | None) -> Path:
    return search_dirs(weights_dir)[0] / CACHE_DIR / f"{digest}.features.pt"


def _read_cached_features(
    path: Path, b: Backbone, digest: str, weights_dir: str | os.PathLike[str] | None
) -> dict[str, torch.Tensor]:
    """The features of the verified file ``path`` (SHA-256 ``digest``).

    Every job runs in a new process, and the full checkpoints are 528 MB (ImageNet, with its
    classifier) or more (SIN, with optimiser state) for 58 MB of features: after the first
    read, a features-only copy named by the source's digest is kept in the weights dir, so
    later jobs load a tenth of the data and peak memory stays low. The copy is checked like
    any checkpoint; an unreadable or unwritable cache only costs the full read.
    """
    cache = _features_cache_path(digest, weights_dir)
    if cache.is_file():
        try:
            feats, _ = read_features(cache, "torchvision")
            return feats
        except WeightsError:
            pass  # damaged copy: rebuilt below
    feats, _ = read_features(path, b.layout)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".features.", suffix=".part", dir=cache.parent)
        os.close(fd)
        try:
            torch.save({f"features.{k}": v for k, v in feats.items()}, tmp)
            os.replace(tmp, cache)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError:
        pass
    return feats


def load_backbone(
    name: str,
    weights_dir: str | os.PathLike[str] | None = None,
    allow_random: bool = False,
) -> LoadedWeights:
    """The backbone's features, verified: hash against the published digest (if any) and
    layout. Missing file: WeightsError (see :func:`missing_message`) unless ``allow_random``.
    Loaded features are cached per file, so jobs after the first start fast."""
    b = get_backbone(name, "loss.backbone", weights_dir)
    path = locate(b, weights_dir)
    if path is None:
        if allow_random:
            return LoadedWeights(b.name, None, None, random_features())
        raise WeightsError(missing_message(b, _candidates(b, weights_dir)))
    side = _sidecar(path)
    fresh = side.exists() and side.stat().st_mtime_ns >= path.stat().st_mtime_ns
    digest = sha256_file(path)
    if not fresh:  # each job runs in a fresh process: keep the digest for the next one
        _write_sidecar(path, digest)
    if hash_matches(b, digest) is False:
        raise WeightsError(
            f"{path}: SHA-256 {digest[:16]}... does not match the published {b.sha256} for "
            f"backbone {b.name!r}; the file is corrupt or a different model - re-import it with "
            f"`plotterd weights import {b.name} FILE`"
        )
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _LOCK:
        feats = _FEATURE_CACHE.get(key)
    if feats is None:
        feats = _read_cached_features(path, b, digest, weights_dir)
        with _LOCK:
            if len(_FEATURE_CACHE) >= 4:  # ~58 MB each; a daemon uses one or two
                _FEATURE_CACHE.pop(next(iter(_FEATURE_CACHE)))
            _FEATURE_CACHE[key] = feats
    return LoadedWeights(b.name, path, digest, feats)


# which backbone each perceptual loss type uses when the config does not say
_LOSS_DEFAULT_BACKBONE = {"lpips": "imagenet", "feature": "imagenet"}


def check_weights(
    loss_cfg: Mapping[str, Any], weights_dir: str | os.PathLike[str] | None = None
) -> None:
    """Raise WeightsError if the loss ``{"type": ..., ...}`` needs a weights file that is not
    there (and allow_random_weights is not set). Cheap: only looks for the file; the loss
    itself verifies hash and layout when it is built. Other loss types pass."""
    kind = loss_cfg.get("type")
    if kind not in _LOSS_DEFAULT_BACKBONE or loss_cfg.get("allow_random_weights"):
        return
    wd = loss_cfg.get("weights_dir") or weights_dir
    b = get_backbone(loss_cfg.get("backbone") or _LOSS_DEFAULT_BACKBONE[kind], "loss.backbone", wd)
    if locate(b, wd) is None:
        raise WeightsError(missing_message(b, _candidates(b, wd)))


# ------------------------------------------------------------------------------ installing


def _verify_file(b: Backbone, path: Path, digest: str, label: str | None = None) -> None:
    """Layout first (says "not a checkpoint" rather than "wrong hash" for a stray file)."""
    read_features(path, b.layout, label)
    if hash_matches(b, digest) is False:
        raise WeightsError(
            f"{label or path}: SHA-256 {digest[:16]}... does not match the published "
            f"{b.sha256} for backbone {b.name!r} ({b.filename}); it is not that file or it is "
            "damaged"
        )


def _copy_hashing(
    src: Path, dst_fd: int, total: int, progress: ProgressCallback | None, stage: str
) -> str:
    h = hashlib.sha256()
    done, t0 = 0, time.monotonic()
    # the destination first: it owns dst_fd (closed) even when src cannot be opened
    with os.fdopen(dst_fd, "wb") as fout, open(src, "rb") as fin:
        while chunk := fin.read(1 << 20):
            fout.write(chunk)
            h.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(Progress(stage, done, total, time.monotonic() - t0))
        fout.flush()
        os.fsync(fout.fileno())
    return h.hexdigest()


def _finish_install(b: Backbone, tmp: Path, digest: str, dest_dir: Path, label: str) -> Path:
    _verify_file(b, tmp, digest, label)
    dest = dest_dir / b.filename
    os.replace(tmp, dest)  # atomic on one file system: a reader sees the old file or the new
    _write_sidecar(dest, digest)
    with _LOCK:
        st = dest.stat()
        _HASH_CACHE[(str(dest.resolve()), st.st_size, st.st_mtime_ns)] = digest
    return dest


def install(
    name: str,
    src: str | os.PathLike[str],
    weights_dir: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Verify ``src`` as backbone ``name`` (published SHA-256 or prefix, VGG16 features keys
    and shapes) and install it as ``weights_dir/<file>`` atomically. Returns the new path."""
    b = get_backbone(name, "name", weights_dir)
    src_p = Path(src).expanduser()
    if not src_p.is_file():
        raise WeightsError(f"{src_p}: no such file")
    dest_dir = search_dirs(weights_dir)[0]
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightsError(f"{dest_dir}: cannot create the weights directory ({e})") from None
    dest = dest_dir / b.filename
    if dest.exists() and dest.resolve() == src_p.resolve():
        digest = sha256_file(src_p, progress)
        _verify_file(b, src_p, digest)
        _write_sidecar(dest, digest)
        return dest
    fd, tmp_name = tempfile.mkstemp(prefix=f".{b.filename}.", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        try:
            digest = _copy_hashing(src_p, fd, src_p.stat().st_size, progress, "import")
        except OSError as e:
            raise WeightsError(f"cannot copy {src_p} into {dest_dir}: {e}") from None
        return _finish_install(b, tmp, digest, dest_dir, str(src_p))
    finally:
        tmp.unlink(missing_ok=True)


def fetch(
    name: str,
    weights_dir: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    url: str | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download backbone ``name`` from its official URL (or ``url``), check its hash and
    layout, and install it atomically. Offline, a WeightsError says how to import instead."""
    b = get_backbone(name, "name", weights_dir)
    src = url or b.url
    if not src:
        raise WeightsError(
            f"backbone {b.name!r} has no download URL; get {b.filename} yourself and run "
            f"`plotterd weights import {b.name} /path/to/{b.filename}`"
        )
    dest_dir = search_dirs(weights_dir)[0]
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightsError(f"{dest_dir}: cannot create the weights directory ({e})") from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{b.filename}.", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    offline_hint = (
        f"on an offline machine download {b.filename} elsewhere and run "
        f"`plotterd weights import {b.name} /path/to/{b.filename}`"
    )
    try:
        h = hashlib.sha256()
        t0 = time.monotonic()
        try:
            req = urllib.request.Request(src, headers={"User-Agent": "plotterd"})
            with urllib.request.urlopen(req, timeout=timeout) as resp, os.fdopen(fd, "wb") as out:
                fd = -1
                total = int(resp.headers.get("Content-Length") or 0)
                done = 0
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        eta = None
                        if total and done:
                            eta = (time.monotonic() - t0) * (total - done) / done
                        progress(Progress("fetch", done, total, time.monotonic() - t0, eta))
                if total and done != total:
                    raise WeightsError(f"{src}: download ended early ({done} of {total} bytes)")
                out.flush()
                os.fsync(out.fileno())
        except urllib.error.HTTPError as e:
            raise WeightsError(
                f"could not download {src}: HTTP {e.code} {e.reason}; {offline_hint}"
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise WeightsError(f"could not download {src} ({reason}); {offline_hint}") from None
        finally:
            if fd != -1:
                os.close(fd)
        return _finish_install(b, tmp, h.hexdigest(), dest_dir, f"download from {src}")
    finally:
        tmp.unlink(missing_ok=True)
