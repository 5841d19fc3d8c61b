"""Adjoint (dot-product) tests, Taylor test of the FWI objective, Devito oracle comparison."""
import numpy as np
import pytest

import timeprobe as tp
from timeprobe.testing import dottest, taylor_test

from conftest import acquisition, layered_model


def _random_like(data, rng):
    return tp.Data(data.geometry, [rng.standard_normal(a.shape) for a in data.arrays])


@pytest.mark.parametrize("dim", [2, 3])
def test_forward_adjoint_dot(dim):
    rng = np.random.default_rng(1)
    shape = (61, 41) if dim == 2 else (25, 21, 21)
    model = layered_model(shape=shape, nbl=10 if dim == 3 else 20,
                          space_order=8 if dim == 2 else 4)
    q, rec_geom = acquisition(model, nshots=1, nrec=15, t=300.0, dt=1.5)
    d = _random_like(tp.Data(rec_geom), rng)
    x = _random_like(q, rng)
    mismatch, lhs, rhs = dottest(lambda a: tp.forward(model, a, rec_geom),
                                 lambda b: tp.adjoint(model, b, q.geometry), x, d)
    assert lhs != 0
    assert mismatch <= 5e-4, (lhs, rhs)


@pytest.mark.parametrize("dim", [2, 3])
def test_born_adjoint_dot(dim):
    rng = np.random.default_rng(2)
    shape = (61, 41) if dim == 2 else (25, 21, 21)
    model = layered_model(shape=shape, nbl=10 if dim == 3 else 20, space_order=8 if dim == 2 else 4,
                          smooth=True)
    q, rec_geom = acquisition(model, nshots=1, nrec=15, t=300.0, dt=1.5)
    dm = rng.standard_normal(model.shape).astype(np.float32)
    d = _random_like(tp.Data(rec_geom), rng)
    mismatch, lhs, rhs = dottest(lambda a: tp.born(model, q, a, rec_geom),
                                 lambda b: tp.born_adjoint(model, q, b), dm, d)
    assert lhs != 0
    assert mismatch <= 5e-4, (lhs, rhs)


def test_taylor_fwi_objective(small_case):
    model, model0, q, rec_geom, d = small_case
    m0 = model0.m
    # a smooth perturbation below the water-like top layer
    x, z = np.meshgrid(*model.physical_coordinates(), indexing="ij")
    dm = np.exp(-((x - 400) ** 2 + (z - 300) ** 2) / (2 * 80.0**2)).astype(np.float32)
    fun = lambda m: tp.fwi_objective(model0.with_m(m), q, d)
    res = taylor_test(fun, m0, dm, h0=0.02, n=5)
    assert abs(res["slope1"] - 1) <= 0.1, res
    assert abs(res["slope2"] - 2) <= 0.2, res


def test_gradient_matches_devito_acoustic_solver():
    """The exact gradient equals Devito's own AcousticWaveSolver gradient (test oracle)."""
    from examples.seismic import AcquisitionGeometry
    from examples.seismic import Model as DevitoModel
    from examples.seismic.acoustic import AcousticWaveSolver

    shape, spacing, nbl, so = (81, 51), (10.0, 10.0), 20, 8
    true = layered_model(shape=shape, spacing=spacing, nbl=nbl, space_order=so)
    init = true.smooth(30.0)
    dmodel = DevitoModel(vp=init.vp, origin=(0.0, 0.0), shape=shape, spacing=spacing, space_order=so,
                         nbl=nbl, bcs="damp", dtype=np.float32)
    src_pos = np.array([[400.0, 20.0]])
    rec_pos = np.stack([np.linspace(0, 800, 41), np.full(41, 20.0)], axis=1)
    geom = AcquisitionGeometry(dmodel, rec_pos, src_pos, 0.0, 500.0, f0=0.015, src_type="Ricker")
    dt, nt = dmodel.critical_dt, geom.nt
    solver = AcousticWaveSolver(dmodel, geom, space_order=so)

    # our side, on the same computational axis (so no resampling is involved)
    true.dt = init.dt = dt
    t_end = (nt - 1) * dt
    q = tp.Data(tp.Geometry([src_pos], dt=dt, t=t_end), [np.array(geom.src.data[:, 0])])
    rec_geom = tp.Geometry([rec_pos], dt=dt, t=t_end)
    d_obs = tp.forward(true, q, rec_geom)
    assert d_obs.arrays[0].shape[0] == nt

    # forward modelling agrees (Devito's loop stops one step early: skip the last sample)
    rec0, u0, _ = solver.forward(save=True)
    ours0 = tp.forward(init, q, rec_geom).arrays[0]
    rel_d = np.linalg.norm(ours0[:-1] - rec0.data[:-1]) / np.linalg.norm(rec0.data[:-1])
    assert rel_d <= 1e-4, rel_d

    # gradient of the same residual: Devito's −Σ u·v̈ vs timeprobe's. Devito's is on the
    # padded grid; both models copy the edge points into the absorbing layers, so the
    # derivative w.r.t. the physical model folds the layers onto the edges (pad_adjoint)
    residual = np.array(rec0.data) - d_obs.arrays[0]
    residual[-1] = 0.0
    rec_res = geom.rec
    rec_res.data[:] = residual
    g_devito, _ = solver.jacobian_adjoint(rec_res, u0)
    g_devito = init.pad_adjoint(np.array(g_devito.data, dtype=np.float64))

    g_ours = tp.jacobian_adjoint(init, q, tp.Data(rec_geom, [residual]))
    rel = np.linalg.norm(g_ours - g_devito) / np.linalg.norm(g_devito)
    assert rel <= 1e-3, rel

    # and fwi_objective's gradient is dt · Jᵀ(residual) (f is dt-weighted; Devito's is not)
    d_shift = tp.Data(rec_geom, [ours0 - residual])  # data whose residual is exactly `residual`
    f, g = tp.fwi_objective(init, q, d_shift)
    assert np.isclose(f, 0.5 * dt * np.sum(residual.astype(np.float64) ** 2), rtol=1e-4)
    rel_g = np.linalg.norm(g / dt - g_devito) / np.linalg.norm(g_devito)
    assert rel_g <= 1e-3, rel_g


