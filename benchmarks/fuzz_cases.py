"""The hostile requests of `benchmarks/security_fuzz.py`, as raw bytes (one `Case` each, by category).

Kept apart from the campaign's sending and counting so each module reads on its own; the categories
are listed in security_fuzz.py's docstring.
"""
from __future__ import annotations

import json
import random
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from stemcell.imaging import encode_jpeg, encode_png

GOOD, OTHER = "fuzz-good", "fuzz-other"  # the cameras every campaign registers


@dataclass(frozen=True)
class Case:
    """One request, as raw bytes on the wire."""

    category: str
    name: str
    method: str
    path: str  # already percent-encoded, sent verbatim
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    well_formed: bool = True  # False: broken HTTP framing, where closing the connection is a fair answer


@dataclass(frozen=True)
class Tokens:
    admin: str
    good: str  # GOOD's token
    other: str  # OTHER's token


# --------------------------------------------------------------------------- hostile images
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, idat: bytes = b"\0" * 64, extra: bytes = b"") -> bytes:
    """A PNG of a few hundred bytes whose header declares width x height (the classic decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + extra
            + _png_chunk(b"IDAT", zlib.compress(idat, 9)) + _png_chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int, base: bytes) -> bytes:
    """A real JPEG whose start-of-frame header is rewritten to declare width x height."""
    pos = 2
    while pos + 4 <= len(base):
        marker, length = base[pos + 1], struct.unpack(">H", base[pos + 2:pos + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            return base[:pos + 5] + struct.pack(">HH", height, width) + base[pos + 9:]
        pos += 2 + length
    raise ValueError("no SOF0/1/2 marker in the base JPEG")


def _bombs(jpeg: bytes, png: bytes) -> Iterator[tuple[str, bytes, str]]:
    zeros = b"\0" * (48 << 20)  # 48 MiB of zeros: ~48 KiB compressed
    yield "png_50000x50000", png_declaring(50_000, 50_000), "image/png"
    yield "png_max_u32", png_declaring(0xFFFFFFFF, 0xFFFFFFFF), "image/png"
    yield "png_1x2^31", png_declaring(1, 2**31), "image/png"
    yield "png_zero_width", png_declaring(0, 100), "image/png"
    yield "png_idat_zlib_bomb", png_declaring(64, 64, idat=zeros), "image/png"
    ztxt = _png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(zeros, 9))
    yield "png_ztxt_zlib_bomb", png[:33] + ztxt + png[33:], "image/png"
    iccp = _png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(zeros, 9))
    yield "png_iccp_zlib_bomb", png[:33] + iccp + png[33:], "image/png"
    yield "png_idat_longer_than_declared", png_declaring(2, 2, idat=b"\0" * 100_000), "image/png"
    yield "jpeg_65535x65535", jpeg_declaring(65535, 65535, jpeg), "image/jpeg"
    yield "jpeg_1x65535", jpeg_declaring(1, 65535, jpeg), "image/jpeg"
    yield "jpeg_zero_height", jpeg_declaring(64, 0, jpeg), "image/jpeg"
    yield "jpeg_smaller_than_data", jpeg_declaring(8, 8, jpeg), "image/jpeg"
    yield "jpeg_larger_than_data", jpeg_declaring(900, 900, jpeg), "image/jpeg"


def _odd_images(frame: np.ndarray) -> Iterator[tuple[str, bytes, str]]:
    """Valid but unusual images that pass every check and reach the models: sizes, channels, depths, encodings."""
    import cv2

    bgr = frame[..., ::-1]
    for name, array, ext, params in [
        ("gray_png", bgr[..., 0], ".png", []), ("rgba_png", np.dstack([bgr, bgr[..., :1]]), ".png", []),
        ("png_16bit", bgr.astype(np.uint16) * 257, ".png", []), ("gray_jpeg", bgr[..., 0], ".jpg", []),
        ("progressive_jpeg", bgr, ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), ("1x1_png", bgr[:1, :1], ".png", []),
        ("1x1_jpeg", bgr[:1, :1], ".jpg", []), ("1x4000_jpeg", np.zeros((1, 4000, 3), np.uint8), ".jpg", []),
        ("4000x1_png", np.zeros((4000, 1, 3), np.uint8), ".png", []),
        ("1000x1000_png", np.zeros((1000, 1000, 3), np.uint8), ".png", []),
    ]:
        ok, buf = cv2.imencode(ext, array, params)
        assert ok, name
        yield name, buf.tobytes(), "image/png" if ext == ".png" else "image/jpeg"


def _mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """A valid image with a few bytes flipped, a cut, or a chunk repeated (keeps the magic bytes)."""
    b = bytearray(data)
    kind = rng.choice(["flip", "cut", "insert", "repeat", "zero_run"])
    if kind == "flip":
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(2, len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif kind == "cut":
        b = b[:rng.randrange(4, len(b))] + data[-2:]  # keep the end marker: only the middle is missing
    elif kind == "insert":
        i = rng.randrange(2, len(b))
        b[i:i] = rng.randbytes(rng.randint(1, 256))
    elif kind == "repeat":
        i = rng.randrange(2, len(b) - 1)
        j = rng.randrange(i + 1, len(b))
        b[j:j] = b[i:j]
    else:
        i = rng.randrange(2, len(b))
        b[i:i + rng.randint(1, 512)] = b"\0" * min(512, len(b) - i)
    return kind, bytes(b)


# --------------------------------------------------------------------------- case generation
def _auth(token: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")


def _multipart(parts: list[tuple[str, str | None, str | None, bytes]], boundary: str) -> bytes:
    """parts: (field name, filename or None, content type or None, payload)."""
    out = []
    for name, filename, ctype, payload in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        head = f"--{boundary}\r\nContent-Disposition: {disp}\r\n" + (f"Content-Type: {ctype}\r\n" if ctype else "")
        out.append(head.encode() + b"\r\n" + payload + b"\r\n")
    return b"".join(out) + f"--{boundary}--\r\n".encode()


_TRICKY_IDS = ["..", "%2E%2E", "..%2F..%2Fadmin", "%2F", "%2Fetc%2Fpasswd", "cam%00x", "%00", "%252F", ".",
               "%C3%A4", "%F0%9F%93%B7", "%E2%80%AE" + "cam", "%FF%FE", "a" * 70, "a" * 5000, "x" * 60_000,
               "%20", "cam%20-1", "cam%0D%0AX-Injected:%201", GOOD + "%2F..", GOOD.upper(), "..." * 30,
               "con", "nul", "-", "_", "a.b", "%5C..%5C"]


def generate_cases(tokens: Tokens, rng: random.Random, *, mutations: int, random_bodies: int,
                   frame: np.ndarray) -> list[Case]:
    """The campaign: a fixed list per category plus `mutations` mutated images and `random_bodies` random bodies."""
    jpeg, png = encode_jpeg(frame), encode_png(frame)
    good_path = f"/cameras/{GOOD}/frames"
    cam = _auth(tokens.good)
    cases: list[Case] = []

    def add(category: str, name: str, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"",
            well_formed: bool = True) -> None:
        cases.append(Case(category, name, method, path, tuple(headers), body, well_formed))

    # random bytes and mutated images, to the single and the batch route
    for i in range(random_bodies):
        body = rng.randbytes(rng.choice([0, 1, 7, 100, 4096, 60_000]))
        if rng.random() < 0.5:
            body = rng.choice([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"]) + body
        ctype = rng.choice(["image/jpeg", "image/png", "application/octet-stream", "", "image/jpeg; q=\x01"])
        add("random_bytes", f"random_{i}", "POST", good_path, [cam, ("Content-Type", ctype)] if ctype else [cam], body)
    for i in range(mutations):
        base, ctype = (jpeg, "image/jpeg") if i % 2 == 0 else (png, "image/png")
        kind, body = _mutate(base, rng)
        if i % 5 == 4:
            boundary = "b" + rng.randbytes(8).hex()
            add("random_bytes", f"mutated_batch_{kind}_{i}", "POST", good_path + ":batch",
                [cam, ("Content-Type", f"multipart/form-data; boundary={boundary}")],
                _multipart([("frames", "a.jpg", ctype, body), ("frames", "b.jpg", "image/jpeg", jpeg)], boundary))
        else:
            add("random_bytes", f"mutated_{kind}_{i}", "POST", good_path, [cam, ("Content-Type", ctype)], body)

    # decompression bombs, alone and inside a batch
    for name, body, ctype in _bombs(jpeg, png):
        add("bombs", name, "POST", good_path, [cam, ("Content-Type", ctype)], body)
        add("bombs", name + "_batch", "POST", good_path + ":batch",
            [cam, ("Content-Type", "multipart/form-data; boundary=xx")], _multipart([("frames", "f", ctype, body)], "xx"))

    # valid but unusual images, alone and together in one batch (frames of different sizes)
    odd = list(_odd_images(frame))
    for name, body, ctype in odd:
        add("odd_images", name, "POST", good_path, [cam, ("Content-Type", ctype)], body)
    add("odd_images", "all_in_one_batch", "POST", good_path + ":batch",
        [cam, ("Content-Type", "multipart/form-data; boundary=odd")],
        _multipart([("frames", name, ctype, body) for name, body, ctype in odd[:8]], "odd"))

    # path tricks on every camera route, with the admin token (which may see everything) and a camera token
    for i, ident in enumerate(_TRICKY_IDS):
        for token_name, token in (("admin", tokens.admin), ("camera", tokens.good)):
            add("path_ids", f"frames_{token_name}_{i}_{ident[:24]}", "POST", f"/cameras/{ident}/frames",
                [_auth(token), ("Content-Type", "image/jpeg")], jpeg)
            for route in ("status", "snapshot", "latest"):
                add("path_ids", f"{route}_{token_name}_{i}_{ident[:24]}", "GET", f"/cameras/{ident}/{route}",
                    [_auth(token)])
        add("path_ids", f"event_snapshot_{i}_{ident[:24]}", "GET", f"/admin/events/{ident}/snapshot",
            [_auth(tokens.admin)])
        add("path_ids", f"delete_{i}_{ident[:24]}", "DELETE", f"/admin/cameras/{ident}", [_auth(tokens.admin)])
        add("path_ids", f"add_{i}_{ident[:24]}", "POST", "/admin/cameras", [_auth(tokens.admin), ("Content-Type", "application/json")],
            json.dumps({"camera_id": ident, "apps": ["car"]}).encode())
    for path in ["/cameras/../admin/plan", "/cameras/%2E%2E/admin/plan", "//admin//plan", "/admin/plan/..",
                 "/admin/./plan", "/cameras/" + GOOD + "/frames/../status", "/" + "a/" * 2000, "/%", "/%zz",
                 "/cameras/" + GOOD + "/frames;x=1", "/cameras/" + GOOD + "/frames%3Abatch"]:
        add("path_ids", f"raw_path_{path[:30]}", "GET", path, [cam])

    # headers
    add("headers", "huge_header_value", "GET", "/healthz", [("X-Big", "a" * 200_000)], well_formed=False)
    add("headers", "many_headers", "GET", "/healthz", [(f"X-H{i}", "v") for i in range(5000)], well_formed=False)
    add("headers", "huge_authorization", "POST", good_path, [("Authorization", "Bearer " + "t" * 100_000),
                                                            ("Content-Type", "image/jpeg")], jpeg, well_formed=False)
    add("headers", "long_authorization", "POST", good_path, [("Authorization", "Bearer " + "t" * 4000),
                                                            ("Content-Type", "image/jpeg")], jpeg)
    add("headers", "huge_content_type", "POST", good_path, [cam, ("Content-Type", "image/jpeg;" + "x" * 8000)], jpeg)
    add("headers", "content_length_lies_short", "POST", good_path,
        [cam, ("Content-Type", "image/jpeg"), ("Content-Length", "10")], jpeg, well_formed=False)
    add("headers", "content_length_negative", "POST", good_path,
        [cam, ("Content-Type", "image/jpeg"), ("Content-Length", "-5")], jpeg, well_formed=False)
    add("headers", "content_length_huge", "POST", good_path,
        [cam, ("Content-Type", "image/jpeg"), ("Content-Length", "99999999999999999999")], jpeg, well_formed=False)
    add("headers", "content_length_twice", "POST", good_path,
        [cam, ("Content-Type", "image/jpeg"), ("Content-Length", str(len(jpeg))), ("Content-Length", "3")], jpeg,
        well_formed=False)
    add("headers", "chunked_garbage", "POST", good_path,
        [cam, ("Content-Type", "image/jpeg"), ("Transfer-Encoding", "chunked")], b"zz\r\nnope\r\n", well_formed=False)
    add("headers", "chunked_and_length", "POST", good_path,
        [cam, ("Content-Type", "image/jpeg"), ("Transfer-Encoding", "chunked"), ("Content-Length", "4")],
        b"4\r\nabcd\r\n0\r\n\r\n", well_formed=False)
    add("headers", "two_content_types", "POST", good_path,
        [cam, ("Content-Type", "image/jpeg"), ("Content-Type", "image/png")], jpeg)
    add("headers", "non_ascii_header", "POST", good_path, [cam, ("Content-Type", "image/jpeg"), ("X-Ü", "ä")], jpeg,
        well_formed=False)

    # multipart
    batch_path = good_path + ":batch"
    for name, ctype, body in [
        ("too_many_parts", "multipart/form-data; boundary=b", _multipart([("frames", "f", "image/jpeg", jpeg)] * 200, "b")),
        ("too_many_fields", "multipart/form-data; boundary=b", _multipart([("ts", None, None, b"1")] * 500, "b")),
        ("oversized_part", "multipart/form-data; boundary=b",
         _multipart([("frames", "f", "image/jpeg", jpeg[:-2] + b"\0" * (2 << 20) + jpeg[-2:])], "b")),
        ("oversized_field", "multipart/form-data; boundary=b", _multipart([("ts", None, None, b"1" * (2 << 20))], "b")),
        ("no_boundary", "multipart/form-data", _multipart([("frames", "f", "image/jpeg", jpeg)], "b")),
        ("wrong_boundary", "multipart/form-data; boundary=zzz", _multipart([("frames", "f", "image/jpeg", jpeg)], "b")),
        ("huge_boundary", "multipart/form-data; boundary=" + "b" * 5000,
         _multipart([("frames", "f", "image/jpeg", jpeg)], "b" * 5000)),
        ("unterminated", "multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: form-data; name=\"frames\"; "
         b"filename=\"f\"\r\n\r\n" + jpeg),
        ("no_disposition", "multipart/form-data; boundary=b", b"--b\r\nContent-Type: image/jpeg\r\n\r\n" + jpeg + b"\r\n--b--\r\n"),
        ("no_name", "multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n"),
        ("frames_as_field", "multipart/form-data; boundary=b", _multipart([("frames", None, None, b"notafile")], "b")),
        ("ts_as_file", "multipart/form-data; boundary=b",
         _multipart([("frames", "f", "image/jpeg", jpeg), ("ts", "t.txt", "text/plain", b"1")], "b")),
        ("empty_body", "multipart/form-data; boundary=b", b""),
        ("only_closing", "multipart/form-data; boundary=b", b"--b--\r\n"),
        ("huge_part_headers", "multipart/form-data; boundary=b",
         b"--b\r\nContent-Disposition: form-data; name=\"frames\"; filename=\"" + b"f" * 200_000 + b"\"\r\n\r\nx\r\n--b--\r\n"),
        ("unicode_names", "multipart/form-data; boundary=b",
         _multipart([("fr\u00e4mes", "\u00fc.jpg", "image/jpeg", jpeg)], "b").replace(b"\\u", b"")),
        ("urlencoded_instead", "application/x-www-form-urlencoded", b"frames=" + b"a" * 1000),
    ]:
        add("multipart", name, "POST", batch_path, [cam, ("Content-Type", ctype)], body)

    # tokens, on camera and admin routes
    for name, headers in [("no_token", []), ("wrong_token", [_auth("w" * 32)]), ("other_camera", [_auth(tokens.other)]),
                          ("empty_bearer", [("Authorization", "Bearer ")]), ("basic", [("Authorization", "Basic YTpi")]),
                          ("lowercase_scheme", [("Authorization", "bearer " + tokens.good)]),
                          ("two_spaces", [("Authorization", "Bearer  " + tokens.good + " x")]),
                          ("token_with_nul", [("Authorization", "Bearer abc\x00def")]),
                          ("admin_prefix", [_auth(tokens.admin[:-1])]), ("camera_on_admin", [cam]),
                          ("two_auth_headers", [_auth("w" * 32), cam])]:
        add("tokens", f"{name}_frames", "POST", good_path, [*headers, ("Content-Type", "image/jpeg")], jpeg,
            well_formed="\x00" not in name)
        add("tokens", f"{name}_plan", "GET", "/admin/plan", headers)
        add("tokens", f"{name}_add", "POST", "/admin/cameras", [*headers, ("Content-Type", "application/json")],
            json.dumps({"camera_id": GOOD, "apps": ["car"], "token": "x" * 32}).encode())

    # JSON on admin routes
    admin = [_auth(tokens.admin), ("Content-Type", "application/json")]
    for name, body in [("deep_list", b"[" * 30_000 + b"]" * 30_000), ("deep_object", b'{"a":' * 8_000 + b"1" + b"}" * 8_000),
                       ("huge_number", b'{"camera_id":"x","apps":["car"],"fps":1' + b"0" * 5000 + b"}"),
                       ("nan", b'{"camera_id":"x","apps":["car"],"fps":NaN}'), ("bad_utf8", b'{"camera_id":"\xff\xfe"}'),
                       ("utf16", json.dumps({"camera_id": "x", "apps": ["car"]}).encode("utf-16")),
                       ("many_apps", json.dumps({"camera_id": "x", "apps": ["car"] * 10_000}).encode()),
                       ("null", b"null"), ("list", b"[]"), ("string", b'"x"'), ("empty", b""),
                       ("app_path", json.dumps({"app": "car", "package_dir": "/etc/../../proc/self/environ"}).encode()),
                       ("app_nul", json.dumps({"app": "car", "package_dir": "a\x00b"}).encode()),
                       ("app_dev", json.dumps({"app": "car", "package_dir": "/dev"}).encode())]:
        route = "/admin/apps" if name.startswith("app_") else "/admin/cameras"
        add("json", name, "POST", route, admin, body)
    for i in range(random_bodies // 2):
        doc = {rng.choice(["camera_id", "apps", "fps", "token", "x"]): rng.choice(
            [None, True, -1, 1e308, "", "car", [], [{}], {"app": 1}, ["car", {"app": "car", "branchpoint": -1}],
             "a" * rng.randint(0, 200)]) for _ in range(rng.randint(0, 5))}
        add("json", f"random_json_{i}", "POST", "/admin/cameras", admin, json.dumps(doc).encode())

    # races: cameras added, used and removed while other requests for them are in flight (the order is shuffled)
    admin_json = [_auth(tokens.admin), ("Content-Type", "application/json")]
    for k in range(max(4, random_bodies // 4)):
        race = f"race-{k % 4}"
        add("races", f"race_add_{k}", "POST", "/admin/cameras", admin_json,
            json.dumps({"camera_id": race, "apps": ["car"]}).encode())
        add("races", f"race_frames_{k}", "POST", f"/cameras/{race}/frames", [_auth(tokens.admin), ("Content-Type", "image/jpeg")], jpeg)
        add("races", f"race_status_{k}", "GET", f"/cameras/{race}/status", [_auth(tokens.admin)])
        add("races", f"race_remove_{k}", "DELETE", f"/admin/cameras/{race}", [_auth(tokens.admin)])

    # methods and query strings
    for path in ["/healthz", "/readyz", "/admin/plan", "/admin/cameras", good_path, good_path + ":batch",
                 f"/cameras/{GOOD}/status", "/docs", "/openapi.json"]:
        for method in ["PUT", "PATCH", "OPTIONS", "TRACE", "HEAD", "FOO"]:
            add("methods", f"{method}_{path}", method, path, [cam])
    for query in ["ts=1e400", "ts=-0", "ts=0x10", "ts=" + "9" * 5000, "ts=1&ts=2", "ts=%00", "ts=%FF", "ts", "=", "&&&",
                  "ts=" + "%41" * 3000, "ts=1;ts=2"]:
        add("methods", f"query_{query[:20]}", "POST", f"{good_path}?{query}", [cam, ("Content-Type", "image/jpeg")], jpeg)
    # the operator page's routes: odd sizes, declared frame sizes, static-file traversal, admin-only views
    for query in ["side=0", "side=-1", "side=99999", "side=1e3", "side=%00", "side=16&side=32", "side="]:
        add("methods", f"snapshot_{query}", "GET", f"/cameras/{GOOD}/snapshot?{query}", [cam])
    for query in ["w=0&h=5", "w=1e9&h=5", "w=5", "w=%C2%B2&h=5", "w=-1&h=-1", "w=65536&h=1"]:
        add("methods", f"declared_{query}", "POST", f"{good_path}?{query}", [cam, ("Content-Type", "image/jpeg")], jpeg)
    for path in ["/ui/../serve_app.py", "/ui/%2E%2E/serve_app.py", "/ui/app.js%00.html", "/ui/" + "x" * 3000,
                 "/admin/zoo", "/admin/events/%2E%2E%2Fstate/snapshot"]:
        add("methods", f"page_{path[:30]}", "GET", path, [cam])
    rng.shuffle(cases)  # categories interleave: concurrent hostile requests also probe shared state
    return cases


# --------------------------------------------------------------------------- sending
