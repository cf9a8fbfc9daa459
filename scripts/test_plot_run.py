#!/usr/bin/env python3
"""Checks of scripts/plot_run.py: the PCA and anchor-ellipse math on hand-made cases, the three
PNGs from a fake run folder (3 groups, 4 classes, k = 5, 3 epochs), and the input errors
(exit code 2 naming the file) and the printed note when latents.npz is absent; the output rule
(scripts/outputs.py): a FIFO, a foreign file or a file of the run at an output path refused
before anything is written, a link followed and its target replaced by a rename, and output
lost on standard output (/dev/full) turned into exit code 1.

Run: python3 -m pytest scripts/test_plot_run.py   or   python3 scripts/test_plot_run.py
"""

import json
import math
import os
import stat
import struct
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plot_run as pr  # noqa: E402

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plot_run.py")
GROUPS = ("full28", "down16", "proj64")
C, K = 4, 5
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _close(a, b, tol=1e-9):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape and np.allclose(a, b, rtol=0, atol=tol), "%r != %r" % (a, b)


def _metrics_lines(erm=False, partial_last=False, epochs=3):
    lines = []
    q = np.full(3, 1 / 3)
    for e in range(1, epochs + 1):
        if not erm:
            q = q * np.exp(0.05 * np.array([0.2, 0.5, 1.0]))
            q /= q.sum()
        acc = {g: 0.5 + 0.1 * e - 0.05 * i for i, g in enumerate(GROUPS)}
        rec = {"epoch": e, "step": 600 * e, "loss": 1.0 / e, "loss_clf": 0.9 / e, "loss_fit": 300.0 / e,
               "loss_sep": 0.05 / e, "test_acc": acc, "worst_group_acc": min(acc.values()),
               "mean_group_acc": sum(acc.values()) / 3, "group_weights": dict(zip(GROUPS, q.tolist())),
               "step_ms": 12.5, "samples_per_s": 8000.0, "fit_skipped": 0}
        if partial_last and e == epochs:
            rec["partial_epoch_steps"] = 250
            rec["step"] = 600 * (e - 1) + 250
        lines.append(json.dumps(rec))
    return lines


def _latent_arrays(seed=0):
    """Each class's latents of every group near its own centre; anchors at the centres."""
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.standard_normal((C, K))
    arrays = {}
    for gi, g in enumerate(GROUPS):
        n = 150 + 20 * gi
        y = rng.integers(0, C, n).astype(np.int32)
        z = centres[y] + 0.5 * rng.standard_normal((n, K)) + 0.2 * gi
        arrays["z." + g] = z.astype(np.float32)
        arrays["y." + g] = y
    L = 0.4 * np.eye(K) + 0.1 * rng.standard_normal((C, K, K))
    arrays["anchor_mean"] = centres.astype(np.float32)
    arrays["anchor_cov"] = (L @ L.transpose(0, 2, 1) + 1e-5 * np.eye(K)).astype(np.float32)
    return arrays


def _make_run(folder, latents=True, erm=False, partial_last=False, report=True, **overrides):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
        f.write("\n".join(_metrics_lines(erm, partial_last)) + "\n")
    if report:
        with open(os.path.join(folder, "report.json"), "w") as f:
            json.dump({"status": "complete", "test_acc": {g: 0.8 for g in GROUPS}}, f)
    if latents:
        arrays = _latent_arrays()
        arrays.update(overrides)
        np.savez(os.path.join(folder, "latents.npz"), **{k: v for k, v in arrays.items() if v is not None})
    return folder


def _run(args, timeout=120):
    return subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True, timeout=timeout)