def test_adjoint_source_in_place_equals_copy():
    """run_adjoint injects a source written into run_forward's trace buffer without a copy;
    the result equals the one from a separate array."""
    from timeprobe.geometry import computational_axis, to_computational
    from timeprobe.propagators import adjoint_source_buffer, run_adjoint, run_forward
    model = layered_model(shape=(61, 41), nbl=20)
    q, rec_geom = acquisition(model, nshots=1, nrec=11, t=300.0, dt=1.5)
    dt, nt = computational_axis(model, q.geometry, rec_geom)
    wc = to_computational(q.arrays[0], q.geometry, dt, nt)
    sc, rc = q.geometry.coordinates[0], rec_geom.coordinates[0]
    rec, _ = run_forward(model, sc, wc, rc, dt, nt)
    copy = np.array(rec)
    assert adjoint_source_buffer(rec, nt) is not None
    assert adjoint_source_buffer(copy, nt) is None
    assert adjoint_source_buffer(rec[:, :5], nt) is None
    srca_copy, _, _ = run_adjoint(model, rc, copy, dt, nt, src_coords=sc)
    srca_inplace, _, _ = run_adjoint(model, rc, rec, dt, nt, src_coords=sc)
    assert np.abs(srca_copy).max() > 0
    np.testing.assert_array_equal(srca_copy, srca_inplace)
    np.testing.assert_array_equal(rec, copy)  # the adjoint run only reads its source


@pytest.mark.parametrize("shape", [(7, 5, 3), (4, 6, 5, 2)])
def test_swap_probe_axis_in_place(shape):
    from timeprobe.probe_buffers import swap_probe_axis
    a = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    b = a.copy()
    swap_probe_axis(a, to_inner=True)
    np.testing.assert_array_equal(a.reshape(shape[:-2] + (shape[-1], shape[-2])), np.swapaxes(b, -1, -2))
    swap_probe_axis(a, to_inner=False)
    np.testing.assert_array_equal(a, b)


def test_probe_region_bounds():
    """The probe region: [t, n − t) per axis, the innermost one extended into the absorbing layer
    to a multiple of PROBE_ALIGN where the layer is thick enough (never past the padded grid);
    the placeholders and region_slices agree with it."""
    from timeprobe.probe_buffers import (PROBE_ALIGN, ProbeLayout, placeholder, probe_margin, region_bounds,
                                         region_shape, region_slices)
    from timeprobe.workspace import workspace
    assert PROBE_ALIGN == 8
    assert region_bounds((100, 57), 6) == [(6, 94), (6, 54)]  # 45 points -> 48
    assert region_bounds((100, 52), 6) == [(6, 94), (6, 46)]  # 40 points: already a multiple
    assert region_bounds((30, 21), 2) == [(2, 28), (2, 21)]  # 17 points: 2 more at most (t = 2)
    model = layered_model(shape=(41, 37), nbl=10, space_order=8)
    t = probe_margin(model)
    shape = region_shape(model)
    assert shape[0] == model.shape_padded[0] - 2 * t and shape[1] % PROBE_ALIGN == 0
    assert tuple(s.stop - s.start for s in region_slices(model)) == shape
    ph = placeholder(workspace(model), "grad_r", ProbeLayout("blocked", 4, 2, 3, True, t))
    assert ph.shape == shape
