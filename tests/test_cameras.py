"""Real photo folders: camera bodies from EXIF, one body by default, every
body on request, --camera, per-body outputs, and defect history (--compare).

The folder: two bodies of one model (different serials, different planted
defects), a phone of another size, photos without EXIF and one with a
damaged EXIF block, all written as real JPEG/PNG files with real EXIF blocks.
"""
import json
import os

import pytest

import hotpixel_shm
from hotpixel_shm.camera import Camera, Shot, capture_unix, exif_bytes, from_tiff_file
from hotpixel_shm.cli import main
from hotpixel_shm.inputs import probe
from hotpixel_shm.synth import write_sample_set

BODY_A = Camera("NIKON CORPORATION", "NIKON D750", "3012345")
BODY_B = Camera("NIKON CORPORATION", "NIKON D750", "3099999")
PHONE = Camera("Apple", "iPhone 12")
W, H = 160, 120


def _exif(cam, day0):
    def block(i):
        return exif_bytes(cam, Shot(f"2026-{day0[0]:02d}-{day0[1] + i:02d}T10:00:00",
                                    (100, 200, 400)[i % 3], (1 / 250, 1 / 60)[i % 2]))
    return block


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("Pictures")
    a = write_sample_set(root, n=10, width=W, height=H, seed=21, exif=_exif(BODY_A, (5, 1)),
                         prefix="DSC_a")
    b = write_sample_set(root, n=8, width=W, height=H, seed=22, exif=_exif(BODY_B, (6, 1)),
                         prefix="DSC_b")
    write_sample_set(root, n=4, width=120, height=90, seed=13, exif=_exif(PHONE, (7, 1)),
                     prefix="IMG")
    write_sample_set(root, n=3, width=W, height=H, seed=14, fmt="png", prefix="export")
    # a damaged EXIF block: an IFD that claims more entries than the block holds
    bad = exif_bytes(BODY_A)[:24]
    write_sample_set(root, n=1, width=W, height=H, seed=15, exif=lambda i: bad, prefix="broken")
    return root, a.truth, b.truth


def _near(defects, truth, r=1):
    return [t for t in truth if any(abs(d["x"] - t.x) <= r and abs(d["y"] - t.y) <= r
                                    for d in defects)]


def _own(defects, mine, other):
    """Every defect reported is one planted in this body, none is the other
    body's, and some of this body's are found (how many is detection's
    business, tested in test_detect)."""
    stray = [d for d in defects if not _near([d], mine)]
    assert not stray, stray
    assert not _near(defects, other)
    assert len(_near(defects, mine)) >= len(mine) // 3
    return True


def _load(path):
    with open(path) as fh:
        return json.load(fh)


def test_headers_name_the_body_and_the_shot(folder):
    root, _, _ = folder
    h = probe(str(root / "DSC_a_0002.jpg"))
    assert h.camera == BODY_A and h.camera.label == "NIKON D750 #3012345"
    assert h.shot == Shot("2026-05-03T10:00:00", 400.0, 1 / 250)
    assert h.metadata_problem is None
    assert probe(str(root / "export_0000.png")).camera == hotpixel_shm.camera.UNKNOWN
    broken = probe(str(root / "broken_0000.jpg"))
    assert not broken.camera.known and "EXIF" in broken.metadata_problem
    assert BODY_A.file_tag == "NIKON_D750_3012345" and PHONE.label == "Apple iPhone 12"


