"""Figures with physical axes: models, images, gradients, 3D slices, shot gathers, acquisition, convergence.

Every function draws on the matplotlib Axes it is given (``ax``) or on a new figure,
returns the :class:`matplotlib.figure.Figure`, and saves it when ``path`` is given
(PNG unless the suffix says otherwise; an existing file is kept unless
``overwrite=True``). New figures use matplotlib's object API (no ``pyplot`` state,
so no backend to choose in scripts) with the constrained layout, so panel titles,
axis labels and colour bars never overlap. In Jupyter (after ``%matplotlib inline``) a
returned figure shows when it is a cell's value, or with ``display(fig)``.

Conventions: distances on the axes in km, depth pointing down, time in s; colour bars
carry the quantity and its unit (``vp`` in km/s, squared slowness in s²/km²). Arrays
are ``(nx, nz)`` or ``(nx, ny, nz)``, depth last, as everywhere in timeprobe; the
grid comes from a :class:`timeprobe.Model` or from a spacing in m (``grid``).

matplotlib is imported inside the functions: importing :mod:`timeprobe.plotting`
costs nothing, and the rest of timeprobe never needs matplotlib.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["figure", "save", "plot_model", "plot_models", "plot_profiles", "plot_image", "plot_gradient",
           "plot_slices", "plot_shot", "plot_acquisition", "plot_convergence", "plot_accuracy", "plot_pareto",
           "pareto_front", "plot_gathers"]

KM = 1e-3                 # m -> km
VELOCITY_CMAP = "turbo"
DPI = 120


# --------------------------------------------------------------------------- figures and files
def figure(nrows=1, ncols=1, figsize=None, squeeze=True, **subplot_kw):
    """A new figure with the constrained layout and its axes: ``fig, axes = figure(2, 3)``.

    Same ``nrows``, ``ncols``, ``squeeze`` and keyword arguments as
    :meth:`matplotlib.figure.Figure.subplots` (``sharex``, ``sharey``, ``width_ratios``...).
    The figure is not registered with ``pyplot`` (nothing to close, no backend needed).
    """
    from matplotlib.figure import Figure
    if figsize is None:
        figsize = (min(4.8 * ncols, 16.0), 3.6 * nrows)
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=squeeze, **subplot_kw)
    return fig, axes


def save(fig, path, dpi=DPI, overwrite=False):
    """Write ``fig`` to ``path`` (format from the suffix, PNG by default), creating its folder.

    Raises ``FileExistsError`` if the file exists, unless ``overwrite=True``.
    Returns the path.
    """
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _axes(ax, n=1, figsize=None, ncols=None):
    """``(fig, [axes])``: the given ``ax`` (one Axes or a sequence of ``n``) or a new figure of ``n`` panels."""
    if ax is None:
        ncols = n if ncols is None else ncols
        nrows = -(-n // ncols)
        fig, axs = figure(nrows, ncols, figsize=figsize, squeeze=False)
        axs = list(axs.flat)
        for extra in axs[n:]:
            extra.set_visible(False)
        return fig, axs[:n]
    axs = list(np.ravel(np.asarray(ax, dtype=object))) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
    if len(axs) != n:
        raise ValueError(f"this figure needs {n} axes, got {len(axs)}")
    return axs[0].figure, axs


def _finish(fig, path, overwrite, dpi=DPI):
    if path is not None:
        save(fig, path, dpi=dpi, overwrite=overwrite)
    return fig


# --------------------------------------------------------------------------- grid and values
def _grid(grid, ndim, origin=None):
    """``(spacing, origin)`` in m from a Model or a spacing (scalar or one per axis)."""
    from .model import Model
    if isinstance(grid, Model):
        if grid.dim != ndim:
            raise ValueError(f"the array is {ndim}D, the model {grid.dim}D")
        return tuple(grid.spacing), tuple(grid.origin) if origin is None else _per_axis("origin", origin, ndim)
    if grid is None:
        raise ValueError("grid is required for an array: a timeprobe.Model or the grid spacing in m")
    spacing = _per_axis("grid spacing", grid, ndim)
    if any(h <= 0 for h in spacing):
        raise ValueError(f"the grid spacing must be positive (m), got {spacing}")
    return spacing, (0.0,) * ndim if origin is None else _per_axis("origin", origin, ndim)


def _per_axis(name, value, ndim):
    v = np.asarray(value, dtype=np.float64)
    if v.ndim > 1 or v.size not in (1, ndim) or not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be one finite value or {ndim} (m), got {value!r}")
    return tuple(float(x) for x in np.broadcast_to(v, (ndim,)))


def _array(a, ndims=(2,), name="array"):
    a = np.asarray(a)
    if a.ndim not in ndims:
        raise ValueError(f"{name} must be {' or '.join(f'{d}D' for d in ndims)}, got shape {a.shape}")
    return a


def _model_values(model, quantity, grid, origin):
    """Array, ``(spacing, origin)``, colour-bar label of a Model or array of ``quantity``."""
    from .model import Model
    if quantity not in ("vp", "m"):
        raise ValueError(f"quantity must be 'vp' (km/s) or 'm' (squared slowness, s²/km²), got {quantity!r}")
    label = "vp (km/s)" if quantity == "vp" else "squared slowness m (s²/km²)"
    if isinstance(model, Model):
        a = model.vp if quantity == "vp" else model.m
        return a, _grid(model, model.dim, origin), label
    a = _array(model, (2, 3), "model")
    return a, _grid(grid, a.ndim, origin), label


def _edges(n, h, o):
    """Cell edges (km) of ``n`` samples at spacing ``h`` from ``o`` (m): what imshow's extent needs."""
    return (o - h / 2) * KM, (o + (n - 1) * h + h / 2) * KM