def _png_size(path):
    """(width, height) from the IHDR chunk; asserts the PNG signature."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_MAGIC, "%s is not a PNG" % path
    assert head[12:16] == b"IHDR", path
    return struct.unpack(">II", head[16:24])


# ----------------------------------------------------------------------------- math

def test_pca_points_on_a_line():
    # Latents on a line c + t·d in R^5: PC1 is ±d (sign rule: largest entry positive), all
    # the variance is on it, and the points' PC2 coordinates are 0.
    d = np.array([1.0, 2.0, -0.5, 0.0, 3.0])
    d /= np.linalg.norm(d)
    c = np.array([5.0, -1.0, 2.0, 0.5, 0.0])
    t = np.linspace(-2, 4, 9)
    X = c + t[:, None] * d
    mean, P, ratio = pr.pca_fit(X)
    _close(mean, c + t.mean() * d)
    _close(P[0], d)                 # largest entry of d (3/|d|) is positive already
    _close(P @ P.T, np.eye(2))
    _close(ratio[0], 1.0)
    xy = pr.pca_project(X, mean, P)
    _close(xy[:, 0], t - t.mean())
    _close(xy[:, 1], np.zeros_like(t))
    # An anchor mean at c + 3d + 2e (e ⟂ d): PC1 coordinate 3 − mean(t), whatever PC2 is.
    e = np.array([0.0, 0.0, 0.0, 1.0, 0.0])
    a = pr.pca_project(c + 3 * d + 2 * e, mean, P)
    _close(a[0], 3 - t.mean())


def test_pca_plane_projects_anchor_means_exactly():
    # Latents base + a·u + b·v with orthonormal u (spread ±3) and v (spread ±0.5), a and b of
    # mean 0 and uncorrelated: the data mean is `base`, P = [u; v], and an anchor mean
    # base + 5u − 2v + 7w (w ⟂ u, v) projects to exactly (5, −2).
    u = np.array([0.0, 0.6, 0.0, 0.8, 0.0])
    v = np.array([0.0, 0.0, 1.0, 0.0, 0.0])
    w = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
    base = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    a = np.array([-3.0, -1.0, 0.0, 1.0, 3.0] * 2)
    b = np.array([-0.5, 0.5] * 5)
    assert a.mean() == 0 and b.mean() == 0 and (a * b).sum() == 0
    X = base + a[:, None] * u + b[:, None] * v
    mean, P, ratio = pr.pca_fit(X)
    _close(mean, base)
    _close(P, np.stack([u, v]))
    _close(ratio, np.array([(a ** 2).sum(), (b ** 2).sum()]) / ((a ** 2).sum() + (b ** 2).sum()))
    anchors = np.stack([base + 5 * u - 2 * v + 7 * w, base, base - 1.5 * u])
    _close(pr.pca_project(anchors, mean, P), [[5.0, -2.0], [0.0, 0.0], [-1.5, 0.0]])


def test_pca_sign_rule():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((50, 6)) * np.array([5, 4, 3, 2, 1, 0.5])
    _, P1, _ = pr.pca_fit(X)
    _, P2, _ = pr.pca_fit(-X)     # same directions, SVD may flip signs
    _close(P1, P2)
    for row in P1:
        assert row[np.argmax(np.abs(row))] > 0


def test_project_cov_and_ellipse_semi_axes():
    # S [5,5] hand-made; P picks two orthonormal directions. P S Pᵀ by hand, then the ellipse's
    # semi-axes must be 2√λ of that 2x2 and its angle the major eigenvector's.
    S = np.diag([4.0, 2.0, 7.0, 1.0, 3.0])
    S[0, 1] = S[1, 0] = 1.0
    P = np.zeros((2, 5))
    P[0, 0] = P[1, 1] = 1.0
    cov2 = pr.project_cov(S, P)
    _close(cov2, [[4.0, 1.0], [1.0, 2.0]])
    lam_big, lam_small = 3 + math.sqrt(2), 3 - math.sqrt(2)   # eigenvalues of [[4,1],[1,2]]
    a, b, angle = pr.ellipse_params(cov2)
    _close(a, 2 * math.sqrt(lam_big))
    _close(b, 2 * math.sqrt(lam_small))
    # major eigenvector ∝ (1, λ − 4) = (1, √2 − 1): angle atan(√2 − 1) = 22.5°
    _close(angle, 22.5)
    a3, b3, _ = pr.ellipse_params(cov2, nsigma=3)
    _close([a3, b3], [3 * math.sqrt(lam_big), 3 * math.sqrt(lam_small)])
    # a stack of covariances projects one by one
    stack = np.stack([S, 2 * S])
    _close(pr.project_cov(stack, P), np.stack([cov2, 2 * cov2]))
    # a rotated plane: P S Pᵀ with general orthonormal rows
    rng = np.random.default_rng(1)
    Q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    Pr = Q[:2]
    L = rng.standard_normal((5, 5))
    S2 = L @ L.T + 1e-5 * np.eye(5)
    c2 = pr.project_cov(S2, Pr)
    _close(c2, Pr @ S2 @ Pr.T)
    lam = np.linalg.eigvalsh(c2)
    a, b, _ = pr.ellipse_params(c2)
    _close([a, b], 2 * np.sqrt(lam[::-1]))


def test_ellipse_axis_aligned_and_vertical():
    a, b, angle = pr.ellipse_params([[1.0, 0.0], [0.0, 9.0]])
    _close([a, b, abs(angle)], [6.0, 2.0, 90.0])
    a, b, angle = pr.ellipse_params([[9.0, 0.0], [0.0, 0.0]])   # degenerate: zero minor axis
    _close([a, b, angle], [6.0, 0.0, 0.0])
    try:
        pr.ellipse_params([[1.0, 0.0], [0.0, -1.0]])
        raise AssertionError("a negative eigenvalue must be refused")
    except ValueError:
        pass


def test_weights_fixed():
    assert pr.weights_fixed({"a": [1 / 3] * 3, "b": [1 / 3] * 3, "c": [1 / 3] * 3})
    assert not pr.weights_fixed({"a": [0.5, 0.6], "b": [0.5, 0.4]})


def test_latents_figure_draws_the_helper_ellipses():
    with tempfile.TemporaryDirectory() as d:
        np.savez(os.path.join(d, "latents.npz"), **_latent_arrays())
        lat = pr.load_latents(os.path.join(d, "latents.npz"))
    assert lat["groups"] == list(GROUPS)
    fig, info = pr.latents_figure(lat, "fake")
    pooled = np.concatenate([lat["z"][g] for g in GROUPS])
    mean, P, _ = pr.pca_fit(pooled)
    _close(info["anchor_xy"], (lat["anchor_mean"] - mean) @ P.T)
    from matplotlib.patches import Ellipse
    ells = [p for p in fig.axes[0].patches if isinstance(p, Ellipse)]
    assert len(ells) == 2 * C, len(ells)   # coloured ring + dotted black ring per class
    for c in range(C):
        lam = np.linalg.eigvalsh(P @ lat["anchor_cov"][c] @ P.T)
        for e in ells[2 * c:2 * c + 2]:
            _close([e.width, e.height], 4 * np.sqrt(lam[::-1]), tol=1e-9)
            _close(e.center, info["anchor_xy"][c])
    import matplotlib.pyplot as plt
    plt.close(fig)


# ----------------------------------------------------------------------------- end to end

def test_end_to_end_three_pngs():
    with tempfile.TemporaryDirectory() as d:
        run = _make_run(os.path.join(d, "run-a"), partial_last=True)
        r = _run([run])
        assert r.returncode == 0, r.stderr
        out = os.path.join(run, "plots")
        for name, min_w in (("curves.png", 1000), ("group_weights.png", 600), ("latents.png", 800)):
            path = os.path.join(out, name)
            assert os.path.isfile(path), name
            assert path in r.stdout, (name, r.stdout)
            assert os.path.getsize(path) > 20000, (name, os.path.getsize(path))
            w, h = _png_size(path)
            assert w >= min_w and h >= 400, (name, w, h)
        assert "note" not in r.stdout, r.stdout


def test_out_option_and_erm_title():
    with tempfile.TemporaryDirectory() as d:
        run = _make_run(os.path.join(d, "erm-run"), erm=True, latents=False)
        m = pr.load_metrics(os.path.join(run, "metrics.jsonl"))
        fig = pr.weights_figure(m, "erm-run")
        assert "(ERM: weights fixed)" in fig.axes[0].get_title(), fig.axes[0].get_title()
        m2 = pr.load_metrics(os.path.join(_make_run(os.path.join(d, "dro")), "metrics.jsonl"))
        assert "fixed" not in pr.weights_figure(m2, "dro").axes[0].get_title()
        out = os.path.join(d, "elsewhere")
        r = _run([run, "--out", out])
        assert r.returncode == 0, r.stderr
        assert sorted(os.listdir(out)) == ["curves.png", "group_weights.png"], os.listdir(out)


def test_partial_epoch_and_nulls_marked():
    m = None
    with tempfile.TemporaryDirectory() as d:
        run = _make_run(os.path.join(d, "p"), partial_last=True, latents=False)
        path = os.path.join(run, "metrics.jsonl")
        lines = open(path).read().splitlines()
        rec = json.loads(lines[1])
        rec["loss_fit"] = None              # how nlohmann::json writes NaN
        lines[1] = json.dumps(rec)
        lines.append(json.dumps({"final": True, "median_step_ms": 3.0}))   # torch_reference summary
        open(path, "w").write("\n".join(lines) + "\n")
        m = pr.load_metrics(path)
        assert m["partial"] == {3: 250} and m["epochs"] == [1, 2, 3]
        assert math.isnan(m["loss_fit"][1]) and m["nulls"] == [(2, "loss_fit")]
        fig = pr.curves_figure(m, "p", None)
        labels = fig.axes[0].get_legend_handles_labels()[1]
        assert "partial epoch (250 steps)" in labels, labels
        assert "no report.json" in fig._suptitle.get_text()
        r = _run([run])
        assert r.returncode == 0, r.stderr
        assert "null" in r.stdout and "line 2 loss_fit" in r.stdout, r.stdout


def test_missing_latents_still_makes_other_plots():
    with tempfile.TemporaryDirectory() as d:
        run = _make_run(os.path.join(d, "nolat"), latents=False)
        r = _run([run])
        assert r.returncode == 0, r.stderr
        out = os.path.join(run, "plots")
        assert os.path.isfile(os.path.join(out, "curves.png"))
        assert os.path.isfile(os.path.join(out, "group_weights.png"))
        assert not os.path.exists(os.path.join(out, "latents.png"))
        assert "note:" in r.stdout and os.path.join(run, "latents.npz") in r.stdout, r.stdout


def test_missing_or_malformed_metrics_exit_2():
    with tempfile.TemporaryDirectory() as d:
        run = _make_run(os.path.join(d, "nometrics"))
        path = os.path.join(run, "metrics.jsonl")
        os.remove(path)
        r = _run([run])
        assert r.returncode == 2 and path in r.stderr and "not found" in r.stderr, r.stderr
        assert not os.path.exists(os.path.join(run, "plots")), "nothing may be written on error"
        with open(path, "w") as f:
            f.write(_metrics_lines()[0] + "\n{\"epoch\": 2, \"loss\n")
        r = _run([run])
        assert r.returncode == 2 and path in r.stderr and "line 2" in r.stderr, r.stderr
        rec = json.loads(_metrics_lines()[0])
        del rec["test_acc"]
        with open(path, "w") as f:
            f.write(json.dumps(rec) + "\n")
        r = _run([run])
        assert r.returncode == 2 and path in r.stderr and "'test_acc'" in r.stderr, r.stderr
        open(path, "w").close()
        r = _run([run])
        assert r.returncode == 2 and path in r.stderr and "no epoch records" in r.stderr, r.stderr
    r = _run(["/nonexistent/run/folder"])
    assert r.returncode == 2 and "/nonexistent/run/folder" in r.stderr, r.stderr


def test_malformed_latents_exit_2():
    arrays = _latent_arrays()
    cases = [
        ({"y.down16": arrays["y.down16"][:-3]}, "y.down16"),                         # z/y lengths differ
        ({"anchor_mean": np.zeros((C, K + 1), np.float32)}, "anchor_mean"),          # k mismatch
        ({"anchor_cov": np.zeros((C, K, K - 1), np.float32)}, "anchor_cov"),         # shape
        ({"y.full28": None}, "y.full28"),                                            # y missing
        ({"y.proj64": np.full(len(arrays["y.proj64"]), C, np.int32)}, "y.proj64"),   # label out of range
        ({"anchor_mean": None}, "anchor_mean"),
    ]
    with tempfile.TemporaryDirectory() as d:
        for i, (override, key) in enumerate(cases):
            run = _make_run(os.path.join(d, "bad%d" % i), **override)
            r = _run([run])
            path = os.path.join(run, "latents.npz")
            assert r.returncode == 2 and path in r.stderr and key in r.stderr, (key, r.stderr)
            assert not os.path.exists(os.path.join(run, "plots")), key
        run = _make_run(os.path.join(d, "notzip"), latents=False)
        with open(os.path.join(run, "latents.npz"), "wb") as f:
            f.write(b"not a zip file")
        r = _run([run])
        assert r.returncode == 2 and os.path.join(run, "latents.npz") in r.stderr, r.stderr
        r = _run([run, "--no-latents"])
        assert r.returncode == 0 and "--no-latents" in r.stdout, (r.stdout, r.stderr)


# ----------------------------------------------------------------------------- the output rule

def test_fifo_foreign_file_and_run_file_at_an_output_refused():
    with tempfile.TemporaryDirectory() as d:
        run = _make_run(os.path.join(d, "run"), latents=False)
        out = os.path.join(run, "plots")
        os.makedirs(out)
        # A FIFO: refused without opening it (opening it to write would wait for a reader).
        fifo = os.path.join(out, "group_weights.png")
        os.mkfifo(fifo)
        r = _run([run], timeout=30)
        assert r.returncode == 2 and fifo in r.stderr and "FIFO" in r.stderr, r.stderr
        assert "expected a PNG" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert os.listdir(out) == ["group_weights.png"], "checked before anything is written"
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        os.remove(fifo)
        # A file this command did not write: kept, its start shown escaped.
        notes = os.path.join(out, "curves.png")
        with open(notes, "wb") as f:
            f.write(b"my notes\n")
        r = _run([run])
        assert r.returncode == 2 and notes in r.stderr, r.stderr
        assert '"my notes\\x0a"' in r.stderr and "expected a PNG" in r.stderr, r.stderr
        assert open(notes, "rb").read() == b"my notes\n" and os.listdir(out) == ["curves.png"]
        # A link to a file of the run: this command reads it, so it is never replaced.
        os.remove(notes)
        run2 = _make_run(os.path.join(d, "run2"))
        out2 = os.path.join(d, "out2")
        os.makedirs(out2)
        os.symlink(os.path.join(run2, "latents.npz"), os.path.join(out2, "latents.png"))
        before = open(os.path.join(run2, "latents.npz"), "rb").read()
        r = _run([run2, "--out", out2])
        assert r.returncode == 2 and "latents.npz" in r.stderr and "reads" in r.stderr, r.stderr
        assert open(os.path.join(run2, "latents.npz"), "rb").read() == before
        assert os.listdir(out2) == ["latents.png"], os.listdir(out2)


def test_link_to_an_earlier_png_is_followed_and_replaced():
    with tempfile.TemporaryDirectory() as d:
        run = _make_run(os.path.join(d, "run"), latents=False)
        first, second = os.path.join(d, "first"), os.path.join(d, "second")
        assert _run([run, "--out", first]).returncode == 0
        target = os.path.join(first, "curves.png")
        with open(target, "wb") as f:
            f.write(PNG_MAGIC + b"an earlier, shorter plot")
        old_inode = os.stat(target).st_ino
        os.makedirs(second)
        link = os.path.join(second, "curves.png")
        os.symlink("../first/curves.png", link)
        r = _run([run, "--out", second])
        assert r.returncode == 0, r.stderr
        assert os.path.islink(link) and os.readlink(link) == "../first/curves.png", "the link is kept"
        w, _ = _png_size(target)
        assert w >= 1000 and os.path.getsize(target) > 20000, "the file it names is replaced"
        assert os.stat(target).st_ino != old_inode, "by a rename, not a write in place"
        assert sorted(os.listdir(second)) == ["curves.png", "group_weights.png"], os.listdir(second)
        assert sorted(os.listdir(first)) == ["curves.png", "group_weights.png"], "no temporary file left"


def test_failed_write_keeps_the_old_file():
    # A sync that fails (as on a full disk): WriteFailed naming the path, the temporary file
    # removed, the old file whole.
    import errno
    import outputs
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "curves.png")
        with open(path, "wb") as f:
            f.write(PNG_MAGIC + b"old")
        out = pr.png_output(path, [])
        real_fsync = outputs.os.fsync

        def full(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        outputs.os.fsync = full
        try:
            out.write(PNG_MAGIC + b"new")
            raise AssertionError("the failed sync must raise")
        except outputs.WriteFailed as e:
            assert path in str(e) and "syncing" in str(e) and "No space left" in str(e), str(e)
        finally:
            outputs.os.fsync = real_fsync
        assert os.listdir(d) == ["curves.png"] and open(path, "rb").read() == PNG_MAGIC + b"old"
        out.write(PNG_MAGIC + b"new")
        assert open(path, "rb").read() == PNG_MAGIC + b"new"


def test_lost_standard_output_exits_1():
    if not os.path.exists("/dev/full"):
        return
    with tempfile.TemporaryDirectory() as d:
        run = _make_run(os.path.join(d, "run"), latents=False)
        with open("/dev/full", "w") as full:
            r = subprocess.run([sys.executable, SCRIPT, run], stdout=full, stderr=subprocess.PIPE,
                               text=True, timeout=120)
        assert r.returncode == 1 and "standard output" in r.stderr, (r.returncode, r.stderr)
        assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
        _png_size(os.path.join(run, "plots", "curves.png"))   # the work was done all the same


def test_help_has_example():
    r = _run(["--help"])
    assert r.returncode == 0 and "Example:" in r.stdout and "RUN_DIR" in r.stdout, r.stdout


if __name__ == "__main__":
    failed = 0
    for name, fn in sorted(globals().items()):
        if name.startswith("test_") and callable(fn):
            try:
                fn()
                print("ok   %s" % name)
            except Exception as e:  # noqa: BLE001
                failed += 1
                print("FAIL %s: %r" % (name, e))
    sys.exit(1 if failed else 0)
