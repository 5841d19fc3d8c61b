"""timeprobe.plotting: every figure renders to a PNG with physical axes and readable labels (Agg, no baselines)."""
import subprocess
import sys

import numpy as np
import pytest

import models
import timeprobe as tp
from timeprobe import acquisition as acq
from timeprobe import plotting

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


@pytest.fixture(scope="module")
def pair():
    true = models.synthetic_thrust(nx=81, nz=31, spacing=(50.0, 25.0), water_depth=100.0, nbl=4)
    return true, models.initial_model(true, 150.0)


@pytest.fixture(scope="module")
def model3d():
    return models.synthetic_thrust_3d(nx=41, ny=31, nz=25, spacing=(50.0, 40.0, 25.0), water_depth=100.0, nbl=4)


def _png(path):
    """The image saved at ``path``: it exists, is a PNG and has pixels."""
    import matplotlib.image
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) > 100
    return img


def _colorbar_labels(fig):
    return {a.get_ylabel() for a in fig.axes} | {a.get_xlabel() for a in fig.axes}


def _boxes_overlap(a, b):
    return not (a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0)


def test_import_is_lazy():
    """Importing timeprobe.plotting (or timeprobe) loads no matplotlib."""
    code = "import sys, timeprobe.plotting; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plot_model_axes_in_km_depth_down(pair, tmp_path):
    true, _ = pair
    fig = plotting.plot_model(true, title="true", path=tmp_path / "model.png")
    _png(tmp_path / "model.png")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "x (km)" and ax.get_ylabel() == "depth (km)" and ax.get_title() == "true"
    # cell edges in km: x from −dx/2 to X + dx/2; depth pointing down (top > bottom in data coordinates)
    np.testing.assert_allclose(ax.get_xlim(), (-0.025, 4.025))
    np.testing.assert_allclose(ax.get_ylim(), (0.7625, -0.0125))
    assert "vp (km/s)" in _colorbar_labels(fig)
    im = ax.get_images()[0]
    np.testing.assert_allclose(im.get_clim(), (true.vp.min(), true.vp.max()))
    # squared slowness, from an array and a spacing
    fig = plotting.plot_model(true.m, quantity="m", grid=(50.0, 25.0), path=tmp_path / "m.png")
    assert "squared slowness m (s²/km²)" in _colorbar_labels(fig)
    with pytest.raises(ValueError, match="grid is required"):
        plotting.plot_model(true.vp)
    with pytest.raises(ValueError, match="quantity"):
        plotting.plot_model(true, quantity="velocity")


def test_plot_models_titles_never_overlap_labels(pair, tmp_path):
    """The Overthrust FWI figure's bug: lower panels' titles overlapped the upper panels' x labels."""
    true, init = pair
    panels = {"true": true, "initial": init, "exact": true, "probed QR r=32": init, "probed QR r=8": init}
    fig = plotting.plot_models(panels, title="synthetic", path=tmp_path / "models.png")
    _png(tmp_path / "models.png")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    axes = [a for a in fig.axes if a.get_title() in panels]
    assert len(axes) == 5
    texts = [t for a in axes for t in (a.title, a.xaxis.label, a.yaxis.label)]
    for a in axes:      # the tick labels drawn (the locator also labels ticks outside the view)
        (x0, x1), (y0, y1) = sorted(a.get_xlim()), sorted(a.get_ylim())
        texts += [lab for lab in a.get_xticklabels() if lab.get_text() and x0 <= lab.get_position()[0] <= x1]
        texts += [lab for lab in a.get_yticklabels() if lab.get_text() and y0 <= lab.get_position()[1] <= y1]
    boxes = [t.get_window_extent(renderer) for t in texts]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not _boxes_overlap(boxes[i], boxes[j]), (texts[i].get_text(), texts[j].get_text())
    # one colour scale for all panels
    clims = {a.get_images()[0].get_clim() for a in axes}
    assert len(clims) == 1
    with pytest.raises(ValueError, match="3D"):
        plotting.plot_models({"a": models.synthetic_thrust_3d(7, 5, 9, spacing=10.0, water_depth=20.0)})


