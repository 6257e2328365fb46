"""Fuzz run: hostile HTTP requests at the API, random G-code files through the reader and
garbled reply lines through the firmware reply parsers. Run by hand:

    .venv/bin/python benchmarks/fuzz.py [--http 2000] [--gcode 2000] [--replies 20000] [--seed 1]

* HTTP: the daemon's own app (a daemon on a temporary state folder, not started, as the
  API tests use it) gets requests with random methods, paths from its OpenAPI document
  with hostile parameters (traversal, NUL, huge numbers, long unicode), random Host /
  Origin / Authorization / Content-Length headers and random bodies and multipart uploads
  (YAML bombs, NaN, bomb-sized image headers, paths as pipeline names). A 5xx or an
  exception out of the app is a traceback that escaped. Nothing lost: every job a 201
  named is in the store with its input in its folder, and no staged upload is left over.
* G-code: random programs (plotterd's own header or none, huge / NaN / negative numbers,
  junk words, non-UTF-8 bytes) written to files and read with ``Program.load`` with and
  without a machine profile: the outcome is a program or a plotterd error, never another
  exception.
* Replies: random lines (bytes, truncated reports, NaN, non-ASCII digits) through
  ``plotterd.machine.grbl.parse`` and ``plotterd.machine.marlin.parse``: an event (a
  ``Garbled`` one included), never an exception.

Prints how many of each were tried, the answers by status, and ``escaped`` / ``lost``
counts; exits 1 if either is not zero. Seeded: the same seed makes the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import string
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from pathlib import Path

JUNK = ["../../etc/passwd", "..%2f..%2fjobs.db", "%00", "\x00", "ü" * 300, "9" * 40, "-1",
        "0", "1e309", "nan", "inf", "{}", "[]", "<script>", "' OR 1=1 --", "a" * 5000, "/",
        "~root", "CON", ".", ".."]
YAML_JUNK = ["!!python/object/apply:os.system ['true']", "a: &a [*a]", "[" * 200 + "]" * 200,
             "{iterations: 1e309}", "{max_input_megapixels: .nan}", "{allow_random_weights: yes}",
             "pipeline: /etc/hosts", "{pen: {profile: ../../x}}", "{pen: {nib_mm: -1}}",
             "{resolution: {width: 99999999}}", "\x00\xff", "- - - -", "{loss: 5}",
             "key: " + "x" * 10000]
HOSTS = ["127.0.0.1:8765", "localhost", "[::1]:8765", "evil.example", "evil.example:8765", "",
         "127.0.0.1.evil.example", "a" * 300, "10.0.0.1", "localhost.evil", "\u0130nvalid"]


SHOWN = ("statuses", "outcomes", "events", "jobs_created")


def _one_line(e: BaseException) -> str:
    return "".join(traceback.format_exception_only(e)).strip()


def _png_claiming(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


GOOD_FILES = [_png_claiming(4, 4), b'<svg xmlns="http://www.w3.org/2000/svg" width="10mm" '
              b'height="10mm"><path d="M1 1 L9 9" stroke="black"/></svg>']


def _word(rng: random.Random) -> str:
    return rng.choice(JUNK + ["".join(rng.choices(string.printable, k=rng.randint(0, 40)))])


def _path(rng: random.Random, paths: list[str], job_ids: list[int]) -> str:
    if rng.random() < 0.1:
        return "/" + "/".join(_word(rng) for _ in range(rng.randint(0, 4)))
    def fill(_match: re.Match) -> str:
        value = (str(rng.choice(job_ids)) if job_ids and rng.random() < 0.5
                 else _word(rng))
        return value.replace("/", "%2F" if rng.random() < 0.5 else "/")

    path = re.sub(r"\{[^}]*\}", fill, rng.choice(paths))
    return path


def _request(rng: random.Random, paths: list[str], job_ids: list[int]) -> dict:
    method = rng.choice(["GET", "GET", "POST", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
    headers = {"host": rng.choice(HOSTS[:3]) if rng.random() < 0.7 else rng.choice(HOSTS)}
    for name, values in (("origin", ["http://evil.example", "null", "http://127.0.0.1:8765"]),
                         ("sec-fetch-site", ["cross-site", "same-origin", "none", "junk"]),
                         ("authorization", ["Bearer x", "Basic " + "a" * 100, "Bearer"]),
                         ("content-type", ["application/json", "multipart/form-data",
                                           "multipart/form-data; boundary=x", "text/plain"])):
        if rng.random() < 0.2:
            headers[name] = rng.choice(values)
    req: dict = {"method": method, "url": _path(rng, paths, job_ids), "headers": headers}
    if method == "POST" and rng.random() < 0.15:  # a well-formed upload among the hostile
        name = rng.choice(["a.png", "ü b.png", "x" * 250 + ".png", "-rf.svg", "../../up.png"])
        return {"method": "POST", "url": "/jobs", "headers": {"host": "127.0.0.1:8765"},
                "files": {"file": (name, rng.choice(GOOD_FILES))},
                "data": {"pipeline": "tiny"} if rng.random() < 0.5 else {}}
    if method in ("POST", "PUT", "PATCH"):
        kind = rng.random()
        if kind < 0.5:
            files = {"file": (_word(rng)[:200] or "x.png", rng.choice([
                _png_claiming(rng.choice([1, 60000, 2**31 - 1]), rng.choice([1, 60000])),
                rng.randbytes(rng.randint(0, 4000)), b"<svg>" + rng.randbytes(50)]))}
            if rng.random() < 0.3:
                files["photo"] = ("p.jpg", rng.randbytes(rng.randint(0, 2000)))
            data = {k: rng.choice(YAML_JUNK + JUNK) for k in
                    rng.sample(["pipeline", "options", "plotter", "tags", "name", "job",
                                "capture", "pens", "nib_mm"], rng.randint(0, 4))}
            req.update(files=files, data=data)
            req["headers"].pop("content-type", None)
        elif kind < 0.8:
            req["content"] = rng.choice([json.dumps({"pens": [_word(rng)], "nib_mm": rng.choice(
                [1e309, -1, "x", None])}).encode(), rng.randbytes(rng.randint(0, 3000)),
                (rng.choice(YAML_JUNK)).encode("utf-8", "surrogatepass")])
        if rng.random() < 0.1:  # a length that lies
            req["headers"]["content-length"] = str(rng.choice([0, 1, 10**12]))
    return req


def fuzz_http(n: int, rng: random.Random) -> dict:
    from fastapi.testclient import TestClient

    from plotterd.service.api import make_app
    from plotterd.service.config import parse_config
    from plotterd.service.daemon import Daemon

    tmp = Path(tempfile.mkdtemp(prefix="plotterd-fuzz-"))
    cfg = parse_config({"state_dir": str(tmp / "state"), "pipeline": "tiny",
                        "api": {"max_upload_mb": 1}})
    daemon = Daemon(cfg)  # not started: the API on its store, as the API tests use it
    client = TestClient(make_app(daemon), base_url="http://127.0.0.1:8765")
    skip = ("/api/machine/", "/plot/", "/camera/")  # need the running plotter / camera threads
    paths = [p for p in client.get("/openapi.json").json()["paths"]
             if not p.startswith(skip)] + ["/", "/docs", "/static/{name}", "/docs-assets/{name}"]
    statuses: Counter = Counter()
    escaped: list[str] = []
    created: list[int] = []
    for _ in range(n):
        req = _request(rng, paths, created)
        try:
            r = client.request(**req)
        except Exception as e:  # raised out of the app: a traceback escaped
            # the test client itself refuses some hostile headers before sending
            if type(e).__module__.startswith(("httpx", "h11")) or isinstance(e, UnicodeError):
                statuses["refused by the client"] += 1
                continue
            escaped.append(f"{req['method']} {req['url']!r}: {_one_line(e)}")
            continue
        statuses[f"{r.status_code // 100}xx"] += 1
        if r.status_code >= 500:
            escaped.append(f"{req['method']} {req['url']!r}: {r.status_code} {r.text[:200]}")
        if r.status_code == 201 and req["method"] == "POST":
            try:
                created.append(int(r.json()["id"]))
            except (ValueError, KeyError, TypeError):
                pass
    lost = []
    for jid in created:
        job = daemon.store.get(jid)
        if job is None:
            lost.append(f"job {jid}: no record")
        elif job["input"] and not (Path(job["dir"]) / job["input"]).is_file():
            lost.append(f"job {jid}: its input is not in its folder")
    left = list(daemon.staging.iterdir()) if daemon.staging.exists() else []
    lost += [f"staged upload left over: {p.name}" for p in left]
    daemon.store.close()
    return {"tried": n, "statuses": dict(sorted(statuses.items())), "jobs_created": len(created),
            "escaped": escaped, "lost": lost}


def _gcode_line(rng: random.Random) -> str:
    num = lambda: rng.choice([f"{rng.uniform(-5000, 5000):.3f}", "nan", "inf", "-inf", "1e999",  # noqa: E731
                              "", "1.2.3", "--5", str(rng.randint(0, 300))])
    kind = rng.random()
    if kind < 0.5:
        word = rng.choice(["G0", "G1", "G00", "g1", "G2", "G3", "G92", "G28", "G4", "G20",
                           "G91", "G90", "G53", "M3", "M5", "M280", "M211 S0", "$H", "$X",
                           "SET_GCODE_OFFSET", "FORCE_MOVE", "G5", "G93"])
        axes = rng.sample(["X", "Y", "Z", "F", "S", "P", "I", "J", "E"], rng.randint(0, 4))
        return word + "".join(f" {a}{num()}" for a in axes)
    if kind < 0.6:
        return "; " + rng.choice(["plotterd gcode 2", "bounds: 0 0 3000 3000", "bounds: nan",
                                  "stroke 5", "pen up", "{\"version\": 2}", "x" * 300])
    if kind < 0.7:
        return "(" + _word(rng) + ")" + rng.choice(["", " G1 X1"])
    return "".join(rng.choices(string.printable, k=rng.randint(0, 80)))


def fuzz_gcode(n: int, rng: random.Random) -> dict:
    from plotterd.errors import PlotterdError
    from plotterd.gcode import load_profile
    from plotterd.gcode.program import Program

    profile = load_profile("grbl-servo")
    tmp = Path(tempfile.mkdtemp(prefix="plotterd-fuzz-gcode-"))
    outcomes: Counter = Counter()
    escaped = []
    for i in range(n):
        lines = [_gcode_line(rng) for _ in range(rng.randint(0, 60))]
        if rng.random() < 0.5:
            lines.insert(0, "; plotterd gcode 2")
        data = "\n".join(lines).encode("utf-8", "surrogatepass")
        if rng.random() < 0.1:
            data += rng.randbytes(rng.randint(1, 40))  # not UTF-8
        path = tmp / f"f{i}.gcode"
        path.write_bytes(data)
        try:
            Program.load(path, profile if rng.random() < 0.5 else None)
            outcomes["read"] += 1
        except PlotterdError:
            outcomes["refused (plotterd error)"] += 1
        except Exception as e:
            escaped.append(f"{path.name}: {_one_line(e)}")
        path.unlink()
    return {"tried": n, "outcomes": dict(outcomes), "escaped": escaped}


def _reply(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:
        return rng.randbytes(rng.randint(0, 60)).decode("utf-8", "replace")
    base = rng.choice(["<Idle|MPos:1.000,2.000,0.000|FS:0,0>", "<Run|WPos:1,2,3|Bf:15,128>",
                       "ok", "error:22", "ALARM:1", "[MSG:Reset to continue]", "$22=1",
                       "Grbl 1.1h ['$' for help]", "X:10.00 Y:20.00 Z:0.00 E:0.00 Count X:800",
                       "echo:busy: processing", "Error:Printer halted", "[GC:G0 G54 G17]",
                       "<Hold:0|MPos:nan,inf,-0|Ov:100,100,100>", "T:25.0 /0.0 B:24.9 /0.0"])
    if kind < 0.6:
        return base[:rng.randint(0, len(base))]  # truncated
    chars = list(base)
    for _ in range(rng.randint(1, 4)):  # digits swapped for junk, NaN, non-ASCII digits
        if chars:
            chars[rng.randrange(len(chars))] = rng.choice(
                ["nan", "٣", "\x00", ".", ",", "|", "é", "9" * 50])
    return "".join(chars)


def fuzz_replies(n: int, rng: random.Random) -> dict:
    from plotterd.machine import grbl, marlin

    kinds: Counter = Counter()
    escaped = []
    for _ in range(n):
        line = _reply(rng)
        for name, parse in (("grbl", grbl.parse), ("marlin", marlin.parse)):
            try:
                kinds[f"{name}: {type(parse(line)).__name__}"] += 1
            except Exception as e:
                escaped.append(f"{name} {line!r}: {_one_line(e)}")
    return {"tried": n, "events": dict(sorted(kinds.items())), "escaped": escaped}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--http", type=int, default=2000)
    ap.add_argument("--gcode", type=int, default=2000)
    ap.add_argument("--replies", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # the daemon logs every refused job; the counts say it
    results = {}
    for name, run, n in (("http", fuzz_http, args.http), ("gcode", fuzz_gcode, args.gcode),
                         ("replies", fuzz_replies, args.replies)):
        t0 = time.perf_counter()
        res = run(n, random.Random(args.seed))
        res["seconds"] = round(time.perf_counter() - t0, 1)
        results[name] = res
        print(f"{name}: {res['tried']} tried in {res['seconds']} s, "
              f"{len(res['escaped'])} tracebacks escaped"
              + (f", {len(res['lost'])} lost" if "lost" in res else "")
              + f"; {json.dumps({k: v for k, v in res.items() if k in SHOWN})}")
        for line in (res["escaped"] + res.get("lost", []))[:10]:
            print("   ", line)
    bad = sum(len(r["escaped"]) + len(r.get("lost", [])) for r in results.values())
    print(json.dumps({k: {**v, "escaped": len(v["escaped"]), "lost": len(v.get("lost", []))}
                      for k, v in results.items()}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