def test_default_run_uses_one_body_and_names_the_others(folder, tmp_path, capsys):
    root, truth_a, truth_b = folder
    js = str(tmp_path / "defects.json")
    assert main(["-q", "--workers", "2", str(root), "--json", js]) == 0
    err = capsys.readouterr().err
    assert err.count("another camera: NIKON D750 #3099999 (8 files); --all-cameras analyses each") == 8
    assert err.count("another camera: Apple iPhone 12 (4 files)") == 4
    assert err.count("another camera: unknown camera (4 files)") == 4
    rep = _load(js)
    assert rep["camera"] == {"make": "NIKON CORPORATION", "model": "NIKON D750", "serial": "3012345"}
    assert rep["images"]["used"] == 10
    assert len(rep["images"]["skipped"]) == 16
    assert _own(rep["defects"], truth_a, truth_b)
    cond = rep["conditions"]
    assert cond["iso"] == {"min": 100.0, "median": 200.0, "max": 400.0}
    assert cond["exposure_time"]["min"] == pytest.approx(1 / 250)
    assert cond["captured"]["first"] == "2026-05-01T10:00:00"
    assert cond["captured"]["last"] == "2026-05-10T10:00:00"
    assert cond["captured"]["last_unix"] == capture_unix("2026-05-10T10:00:00")
    counts = rep["counts"]
    assert sum(counts["kind"].values()) == len(rep["defects"])
    assert set(counts["channel"]) == {"0", "1", "2"}


def test_all_cameras_gives_each_body_its_own_report(folder, tmp_path, capsys):
    root, truth_a, truth_b = folder
    out = tmp_path / "out"
    out.mkdir()
    rt = tmp_path / "rt"
    rt.mkdir()
    assert main(["--workers", "1", "--all-cameras", str(root), "--json", str(out / "defects.json"),
                 "--rawtherapee", str(rt)]) == 0
    cap = capsys.readouterr()
    a = _load(out / "defects.NIKON_D750_3012345.json")
    b = _load(out / "defects.NIKON_D750_3099999.json")
    phone = _load(out / "defects.Apple_iPhone_12.json")
    unknown = _load(out / "defects.unknown_camera.json")
    assert a["camera"]["serial"] == "3012345" and b["camera"]["serial"] == "3099999"
    assert a["images"]["used"] == 10 and b["images"]["used"] == 8
    assert phone["shape"] == [90, 120, 3] and unknown["images"]["used"] == 4
    # each body's defects are its own, and nobody else's
    assert _own(a["defects"], truth_a, truth_b) and _own(b["defects"], truth_b, truth_a)
    assert sorted(os.listdir(rt)) == ["Apple iPhone 12.badpixels", "Nikon D750 3012345.badpixels",
                                      "Nikon D750 3099999.badpixels"]
    assert "unknown camera" in cap.err and "RawTherapee" in cap.err  # no name for it: said so
    table = cap.out[cap.out.index("camera  "):]
    assert "NIKON D750 #3012345" in table and "defects.NIKON_D750_3099999.json" in table


def test_camera_option_selects(folder, tmp_path, capsys):
    root, truth_a, truth_b = folder
    js = str(tmp_path / "b.json")
    assert main(["-q", "--camera", "3099", str(root), "--json", js]) == 0
    rep = _load(js)
    assert rep["camera"]["serial"] == "3099999" and rep["images"]["used"] == 8
    assert "not matching --camera '3099'" in capsys.readouterr().err
    assert main(["-q", "--camera", "canon", str(root)]) == 1
    err = capsys.readouterr().err
    assert "no photo's camera matches --camera 'canon'" in err and "Apple iPhone 12 (4)" in err


def test_compare_new_persisting_gone_and_the_dcraw_time(folder, tmp_path, capsys):
    root, truth_a, _ = folder
    first = str(tmp_path / "first.json")
    assert main(["-q", str(root), "--json", first]) == 0
    old = _load(first)
    kept, dropped = old["defects"][1:], old["defects"][0]
    for d in kept:
        d["first_seen"] = "2025-11-02"
    ghost = {"x": 3, "y": 100, "channels": [0], "kind": "hot", "mean": 1, "std": 1,
             "neighbour_mean": 1, "score": 9}
    old["defects"] = kept + [ghost]
    old["conditions"]["captured"] = {"first": "2026-04-01T09:00:00", "last": "2026-05-02T18:30:00"}
    old_path = str(tmp_path / "old.json")
    with open(old_path, "w") as fh:
        json.dump(old, fh)
    js, dc = str(tmp_path / "new.json"), str(tmp_path / "bad.txt")
    assert main(["-q", str(root), "--compare", old_path, "--json", js, "--dcraw", dc]) == 0
    out = capsys.readouterr().out
    assert f"1 new, {len(kept)} persisting, 1 gone since 2026-05-02" in out
    rep = _load(js)
    status = {(d["x"], d["y"]): (d["status"], d["first_seen"]) for d in rep["defects"]}
    assert status[(dropped["x"], dropped["y"])] == ("new", "2026-05-10")
    assert all(status[(d["x"], d["y"])] == ("persisting", "2025-11-02") for d in kept)
    assert [(g["x"], g["y"]) for g in rep["history"]["gone"]] == [(3, 100)]
    assert rep["history"]["since"] == "2026-05-02"
    with open(dc) as fh:
        rows = {(int(c), int(r)): int(t) for c, r, t in (ln.split() for ln in fh if ln[0] != "#")}
    assert rows[(dropped["x"], dropped["y"])] == capture_unix("2026-05-02T18:30:00") > 0
    assert all(rows[(d["x"], d["y"])] == 0 for d in kept)


