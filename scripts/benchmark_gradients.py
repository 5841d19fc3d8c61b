"""Measured memory/compute table of the gradient strategies, and how probing scales.

Cases: the shots of ``bench_harness.py`` (observed data modelled once in the true model and cached
on disk; gradients at the smoothed model): ``overthrust2d`` (one shot of ``overthrust_2D.h5``,
801×207 at 25 m, nbl 40, 3 s, 8 Hz), ``overthrust_small`` (BENCHMARKS §3), ``layered3d`` (61×61×41
at 20 m, 1 s; ``layered3d_{nx}_{ny}_{nz}`` other sizes) and ``layered2d_{nx}_{nz}`` (sweep and
``--quick``). A case may carry its recording time in ms: ``layered2d_61_41:300``.

Parts (``--part``):

* ``table``  for each case, every configuration in its own process (forked from a fork server
  that imported devito and timeprobe and ran nothing; one at a time): plain forward (memory
  baseline), plain forward + adjoint without storage (time baseline), full storage, time
  subsampling (auto k), DFT (nf = r/2: r real columns), optimal checkpointing (pyrevolve),
  probing (r; on Overthrust also B = 8, 16). Each subprocess runs the configuration once
  (code generation, compilation), releases freed heap pages (``malloc_trim``), resets the
  peak-RSS counter (``/proc/self/clear_refs``) and times ``--repeats`` runs (minimum kept):

  - wall time, and its ratio to the plain forward + adjoint time of the same run;
  - peak RSS (VmHWM) of the timed runs; working memory = peak − peak of plain forward
    modelling (both with their operators already built: code generation is not counted; the
    JSON keeps ``cold_peak_mb``, the peak of the whole process including the first run);
  - the memory the strategy must hold by construction (formula → MiB, see ``expected_memory``);
  - cosine with the exact (full-storage) gradient.

  JSON under ``"table"`` and a Markdown table per case (``<out stem>_table.md``) laid out like
  the seed's "Compute / Memory" table, one column per strategy; ``figures/<out stem>_pareto.png``
  plots working memory against cosine, each strategy labelled with its time ratio.
* ``speed``  one process, operators warmed up, configurations interleaved, ``--repeats``
  (min): plain fwd+adj, probed blocked (auto k / k=1 / B=4, 8, 16), eq reference path, full
  storage, checkpointing; ratios and cosines.
* ``sweep``  probed (r) vs plain forward + adjoint on ``layered2d`` grids, varying N (grid),
  nt (recording time) and r (8, 16, 32, 64); one subprocess per point measuring both times
  and the probed working memory (peak after the probed gradient − peak after a plain
  forward + adjoint, operators built beforehand; the gradient array, N floats, exists by then,
  so the delta is ≈ (r + B)·N + traces). Plot ``figures/<out stem>_scaling.png``
  (beside the JSON) with the fitted asymptotics
  time ≈ nt·N·(c_stencil + c·r/k) (k the time-subsampling factor), memory (r + B + 1)·N.

* ``peers``  Deepwave 0.1.0 on the same shots (``peers.py``, needs the ``peers`` extra): its exact
  gradient and every low-memory mode (8-bit compression, Nyquist sampling interval, disk,
  checkpoint segments, combinations) beside timeprobe's exact and probed (r, 2r) gradients, each in
  its own process; time, working memory, memory model, cosine with its own exact gradient and with
  timeprobe's. Cases: ``--cases`` if given, else overthrust2d 3 s and 8 s and layered3d (quick:
  the tiny ones). JSON under ``"peers"``, ``<out stem>_peers.md`` and the Pareto plot
  ``figures/<out stem>_peers_pareto.png`` (memory vs 1 − cosine, with times). Not in the default
  parts.

Records. Every part run appends one record (script ``benchmark_gradients``, figures under the
part's name: ``{"table": …}``, ``{"sweep": …}``) to the benchmark history
(``scripts/records.py``: ``benchmarks/history.jsonl``), unless ``--quick`` or ``--no-record``.
This run's JSON (all its parts), Markdown tables and figures go to a fresh folder,
``results/benchmark_gradients-<time>/`` (git-ignored), or beside ``--out`` (none of them may
exist: nothing is overwritten). ``--write-docs`` copies the tables and figures of the parts run
to the committed ``benchmarks/gradients_table.md``, ``benchmarks/gradients_peers.md`` and
``benchmarks/figures/gradients_{scaling,pareto,peers_pareto}.png``; the tables name their
history record.

``--quick`` runs the same parts on tiny cases (``layered2d_61_41`` at 600 ms and a
21×21×17 ``layered3d`` for the table, r = 8, a few tiny grids for the sweep): a smoke test,
never recorded.

Usage (full run, the deliverable: ≈ 10 min for ``table sweep`` on 2 cores, a few more for
``speed``; one at a time, on a quiet machine)::

    python scripts/benchmark_gradients.py --part table sweep --write-docs   # record + committed docs
    python scripts/benchmark_gradients.py --part speed
    python scripts/benchmark_gradients.py --quick --out /tmp/bg/gradients.json   # smoke test
    python scripts/benchmark_gradients.py --part peers                            # Deepwave beside
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_harness import (CACHE, DEFAULT_T, FLOAT, MIB, ROOT, SHARED, case_info, cosine,  # noqa: F401
                           in_subprocess, parse_case, reset_peak, rss_mb, setup, vmhwm_mb)
from bench_harness import meta as _harness_meta
import peers  # noqa: E402
import records  # noqa: E402
import timeprobe as tp  # noqa: E402,F401
from timeprobe.probing import DEFAULT_BLOCK  # noqa: E402


# ---- the configurations of one run: (case, recording time in ms, r)
FULL = dict(table=[("overthrust2d", 3000.0), ("layered3d", 1000.0)], r=32,
            speed=("overthrust2d", 3000.0),
            sweep=[("layered2d_201_101", 1500.0, 32), ("layered2d_401_201", 1500.0, 32),
                   ("layered2d_801_201", 1500.0, 32),
                   ("layered2d_401_201", 750.0, 32), ("layered2d_401_201", 3000.0, 32),
                   ("layered2d_401_201", 1500.0, 8), ("layered2d_401_201", 1500.0, 16),
                   ("layered2d_401_201", 1500.0, 64)],
            repeats=dict(table=2, speed=3, sweep=3))
QUICK = dict(table=[("layered2d_61_41", 600.0), ("layered3d_21_21_17", 300.0)], r=8,
             speed=("layered2d_61_41", 600.0),
             sweep=[("layered2d_41_31", 200.0, 8), ("layered2d_81_41", 300.0, 16)],
             repeats=dict(table=1, speed=1, sweep=1))

# --------------------------------------------------------------------------- one configuration
def plain_fwd_adj(model0, q, d, adjoint=True):
    """Plain forward (+ adjoint) propagation of one shot: no storage, no probing."""
    from timeprobe.geometry import computational_axis, to_computational
    from timeprobe.propagators import run_adjoint, run_forward
    dt, nt = computational_axis(model0, q.geometry, d.geometry)
    wc = to_computational(q.arrays[0], q.geometry, dt, nt)
    rec, _ = run_forward(model0, q.geometry.coordinates[0], wc, d.geometry.coordinates[0], dt, nt)
    if adjoint:
        run_adjoint(model0, d.geometry.coordinates[0], rec, dt, nt)


def run_config(model0, q, d, cfg):
    """Run one configuration; returns the gradient (None for plain runs)."""
    from timeprobe.strategies import gradient
    s = cfg["strategy"]
    if s == "plain_forward":
        plain_fwd_adj(model0, q, d, adjoint=False)
        return None
    if s == "plain":
        plain_fwd_adj(model0, q, d)
        return None
    return gradient(model0, q, d, s, **cfg.get("opts", {}))[1]


def auto_k(model0, q, d, r):
    """The time-subsampling factor probing picks for this shot (``subsample="auto"``)."""
    from timeprobe.probing import default_subsample
    from timeprobe.geometry import computational_axis, to_computational
    dt, nt = computational_axis(model0, q.geometry, d.geometry)
    return int(default_subsample(to_computational(q.arrays[0], q.geometry, dt, nt), dt, nt, r))


def worker_table(case, t, cfg, gpath, repeats=1):
    """Subprocess body: warm-up run (compiles), peak reset, timed runs; gradient saved to gpath."""
    t0 = time.perf_counter()
    model0, q, d = setup(case, t)
    setup_peak = vmhwm_mb()
    t1 = time.perf_counter()
    plain_fwd = dict(strategy="plain_forward")
    run_config(model0, q, d, plain_fwd)
    run_config(model0, q, d, cfg)  # code generation + compilation + a first run
    t2 = time.perf_counter()
    cold_peak = vmhwm_mb()
    # the memory baseline in this same process (same operators, same heap): plain forward
    # modelling between two peak resets
    reset = reset_peak()
    run_config(model0, q, d, plain_fwd)
    base = vmhwm_mb()
    reset_peak()
    rss0 = rss_mb()
    times = []
    for _ in range(repeats):
        t3 = time.perf_counter()
        g = run_config(model0, q, d, cfg)
        times.append(time.perf_counter() - t3)
    peak = vmhwm_mb()
    if g is not None:
        np.save(gpath, g)
    return dict(wall_s=min(times), walls_s=times, setup_s=t1 - t0, first_run_s=t2 - t1,
                peak_mb=peak if reset else cold_peak, base_mb=base if reset else None,
                cold_peak_mb=cold_peak, setup_peak_mb=setup_peak, rss_before_mb=rss0,
                peak_reset=reset, **case_info(model0, q, d))


def probed_fwd_adj(model0, q, d, r):
    """A callable running the probed forward + adjoint propagation of one shot (QR probes designed
    once, outside: the sweep isolates how the propagation cost scales; the design, the residual
    and the other per-call work of ``fwi_objective`` are fixed costs, in the table's timings)."""
    import numpy as np_
    from timeprobe.probing import ProbingOptions, probes_for_shot
    from timeprobe.geometry import computational_axis, to_computational
    from timeprobe.propagators import run_adjoint, run_forward
    dt, nt = computational_axis(model0, q.geometry, d.geometry)
    wc = to_computational(q.arrays[0], q.geometry, dt, nt)
    sc, rc = q.geometry.coordinates[0], d.geometry.coordinates[0]
    probing = probes_for_shot(ProbingOptions(ps=r), wc, dt, nt, d[0], np_.random.default_rng(0))

    def run():
        rec, ubar = run_forward(model0, sc, wc, rc, dt, nt, probing=probing)
        run_adjoint(model0, rc, rec, dt, nt, probing=probing, ubar=ubar, restore_ubar=False)
    return run


def worker_sweep(case, t, r, repeats=1):
    """Subprocess body of one sweep point: plain fwd+adj vs probed(r) fwd+adj times and probed
    working memory (both propagations driven by the synthetic traces, as in the speed benchmark)."""
    model0, q, d = setup(case, t)
    plain = lambda: plain_fwd_adj(model0, q, d)  # noqa: E731
    probe = probed_fwd_adj(model0, q, d, r)
    plain(), probe()  # build every operator outside timings and peaks
    tpl, tpr = [], []
    for _ in range(repeats):  # interleaved, minimum kept
        t0 = time.perf_counter()
        plain()
        tpl.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        probe()
        tpr.append(time.perf_counter() - t0)
    reset = reset_peak()
    plain()
    base = vmhwm_mb()
    reset_peak()
    probe()
    peak = vmhwm_mb()
    info = case_info(model0, q, d)
    return dict(case=case, T=t, r=r, k=auto_k(model0, q, d, r), B=DEFAULT_BLOCK,
                plain_s=min(tpl), probe_s=min(tpr), ratio=min(tpr) / min(tpl), plain_all_s=tpl,
                probe_all_s=tpr, base_mb=base, peak_mb=peak, working_mb=peak - base, peak_reset=reset,
                **info)


def run_worker(payload):
    if payload["mode"] == "table":
        return worker_table(payload["case"], payload["t"], payload["cfg"], payload["gpath"], payload["repeats"])
    return worker_sweep(payload["case"], payload["t"], payload["r"], payload["repeats"])


# --------------------------------------------------------------------------- table
def table_configs(case, r, k, B):
    """Configurations of the table; checkpoints c = ⌈(r+B+1)/2⌉ hold ≥ the probed memory."""
    ncp = -(-(r + B + 1) // 2)  # DevitoCheckpoint keeps time_order = 2 levels of u: 2·c·N_h floats
    cfgs = [dict(name="full", strategy="full"),
            dict(name=f"dft_nf{r // 2}", strategy="dft", opts=dict(nf=r // 2, seed=0)),
            dict(name=f"probe_r{r}", strategy="probe", opts=dict(ps=r, seed=0)),
            dict(name=f"checkpoint_c{ncp}", strategy="checkpoint", opts=dict(n_checkpoints=ncp)),
            dict(name=f"subsample_k{k}", strategy="subsample", opts=dict(k=k))]
    if case == "overthrust2d":
        cfgs += [dict(name=f"probe_r{r}_B{b}", strategy="probe", opts=dict(ps=r, seed=0, block=b))
                 for b in (8, 16) if b != B]
    cfgs += [dict(name="plain", strategy="plain"), dict(name="plain_forward", strategy="plain_forward")]
    return cfgs


SEED = {  # the seed's "Compute / Memory" table
    "full": ("FWI (full storage)", "0", "N·nt"),
    "dft": ("DFT", "O(2r)·nt·N", "2r·N"),
    "probe": ("Probing", "O(r)·nt·N", "r·N"),
    "checkpoint": ("Optimal checkpointing", "O(log nt)·N·nt", "O(10)·N"),
    "subsample": ("Time subsampling", "0 (not in seed)", "N·nt/k (not in seed)"),
    "plain": ("plain forward + adjoint", "(time reference)", "—"),
    "plain_forward": ("plain forward", "—", "(memory baseline)"),
}


def expected_memory(cfg, info, B):
    """(formula, floats) the strategy holds beyond plain forward modelling, by construction.

    N: padded grid points; N_h: with the space-order halo (Devito ``TimeFunction``s with
    space order 8, e.g. the full-storage field and the checkpointed u); N_r: the probe region
    (physical domain + space_order/2 points: ū, the ring buffer and the probed gradient); float32.
    """
    s, o = cfg["strategy"], cfg.get("opts", {})
    N, Nh, nt = info["N"], info["N_h"], info["nt"]
    if s == "full":
        return "(nt+1)·N_h + N", (nt + 1) * Nh + N
    if s == "subsample":
        k = o["k"]
        ns = -(-(nt + 1) // k)
        return "⌈(nt+1)/k⌉·N + 3·N_h + N", ns * N + 3 * Nh + N
    if s in ("probe", "dft"):
        b = o.get("block") or B
        r = o["ps"] if s == "probe" else 2 * o["nf"]
        lead = "r" if s == "probe" else "2nf"
        return f"({lead}+B+1)·N_r, B={b}", (r + b + 1) * info["N_r"]
    if s == "checkpoint":
        return "2c·N_h + 3·N_h + N", (2 * o["n_checkpoints"] + 3) * Nh + N
    if s == "plain":
        return "0 (adjoint in u's buffers)", 0
    return "baseline", 0


def part_table(cases, r, repeats, tmp):
    out = {}
    for case, t in cases:
        t_case = time.time()
        rows = {}

        def measure(cfg):
            print("table", case, cfg["name"], flush=True)
            gpath = str(Path(tmp) / f"g_{case}_{cfg['name']}.npy")
            t0 = time.time()
            try:
                row = in_subprocess(run_worker, dict(mode="table", case=case, t=t, cfg=cfg, gpath=gpath,
                                                     repeats=repeats))
                row["process_s"] = time.time() - t0
            except RuntimeError as e:  # recorded (and reported at the end); the other columns still run
                print(e, file=sys.stderr, flush=True)
                row = dict(error=str(e)[-3000:])
            row["gpath"] = gpath if os.path.exists(gpath) else None
            rows[cfg["name"]] = row
        # plain forward first: its process also models (and caches) the observed data, with the
        # forward operator it needs anyway; this process never runs an operator itself
        measure(dict(name="plain_forward", strategy="plain_forward"))
        model0, q, d = setup(case, t)
        info = case_info(model0, q, d)
        k, B = auto_k(model0, q, d, r), DEFAULT_BLOCK
        info.update(case=case, T=t, r=r, k_auto=k, B=B)
        cfgs = table_configs(case, r, k, B)
        for cfg in cfgs:
            if cfg["name"] not in rows:
                measure(cfg)
        rows = {c["name"]: rows[c["name"]] for c in cfgs}  # column order of the table
        g_ex = np.load(rows["full"]["gpath"]) if rows["full"]["gpath"] else None
        base = rows["plain_forward"].get("peak_mb")
        t_plain = rows["plain"].get("wall_s")
        for cfg in cfgs:
            row = rows[cfg["name"]]
            row["cfg"] = cfg
            ok = "error" not in row
            row["time_ratio"] = row["wall_s"] / t_plain if ok and t_plain else None
            # same-process baseline when the peak could be reset, else the plain_forward process's
            own = row.get("base_mb") if ok else None
            row["working_mb"] = (row["peak_mb"] - own if own is not None else
                                 row["peak_mb"] - base if ok and base is not None else None)
            formula, floats = expected_memory(cfg, info, B)
            row["expected_formula"], row["expected_mb"] = formula, floats * FLOAT / MIB
            gp = row.pop("gpath")
            if gp and g_ex is not None:
                g = np.load(gp)
                row["cosine"] = cosine(g, g_ex)
                row["rel_err"] = float(np.linalg.norm((g - g_ex).astype(np.float64)) / np.linalg.norm(g_ex))
            else:
                row["cosine"] = row["rel_err"] = None
            for key in ("shape", "shape_padded", "dt", "nt", "N", "N_h", "space_order", "nrec"):
                row.pop(key, None)
        out[case] = dict(info=info, meta=meta(), wall_s=time.time() - t_case, rows=rows)
    return out


def column_title(cfg, info):
    s, o = cfg["strategy"], cfg.get("opts", {})
    title = SEED[s][0]
    if s == "probe":
        title += f" r={o['ps']}" + (f" B={o['block']}" if "block" in o else f" B={info['B']}")
    elif s == "dft":
        title += f" nf={o['nf']}"
    elif s == "checkpoint":
        title += f" c={o['n_checkpoints']}"
    elif s == "subsample":
        title += f" k={o['k']}"
    return title


def markdown_table(table, header):
    lines = [header, ""]
    for case, res in table.items():
        info, rows, m = res["info"], res["rows"], res["meta"]
        shp = "×".join(str(v) for v in info["shape"])
        shpp = "×".join(str(v) for v in info["shape_padded"])
        lines += [f"## {case}: {shp} (padded {shpp}), T = {info['T']:g} ms", "",
                  f"N = {info['N']:,} padded points, N_h = {info['N_h']:,} with the halo of space order "
                  f"{info['space_order']}, N_r = {info['N_r']:,} in the probe region; nt = {info['nt']}, dt = {info['dt']:.4g} ms, {info['nrec']} receivers; "
                  f"r = {info['r']}, ring block B = {info['B']}, probing's auto time subsampling k = {info['k_auto']}. "
                  f"Measured {m['date']} on {m['host']} ({m['cpus']} CPUs), devito {m['devito']}, "
                  f"`{m['command']}` ({res['wall_s']:.0f} s for this case).", ""]
        names = list(rows)
        cfgs = [rows[n]["cfg"] for n in names]
        lines.append("| | " + " | ".join(column_title(c, info) for c in cfgs) + " |")
        lines.append("|---" * (len(cfgs) + 1) + "|")

        def row(label, vals):
            lines.append(f"| {label} | " + " | ".join(vals) + " |")
        row("compute (seed)", [SEED[c["strategy"]][1] for c in cfgs])
        row("memory (seed)", [SEED[c["strategy"]][2] for c in cfgs])
        def val(n, key, fmt):
            v = rows[n].get(key)
            return "**failed**" if "error" in rows[n] else "—" if v is None else format(v, fmt)
        row("wall time (s)", [val(n, "wall_s", ".3g") for n in names])
        row("time / plain fwd+adj", [val(n, "time_ratio", ".2f") for n in names])
        row("working memory (MiB)", ["baseline" if c["strategy"] == "plain_forward" else val(n, "working_mb", ".1f")
                                     for n, c in zip(names, cfgs)])
        row("memory formula (MiB)", [f"{rows[n]['expected_formula']} = {rows[n]['expected_mb']:.1f}"
                                     if c["strategy"] != "plain_forward" else "—" for n, c in zip(names, cfgs)])
        row("peak RSS (MiB)", [val(n, "peak_mb", ".0f") for n in names])
        row("cosine with exact", [val(n, "cosine", ".6f") for n in names])
        if not all(rows[n].get("peak_reset", True) for n in names):
            lines += ["", "**Peak RSS could not be reset here (`/proc/self/clear_refs`): peaks include code "
                      "generation.**"]
        lines += ["", "Working memory: peak RSS (VmHWM) of the timed runs − that of plain forward modelling, both "
                  "in the strategy's own subprocess after a warm-up of each (code generation excluded), the peak "
                  "mark reset before each (`/proc/self/clear_refs`); glibc's mmap threshold is fixed at 128 KiB "
                  "so that resident memory follows the live arrays. Wall time: minimum "
                  "of the timed runs (after one warm-up run). Ratios are within this run. "
                  "Memory formulas count the arrays each strategy holds beyond plain forward modelling: "
                  "full storage keeps nt+1 snapshots with halo; subsampling ⌈(nt+1)/k⌉ snapshots and a separate "
                  "adjoint field (3 time levels); probing / DFT r (= 2nf) accumulators ū, the B-slot ring and the "
                  "gradient (the adjoint field reuses u's buffers); checkpointing c checkpoints of u's 2 time levels "
                  "(pyrevolve, `DevitoCheckpoint.size`) and a separate adjoint field; c = ⌈(r+B+1)/2⌉ so that "
                  "checkpointing holds at least the probed memory. DFT with nf = r/2 frequencies holds 2nf = r "
                  "real columns (the seed's 2r·N with its r = nf). Traces, Q and Devito's run-time allocations "
                  "are not in the formulas.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- speed
def part_speed(case, t, r, repeats=3, eq_repeats=1):
    model0, q, d = setup(case, t)
    B = DEFAULT_BLOCK
    ncp = -(-(r + B + 1) // 2)
    cfgs = [dict(name="plain_fwd_adj", strategy="plain"),
            dict(name="probe_blocked_auto", strategy="probe", opts=dict(ps=r, seed=0)),
            dict(name="probe_blocked_k1", strategy="probe", opts=dict(ps=r, seed=0, subsample=1))]
    cfgs += [dict(name=f"probe_blocked_B{b}", strategy="probe", opts=dict(ps=r, seed=0, block=b))
             for b in (4, 8, 16) if b != B]
    cfgs += [dict(name="full", strategy="full"),
             dict(name=f"checkpoint_c{ncp}", strategy="checkpoint", opts=dict(n_checkpoints=ncp)),
             dict(name="probe_eq_auto", strategy="probe", opts=dict(ps=r, seed=0, method="eq"))]
    times = {c["name"]: [] for c in cfgs}
    grads = {}
    for c in cfgs:  # warm-up: compile every operator outside the timings
        print("warm", c["name"], flush=True)
        t0 = time.perf_counter()
        grads[c["name"]] = run_config(model0, q, d, c)
        times[c["name"]].append(("warm", time.perf_counter() - t0))
    for rep in range(repeats):
        for c in cfgs:
            if c["name"] == "probe_eq_auto" and rep >= eq_repeats:
                continue
            t0 = time.perf_counter()
            run_config(model0, q, d, c)
            times[c["name"]].append((rep, time.perf_counter() - t0))
            print("rep", rep, c["name"], round(times[c["name"]][-1][1], 3), flush=True)
    best = {k: min(v for tag, v in ts if tag != "warm") for k, ts in times.items()}
    g_ex = grads["full"]
    cos = {k: (cosine(g, g_ex) if g is not None else None) for k, g in grads.items()}
    p = best["probe_blocked_auto"]
    ratios = {"probe_auto / plain_fwd_adj": p / best["plain_fwd_adj"],
              "probe_k1 / plain_fwd_adj": best["probe_blocked_k1"] / best["plain_fwd_adj"],
              "full / probe_auto": best["full"] / p,
              f"checkpoint_c{ncp} / probe_auto": best[f"checkpoint_c{ncp}"] / p,
              "eq_auto / probe_auto": best["probe_eq_auto"] / p,
              "eq_auto / plain_fwd_adj": best["probe_eq_auto"] / best["plain_fwd_adj"]}
    ratios.update({f"B{b} / B{B}(auto)": best[f"probe_blocked_B{b}"] / p
                   for b in (4, 8, 16) if b != B})
    return dict(case=case, T=t, r=r, B=B, k_auto=auto_k(model0, q, d, r), **case_info(model0, q, d),
                raw=times, best_s=best, ratios=ratios, cosine=cos,
                cos_blocked_minus_eq=cos["probe_blocked_auto"] - cos["probe_eq_auto"], meta=meta())


# --------------------------------------------------------------------------- sweep
def part_sweep(points, repeats):
    """probe(r) vs plain fwd+adj time and probed working memory versus N (grid), nt and r."""
    rows, failed = [], []
    for case, t, r in points:
        t0 = time.time()  # the worker models (and caches) the observed data before measuring
        try:
            row = in_subprocess(run_worker, dict(mode="sweep", case=case, t=t, r=r, repeats=repeats))
        except RuntimeError as e:  # recorded (and reported at the end); the other points still run
            print(e, file=sys.stderr, flush=True)
            failed.append(dict(case=case, T=t, r=r, error=str(e)[-3000:]))
            continue
        row["subprocess_s"] = time.time() - t0
        # ū, ring, gradient on the probe region + the padded gradient array returned
        row["expected_mb"] = ((r + row["B"] + 1) * row["N_r"] + row["N"]) * FLOAT / MIB
        rows.append(row)
        print("sweep", {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                        if k in ("case", "T", "r", "k", "N", "nt", "plain_s", "probe_s", "ratio",
                                 "working_mb", "expected_mb")}, flush=True)
    return dict(rows=rows, failed=failed, fit=fit_sweep(rows) if rows else None, meta=meta())


def fit_sweep(rows):
    """Least-squares constants of the asymptotics: plain ≈ a·N·nt, probed ≈ N·nt·(a' + b·r/k)."""
    W = np.array([x["N"] * x["nt"] for x in rows], float)
    tpl = np.array([x["plain_s"] for x in rows])
    tpr = np.array([x["probe_s"] for x in rows])
    rk = np.array([x["r"] / x["k"] for x in rows], float)
    a = float(np.exp(np.mean(np.log(tpl / W))))  # geometric mean of plain time per point-step
    if np.ptp(rk) > 0:
        A = np.stack([np.ones_like(rk), rk], 1)
        (a1, b), *_ = np.linalg.lstsq(A, tpr / W, rcond=None)
    else:
        a1, b = float(np.mean(tpr / W)), float("nan")
    return dict(c_stencil_ns=a * 1e9, c_probe0_ns=float(a1) * 1e9, c_r_ns=float(b) * 1e9,
                note="plain ≈ c_stencil·N·nt; probed ≈ N·nt·(c_probe0 + c_r·r/k); constants in ns per "
                     "grid point and time step (forward + adjoint)")


def plot_sweep(sweep, path):
    import matplotlib.ticker

    from timeprobe import plotting
    rows, fit = sweep["rows"], sweep["fit"]
    a, a1, b = (fit[k] * 1e-9 for k in ("c_stencil_ns", "c_probe0_ns", "c_r_ns"))
    fig, ax = plotting.figure(1, 3, figsize=(16, 4.6))
    # (1) time vs N·nt
    W = np.array([x["N"] * x["nt"] for x in rows], float)
    ax[0].loglog(W, [x["plain_s"] for x in rows], "ks", mfc="none", label="plain fwd+adj")
    for r in sorted({x["r"] for x in rows}):
        sel = [x for x in rows if x["r"] == r]
        ax[0].loglog([x["N"] * x["nt"] for x in sel], [x["probe_s"] for x in sel], "o", label=f"probed r={r}")
    w = np.geomspace(W.min() / 1.5, W.max() * 1.5, 50)
    ax[0].loglog(w, a * w, "k--", lw=0.8, label=f"c_stencil·N·nt, c_stencil={a * 1e9:.2g} ns")
    rk0 = np.median([x["r"] / x["k"] for x in rows])
    if np.isfinite(b):
        ax[0].loglog(w, w * (a1 + b * rk0), "C0:", lw=0.8, label=f"N·nt·(c₀ + c·r/k), r/k={rk0:.3g}")
    ax[0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax[0].set_xlabel("N·nt (grid points × time steps)")
    ax[0].set_ylabel("time (s)")
    ax[0].set_title("time = O(nt·N·(c_stencil + c·r/k))", fontsize=10)
    ax[0].legend(fontsize=7)
    # (2) working memory vs r: one colour (and one formula line) per grid; markers by recording time
    Ns = sorted({x["N"] for x in rows})
    Ts = sorted({x["T"] for x in rows})
    marks = dict(zip(Ts, "os^vD<>"))
    rr = np.linspace(0, max(x["r"] for x in rows) * 1.1, 50)
    for i, N in enumerate(Ns):
        sel = [x for x in rows if x["N"] == N]
        for T in Ts:
            selT = [x for x in sel if x["T"] == T]
            if selT:
                ax[1].plot([x["r"] for x in selT], [x["working_mb"] for x in selT], marks[T], color=f"C{i}",
                           mfc="none" if T != Ts[len(Ts) // 2] else None,
                           label=f"{sel[0]['case']}, T={T:g} ms (nt={selT[0]['nt']})")
        B, Nr = sel[0]["B"], sel[0]["N_r"]
        ax[1].plot(rr, ((rr + B + 1) * Nr + N) * FLOAT / MIB, "--", color=f"C{i}", lw=0.8,
                   label=f"((r+B+1)·N_r + N)·4 B, N_r={Nr:,}, B={B}")
    ax[1].set_xlabel("r (probes)")
    ax[1].set_ylabel("probed working memory (MiB)")
    ax[1].set_title("memory = (r+B+1)·N_r + N floats (independent of nt)", fontsize=10)
    ax[1].set_xlim(left=0)
    ax[1].set_ylim(bottom=0)
    ax[1].legend(fontsize=6)
    # (3) probed / plain time vs r, and the fitted model at the k of the most common r/k
    for i, N in enumerate(Ns):
        sel = [x for x in rows if x["N"] == N]
        for T in Ts:
            selT = sorted([x for x in sel if x["T"] == T], key=lambda x: x["r"])
            if selT:
                ax[2].plot([x["r"] for x in selT], [x["ratio"] for x in selT], marks[T] + "-", color=f"C{i}",
                           lw=0.5, label=f"{sel[0]['case']}, T={T:g} ms")
    if np.isfinite(b):
        ksel = int(np.median([x["k"] for x in rows]))
        ax[2].plot(rr, (a1 + b * rr / ksel) / a, "k--", lw=0.8,
                   label=f"fit (c₀ + c·r/k)/c_stencil, k={ksel}: c₀/c_st={a1 / a:.2f}, c/c_st={b / a:.3f}")
    ax[2].set_xlabel("r (probes)")
    ax[2].set_ylabel("probed / plain fwd+adj time")
    ax[2].set_title("ratio = (c₀ + c·r/k) / c_stencil  (k: time subsampling)", fontsize=10)
    ax[2].legend(fontsize=6)
    plotting.save(fig, path, dpi=100)  # a new file of this run (main refuses existing outputs)


def plot_pareto(table, path):
    """Working memory vs cosine of every strategy, labelled with its time / plain fwd+adj; one panel per case."""
    from timeprobe import plotting
    cases = {case: [(name, row) for name, row in res["rows"].items() if row.get("cosine") is not None
                    and row.get("working_mb", 0) > 0 and "error" not in row] for case, res in table.items()}
    cases = {case: rows for case, rows in cases.items() if rows}
    if not cases:
        return None
    fig, axs = plotting.figure(1, len(cases), figsize=(7.0 * len(cases), 4.8), squeeze=False)
    for ax, (case, rows) in zip(axs[0], cases.items()):
        plotting.plot_pareto([r["working_mb"] for _, r in rows], [r["cosine"] for _, r in rows],
                             [name for name, _ in rows], times=[r["time_ratio"] for _, r in rows],
                             time_format="{:.2f}× plain", ax=ax, title=case)
    return plotting.save(fig, path, dpi=100)  # a new file of this run (main refuses existing outputs)


# --------------------------------------------------------------------------- driver
def meta():
    return _harness_meta(__file__)


def table_header(m, raw):
    """Header of the generated table: the command, machine and where the raw numbers are."""
    return ("# Gradient strategies: measured compute / memory table\n\n"
            f"Generated by `{m['command']}` (`scripts/benchmark_gradients.py`, part `table`) on "
            f"{m['date']}; machine {m['host']}, {m['cpus']} CPUs, Python {m['python']}, "
            f"devito {m['devito']}, DEVITO_LANGUAGE={m['devito_language']}, "
            f"OMP_NUM_THREADS={m['omp_num_threads']}. Raw numbers: {raw}. "
            "Do not edit: rerun the command (with `--write-docs` for `benchmarks/gradients_table.md`).")


def peers_header(m, raw):
    return ("# timeprobe and Deepwave 0.1.0 on the same shots\n\n"
            f"Generated by `{m['command']}` (`scripts/benchmark_gradients.py`, part `peers`) on {m['date']}. "
            f"Raw numbers: {raw}. Do not edit: rerun the command (with `--write-docs` for "
            "`benchmarks/gradients_peers.md`).")


def raw_numbers(rec, out, part):
    """Where a generated document's numbers are: the history record (if any) and this run's JSON."""
    where = f"`{out.name}` (key `{part}`)"
    return f"{records.cite(rec)}, figures key `{part}`; also {where}" if rec else \
        f"{where}, not recorded in the history (--quick / --no-record)"


def failures(res, parts):
    """The failed measurements of ``parts`` in the results ``res`` (names)."""
    failed = [f"table {case} {name}" for case, tab in res.get("table", {}).items() if "table" in parts
              for name, row in tab["rows"].items() if "error" in row]
    failed += [f"peers {key} {name}" for key, c in res.get("peers", {}).items() if "peers" in parts
               for name, row in c["rows"].items() if "error" in row]
    failed += [f"sweep {x['case']} T={x['T']:g} r={x['r']}" for x in res.get("sweep", {}).get("failed", [])
               if "sweep" in parts]
    return failed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", nargs="+", default=["table", "speed", "sweep"],
                    choices=["table", "speed", "sweep", "peers"])
    ap.add_argument("--quick", action="store_true", help="tiny cases (smoke test); not recorded in the history")
    ap.add_argument("--cases", nargs="+", default=None,
                    help="table cases, NAME or NAME:T_ms (default overthrust2d layered3d; quick: tiny ones)")
    ap.add_argument("--r", type=int, default=None, help="probes for table and speed (default 32; quick 8)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per configuration (minimum kept)")
    ap.add_argument("--out", default=None, help="JSON of this run (must not exist; default "
                    "results/benchmark_gradients-<time>/gradients.json); the Markdown tables <stem>_table.md, "
                    "<stem>_peers.md and figures/<stem>_{scaling,pareto,peers_pareto}.png go beside it")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    records.add_arguments(ap, docs="benchmarks/gradients_table.md, benchmarks/gradients_peers.md and "
                          "benchmarks/figures/gradients_{scaling,pareto,peers_pareto}.png of the parts run")
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(run_worker(json.loads(a.worker))))  # one measurement by hand (debugging)
        return
    if a.repeats is not None and a.repeats < 1:
        ap.error("--repeats must be >= 1")
    records.check_arguments(ap, a)
    conf = QUICK if a.quick else FULL
    r = a.r or conf["r"]
    cases = [parse_case(c) for c in a.cases] if a.cases else conf["table"]
    if a.out:
        out = Path(a.out)
    else:
        out = records.output_dir("benchmark_gradients" + ("-quick" if a.quick else "")) / "gradients.json"

    def outputs(stem, folder):
        return dict(json=folder / f"{stem}.json", table=folder / f"{stem}_table.md",
                    peers=folder / f"{stem}_peers.md", scaling=folder / "figures" / f"{stem}_scaling.png",
                    pareto=folder / "figures" / f"{stem}_pareto.png",
                    peers_pareto=folder / "figures" / f"{stem}_peers_pareto.png")
    paths = outputs(out.stem, out.parent)
    paths["json"] = out
    docs = outputs("gradients", records.DOCS)  # the committed documents (--write-docs)
    records.refuse_existing(*paths.values())  # this run's outputs never replace a file
    out.parent.mkdir(parents=True, exist_ok=True)

    def publish(key, text=None):
        """--write-docs: this run's figure (or ``text``, the document) becomes the committed one;
        not when the part has failed measurements (they stay in this run's files and the record)."""
        if not a.write_docs or not paths[key].exists():
            return
        if failures(res, [part]):
            print("not writing", docs[key], "(failed measurements)", flush=True)
            return
        docs[key].parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            shutil.copyfile(paths[key], docs[key])
        else:
            docs[key].write_text(text)
        print("wrote", docs[key], flush=True)

    res = {"machine": {k: v for k, v in meta().items() if k not in ("date", "command")},
           "command": meta()["command"]}
    rep = lambda part: a.repeats or conf["repeats"][part]  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        for part in dict.fromkeys(a.part):  # each part once
            t0 = time.time()
            if part == "table":
                res["table"] = part_table(cases, r, rep("table"), tmp)
            elif part == "speed":
                case, t = (cases[0] if a.cases else conf["speed"])
                res["speed"] = part_speed(case, t, r, repeats=rep("speed"))
            elif part == "peers":
                pconf = peers.QUICK if a.quick else peers.FULL
                res["peers"] = peers.part_peers(cases if a.cases else pconf["cases"], r,
                                                a.repeats or pconf["repeats"], tmp)
            else:
                res["sweep"] = part_sweep(conf["sweep"], rep("sweep"))
            res.setdefault("part_wall_s", {})[part] = time.time() - t0
            # one record per part run: its figures, under the part's name
            rec = records.record(a, "benchmark_gradients", {part: res[part], "wall_s": time.time() - t0},
                                 argv, __file__)
            raw = raw_numbers(rec, out, part)
            doc_raw = f"{records.cite(rec)}, figures key `{part}`" if rec else None  # committed: the record only
            if part == "table":
                paths["table"].write_text(markdown_table(res["table"], table_header(meta(), raw)) + "\n")
                print("wrote", paths["table"], flush=True)
                publish("table", doc_raw and markdown_table(res["table"], table_header(meta(), doc_raw)) + "\n")
                if plot_pareto(res["table"], paths["pareto"]):
                    print("wrote", paths["pareto"], flush=True)
                    publish("pareto")
            elif part == "peers":
                paths["peers"].write_text(peers.markdown(res["peers"], peers_header(meta(), raw)) + "\n")
                peers.plot_pareto(res["peers"], paths["peers_pareto"])
                print("wrote", paths["peers"], "and", paths["peers_pareto"], flush=True)
                publish("peers", doc_raw and peers.markdown(res["peers"], peers_header(meta(), doc_raw)) + "\n")
                publish("peers_pareto")
            elif part == "sweep" and res["sweep"]["rows"]:
                plot_sweep(res["sweep"], paths["scaling"])
                print("wrote", paths["scaling"], flush=True)
                publish("scaling")
            out.write_text(json.dumps(res, indent=1, default=str))  # this run's own file, part by part
            print("wrote", out, f"({part}: {time.time() - t0:.0f} s)", flush=True)
    if "speed" in a.part:
        print(json.dumps({k: res["speed"][k] for k in ("best_s", "ratios", "cosine")}, indent=1))
    failed = failures(res, a.part)
    if failed:
        sys.exit("failed measurements (errors in the JSON and the record): " + "; ".join(failed))


if __name__ == "__main__":
    main()
