"""Each program's frame, worked out from a raw file's metadata (issue 12).

The real programs check these frames in test_clients.py; here the
arithmetic and the header notes, without the programs.
"""
import numpy as np
import pytest

from hotpixel_shm import export
from hotpixel_shm.dng import write_dng
from hotpixel_shm.frames import active_area, frames_for_inputs, program_frames
from hotpixel_shm.model import Defect

MOSAIC = (np.arange(64 * 80).reshape(64, 80) % 3000 + 100).astype(np.uint16)


@pytest.mark.parametrize("margins, libraw, dcraw_shift", [
    (None, (0, 0), (0, 0)),
    ((4, 6, 2, 2), (4, 6), (0, 0)),
    ((7, 11, 3, 5), (8, 12), (1, 1)),       # LibRaw rounds odd Bayer margins up
    ((8, 11, 3, 5), (8, 12), (1, 0)),
])
def test_dng_frames(tmp_path, margins, libraw, dcraw_shift):
    path = tmp_path / "a.dng"
    write_dng(path, MOSAIC, margins=margins)
    area = active_area(path)
    assert area[:2] == (margins[:2] if margins else (0, 0))
    frames = program_frames(path, libraw)
    assert (frames["dcraw"].dx, frames["dcraw"].dy) == dcraw_shift
    assert (frames["rawtherapee"].dx, frames["rawtherapee"].dy) == dcraw_shift
    assert (frames["libraw"].dx, frames["libraw"].dy) == (0, 0)
    assert (frames["siril"].dx, frames["siril"].dy) == (0, 0)
    assert all(f.known for f in frames.values())


def test_libraw_reports_the_rounded_margins(tmp_path):
    pytest.importorskip("rawpy")
    path = tmp_path / "odd.dng"
    write_dng(path, MOSAIC, margins=(7, 11, 3, 5))
    frames = frames_for_inputs([str(path)])
    assert (frames["dcraw"].dx, frames["dcraw"].dy) == (1, 1)


def test_lists_shift_into_each_frame_and_say_so(tmp_path):
    path = tmp_path / "odd.dng"
    write_dng(path, MOSAIC, margins=(7, 11, 3, 5))
    frames = program_frames(path, (8, 12))
    d = [Defect(29, 23, [0], "hot", 1.0, 1.0, 1.0, 9.0)]
    export.write_dcraw(tmp_path / "d.txt", d, frames["dcraw"])
    export.write_libraw(tmp_path / "l.txt", d, frames["libraw"])
    export.write_siril(tmp_path / "s.lst", d, frames["siril"])
    export.write_rawtherapee(tmp_path / "r.badpixels", d, frame=frames["rawtherapee"])
    body = {n: [ln for ln in (tmp_path / n).read_text().splitlines() if not ln.startswith("#")]
            for n in ("d.txt", "l.txt", "s.lst", "r.badpixels")}
    assert body == {"d.txt": ["30 24 0"], "l.txt": ["29 23 0"], "s.lst": ["P 29 23 H"],
                    "r.badpixels": ["30 24"]}
    assert "ActiveArea (top 7, left 11)" in (tmp_path / "d.txt").read_text()


def test_an_unknown_frame_is_said_in_the_header(tmp_path):
    # not a DNG: dcraw's margins for the camera are compiled into dcraw
    path = tmp_path / "shot.nef"
    path.write_bytes(b"II*\0" + b"\0" * 64)
    frames = program_frames(path, (2, 4))
    assert not frames["dcraw"].known and not frames["rawtherapee"].known
    assert frames["libraw"].known and frames["siril"].known
    export.write_dcraw(tmp_path / "d.txt", [Defect(1, 2, [0], "hot", 1, 1, 1, 1)], frames["dcraw"])
    text = (tmp_path / "d.txt").read_text()
    assert "NOT VERIFIED" in text and "1 2 0" in text.splitlines()


def test_xtrans_dng_colours_come_from_the_file(tmp_path):
    # rawpy's raw_colors hold indices past "RGBG" for X-Trans DNGs of other
    # makers than Fujifilm; the file's own CFAPattern is used then
    pytest.importorskip("rawpy")
    from hotpixel_shm.dng import XTRANS_PATTERN, cfa_array
    from hotpixel_shm.rawio import probe_raw
    path = tmp_path / "x.dng"
    write_dng(path, MOSAIC, pattern=XTRANS_PATTERN, margins=(7, 11, 3, 5))
    info = probe_raw(path)
    want = cfa_array(XTRANS_PATTERN, 64, 80, origin=(7, 11))[info.top_margin:, info.left_margin:]
    assert (info.mosaic(unpack=False).tile == want[:6, :6]).all()
    assert (info.cfa == want[:info.shape[0], :info.shape[1]]).all()
