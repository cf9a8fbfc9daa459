#!/usr/bin/env python3
"""Plots of one hetdro run folder (docs/DESIGN.md §4): learning curves, GroupDRO weights and a
2-D PCA picture of the shared latent space with the class anchors.

Reads from RUN_DIR:
  metrics.jsonl  (required) one record per epoch. An epoch cut short by --max-steps
                 (`partial_epoch_steps`) is plotted with a hollow marker on a grey band. A loss
                 written as null (non-finite: the JSON writer turns NaN/inf into null) is left
                 as a gap and named in a printed note. A `{"final": true, ...}` summary line (what
                 scripts/torch_reference.py --json-out appends) is not an epoch and is passed over.
  report.json    (optional) its `status` ("complete"/"failed") goes into the curves' title; when
                 it is absent the title says so (the run is unfinished or was killed).
  config.toml    (optional) read only to say, when q stayed at 1/G, whether that was ERM or
                 GroupDRO with groupdro_eta = 0.
  latents.npz    (optional) z.NAME float [n,k], y.NAME int [n] per group (group order = order of
                 the z.* keys), anchor_mean [C,k], anchor_cov [C,k,k]. When absent, latents.png is
                 skipped with a printed note and the other plots are still made.

Writes to --out (default RUN_DIR/plots) and prints each path:
  curves.png         per-group test accuracy (worst group dashed black) and the loss terms
                     loss_clf, loss_sep (left axis) and loss_fit (right axis: another scale)
  group_weights.png  q_g per epoch; "(ERM: weights fixed)" in the title when all stay equal
  latents.png        PCA (fit on all groups' test latents pooled and centred) to 2-D: colour =
                     class, marker = group; anchor means as large black-edged markers, each with
                     its 2-sigma ellipse (semi-axes 2*sqrt(eigenvalues of P S_c P^T))

Every PNG is written through one rule (scripts/outputs.py, the same as hetdro's): to
NAME.tmp-PID beside it, synced, then renamed over NAME. NAME may be replaced only when it is
absent, empty, or a PNG (by its 8-byte signature); a link is followed and the file it names
replaced. A folder, FIFO, device, socket, a file of the run this reads (metrics.jsonl, ...) or a
file with other content is refused before anything is written. Standard output is checked: what
is printed and lost (a full disk, a closed pipe) makes the exit code 1.

Errors in the inputs (missing or malformed metrics.jsonl, malformed report.json or latents.npz)
or an output path the rule refuses exit with code 2 and a message naming the file; nothing is
written then. A failed write (a full disk) exits with code 1 and leaves the old file whole.

Example:
  python3 scripts/plot_run.py runs/hetero-fashion            # -> runs/hetero-fashion/plots/*.png
  python3 scripts/plot_run.py runs/hetero-fashion --out /tmp/plots
"""

import argparse
import io
import json
import math
import os
import sys
import zipfile

import numpy as np
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

import outputs  # noqa: E402  (scripts/outputs.py: the rule for every file written)

DPI = 120
GROUP_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*")
LOSS_KEYS = ("loss_clf", "loss_fit", "loss_sep")


class UserError(outputs.BadInput):
    """A problem with the user's input (run folder, files, options): exit code 2."""


# ----------------------------------------------------------------------------- reading

def _number(v, path, lineno, key, nulls):
    """A JSON number as float; null (what a non-finite value is written as) becomes NaN and is
    recorded in `nulls` so the caller can say so."""
    if v is None:
        nulls.append((lineno, key))
        return float("nan")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise UserError("%s line %d: %s = %r, expected a number" % (path, lineno, key, v))
    return float(v)