def test_plot_profiles(pair, tmp_path):
    true, init = pair
    fig = plotting.plot_profiles({"true": true, "initial": init}, x=[1000.0, 3000.0],
                                 styles={"true": dict(color="k", lw=2)}, path=tmp_path / "profiles.png")
    _png(tmp_path / "profiles.png")
    axs = [a for a in fig.axes if a.get_visible()]
    assert [a.get_title() for a in axs] == ["x = 1.00 km", "x = 3.00 km"]
    assert axs[0].get_xlabel() == "vp (km/s)" and axs[0].get_ylabel() == "depth (km)"
    assert axs[0].get_ylim()[0] > axs[0].get_ylim()[1]                       # depth down
    np.testing.assert_allclose(axs[0].lines[0].get_xdata(), true.vp[20])     # x = 1 km is column 20
    with pytest.raises(ValueError, match="outside the model's x range"):
        plotting.plot_profiles({"true": true}, x=[5000.0])


def test_plot_image_and_gradient_symmetric_clip(pair, tmp_path):
    true, _ = pair
    rng = np.random.default_rng(0)
    img = rng.standard_normal(true.shape)
    img[40, 10] = 1e3                                     # one strong event must not set the scale
    fig = plotting.plot_image(img, true, title="RTM", path=tmp_path / "image.png")
    _png(tmp_path / "image.png")
    lo, hi = fig.axes[0].get_images()[0].get_clim()
    assert lo == -hi and hi == pytest.approx(np.percentile(np.abs(img), 98))
    assert fig.axes[0].get_xlabel() == "x (km)" and "image amplitude" in _colorbar_labels(fig)
    fig = plotting.plot_gradient(img, (50.0, 25.0), origin=(1000.0, 0.0), vmax=2.0, path=tmp_path / "g.png")
    _png(tmp_path / "g.png")
    assert fig.axes[0].get_images()[0].get_clim() == (-2.0, 2.0)
    np.testing.assert_allclose(fig.axes[0].get_xlim(), (0.975, 5.025))       # the origin shifts the axis
    assert "gradient ∂f/∂m" in _colorbar_labels(fig)
    with pytest.raises(ValueError, match="clip"):
        plotting.plot_image(img, true, clip=0.0)
    with pytest.raises(ValueError, match="the array is 3D, the model 2D"):
        plotting.plot_image(np.zeros((3, 3, 3)), true)


def test_plot_slices_of_3d_model_and_array(model3d, tmp_path):
    fig = plotting.plot_slices(model3d, x=1000.0, y=600.0, z=300.0, title="3D", path=tmp_path / "slices.png")
    _png(tmp_path / "slices.png")
    inline, crossline, depth = (a for a in fig.axes if a.get_images())
    assert inline.get_title() == "inline, y = 0.60 km" and (inline.get_xlabel(), inline.get_ylabel()) == \
        ("x (km)", "depth (km)")
    assert crossline.get_title() == "crossline, x = 1.00 km" and crossline.get_xlabel() == "y (km)"
    assert depth.get_title() == "depth slice, z = 0.30 km" and (depth.get_xlabel(), depth.get_ylabel()) == \
        ("x (km)", "y (km)")
    # the panels show the requested planes
    np.testing.assert_array_equal(inline.get_images()[0].get_array().T, model3d.vp[:, 15, :])
    np.testing.assert_array_equal(crossline.get_images()[0].get_array().T, model3d.vp[20, :, :])
    np.testing.assert_array_equal(depth.get_images()[0].get_array().T, model3d.vp[:, :, 12])
    np.testing.assert_allclose(depth.get_ylim(), (-0.02, 1.22))              # map view: y up
    assert "vp (km/s)" in _colorbar_labels(fig)
    # an array (e.g. a 3D gradient) with a symmetric clip, and a 3D image through plot_image
    g = np.random.default_rng(1).standard_normal(model3d.shape)
    fig = plotting.plot_slices(g, model3d, clip=95.0, label="gradient", path=tmp_path / "g3.png")
    lo, hi = fig.axes[0].get_images()[0].get_clim()
    assert lo == -hi and hi == pytest.approx(np.percentile(np.abs(g), 95))
    plotting.plot_image(g, model3d, path=tmp_path / "img3.png")
    _png(tmp_path / "img3.png")
    with pytest.raises(ValueError, match="slice position z = 5000 m lies outside"):
        plotting.plot_slices(model3d, z=5000.0)
    with pytest.raises(ValueError, match="3D"):
        plotting.plot_slices(np.zeros((4, 4)), 10.0)


def _gather_case():
    model = tp.Model(vp=np.full((101, 41), 2.0, np.float32), spacing=10.0, nbl=4)
    s = acq.survey(model, acq.line(0, 1000, 400.0, depth=10.0, centred=True), acq.line(0, 1000, 20.0, depth=10.0),
                   dt=4.0, t=800.0, f0=0.015)
    rng = np.random.default_rng(2)
    d = tp.Data(s.rec, [rng.standard_normal((s.rec.nt, s.rec.npoints(i))) for i in range(s.rec.nshots)])
    return model, s, d


