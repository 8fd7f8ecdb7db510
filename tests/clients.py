"""Run the real raw developers on a DNG and read back one value per photosite.

Used by test_clients.py and test_repair.py. Each ``develop_*`` function
returns a 2-D float array (one value per photosite of the program's output
frame); the caller finds where that frame sits in the full mosaic.

Under ``HOTPIXEL_SHM_REQUIRE_CLIENTS=1`` (set by CI) a missing program fails
the test; elsewhere the test is skipped, saying which package to install.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

#: Debian package of each program.
PACKAGES = {"dcraw": "dcraw", "dcraw_emu": "libraw-bin", "rawtherapee-cli": "rawtherapee",
            "siril-cli": "siril", "darktable-cli": "darktable"}

TIMEOUT = 120


def need(program: str) -> str:
    """The program's path; fail (CI) or skip (elsewhere) when it is missing."""
    path = shutil.which(program)
    if path is None:
        msg = (f"{program} is not installed (Debian package {PACKAGES.get(program, program)}); "
               f"the test of its bad-pixel list needs the real program")
        if os.environ.get("HOTPIXEL_SHM_REQUIRE_CLIENTS") == "1":
            pytest.fail(msg + " and HOTPIXEL_SHM_REQUIRE_CLIENTS=1 requires it")
        pytest.skip(msg)
    return path


def _run(cmd, **kw):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=TIMEOUT, **kw)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd[0]} failed ({proc.returncode}): "
                             f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return proc


def read_pnm(path) -> np.ndarray:
    """A binary PGM/PPM (8 or 16 bit) as (h, w) or (h, w, 3)."""
    with open(path, "rb") as f:
        data = f.read()
    fields, pos = [], 0
    while len(fields) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    pos += 1
    magic, w, h, maxval = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
    channels = 1 if magic == b"P5" else 3
    dtype = np.dtype(">u2") if maxval > 255 else np.dtype("u1")
    arr = np.frombuffer(data, dtype, count=w * h * channels, offset=pos)
    return arr.reshape(h, w, channels) if channels == 3 else arr.reshape(h, w)


def version(program: str) -> str:
    """The program's version line (for the test log)."""
    need(program)
    flag = {"dcraw": [], "dcraw_emu": [], "rawtherapee-cli": ["-h"],
            "siril-cli": ["--version"], "darktable-cli": ["--version"]}[program]
    proc = subprocess.run([program] + flag, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=TIMEOUT)
    for line in proc.stdout.decode(errors="replace").splitlines():
        if any(c.isdigit() for c in line):
            return line.strip()
    return "?"


def develop_dcraw(dng, listfile, workdir) -> np.ndarray:
    """``dcraw -D -4``: raw values of dcraw's frame, one per photosite."""
    need("dcraw")
    cmd = ["dcraw", "-D", "-4", "-c"] + (["-P", str(listfile)] if listfile else []) + [str(dng)]
    out = os.path.join(workdir, "dcraw.pgm")
    with open(out, "wb") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    return read_pnm(out).astype(np.float64)


def develop_libraw(dng, listfile, workdir) -> np.ndarray:
    """``dcraw_emu`` without interpolation: each photosite's own colour only, linear."""
    need("dcraw_emu")
    out = os.path.join(workdir, "emu.ppm")
    cmd = (["dcraw_emu", "-disinterp", "-o", "0", "-4", "-M", "-r", "1", "1", "1", "1",
            "-k", "0", "-S", "65535", "-Z", out]
           + (["-P", str(listfile)] if listfile else []) + [str(dng)])
    _run(cmd)
    return read_pnm(out).astype(np.float64).sum(axis=2)


def develop_siril(dng, listfile, workdir) -> np.ndarray:
    """``siril-cli``: load the CFA image (no debayer), ``cosme_cfa`` the list, save PGM."""
    need("siril-cli")
    work = os.path.abspath(workdir)
    shutil.copy(dng, os.path.join(work, "frame.dng"))
    lines = ["requires 1.0.0", f"cd {work}", "load frame.dng"]
    if listfile:
        shutil.copy(listfile, os.path.join(work, "list.lst"))
        lines.append("cosme_cfa list.lst")
    lines.append("savepnm siril_out")
    script = os.path.join(work, "run.ssf")
    with open(script, "w") as f:
        f.write("\n".join(lines) + "\n")
    home = os.path.join(work, "home")
    os.makedirs(home, exist_ok=True)
    env = dict(os.environ, HOME=home, XDG_CONFIG_HOME=home)
    _run(["siril-cli", "-s", script], env=env)
    return read_pnm(os.path.join(work, "siril_out.pgm")).astype(np.float64)


