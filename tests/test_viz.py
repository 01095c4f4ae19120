"Image helpers: grid arithmetic, atomic PNG/GIF writes and their errors (instant3d.viz)."
import os, stat
from unittest import mock
import numpy as np, pytest, torch
from PIL import Image
from instant3d.viz import image_grid, to_pil, save_png, save_gif, depth_to_rgb, normal_to_rgb, label_grid

@pytest.mark.parametrize("n,nrow,pad", [(1, 8, 2), (5, 2, 1), (8, 4, 0), (7, 3, 3)])
def test_grid_shape(n, nrow, pad):
    g = image_grid(torch.rand(n, 3, 6, 5), nrow=nrow, pad=pad)
    cols = min(nrow, n); rows = -(-n // cols)
    assert g.shape == (3, rows * (6 + pad) + pad, cols * (5 + pad) + pad)

def test_grid_rejects_out_of_range():
    with pytest.raises(ValueError, match="values must lie in"): image_grid(torch.rand(2, 3, 4, 4) + 1)
    with pytest.raises(ValueError, match="channels"): image_grid(torch.rand(2, 2, 4, 4))

def test_png_round_trip_and_no_temp_file(tmp_path):
    x = torch.rand(3, 9, 13)
    p = save_png(x, tmp_path / "a.png")
    back = torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(back, x, atol=0.5 / 255 + 1e-6, rtol=0)
    assert os.listdir(tmp_path) == ["a.png"]
    assert to_pil(torch.rand(9, 13, 3)).size == (13, 9) and to_pil(torch.rand(1, 9, 13)).mode == "L"

def test_failed_write_leaves_nothing(tmp_path):
    with mock.patch.object(Image.Image, "save", side_effect=RuntimeError("disk full")):
        with pytest.raises(RuntimeError): save_png(torch.rand(3, 4, 4), tmp_path / "a.png")
    assert os.listdir(tmp_path) == []

def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"): save_png(torch.rand(3, 4, 4), tmp_path / "no" / "a.png")

def test_unwritable_folder(tmp_path):
    with mock.patch("tempfile.mkstemp", side_effect=PermissionError(13, "Permission denied")):
        with pytest.raises(PermissionError, match="not writable"): save_png(torch.rand(3, 4, 4), tmp_path / "a.png")
    if os.geteuid() == 0: pytest.skip("root may write into read-only folders")
    ro = tmp_path / "ro"; ro.mkdir(); ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(PermissionError, match="not writable"): save_png(torch.rand(3, 4, 4), ro / "a.png")
    finally: ro.chmod(stat.S_IRWXU)

def test_gif(tmp_path):
    p = save_gif(torch.rand(5, 3, 8, 8), tmp_path / "t.gif", fps=20)
    im = Image.open(p)
    assert im.n_frames == 5 and im.info["duration"] == 50 and os.listdir(tmp_path) == ["t.gif"]
    with pytest.raises(ValueError): save_gif(torch.rand(2, 3, 8, 8), tmp_path / "u.gif", fps=0)

def test_depth_normal_empty_white():
    op = torch.zeros(2, 1, 6, 6); op[:, :, 2:4, 2:4] = 1
    depth = torch.where(op > 0, torch.rand(2, 1, 6, 6) + 2, torch.tensor(float("inf")))
    normal = torch.nn.functional.normalize(torch.randn(2, 3, 6, 6), dim=1) * op
    for rgb in (depth_to_rgb(depth, op), normal_to_rgb(normal), normal_to_rgb(normal, op)):
        assert rgb.shape == (2, 3, 6, 6) and rgb.min() >= 0 and rgb.max() <= 1
        assert (rgb[:, :, 0] == 1).all()

def test_label_grid():
    import matplotlib; matplotlib.use("Agg")
    fig = label_grid(torch.rand(3, 3, 8, 8), ["a", "b", "c"], nrow=2)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["a", "b", "c"]
    with pytest.raises(ValueError): label_grid(torch.rand(3, 3, 8, 8), ["a"])