def _symmetric_limit(a, clip):
    """``clip``-th percentile of ``|a|`` (a positive number; 1 when ``a`` is all zero)."""
    if not 0 < clip <= 100:
        raise ValueError(f"clip is a percentile in (0, 100], got {clip}")
    a = np.abs(np.asarray(a, dtype=np.float64))
    lim = float(np.percentile(a, clip)) if a.size else 0.0
    if lim == 0:
        lim = float(a.max()) if a.size and a.max() > 0 else 1.0
    return lim


def _section(ax, a, spacing, origin, cmap, vmin, vmax, axes=("x", "depth"), title=None, map_view=False):
    """imshow of a 2D array (first axis horizontal) with physical axes in km; returns the image."""
    (x0, x1), (z0, z1) = _edges(a.shape[0], spacing[0], origin[0]), _edges(a.shape[1], spacing[1], origin[1])
    if map_view:   # y up
        im = ax.imshow(a.T, extent=(x0, x1, z0, z1), origin="lower", cmap=cmap, vmin=vmin, vmax=vmax,
                       aspect="auto", interpolation="nearest")
    else:          # depth down
        im = ax.imshow(a.T, extent=(x0, x1, z1, z0), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto",
                       interpolation="nearest")
    ax.set_xlabel(f"{axes[0]} (km)")
    ax.set_ylabel(f"{axes[1]} (km)")
    if title:
        ax.set_title(title)
    return im


# --------------------------------------------------------------------------- models
def plot_model(model, quantity="vp", grid=None, origin=None, ax=None, path=None, title=None, cmap=VELOCITY_CMAP,
               vmin=None, vmax=None, colorbar=True, figsize=None, overwrite=False):
    """Velocity (``quantity="vp"``, km/s) or squared-slowness (``"m"``, s²/km²) panel of a model.

    ``model`` is a :class:`timeprobe.Model` or an array of that quantity (then
    ``grid`` gives the spacing). A 2D model is drawn as a section (x and depth in km,
    depth down); a 3D one as :func:`plot_slices` through its centre (``ax``: three axes).
    """
    a, (spacing, origin), label = _model_values(model, quantity, grid, origin)
    if a.ndim == 3:
        return plot_slices(a, spacing, origin=origin, ax=ax, path=path, title=title, cmap=cmap, vmin=vmin,
                           vmax=vmax, label=label, figsize=figsize, overwrite=overwrite)
    fig, (ax,) = _axes(ax, figsize=figsize or (7.0, 3.2))
    im = _section(ax, a, spacing, origin, cmap, vmin, vmax, title=title)
    if colorbar:
        fig.colorbar(im, ax=ax, label=label)
    return _finish(fig, path, overwrite)