RT_RAW_PROFILE = """[Version]
AppVersion=5.9
Version=346

[RAW Bayer]
Method=none

[RAW X-Trans]
Method=none
"""


def _rt_env(work, darkframes):
    cfg = os.path.join(work, "rtconfig")
    os.makedirs(os.path.join(cfg, "RawTherapee"), exist_ok=True)
    with open(os.path.join(cfg, "RawTherapee", "options"), "w") as f:
        f.write(f"[General]\nVersion=5.9\nMultiUser=true\nVerbose=false\n"
                f"DarkFramesPath={darkframes}\n")
    return dict(os.environ, XDG_CONFIG_HOME=cfg, XDG_CACHE_HOME=os.path.join(work, "rtcache"),
                HOME=work)


def render_rawtherapee(dng, workdir, *, profile=None, darkframes="", name="rt.tif") -> np.ndarray:
    """``rawtherapee-cli`` to a 16-bit TIFF with ``profile`` (a pp3 text; None: neutral)."""
    need("rawtherapee-cli")
    tifffile = pytest.importorskip("tifffile")
    work = os.path.abspath(workdir)
    out = os.path.join(work, name)
    cmd = ["rawtherapee-cli", "-q", "-t", "-b16", "-Y", "-o", out]
    if profile is not None:
        pp3 = os.path.join(work, "profile.pp3")
        with open(pp3, "w") as f:
            f.write(profile)
        cmd += ["-p", pp3]
    _run(cmd + ["-c", os.path.abspath(dng)], env=_rt_env(work, darkframes))
    return tifffile.imread(out).astype(np.float64)


def develop_rawtherapee(dng, listfile, workdir) -> np.ndarray:
    """RawTherapee with demosaic "none": the list as ``<Make> <Model>.badpixels``
    in its dark-frame directory; the value of a photosite is its output channels' sum."""
    work = os.path.abspath(workdir)
    darkframes = os.path.join(work, "darkframes")
    shutil.rmtree(darkframes, ignore_errors=True)
    os.makedirs(darkframes)
    if listfile:
        shutil.copy(listfile, darkframes)
    rgb = render_rawtherapee(dng, work, profile=RT_RAW_PROFILE, darkframes=darkframes)
    return rgb.sum(axis=2)


def render_darktable(dng, workdir, name="dt.tif") -> np.ndarray:
    """``darktable-cli`` with its default development to a 16-bit TIFF."""
    need("darktable-cli")
    tifffile = pytest.importorskip("tifffile")
    work = os.path.abspath(workdir)
    out = os.path.join(work, name)
    if os.path.exists(out):
        os.unlink(out)
    conf = os.path.join(work, "dtconf")
    os.makedirs(conf, exist_ok=True)
    _run(["darktable-cli", os.path.abspath(dng), out, "--core", "--configdir", conf,
          "--library", ":memory:", "--conf", "plugins/imageio/format/tiff/bpp=16"],
         env=dict(os.environ, HOME=work))
    return tifffile.imread(out).astype(np.float64)


def _detail(a: np.ndarray) -> np.ndarray:
    """Photosite-scale detail: log values minus their local mean (gains and
    gamma of the program's output matter little then)."""
    from scipy import ndimage
    a = np.log1p(np.maximum(a, 0))
    return a - ndimage.uniform_filter(a, 7)


def locate(frame: np.ndarray, mosaic: np.ndarray, search: int = 24):
    """``(dy, dx)``: where ``frame`` (a program's output) sits in the full ``mosaic``.

    The offset whose crop of the mosaic correlates best with the frame, on
    photosite-scale detail: the scenes' photosite noise makes the true offset
    stand out.
    """
    from scipy.signal import fftconvolve
    h, w = frame.shape
    f = _detail(frame)
    f = f - f.mean()
    m = _detail(mosaic)[:h + search, :w + search]
    m = m - m.mean()
    num = fftconvolve(m, f[::-1, ::-1], mode="valid")
    energy = fftconvolve(m * m, np.ones_like(f), mode="valid")
    score = num / np.sqrt(np.maximum(energy, 1e-12))
    dy, dx = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(dy), int(dx)