def test_plot_shot_time_in_s_and_offset_in_km(tmp_path):
    model, s, d = _gather_case()
    fig = plotting.plot_shot(d, shot=1, path=tmp_path / "shot.png")
    _png(tmp_path / "shot.png")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "receiver x (km)" and ax.get_ylabel() == "time (s)" and ax.get_title() == "shot 1"
    np.testing.assert_allclose(ax.get_xlim(), (-0.01, 1.01))
    np.testing.assert_allclose(ax.get_ylim(), (0.802, -0.002))               # time down, in s
    lo, hi = ax.get_images()[0].get_clim()
    assert lo == -hi and hi == pytest.approx(np.percentile(np.abs(d.arrays[1]), 99))
    fig = plotting.plot_shot(d, shot=1, src=s.q, clip=90.0, path=tmp_path / "offset.png")
    sx = s.src.coordinates[1][0, 0]
    assert fig.axes[0].get_xlabel() == "offset (km)"
    np.testing.assert_allclose(fig.axes[0].get_xlim(), ((-10 - sx) / 1e3, (1010 - sx) / 1e3))
    # a bare array: trace numbers, or positions when given
    fig = plotting.plot_shot(d.arrays[0], dt=4.0, path=tmp_path / "array.png")
    assert fig.axes[0].get_xlabel() == "trace"
    fig = plotting.plot_shot(d.arrays[0], dt=4.0, x=np.geomspace(1.0, 1000.0, 51), path=tmp_path / "irregular.png")
    assert fig.axes[0].get_xlabel() == "receiver x (km)" and fig.axes[0].collections     # pcolormesh
    with pytest.raises(ValueError, match="dt"):
        plotting.plot_shot(d.arrays[0])
    with pytest.raises(ValueError, match="shot 5 requested"):
        plotting.plot_shot(d, shot=5)


def test_plot_acquisition_2d_and_3d_map(pair, model3d, tmp_path):
    true, _ = pair
    s = acq.survey(true, acq.line(0, 4000, 1000.0, depth=10.0, centred=True), acq.line(0, 4000, 100.0, depth=100.0),
                   dt=4.0, t=1000.0)
    fig = plotting.plot_acquisition(s.src, s.rec, model=true, path=tmp_path / "acq2d.png")
    _png(tmp_path / "acq2d.png")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "x (km)" and ax.get_ylabel() == "depth (km)"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["receivers (41)", "sources (5 shots)"]
    np.testing.assert_allclose(ax.lines[1].get_xdata(), np.concatenate(s.src.coordinates)[:, 0] / 1e3)
    # 3D map view with per-shot patches and one shot highlighted
    nodes = acq.grid((0, 1600), (0, 1200), 200.0, depth=100.0)
    shots = acq.grid((400, 1200), (400, 800), 400.0, depth=10.0)
    pat = acq.patches(shots, nodes, 400.0)
    fig = plotting.plot_acquisition(shots, pat, model=model3d, shot=2, path=tmp_path / "acq3d.png")
    _png(tmp_path / "acq3d.png")
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x (km)", "y (km)") and ax.get_title() == "acquisition, map view"
    lines = {ln.get_label(): ln for ln in ax.lines}
    np.testing.assert_allclose(lines["receivers of shot 2"].get_xdata(), pat[2][:, 0] / 1e3)
    np.testing.assert_allclose(lines["source of shot 2"].get_ydata(), shots[2, 1:2] / 1e3)
    assert len(lines["receivers"].get_xdata()) == len(nodes)
    with pytest.raises(ValueError, match="shot 9 requested"):
        plotting.plot_acquisition(shots, pat, shot=9)
    with pytest.raises(ValueError, match="3D timeprobe.Model"):
        plotting.plot_acquisition(shots, nodes, model=true)