def plot_models(models, quantity="vp", grid=None, ncols=2, path=None, title=None, cmap=VELOCITY_CMAP,
                vmin=None, vmax=None, figsize=None, ax=None, overwrite=False):
    """Several 2D model panels on one colour scale (one colour bar): ``{panel title: model}``.

    Values are Models or arrays of ``quantity`` (``grid`` gives their spacing). The
    colour scale spans all panels unless ``vmin``/``vmax`` are given; ``title`` is the
    figure's title.
    """
    items = list(models.items())
    if not items:
        raise ValueError("models is empty")
    values = [_model_values(m, quantity, grid, None) for _, m in items]
    if any(a.ndim != 2 for a, _, _ in values):
        raise ValueError("plot_models draws 2D models; use plot_slices for 3D ones")
    vmin = min(float(a.min()) for a, _, _ in values) if vmin is None else vmin
    vmax = max(float(a.max()) for a, _, _ in values) if vmax is None else vmax
    ncols = min(ncols, len(items))
    nrows = -(-len(items) // ncols)
    fig, axs = _axes(ax, len(items), figsize=figsize or (6.0 * ncols, 2.8 * nrows + 0.5), ncols=ncols)
    for axi, (name, _), (a, (spacing, origin), label) in zip(axs, items, values):
        im = _section(axi, a, spacing, origin, cmap, vmin, vmax, title=name)
    fig.colorbar(im, ax=axs, label=values[0][2], shrink=0.9)
    if title:
        fig.suptitle(title)
    return _finish(fig, path, overwrite)


def plot_profiles(models, grid=None, x=None, styles=None, ax=None, path=None, title=None, figsize=None,
                  overwrite=False):
    """Vertical velocity profiles (vp in km/s against depth in km, down) at lateral positions ``x`` (m).

    ``models``: ``{label: Model or 2D vp array}`` on the same grid; ``x`` defaults to
    25, 50 and 75 % of the width (the nearest grid column is drawn); ``styles``:
    ``{label: line keyword arguments}`` (e.g. ``{"true": dict(color="k", lw=2)}``).
    """
    items = list(models.items())
    if not items:
        raise ValueError("models is empty")
    values = [_model_values(m, "vp", grid, None) for _, m in items]
    a0, (spacing, origin), _ = values[0]
    if any(a.shape != a0.shape or a.ndim != 2 for a, _, _ in values):
        raise ValueError("plot_profiles needs 2D models of one shape")
    nx, nz = a0.shape
    width = (nx - 1) * spacing[0]
    x = [origin[0] + f * width for f in (0.25, 0.5, 0.75)] if x is None else list(np.atleast_1d(x))
    cols = [int(round((xi - origin[0]) / spacing[0])) for xi in x]
    if any(not 0 <= c < nx for c in cols):
        raise ValueError(f"profile positions {x} m lie outside the model's x range "
                         f"[{origin[0]:g}, {origin[0] + width:g}] m")
    fig, axs = _axes(ax, len(cols), figsize=figsize or (3.6 * len(cols) + 0.8, 4.2))
    z = (origin[1] + spacing[1] * np.arange(nz)) * KM
    styles = styles or {}
    for axi, c in zip(axs, cols):
        for (name, _), (a, _, _) in zip(items, values):
            axi.plot(a[c], z, label=name, **styles.get(name, {}))
        axi.set_title(f"x = {(origin[0] + c * spacing[0]) * KM:.2f} km")
        axi.set_xlabel("vp (km/s)")
        axi.set_ylabel("depth (km)")
        axi.set_ylim(z[-1], z[0])
        axi.grid(alpha=0.3)
    axs[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _finish(fig, path, overwrite)


# --------------------------------------------------------------------------- images and gradients
def plot_image(image, grid, origin=None, ax=None, path=None, title=None, clip=98.0, vmax=None, cmap="gray",
               label="image amplitude", colorbar=True, figsize=None, overwrite=False):
    """A 2D image (RTM, LS-RTM) with physical axes on a symmetric colour scale ``±vmax``.

    ``vmax`` defaults to the ``clip``-th percentile of ``|image|``, so that a few strong
    events (the sea floor) do not wash out the rest. A 3D array is drawn as
    :func:`plot_slices` (``ax``: three axes). ``grid``: a Model or the spacing (m).
    """
    a = _array(image, (2, 3), "image")
    spacing, origin = _grid(grid, a.ndim, origin)
    vmax = _symmetric_limit(a, clip) if vmax is None else float(vmax)
    if a.ndim == 3:
        return plot_slices(a, spacing, origin=origin, ax=ax, path=path, title=title, cmap=cmap, vmin=-vmax,
                           vmax=vmax, label=label, figsize=figsize, overwrite=overwrite)
    fig, (ax,) = _axes(ax, figsize=figsize or (7.0, 3.2))
    im = _section(ax, a, spacing, origin, cmap, -vmax, vmax, title=title)
    if colorbar:
        fig.colorbar(im, ax=ax, label=label)
    return _finish(fig, path, overwrite)


def plot_gathers(gathers, grid, positions=None, offsets=None, lag=0, ax=None, path=None, title=None, clip=98.0,
                 vmax=None, cmap="gray", figsize=None, overwrite=False):
    """Common-image gathers of a 2D model side by side: offset × depth panels at lateral positions.

    ``gathers``: a :class:`timeprobe.imaging.Gathers` (its ``image[lag]``, offsets and axis) or an
    array (n_offsets, nx, nz) with ``offsets`` (m). ``positions``: the x positions (m) of the
    gathers (default: 6 evenly spread). Each panel spans the offsets (h from −h_max on the left);
    the x axis is labelled with the panel positions (km). Focused energy (a correct velocity)
    sits at h = 0 in every panel.
    """
    image = getattr(gathers, "image", None)
    if image is not None:
        a, offsets = np.asarray(image)[lag], np.asarray(gathers.offsets, dtype=np.float64)
    else:
        a = np.asarray(gathers)
        if offsets is None:
            raise ValueError("offsets (m) are required with a gathers array")
        offsets = np.asarray(offsets, dtype=np.float64)
    a = _array(a, (3,), "gathers (n_offsets, nx, nz)")
    if len(offsets) != a.shape[0]:
        raise ValueError(f"{len(offsets)} offsets for {a.shape[0]} gather panels")
    spacing, origin = _grid(grid, 2, None)
    nx = a.shape[1]
    if positions is None:
        idx = np.linspace(0, nx - 1, 8)[1:-1].round().astype(int)
    else:
        idx = np.rint((np.asarray(positions, dtype=np.float64) - origin[0]) / spacing[0]).astype(int)
        if np.any((idx < 0) | (idx >= nx)):
            raise ValueError(f"positions must lie inside the model's x range, got {list(positions)}")
    order = np.argsort(offsets)
    gap = max(1, a.shape[0] // 8)
    panels = []
    for i in idx:
        panels += [a[order, i, :], np.full((gap, a.shape[2]), np.nan)]
    strip = np.concatenate(panels[:-1], axis=0)
    vmax = _symmetric_limit(a[:, idx, :], clip) if vmax is None else float(vmax)
    fig, (ax,) = _axes(ax, figsize=figsize or (9.0, 3.4))
    z0, z1 = _edges(a.shape[2], spacing[1], origin[1])
    ax.imshow(strip.T, extent=(0, strip.shape[0], z1, z0), cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto",
              interpolation="nearest")
    centres = [k * (a.shape[0] + gap) + a.shape[0] / 2 for k in range(len(idx))]
    ax.set_xticks(centres)
    ax.set_xticklabels([f"{(origin[0] + i * spacing[0]) * KM:.2f}" for i in idx])
    ax.set_xlabel(f"gather position x (km); each panel: offset {offsets.min() * KM:+.2f} … "
                  f"{offsets.max() * KM:+.2f} km")
    ax.set_ylabel("depth (km)")
    if title:
        ax.set_title(title)
    return _finish(fig, path, overwrite)


def plot_gradient(gradient, grid, origin=None, ax=None, path=None, title=None, clip=98.0, vmax=None,
                  cmap="seismic", label="gradient ∂f/∂m", colorbar=True, figsize=None, overwrite=False):
    """A gradient with respect to the squared slowness: :func:`plot_image` in a diverging colour map."""
    return plot_image(gradient, grid, origin=origin, ax=ax, path=path, title=title, clip=clip, vmax=vmax,
                      cmap=cmap, label=label, colorbar=colorbar, figsize=figsize, overwrite=overwrite)


def plot_slices(volume, grid=None, x=None, y=None, z=None, origin=None, ax=None, path=None, title=None,
                cmap=None, vmin=None, vmax=None, clip=None, label=None, figsize=None, overwrite=False):
    """Inline, crossline and depth slice of a 3D array (or a 3D Model's vp), on one colour scale.

    Panels: the inline ``(x, depth)`` at ``y``, the crossline ``(y, depth)`` at ``x`` and
    the depth slice (map view, ``x`` right, ``y`` up) at ``z`` — positions in m,
    nearest grid plane, the centre by default; dashed lines show where the other
    slices cut. Colour scale: ``vmin``/``vmax``, else ``±`` the ``clip``-th percentile
    of ``|volume|`` when ``clip`` is given (images, gradients), else the data range.
    ``ax``: three axes.
    """
    from .model import Model
    if isinstance(volume, Model):
        a, (spacing, origin), default_label = _model_values(volume, "vp", None, origin)
        cmap = VELOCITY_CMAP if cmap is None else cmap
    else:
        a = _array(volume, (3,), "volume")
        spacing, origin = _grid(grid, 3, origin)
        default_label = ""
    if a.ndim != 3:
        raise ValueError(f"plot_slices needs a 3D array, got shape {a.shape}")
    cmap = "gray" if cmap is None else cmap
    label = default_label if label is None else label
    if vmin is None and vmax is None and clip is not None:
        lim = _symmetric_limit(a, clip)
        vmin, vmax = -lim, lim
    vmin = float(a.min()) if vmin is None else vmin
    vmax = float(a.max()) if vmax is None else vmax
    idx = []
    for axis, (name, pos) in enumerate((("x", x), ("y", y), ("z", z))):
        n, h, o = a.shape[axis], spacing[axis], origin[axis]
        i = n // 2 if pos is None else int(round((pos - o) / h))
        if not 0 <= i < n:
            raise ValueError(f"slice position {name} = {pos:g} m lies outside the model's {name} range "
                             f"[{o:g}, {o + (n - 1) * h:g}] m")
        idx.append(i)
    ix, iy, iz = idx
    pos_km = [(o + i * h) * KM for i, h, o in zip(idx, spacing, origin)]
    fig, axs = _axes(ax, 3, figsize=figsize or (15.0, 4.0))
    sx, sy, sz = spacing
    ox, oy, oz = origin
    im = _section(axs[0], a[:, iy, :], (sx, sz), (ox, oz), cmap, vmin, vmax, ("x", "depth"),
                  f"inline, y = {pos_km[1]:.2f} km")
    _section(axs[1], a[ix, :, :], (sy, sz), (oy, oz), cmap, vmin, vmax, ("y", "depth"),
             f"crossline, x = {pos_km[0]:.2f} km")
    _section(axs[2], a[:, :, iz], (sx, sy), (ox, oy), cmap, vmin, vmax, ("x", "y"),
             f"depth slice, z = {pos_km[2]:.2f} km", map_view=True)
    line = dict(color="w", lw=0.8, ls="--")
    axs[0].axvline(pos_km[0], **line)
    axs[0].axhline(pos_km[2], **line)
    axs[1].axvline(pos_km[1], **line)
    axs[1].axhline(pos_km[2], **line)
    axs[2].axvline(pos_km[0], **line)
    axs[2].axhline(pos_km[1], **line)
    fig.colorbar(im, ax=axs, label=label, shrink=0.9)
    if title:
        fig.suptitle(title)
    return _finish(fig, path, overwrite)


# --------------------------------------------------------------------------- data
def plot_shot(data, shot=0, src=None, dt=None, x=None, ax=None, path=None, title=None, clip=99.0, cmap="gray",
              colorbar=False, figsize=None, overwrite=False):
    """A shot gather: time (s, down) against receiver position or offset (km), symmetric clip.

    ``data`` is a :class:`timeprobe.Data` (``shot`` selects the shot; times and
    receiver positions come from its geometry) or an ``(nt, ntraces)`` array with its
    sampling ``dt`` (ms) and optionally the receivers' ``x`` (m). The horizontal axis:

    * with ``src`` (the sources' :class:`~timeprobe.Geometry` or :class:`~timeprobe.Data`),
      the offset ``x_r − x_s`` (2D) in km;
    * otherwise the receivers' x in km (2D);
    * the trace number for 3D receivers, or when the positions are not monotonic.

    The colour scale is ``±`` the ``clip``-th percentile of ``|d|``.
    """
    from .geometry import Data, Geometry
    if isinstance(data, Data):
        geom = data.geometry
        if not -geom.nshots <= shot < geom.nshots:
            raise ValueError(f"shot {shot} requested, the data hold {geom.nshots} shot(s)")
        a = data.arrays[shot]
        t = geom.time * KM
        coords = geom.coordinates[shot]
        pos = coords[:, 0] if coords.shape[1] == 2 else None
    else:
        a = _array(data, (2,), "data")
        if dt is None or not dt > 0:
            raise ValueError("an array of traces needs its sampling interval dt (ms)")
        t = dt * np.arange(a.shape[0]) * KM
        pos = None if x is None else np.asarray(x, dtype=np.float64)
        if pos is not None and pos.shape != (a.shape[1],):
            raise ValueError(f"x must hold one position per trace ({a.shape[1]}), got shape {pos.shape}")
    xlabel = "receiver x (km)"
    if pos is not None and src is not None:
        sgeom = src.geometry if isinstance(src, Data) else src
        if not isinstance(sgeom, Geometry):
            raise TypeError(f"src must be a timeprobe.Geometry or Data, got {type(src).__name__}")
        pos = pos - sgeom.coordinates[shot][0, 0]
        xlabel = "offset (km)"
    step = np.diff(pos) if pos is not None and pos.size > 1 else None
    if step is None or not (np.all(step > 0) or np.all(step < 0)):
        pos, xlabel = np.arange(a.shape[1]), "trace"
        lo, hi = -0.5, a.shape[1] - 0.5
    else:
        h = float(np.mean(step))
        pos = pos * KM
        lo, hi = pos[0] - h * KM / 2, pos[-1] + h * KM / 2
    lim = _symmetric_limit(a, clip)
    fig, (ax,) = _axes(ax, figsize=figsize or (5.0, 5.0))
    dt_s = float(t[1] - t[0]) if t.size > 1 else 1.0
    uniform = step is None or xlabel == "trace" or np.allclose(step, step[0], rtol=1e-3)
    if uniform:
        im = ax.imshow(a, extent=(lo, hi, t[-1] + dt_s / 2, t[0] - dt_s / 2), aspect="auto", cmap=cmap,
                       vmin=-lim, vmax=lim, interpolation="nearest")
    else:
        im = ax.pcolormesh(pos, t, a, shading="nearest", cmap=cmap, vmin=-lim, vmax=lim, rasterized=True)
        ax.set_ylim(t[-1], t[0])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("time (s)")
    ax.set_title(title if title is not None else f"shot {shot}")
    if colorbar:
        fig.colorbar(im, ax=ax, label="amplitude")
    return _finish(fig, path, overwrite)


def _points(p, name, one_per_row=False):
    """All points of a Geometry / Data / array / list of arrays, as one (n, dim) array and a per-shot list.

    An array is one shot's points, or with ``one_per_row`` one shot per row (sources, as in
    :func:`timeprobe.acquisition.survey`)."""
    from .geometry import Data, Geometry
    if isinstance(p, Data):
        p = p.geometry
    if isinstance(p, Geometry):
        shots = p.coordinates
    elif isinstance(p, (list, tuple)) and p and np.ndim(p[0]) == 2:
        shots = [np.asarray(c, dtype=np.float64) for c in p]
    else:
        a = np.asarray(p, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] not in (2, 3):
            raise ValueError(f"{name} must be a Geometry or (npoints, 2 or 3) coordinates, got shape {a.shape}")
        shots = [row[None, :] for row in a] if one_per_row else [a]
    return np.concatenate(shots), shots


def plot_acquisition(src, rec, model=None, shot=None, ax=None, path=None, title=None, figsize=None,
                     overwrite=False):
    """Sources and receivers over the model: a 2D section (x, depth down) or a 3D map view (x, y).

    ``src``, ``rec``: Geometries (or Data, or coordinates in m: one source per row, the
    receivers of every shot, or a list of per-shot receiver arrays). ``model``: a
    :class:`timeprobe.Model`; in 2D its velocity is drawn underneath, in 3D its
    outline; without it the frame fits the points. ``shot`` highlights one shot's
    source and receivers (other receivers in grey).
    """
    from .model import Model
    s_all, s_shots = _points(src, "src", one_per_row=True)
    r_all, r_shots = _points(rec, "rec")
    dim = s_all.shape[1]
    if r_all.shape[1] != dim:
        raise ValueError(f"sources are {dim}D and receivers {r_all.shape[1]}D")
    if model is not None and (not isinstance(model, Model) or model.dim != dim):
        raise ValueError(f"model must be a {dim}D timeprobe.Model")
    if shot is not None and not -len(s_shots) <= shot < len(s_shots):
        raise ValueError(f"shot {shot} requested, the sources hold {len(s_shots)} shot(s)")
    r_unique = np.unique(r_all, axis=0)
    fig, (ax,) = _axes(ax, figsize=figsize or ((7.0, 3.8) if dim == 2 else (7.5, 5.0)))
    if model is not None:
        if dim == 2:
            im = _section(ax, model.vp, model.spacing, model.origin, VELOCITY_CMAP, None, None)
            fig.colorbar(im, ax=ax, label="vp (km/s)")
        else:
            (x0, x1), (y0, y1) = model.domain_bounds[0], model.domain_bounds[1]
            ax.add_patch(_rectangle(x0 * KM, y0 * KM, (x1 - x0) * KM, (y1 - y0) * KM))
            ax.set_xlim((x0 - 0.03 * (x1 - x0)) * KM, (x1 + 0.03 * (x1 - x0)) * KM)
            ax.set_ylim((y0 - 0.03 * (y1 - y0)) * KM, (y1 + 0.03 * (y1 - y0)) * KM)
    cols = (0, 1)      # 2D: (x, depth); 3D map view: (x, y)
    # white-faced markers with dark edges read on both the dark water and the bright sediments
    rec_style = dict(marker="v", ls="none", ms=4, mew=0.6)
    src_style = dict(marker="*", ls="none", mec="k", mew=0.5)
    if shot is not None:
        sel = r_shots[shot] if len(r_shots) > 1 else r_shots[0]
        ax.plot(*(r_unique[:, c] * KM for c in cols), mfc="0.75", mec="0.35", label="receivers", **rec_style)
        ax.plot(*(sel[:, c] * KM for c in cols), mfc="w", mec="k", label=f"receivers of shot {shot}", **rec_style)
        ax.plot(*(s_all[:, c] * KM for c in cols), mfc="0.6", ms=8, label="sources", **src_style)
        ax.plot(*(s_shots[shot][:, c] * KM for c in cols), mfc="r", ms=14, label=f"source of shot {shot}",
                **src_style)
    else:
        ax.plot(*(r_unique[:, c] * KM for c in cols), mfc="w", mec="k", label=f"receivers ({len(r_unique)})",
                **rec_style)
        ax.plot(*(s_all[:, c] * KM for c in cols), mfc="r", ms=10, label=f"sources ({len(s_shots)} shots)",
                **src_style)
    if dim == 2:
        ax.set_xlabel("x (km)")
        ax.set_ylabel("depth (km)")
        if model is None:
            ax.invert_yaxis()
    else:
        ax.set_xlabel("x (km)")
        ax.set_ylabel("y (km)")
        ax.set_aspect("equal", adjustable="datalim" if model is None else "box")
    # outside the frame, where it hides no point (the constrained layout makes room for it)
    if dim == 2:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, borderaxespad=0.0)
    else:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    ax.set_title(title if title is not None else ("acquisition" if dim == 2 else "acquisition, map view"))
    return _finish(fig, path, overwrite)


def _rectangle(x, y, w, h):
    from matplotlib.patches import Rectangle
    return Rectangle((x, y), w, h, fill=False, ec="0.3", lw=1.0, label="model")


# --------------------------------------------------------------------------- convergence and benchmarks
def plot_convergence(histories, ax=None, path=None, title=None, logy=True, objective_title="objective",
                     figsize=None, overwrite=False):
    """Objective against iteration, and the model error when the histories hold one.

    ``histories``: ``{run name: sequence of objective values}`` or ``{run name: mapping}``
    with ``"objective"`` and optionally ``"iteration"`` and a model error
    ``"rel_error"`` (e.g. ‖v − v_true‖/‖v_true‖; what :func:`timeprobe.io.read_results`
    returns). Non-finite values (an objective not evaluated at iteration 0) are
    skipped. Two panels when any run has a model error (``ax``: two axes), else one;
    ``objective_title`` names the first (e.g. which shots the objective covers).
    """
    runs = []
    for name, h in histories.items():
        if isinstance(h, dict) or hasattr(h, "keys"):
            if "objective" not in h:
                raise ValueError(f"history {name!r} has no 'objective'")
            f = np.asarray(h["objective"], dtype=np.float64)
            it = np.asarray(h["iteration"]) if "iteration" in h else np.arange(f.size)
            err = np.asarray(h["rel_error"], dtype=np.float64) if "rel_error" in h else None
        else:
            f = np.asarray(h, dtype=np.float64)
            it, err = np.arange(f.size), None
        if it.shape != f.shape or (err is not None and err.shape != f.shape):
            raise ValueError(f"history {name!r}: iteration, objective and rel_error differ in length")
        runs.append((name, it, f, err))
    if not runs:
        raise ValueError("histories is empty")
    with_error = any(err is not None for *_, err in runs)
    fig, axs = _axes(ax, 2 if with_error else 1, figsize=figsize or ((11.0, 3.8) if with_error else (6.0, 3.8)))
    for name, it, f, err in runs:
        ok = np.isfinite(f)
        axs[0].plot(it[ok], f[ok], "o-", ms=3, label=name)
        if with_error and err is not None:
            axs[1].plot(it, err, "o-", ms=3, label=name)
    if logy:
        axs[0].set_yscale("log")
    axs[0].set_ylabel("objective")
    axs[0].set_title(objective_title)
    if with_error:
        axs[1].set_ylabel("relative model error")
        axs[1].set_title("model error ‖v − v_true‖ / ‖v_true‖")
    from matplotlib.ticker import MaxNLocator
    for a in axs:
        a.set_xlabel("iteration")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _finish(fig, path, overwrite)


def plot_accuracy(curves, ax=None, path=None, title=None, figsize=None, overwrite=False):
    """Cosine of a probed gradient with the exact one against the number of probes r (log₂ axis).

    ``curves``: ``{probing mode: (r values, cosines)}``.
    """
    fig, (ax,) = _axes(ax, figsize=figsize or (6.0, 4.0))
    for name, (r, c) in curves.items():
        r, c = np.asarray(r, dtype=np.float64), np.asarray(c, dtype=np.float64)
        if r.shape != c.shape:
            raise ValueError(f"curve {name!r}: {r.size} r values and {c.size} cosines")
        ax.plot(r, c, "o-", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of probes r")
    ax.set_ylabel("cosine with the exact gradient")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _finish(fig, path, overwrite)


def pareto_front(memory, cosine):
    """Indices of the points no other point beats: less or equal memory and higher or equal cosine, one strictly."""
    memory, cosine = np.asarray(memory, dtype=np.float64), np.asarray(cosine, dtype=np.float64)
    keep = []
    for i in range(memory.size):
        dominated = np.any((memory <= memory[i]) & (cosine >= cosine[i])
                           & ((memory < memory[i]) | (cosine > cosine[i])))
        if not dominated:
            keep.append(i)
    return sorted(keep, key=lambda i: memory[i])


def _clusters(x, y, fraction=0.04):
    """Groups of indices whose points lie within ``fraction`` of the data span of each other (both axes)."""
    tol_x = fraction * max(float(np.ptp(x)), 1.0)
    tol_y = fraction * max(float(np.ptp(y)), 1e-3)
    groups = []
    for i in np.lexsort((-y, x)):       # by x, then by decreasing y
        for g in groups:
            if abs(x[i] - x[g[0]]) <= tol_x and abs(y[i] - y[g[0]]) <= tol_y:
                g.append(int(i))
                break
        else:
            groups.append([int(i)])
    return groups


def plot_pareto(memory_mb, cosine, labels, times=None, time_format="{:.2f}×", ax=None, path=None, title=None,
                figsize=None, overwrite=False):
    """Memory against accuracy for benchmark runs, each labelled with its name and time; the Pareto front joined.

    ``memory_mb``: working memory (MiB, log axis); ``cosine``: cosine with the exact
    gradient; ``labels``: run names; ``times``: e.g. the time relative to a plain
    forward + adjoint run, written with ``time_format``. The front is the set of runs
    no other run beats in both memory and cosine (:func:`pareto_front`). Runs too close
    to label apart share one label, a line per run.
    """
    memory = np.asarray(memory_mb, dtype=np.float64)
    cos = np.asarray(cosine, dtype=np.float64)
    labels = list(labels)
    if not (memory.ndim == 1 and memory.shape == cos.shape and len(labels) == memory.size):
        raise ValueError(f"memory_mb, cosine and labels must have one entry per run, got {memory.shape}, "
                         f"{cos.shape} and {len(labels)}")
    if times is not None and len(times) != memory.size:
        raise ValueError(f"times must have one entry per run ({memory.size}), got {len(times)}")
    if np.any(memory <= 0):
        raise ValueError("memory_mb must be positive (log axis)")
    fig, (ax,) = _axes(ax, figsize=figsize or (7.0, 4.5))
    front = pareto_front(memory, cos)
    ax.plot(memory, cos, "o", color="C0", label="runs")
    ax.plot(memory[front], cos[front], "-", color="C3", lw=1.2, label="Pareto front")
    # runs that would print on top of each other share one label, a line per run
    for group in _clusters(np.log10(memory), cos):
        lines = [labels[i] if times is None else f"{labels[i]} ({time_format.format(times[i])})" for i in group]
        ax.annotate("\n".join(lines), (memory[group[0]], cos[group[0]]), textcoords="offset points", xytext=(4, 4),
                    fontsize=7, va="bottom")
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.08)      # room for the labels of the outermost runs
    ax.set_xlabel("working memory (MiB)")
    ax.set_ylabel("cosine with the exact gradient")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title)
    return _finish(fig, path, overwrite)