def load_metrics(path):
    """metrics.jsonl -> dict with `epochs` (list of int), `groups` (names, in the file's order),
    `acc` {group: [..]}, `worst` [..], `weights` {group: [..]}, losses {key: [..]},
    `partial` {epoch: steps}, `nulls` [(line, key)]. Raises UserError naming the file."""
    if not os.path.isfile(path):
        raise UserError("%s not found (expected the run's per-epoch metrics, docs/DESIGN.md §4)" % path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError("%s: cannot read: %s" % (path, e))
    out = {"epochs": [], "groups": None, "acc": {}, "worst": [], "weights": {},
           "partial": {}, "nulls": []}
    for key in LOSS_KEYS:
        out[key] = []
    nulls = out["nulls"]
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise UserError("%s line %d: not JSON (%s): %r" % (path, lineno, e, line[:60]))
        if not isinstance(rec, dict):
            raise UserError("%s line %d: expected a JSON object, got %r" % (path, lineno, line[:60]))
        if rec.get("final") is True:   # torch_reference.py --json-out summary, not an epoch
            continue
        for key in ("epoch", "test_acc", "worst_group_acc", "group_weights") + LOSS_KEYS:
            if key not in rec:
                raise UserError("%s line %d: missing key '%s' (an epoch record has epoch, test_acc, "
                                "worst_group_acc, group_weights, loss_clf, loss_fit, loss_sep)"
                                % (path, lineno, key))
        epoch = rec["epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise UserError("%s line %d: epoch = %r, expected an integer" % (path, lineno, epoch))
        if out["epochs"] and epoch <= out["epochs"][-1]:
            raise UserError("%s line %d: epoch %d after epoch %d (expected increasing epochs)"
                            % (path, lineno, epoch, out["epochs"][-1]))
        for key in ("test_acc", "group_weights"):
            if not isinstance(rec[key], dict) or not rec[key]:
                raise UserError("%s line %d: %s must be a non-empty {group: number} object"
                                % (path, lineno, key))
        groups = list(rec["test_acc"])
        if out["groups"] is None:
            out["groups"] = groups
            out["acc"] = {g: [] for g in groups}
            out["weights"] = {g: [] for g in groups}
        elif set(groups) != set(out["groups"]):
            raise UserError("%s line %d: test_acc has groups %s, earlier lines have %s"
                            % (path, lineno, sorted(groups), sorted(out["groups"])))
        if set(rec["group_weights"]) != set(out["groups"]):
            raise UserError("%s line %d: group_weights has groups %s, test_acc has %s"
                            % (path, lineno, sorted(rec["group_weights"]), sorted(out["groups"])))
        out["epochs"].append(epoch)
        for g in out["groups"]:
            out["acc"][g].append(_number(rec["test_acc"][g], path, lineno, "test_acc.%s" % g, nulls))
            out["weights"][g].append(_number(rec["group_weights"][g], path, lineno,
                                             "group_weights.%s" % g, nulls))
        out["worst"].append(_number(rec["worst_group_acc"], path, lineno, "worst_group_acc", nulls))
        for key in LOSS_KEYS:
            out[key].append(_number(rec[key], path, lineno, key, nulls))
        if "partial_epoch_steps" in rec:
            steps = rec["partial_epoch_steps"]
            if isinstance(steps, bool) or not isinstance(steps, int):
                raise UserError("%s line %d: partial_epoch_steps = %r, expected an integer"
                                % (path, lineno, steps))
            out["partial"][epoch] = steps
    if not out["epochs"]:
        raise UserError("%s has no epoch records (the run has not finished an epoch yet?)" % path)
    return out


def load_report(path):
    """report.json -> dict, or None when absent. Malformed -> UserError."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            rep = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError("%s: cannot read as JSON: %s" % (path, e))
    if not isinstance(rep, dict):
        raise UserError("%s: expected a JSON object" % path)
    if "status" in rep and rep["status"] not in ("complete", "failed"):
        raise UserError("%s: status = %r, expected \"complete\" or \"failed\"" % (path, rep["status"]))
    return rep


def read_objective(path):
    """[train] objective from the run's config.toml, or None when the file is absent or
    unreadable (used only for the wording of a title)."""
    if not os.path.isfile(path):
        return None
    try:
        import tomllib
        with open(path, "rb") as f:
            obj = tomllib.load(f).get("train", {}).get("objective")
    except Exception:  # noqa: BLE001 - wording only; the caller says "ERM or eta = 0" then
        return None
    return obj if obj in ("erm", "groupdro") else None


def load_latents(path):
    """latents.npz -> dict with `groups` (names, order of the z.* keys), `z` {g: float64 [n,k]},
    `y` {g: int [n]}, `anchor_mean` [C,k], `anchor_cov` [C,k,k] (float64). None when absent.
    Any inconsistency -> UserError naming the file and the array."""
    if not os.path.exists(path):
        return None
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError("%s: cannot read as a numpy .npz: %s" % (path, e))
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise UserError("%s: a single .npy array, expected a .npz archive of z.NAME, y.NAME, "
                        "anchor_mean, anchor_cov" % path)
    with npz:
        keys = list(npz.files)
        try:
            arrays = {key: npz[key] for key in keys}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise UserError("%s: cannot read an array: %s" % (path, e))
    groups = [key[2:] for key in keys if key.startswith("z.")]
    if not groups:
        raise UserError("%s: no z.NAME arrays (keys: %s)" % (path, ", ".join(keys) or "none"))
    for key in ("anchor_mean", "anchor_cov"):
        if key not in arrays:
            raise UserError("%s: missing array '%s' (keys: %s)" % (path, key, ", ".join(keys)))
    extra = [key[2:] for key in keys if key.startswith("y.") and key[2:] not in groups]
    if extra:
        raise UserError("%s: y.%s has no matching z.%s" % (path, extra[0], extra[0]))
    mean, cov = arrays["anchor_mean"], arrays["anchor_cov"]
    for key, a in (("anchor_mean", mean), ("anchor_cov", cov)):
        if a.dtype.kind != "f":
            raise UserError("%s: %s has dtype %s, expected float" % (path, key, a.dtype))
    if mean.ndim != 2 or mean.shape[0] < 1 or mean.shape[1] < 1:
        raise UserError("%s: anchor_mean has shape %s, expected [C, k]" % (path, mean.shape))
    C, k = mean.shape
    if cov.shape != (C, k, k):
        raise UserError("%s: anchor_cov has shape %s, expected [C, k, k] = %s from anchor_mean"
                        % (path, cov.shape, (C, k, k)))
    for key, a in (("anchor_mean", mean), ("anchor_cov", cov)):
        if not np.isfinite(a).all():
            raise UserError("%s: %s has non-finite values" % (path, key))
    for c in range(C):
        S = cov[c].astype(np.float64)
        scale = max(float(np.abs(S).max()), np.finfo(np.float64).tiny)
        if float(np.abs(S - S.T).max()) > 1e-4 * scale:
            raise UserError("%s: anchor_cov[%d] is not symmetric (expected S_c = L_c L_c^T + eps I)" % (path, c))
        low = float(np.linalg.eigvalsh(0.5 * (S + S.T))[0])
        if low < -1e-5 * scale:
            raise UserError("%s: anchor_cov[%d] has eigenvalue %g, a covariance has none below 0" % (path, c, low))
    out = {"groups": groups, "z": {}, "y": {}, "anchor_mean": mean.astype(np.float64),
           "anchor_cov": cov.astype(np.float64), "classes": C, "k": k}
    for g in groups:
        z = arrays["z." + g]
        if "y." + g not in arrays:
            raise UserError("%s: z.%s has no matching y.%s" % (path, g, g))
        y = arrays["y." + g]
        if z.dtype.kind != "f" or z.ndim != 2:
            raise UserError("%s: z.%s has dtype %s shape %s, expected float [n, k]" % (path, g, z.dtype, z.shape))
        if y.dtype.kind not in "iu" or y.ndim != 1:
            raise UserError("%s: y.%s has dtype %s shape %s, expected integer [n]" % (path, g, y.dtype, y.shape))
        if len(y) != len(z):
            raise UserError("%s: z.%s has %d rows but y.%s has %d labels" % (path, g, len(z), g, len(y)))
        if z.shape[1] != k:
            raise UserError("%s: z.%s has k = %d columns but anchor_mean has k = %d"
                            % (path, g, z.shape[1], k))
        if len(y) and (y.min() < 0 or y.max() >= C):
            raise UserError("%s: y.%s has labels %d..%d, expected [0, %d) (C from anchor_mean)"
                            % (path, g, y.min(), y.max(), C))
        if not np.isfinite(z).all():
            raise UserError("%s: z.%s has %d non-finite values (did the run diverge?)"
                            % (path, g, int((~np.isfinite(z)).sum())))
        out["z"][g] = z.astype(np.float64)
        out["y"][g] = y.astype(np.int64)
    if sum(len(v) for v in out["y"].values()) < 2:
        raise UserError("%s: fewer than 2 latents in all, a PCA needs at least 2" % path)
    return out


# ----------------------------------------------------------------------------- math

def pca_fit(X, n_components=2):
    """PCA of the rows of X [n,k]: returns (mean [k], P [n_components,k] with orthonormal rows, the
    principal directions by decreasing variance, and the fraction of the total variance each
    explains). Sign convention, so pictures are reproducible: each row's entry of largest
    magnitude is positive."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] < n_components:
        raise ValueError("pca_fit: need [n, k] with k >= %d, got %s" % (n_components, X.shape))
    mean = X.mean(axis=0)
    _, s, vt = np.linalg.svd(X - mean, full_matrices=False)
    P = vt[:n_components].copy()
    for row in P:
        if row[np.argmax(np.abs(row))] < 0:
            row *= -1
    var = s ** 2
    total = var.sum()
    ratio = var[:n_components] / total if total > 0 else np.zeros(n_components)
    if len(ratio) < n_components:   # fewer samples than components: the rest explain nothing
        ratio = np.concatenate([ratio, np.zeros(n_components - len(ratio))])
    return mean, P, ratio


def pca_project(X, mean, P):
    """Coordinates of the rows of X [n,k] (or one point [k]) in the PCA plane: (X - mean) Pᵀ."""
    return (np.asarray(X, dtype=np.float64) - mean) @ P.T


def project_cov(S, P):
    """P S Pᵀ for one covariance S [k,k] or a stack [C,k,k]: the covariance of the projection."""
    return P @ np.asarray(S, dtype=np.float64) @ P.T


def ellipse_params(cov2, nsigma=2.0):
    """For a 2x2 covariance: (semi_major, semi_minor, angle_deg) of its nsigma ellipse, i.e.
    semi-axes nsigma*sqrt(λ) of the eigenvalues λ (largest first) and the major axis' angle
    from the first coordinate axis in degrees, in (-90, 90]. Eigenvalues that rounding made
    slightly negative count as 0; clearly negative ones (not a covariance) raise ValueError."""
    cov2 = np.asarray(cov2, dtype=np.float64)
    if cov2.shape != (2, 2):
        raise ValueError("ellipse_params: need a 2x2 matrix, got %s" % (cov2.shape,))
    lam, vec = np.linalg.eigh(0.5 * (cov2 + cov2.T))   # ascending
    scale = max(abs(lam[1]), np.finfo(np.float64).tiny)
    if lam[0] < -1e-9 * scale:
        raise ValueError("ellipse_params: not a covariance (eigenvalue %g)" % lam[0])
    lam = np.maximum(lam, 0.0)
    major = vec[:, 1]
    angle = math.degrees(math.atan2(major[1], major[0]))
    if angle <= -90:
        angle += 180
    elif angle > 90:
        angle -= 180
    return nsigma * math.sqrt(lam[1]), nsigma * math.sqrt(lam[0]), angle


def weights_fixed(weights, tol=1e-12):
    """True when every group's q_g equals every other's at every epoch (ERM, or η = 0)."""
    w = np.array([weights[g] for g in weights], dtype=np.float64)
    w = w[np.isfinite(w)]
    return w.size > 0 and float(w.max() - w.min()) <= tol * max(1.0, float(np.abs(w).max()))


def class_colors(C):
    """C distinct colours from a qualitative colormap (tab10 up to 10 classes, tab20 up to 20)."""
    if C <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(C)]
    if C <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(C)]
    return [plt.get_cmap("turbo")(i / (C - 1)) for i in range(C)]