def test_plot_convergence_objective_and_model_error(tmp_path):
    hist = {"exact": dict(iteration=[0, 1, 2, 3], objective=[np.nan, 4.0, 2.0, 1.0], rel_error=[0.3, 0.2, 0.15, 0.1]),
            "probed r=8": dict(objective=[np.nan, 4.0, 2.5, 1.5], rel_error=[0.3, 0.22, 0.17, 0.12])}
    fig = plotting.plot_convergence(hist, title="FWI", path=tmp_path / "conv.png")
    _png(tmp_path / "conv.png")
    f_ax, e_ax = (a for a in fig.axes if a.get_visible())
    assert f_ax.get_yscale() == "log" and f_ax.get_xlabel() == "iteration" and e_ax.get_ylabel() == \
        "relative model error"
    np.testing.assert_array_equal(f_ax.lines[0].get_xdata(), [1, 2, 3])        # the NaN at iteration 0 skipped
    np.testing.assert_array_equal(e_ax.lines[1].get_ydata(), [0.3, 0.22, 0.17, 0.12])
    # objective only: one panel, drawn on a given Axes
    fig0, ax = plotting.figure()
    assert plotting.plot_convergence({"run": [3.0, 2.0, 1.0]}, ax=ax, logy=False) is fig0
    assert len(ax.lines) == 1 and ax.get_yscale() == "linear"
    with pytest.raises(ValueError, match="this figure needs 2 axes"):
        plotting.plot_convergence(hist, ax=ax)
    with pytest.raises(ValueError, match="differ in length"):
        plotting.plot_convergence({"bad": dict(objective=[1.0, 2.0], rel_error=[0.1])})


def test_plot_accuracy_and_pareto(tmp_path):
    fig = plotting.plot_accuracy({"QR": ([2, 4, 8], [0.6, 0.8, 0.9]), "gaussian": ([2, 4, 8], [0.1, 0.2, 0.3])},
                                 path=tmp_path / "acc.png")
    _png(tmp_path / "acc.png")
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_xlabel() == "number of probes r"
    mem, cos = [1600.0, 33.5, 34.0, 200.0, 60.0], [1.0, 0.77, 0.957, 1.0, 0.9]
    names = ["full", "dft", "probe r=32", "checkpointing", "nyquist"]
    assert plotting.pareto_front(mem, cos) == [1, 2, 3]       # full is beaten by checkpointing, nyquist by r=32
    fig = plotting.plot_pareto(mem, cos, names, times=[2.5, 1.6, 1.04, 4.1, 1.3], path=tmp_path / "pareto.png")
    _png(tmp_path / "pareto.png")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "working memory (MiB)"
    texts = [t.get_text() for t in ax.texts]
    assert "probe r=32 (1.04×)" in texts and len(texts) == 5
    # runs too close to label apart share one label, a line per run
    fig = plotting.plot_pareto([34.0, 34.5, 1600.0], [0.957, 0.956, 1.0], ["r=32 B=4", "r=32 B=8", "full"],
                               times=[1.04, 1.1, 2.5])
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["full (2.50×)", "r=32 B=4 (1.04×)\nr=32 B=8 (1.10×)"]
    front = [ln for ln in ax.lines if ln.get_label() == "Pareto front"][0]
    np.testing.assert_array_equal(front.get_xdata(), [33.5, 34.0, 200.0])
    with pytest.raises(ValueError, match="one entry per run"):
        plotting.plot_pareto(mem, cos[:3], names)


def test_files_are_never_overwritten_unless_asked(pair, tmp_path):
    true, _ = pair
    p = tmp_path / "sub" / "m.png"
    plotting.plot_model(true, path=p)                      # the folder is created
    before = p.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        plotting.plot_model(true, path=p, cmap="gray")
    assert p.read_bytes() == before
    plotting.plot_model(true, path=p, cmap="gray", overwrite=True)
    assert p.read_bytes() != before
    fig, _ = plotting.figure()
    assert plotting.save(fig, tmp_path / "noext") == tmp_path / "noext.png"


def test_plot_gathers_panels_at_positions(pair, tmp_path):
    """Common-image gathers: one offset panel per position, ticks at the positions (km), depth down."""
    true, _ = pair
    offsets = np.array([-100.0, -50.0, 0.0, 50.0, 100.0])
    g = np.zeros((5,) + true.shape, np.float32)
    g[2] = 1.0  # all energy at h = 0
    fig = plotting.plot_gathers(g, true, positions=[1000.0, 2000.0, 3000.0], offsets=offsets, title="CIGs",
                                path=tmp_path / "cig.png")
    _png(tmp_path / "cig.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1.00", "2.00", "3.00"]
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # depth down
    strip = ax.get_images()[0].get_array()
    assert strip.shape[1] == 3 * 5 + 2  # three panels of five offsets, one-column gaps
    col = np.nan_to_num(np.asarray(strip)).sum(axis=0)
    assert col[2] > 0 and col[0] == 0  # the h = 0 column of the first panel carries the energy
    with pytest.raises(ValueError, match="inside the model"):
        plotting.plot_gathers(g, true, positions=[1e6], offsets=offsets)
    with pytest.raises(ValueError, match="offsets"):
        plotting.plot_gathers(g, true)