def test_a_report_of_another_body_or_shape_is_refused(folder, tmp_path, capsys):
    root, _, _ = folder
    b = str(tmp_path / "b.json")
    assert main(["-q", "--camera", "3099999", str(root), "--json", b]) == 0
    assert main(["-q", str(root), "--compare", b]) == 1
    assert ("is a report of NIKON D750 #3099999, this run analyses NIKON D750 #3012345"
            in capsys.readouterr().err)
    phone = str(tmp_path / "p.json")
    assert main(["-q", "--camera", "iphone", str(root), "--json", phone]) == 0
    rep = _load(phone)
    rep["camera"] = {"make": None, "model": None, "serial": None}
    with open(phone, "w") as fh:
        json.dump(rep, fh)
    assert main(["-q", str(root), "--compare", phone]) == 1
    assert "is a report of a 120x90x3 frame" in capsys.readouterr().err


def test_the_python_api(folder, tmp_path):
    root, truth_a, truth_b = folder
    seen = []
    result = hotpixel_shm.analyse(root, workers=1, all_cameras=True, camera="nikon",
                                  progress=lambda done, total, skipped: seen.append(total))
    assert [a.camera for a in result] == [BODY_A, BODY_B]
    a, b = result
    assert isinstance(a, hotpixel_shm.Analysis) and a.plan.workers == 1 and seen
    assert a.stats.n == 10 and a.stats.camera == BODY_A
    assert _own([d.to_dict() for d in a.defects], truth_a, truth_b)
    assert _own([d.to_dict() for d in b.defects], truth_b, truth_a)
    assert any(reason.startswith("another camera: Apple iPhone 12") for _, reason in a.skipped)
    rep = a.report()
    assert rep["camera"]["serial"] == "3012345" and rep["engine"]["tier"] == rep["engine"]["dtype"]
    written = a.write(json=tmp_path / "a.json", dcraw=tmp_path / "a.txt")
    assert written == [str(tmp_path / "a.json"), str(tmp_path / "a.txt")]
    with pytest.raises(hotpixel_shm.HotPixelError, match="a history compares one camera body"):
        b.compare(a.report())
    history = a.compare(a.report())  # a report of itself: everything persists
    assert history["new"] == 0 and history["gone"] == []
    assert all(d.status == "persisting" and d.bad_since == 0 for d in a.defects)
    # the default: one body, the one with the most photos
    (only,) = hotpixel_shm.analyse([str(root)], workers=1)
    assert only.camera == BODY_A
    with pytest.raises(hotpixel_shm.TooFewImages):
        hotpixel_shm.analyse(str(root / "IMG_0000.jpg"), workers=1)


def test_raw_headers_name_the_body(tmp_path):
    pytest.importorskip("rawpy")
    from hotpixel_shm.dng import write_dng
    import numpy as np
    p = str(tmp_path / "x.dng")
    write_dng(p, np.full((64, 96), 100, np.uint16), make="Canon", model="Canon EOS 6D",
              serial="083021001234")
    cam, shot = from_tiff_file(p)  # the DNG CameraSerialNumber, as there is no Exif IFD
    assert cam == Camera("Canon", "Canon EOS 6D", "083021001234") and shot == Shot()
    h = probe(p)
    assert h.camera == cam and h.camera.label == "Canon EOS 6D #083021001234"
    assert h.camera.file_tag == "Canon_EOS_6D_083021001234"