# ----------------------------------------------------------------------------- figures

def _mark_partial(ax, partial, label_once=True):
    first = True
    for epoch, steps in sorted(partial.items()):
        ax.axvspan(epoch - 0.4, epoch + 0.4, color="0.85", zorder=0,
                   label=("partial epoch (%d steps)" % steps) if (first and label_once) else None)
        first = False


def _plot_series(ax, epochs, values, partial, **kw):
    """A line with markers; points of partial epochs drawn hollow."""
    line, = ax.plot(epochs, values, marker="o", markersize=4, **kw)
    hollow = [i for i, e in enumerate(epochs) if e in partial]
    if hollow:
        ax.plot([epochs[i] for i in hollow], [values[i] for i in hollow], linestyle="none", marker="o",
                markersize=8, color=line.get_color(), markerfacecolor="white", zorder=3)
    return line


def _epoch_axis(ax, epochs):
    ax.set_xlabel("epoch")
    if len(epochs) <= 20:
        ax.set_xticks(epochs)
    ax.grid(True, alpha=0.3)


def curves_figure(m, run_name, report):
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(13, 4.8))
    ep, partial = m["epochs"], m["partial"]
    if report is None:
        status = "no report.json: unfinished or killed"
    else:
        status = "status: %s" % report.get("status", "not given")
        if report.get("status") == "failed" and report.get("error"):
            status += " (%s)" % str(report["error"])[:60]
    fig.suptitle("%s: learning curves  [%s]" % (run_name, status))

    _mark_partial(ax_acc, partial)
    for g in m["groups"]:
        _plot_series(ax_acc, ep, m["acc"][g], partial, label=g)
    _plot_series(ax_acc, ep, m["worst"], partial, color="black", linestyle="--", label="worst group")
    ax_acc.set_ylabel("test accuracy")
    ax_acc.set_title("per-group test accuracy")
    _epoch_axis(ax_acc, ep)
    ax_acc.legend(fontsize=8, loc="best")

    _mark_partial(ax_loss, partial)
    l1 = _plot_series(ax_loss, ep, m["loss_clf"], partial, color="tab:blue", label="loss_clf (left axis)")
    l3 = _plot_series(ax_loss, ep, m["loss_sep"], partial, color="tab:green", label="loss_sep (left axis)")
    ax_loss.set_ylabel("loss_clf, loss_sep")
    ax_fit = ax_loss.twinx()
    l2 = _plot_series(ax_fit, ep, m["loss_fit"], partial, color="tab:red", linestyle="-.",
                      label="loss_fit (right axis)")
    ax_fit.set_ylabel("loss_fit (W2², before λ_fit)", color="tab:red")
    ax_fit.tick_params(axis="y", colors="tab:red")
    ax_loss.set_title("loss terms (epoch means; fit on its own scale, right axis)")
    _epoch_axis(ax_loss, ep)
    handles = [l1, l3, l2] + [h for h in ax_loss.get_legend_handles_labels()[0] if not isinstance(h, Line2D)]
    ax_loss.legend(handles=handles, fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def weights_figure(m, run_name, objective=None):
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ep, partial = m["epochs"], m["partial"]
    _mark_partial(ax, partial)
    for g in m["groups"]:
        _plot_series(ax, ep, m["weights"][g], partial, label=g)
    title = "%s: GroupDRO weights q_g" % run_name
    if weights_fixed(m["weights"]):
        if objective == "groupdro":
            title += " (GroupDRO with weights fixed: groupdro_eta = 0?)"
        else:
            title += " (ERM: weights fixed)"
    ax.set_title(title)
    ax.set_ylabel("q_g after the epoch")
    _epoch_axis(ax, ep)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def latents_figure(lat, run_name, nsigma=2.0):
    """The PCA picture. Returns (figure, info) where info holds the fitted PCA and the projected
    anchors (means [C,2], covariances [C,2,2], ellipse parameters), for checks."""
    groups, C = lat["groups"], lat["classes"]
    pooled = np.concatenate([lat["z"][g] for g in groups], axis=0)
    mean, P, ratio = pca_fit(pooled, 2)
    colors = class_colors(C)
    fig, ax = plt.subplots(figsize=(9.5, 7.5))
    for gi, g in enumerate(groups):
        xy = pca_project(lat["z"][g], mean, P)
        y = lat["y"][g]
        ax.scatter(xy[:, 0], xy[:, 1], s=12, alpha=0.4, linewidths=0,
                   c=[colors[c] for c in y], marker=GROUP_MARKERS[gi % len(GROUP_MARKERS)], zorder=1)
    am = pca_project(lat["anchor_mean"], mean, P)
    acov = project_cov(lat["anchor_cov"], P)
    ells = []
    for c in range(C):
        a, b, angle = ellipse_params(acov[c], nsigma)
        ells.append((a, b, angle))
        ax.add_patch(Ellipse(am[c], width=2 * a, height=2 * b, angle=angle, facecolor="none",
                             edgecolor=colors[c], linewidth=2, zorder=3))
        ax.add_patch(Ellipse(am[c], width=2 * a, height=2 * b, angle=angle, facecolor="none",
                             edgecolor="black", linewidth=0.6, linestyle=":", zorder=3))
    ax.scatter(am[:, 0], am[:, 1], s=220, c=colors, marker="*", edgecolors="black", linewidths=1.2, zorder=4)
    ax.set_xlabel("PC1 (%.1f%% of latent variance)" % (100 * ratio[0]))
    ax.set_ylabel("PC2 (%.1f%% of latent variance)" % (100 * ratio[1]))
    n_by = ", ".join("%s %d" % (g, len(lat["y"][g])) for g in groups)
    ax.set_title("%s: test latents, PCA of all groups pooled (k = %d; n: %s)\n"
                 "colour = class, marker = group; stars = anchor means, rings = anchor %g-sigma ellipses"
                 % (run_name, lat["k"], n_by, nsigma), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.set_aspect("equal", adjustable="datalim")
    class_handles = [Line2D([], [], linestyle="none", marker="o", markersize=7, color=colors[c],
                            label="class %d" % c) for c in range(C)]
    group_handles = [Line2D([], [], linestyle="none", marker=GROUP_MARKERS[gi % len(GROUP_MARKERS)],
                            markersize=7, color="0.35", label=g) for gi, g in enumerate(groups)]
    anchor_handle = [Line2D([], [], linestyle="none", marker="*", markersize=13, color="0.7",
                            markeredgecolor="black", label="anchor mean"),
                     Line2D([], [], color="0.3", linewidth=2, label="anchor %g-sigma" % nsigma)]
    leg1 = ax.legend(handles=class_handles, title="class", fontsize=8, loc="upper left",
                     bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.add_artist(leg1)
    ax.legend(handles=group_handles + anchor_handle, title="group", fontsize=8, loc="lower left",
              bbox_to_anchor=(1.01, 0.0), borderaxespad=0)
    fig.tight_layout()
    info = {"mean": mean, "P": P, "ratio": ratio, "anchor_xy": am, "anchor_cov2": acov, "ellipses": ells}
    return fig, info


def png_output(path, reads):
    return outputs.Output(path, "a PNG plot_run.py writes (or nothing there)",
                          outputs.starts_with(outputs.PNG_SIGNATURE), reads)


def _save(fig, out):
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    out.write(buf.getvalue())
    print(out.path)


# ----------------------------------------------------------------------------- main

def main(argv=None):
    p = argparse.ArgumentParser(
        description="Plot a hetdro run folder: learning curves, GroupDRO weights and the latent space "
                    "with its class anchors (docs/DESIGN.md §4).",
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a hetdro run folder (holds metrics.jsonl)")
    p.add_argument("--out", metavar="DIR", help="where to write the PNGs (default: RUN_DIR/plots)")
    p.add_argument("--no-latents", action="store_true",
                   help="do not read latents.npz even if present (no latents.png)")
    args = p.parse_args(argv)

    run_dir = args.run_dir
    if not os.path.isdir(run_dir):
        raise UserError("run folder not found: %s" % run_dir)
    run_name = os.path.basename(os.path.abspath(run_dir)) or os.path.abspath(run_dir)
    out_dir = args.out or os.path.join(run_dir, "plots")

    # Read and check everything first, so a bad input writes nothing.
    metrics = load_metrics(os.path.join(run_dir, "metrics.jsonl"))
    report = load_report(os.path.join(run_dir, "report.json"))
    objective = read_objective(os.path.join(run_dir, "config.toml"))
    lat_path = os.path.join(run_dir, "latents.npz")
    lat = None if args.no_latents else load_latents(lat_path)

    # Every output checked before any is drawn, so a refusal leaves nothing half-done.
    reads = [(os.path.join(run_dir, name), "the run's " + name)
             for name in ("metrics.jsonl", "report.json", "config.toml", "latents.npz")]
    pngs = {name: png_output(os.path.join(out_dir, name), reads)
            for name in ("curves.png", "group_weights.png", "latents.png")}
    draw_latents = lat is not None and lat["k"] >= 2
    outputs.check_folder(out_dir, "--out")
    outputs.check_all([out for name, out in pngs.items() if name != "latents.png" or draw_latents])
    if metrics["nulls"]:
        shown = ", ".join("line %d %s" % x for x in metrics["nulls"][:5])
        more = " and %d more" % (len(metrics["nulls"]) - 5) if len(metrics["nulls"]) > 5 else ""
        print("note: %s has null (non-finite) values, drawn as gaps: %s%s"
              % (os.path.join(run_dir, "metrics.jsonl"), shown, more))

    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UserError("cannot create output folder %s: %s" % (out_dir, e))

    _save(curves_figure(metrics, run_name, report), pngs["curves.png"])
    _save(weights_figure(metrics, run_name, objective), pngs["group_weights.png"])
    if args.no_latents:
        print("note: --no-latents given, latents.png not made")
    elif lat is None:
        print("note: %s not found, latents.png not made (the other plots are)" % lat_path)
    elif lat["k"] < 2:
        print("note: %s has k = %d latent dimensions, a 2-D PCA needs k >= 2; latents.png not made"
              % (lat_path, lat["k"]))
    else:
        if set(lat["groups"]) != set(metrics["groups"]):
            print("note: %s has groups %s, metrics.jsonl has %s"
                  % (lat_path, lat["groups"], metrics["groups"]))
        try:
            fig, _ = latents_figure(lat, run_name)
        except ValueError as e:
            raise UserError("%s: %s" % (lat_path, e))
        _save(fig, pngs["latents.png"])
    return 0


if __name__ == "__main__":
    sys.exit(outputs.run(main))