def test_saved_statistics_keep_their_body(folder, tmp_path, capsys):
    from hotpixel_shm.statsio import load_stats
    root, _, _ = folder
    st = str(tmp_path / "b.npz")
    assert main(["-q", "--camera", "3099999", str(root), "--save-stats", st]) == 0
    stats, _ = load_stats(st)
    assert stats.camera == BODY_B
    # loading them picks their body from the folder, not the one with most photos
    js = str(tmp_path / "more.json")
    assert main(["-q", "--load-stats", st, str(root), "--json", js]) == 0
    rep = _load(js)
    assert rep["camera"]["serial"] == "3099999" and rep["images"]["used"] == 16
    assert "the loaded statistics are of NIKON D750 #3099999" in capsys.readouterr().err


def test_plan_for_every_body(folder, capsys):
    root, _, _ = folder
    assert main(["-q", "--plan", "--all-cameras", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.count("Plan:") == 4 and "camera: Apple iPhone 12 (4 photo(s) to read)" in out
    with pytest.raises(SystemExit):
        main(["--all-cameras", "--load-stats", "x.npz", str(root)])


def test_iter_analyses_yields_one_body_at_a_time(folder):
    root, _, _ = folder
    it = hotpixel_shm.iter_analyses(root, workers=1, camera="nikon", all_cameras=True)
    first = next(it)
    assert first.camera == BODY_A  # the second body is not computed yet
    del first
    assert [a.camera for a in it] == [BODY_B]
    with pytest.raises(hotpixel_shm.HotPixelError, match="all_cameras cannot be combined"):
        hotpixel_shm.iter_analyses(root, all_cameras=True, load_stats="x.npz")


def test_compare_raw_defects_by_photosite(tmp_path, capsys):
    pytest.importorskip("rawpy")
    from hotpixel_shm.dng import write_raw_set
    d = tmp_path / "raw"
    write_raw_set(str(d), n=8, width=96, height=64, seed=5)
    first = str(tmp_path / "first.json")
    assert main(["-q", str(d), "--json", first]) == 0
    old = _load(first)
    assert old["camera"] == {"make": "Hotpixel", "model": "Simulated", "serial": None}
    assert set(old["counts"]["colour"]) <= {"R", "G", "B"} and old["counts"]["colour"]
    # a defect one photosite away from one of OLD's is another photosite: new, and OLD's is gone
    moved = dict(old["defects"][0], x=old["defects"][0]["x"] + 1)
    old["defects"] = [moved] + old["defects"][1:]
    path = str(tmp_path / "old.json")
    with open(path, "w") as fh:
        json.dump(old, fh)
    js = str(tmp_path / "new.json")
    assert main(["-q", str(d), "--compare", path, "--json", js]) == 0
    rep = _load(js)
    n = len(rep["defects"])
    assert f"1 new, {n - 1} persisting, 1 gone" in capsys.readouterr().out
    assert [(g["x"], g["y"]) for g in rep["history"]["gone"]] == [(moved["x"], moved["y"])]


def test_compare_with_all_cameras_compares_the_reports_body_only(folder, tmp_path, capsys):
    root, _, _ = folder
    a = str(tmp_path / "a.json")
    assert main(["-q", "--camera", "3012345", str(root), "--json", a]) == 0
    out = tmp_path / "out"
    out.mkdir()
    assert main(["-q", "--all-cameras", "--camera", "nikon", str(root), "--compare", a,
                 "--json", str(out / "r.json")]) == 0
    cap = capsys.readouterr()
    assert "persisting, 0 gone" in cap.out
    assert _load(out / "r.NIKON_D750_3012345.json")["history"]["new"] == 0
    assert "history" not in _load(out / "r.NIKON_D750_3099999.json")
