#!/usr/bin/env python3
"""Per-epoch curves of every variant of a seed sweep (scripts/sweep.py) for one group and one seed:
the group's test accuracy (solid) and validation accuracy (dashed, same colour) per epoch, one
colour per variant, the epoch the run's model-selection rule picked marked with a dot on the test
curve, and the group's majority baseline as a grey line.

Reads from SWEEP_DIR (a folder that scripts/sweep.py --out wrote; docs/DESIGN.md §4 for the run
folder's files):
  runs/<variant>/seed<S>/metrics.jsonl
                 (required for a variant to be drawn) one record per epoch: test_acc.<group>
                 (the solid curve) and val_acc.<group> (the dashed one; absent when the run kept
                 no validation split, then only the test curve is drawn). A null value (how a
                 non-finite number is written) is a gap. A run still in progress is drawn up to
                 its last complete epoch.
  runs/<variant>/seed<S>/report.json
                 (optional) "selected" {rule, epoch, test_acc, ...}, written at the end of a run
                 with train.select = "worst_val" or "mean_val": that epoch gets a dot on the test
                 curve; "majority_acc".<group>, the accuracy of always guessing the test split's
                 commonest class, drawn as a grey horizontal line (from the first report that has
                 it; when it lies so far from the curves that it would more than double the
                 y range, it is only named, "below (above) the axes", so the curves stay
                 readable);
                 "status" ("complete"/"failed").
  runs/<variant>/seed<S>/.lock
                 a run without a complete report.json is "(running)" in the legend when a hetdro
                 process holds this lock (seen in /proc/locks, without taking it), or when that
                 cannot be told; "(unfinished)" when no process holds it (interrupted: the sweep
                 resumes it when run again); "(failed)" with report.json "status": "failed".
  runs.csv       (optional) only for the variants' order (the sweep's) and the variants that have
                 no run folder yet; without it the variants are the folders under runs/, sorted.
A variant with no run folder for seed S, or whose metrics.jsonl has no epoch yet, is skipped
with a printed note.

--group NAME: default the group with the lowest mean, over the variants drawn, of the last
epoch's test accuracy (the worst group at the moment; the first in metrics.jsonl order on ties).

Writes --out PNG (default SWEEP_DIR/curves_<group>_seed<S>.png) and prints its path, after one
line per variant drawn (epochs, state, selected epoch, last test accuracy). The PNG is written
through one rule (scripts/outputs.py, the same as hetdro's and sweep.py's): to NAME.tmp-PID
beside it, synced, then renamed over NAME. NAME may be replaced only when it is absent, empty or
a PNG (by its 8-byte signature), and never when it is the sweep's worst_group.png; a link is
followed and the file it names replaced. A folder, FIFO, device, socket or a file with other
content is refused before anything is drawn. Standard output is checked: what is printed and
lost (a full disk, a closed pipe) makes the exit code 1.

Exit codes: 0 the PNG was written; 1 a write failed (a full disk; the old file stays whole) or
standard output lost what was printed; 2 bad input: SWEEP_DIR missing or not a sweep folder (no
runs/<variant>/seed<s>/), no variant with a run folder and an epoch for seed S, an unknown
--group, a malformed metrics.jsonl or report.json, an output path the rule refuses. The message
names the file or option and what was expected, and nothing is written then.

Example:
  /usr/bin/python3 scripts/plot_sweep_curves.py sweeps/hf-10ep
  # -> sweeps/hf-10ep/curves_proj64_seed0.png (proj64 being the worst group)
  /usr/bin/python3 scripts/plot_sweep_curves.py sweeps/hf-10ep --seed 1 --group low16 --out /tmp/c.png
"""

import argparse
import csv
import io
import json
import math
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.legend import Legend  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

import outputs  # noqa: E402  (scripts/outputs.py: the rule for every file written)

DPI = 120
SEED_DIR = re.compile(r"^seed(-?\d+)$")


class UserError(outputs.BadInput):
    """A problem with the user's input (sweep folder, files, options): exit code 2."""


# ----------------------------------------------------------------------------- reading

def _number(v, path, lineno, key):
    """A JSON number as float; null (a non-finite value as written) is NaN, drawn as a gap."""
    if v is None:
        return float("nan")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise UserError("%s line %d: %s = %r, expected a number" % (path, lineno, key, v))
    return float(v)


def _acc_map(rec, key, path, lineno):
    v = rec[key]
    if not isinstance(v, dict) or not v:
        raise UserError("%s line %d: %s must be a non-empty {group: accuracy} object" % (path, lineno, key))
    return {str(g): _number(x, path, lineno, "%s.%s" % (key, g)) for g, x in v.items()}


def load_metrics(path):
    """metrics.jsonl -> {"epochs": [int], "groups": [names, file order], "test": [{g: acc}],
    "val": [{g: acc} or None]}; epochs may be empty (a run that has not finished an epoch).
    Malformed -> UserError naming the file and line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError("%s: cannot read: %s" % (path, e))
    out = {"epochs": [], "groups": None, "test": [], "val": []}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise UserError("%s line %d: not JSON (%s), expected one JSON object per epoch" % (path, lineno, e))
        if not isinstance(rec, dict):
            raise UserError("%s line %d: expected a JSON object (one per epoch)" % (path, lineno))
        if rec.get("final") is True:   # torch_reference.py --json-out summary, not an epoch
            continue
        for key in ("epoch", "test_acc"):
            if key not in rec:
                raise UserError("%s line %d: missing key '%s' (an epoch record has epoch and test_acc)"
                                % (path, lineno, key))
        epoch = rec["epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise UserError("%s line %d: epoch = %r, expected an integer" % (path, lineno, epoch))
        if out["epochs"] and epoch <= out["epochs"][-1]:
            raise UserError("%s line %d: epoch %d after epoch %d (expected increasing epochs)"
                            % (path, lineno, epoch, out["epochs"][-1]))
        test = _acc_map(rec, "test_acc", path, lineno)
        if out["groups"] is None:
            out["groups"] = list(test)
        elif set(test) != set(out["groups"]):
            raise UserError("%s line %d: test_acc has groups %s, earlier lines have %s"
                            % (path, lineno, sorted(test), sorted(out["groups"])))
        out["epochs"].append(epoch)
        out["test"].append(test)
        out["val"].append(_acc_map(rec, "val_acc", path, lineno) if "val_acc" in rec else None)
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
        raise UserError('%s: status = %r, expected "complete" or "failed"' % (path, rep["status"]))
    sel = rep.get("selected")
    if sel is not None:
        ep = sel.get("epoch") if isinstance(sel, dict) else None
        if isinstance(ep, bool) or not isinstance(ep, int) or ep < 1:
            raise UserError('%s: "selected" = %s, expected an object with "epoch" (an integer >= 1), '
                            '"rule" and "test_acc"' % (path, json.dumps(sel)[:80]))
    return rep


def run_state(report, held):
    if report is not None and (report.get("status") == "complete"
                               or ("status" not in report and "test_acc" in report)):
        return "complete"
    if report is not None and report.get("status") == "failed":
        return "failed"
    return "unfinished" if held is False else "running"


def sweep_variants(sweep_dir):
    """The variant names, in the sweep's order (runs.csv) when it can be read, then the folders
    under runs/ that it does not list, sorted. UserError when SWEEP_DIR is not a sweep folder."""
    if not os.path.isdir(sweep_dir):
        if os.path.exists(sweep_dir):
            raise UserError("%s: not a folder; expected a sweep folder (scripts/sweep.py --out), "
                            "holding runs/<variant>/seed<s>/" % sweep_dir)
        raise UserError("%s: sweep folder not found; expected the folder scripts/sweep.py --out "
                        "wrote, holding runs/<variant>/seed<s>/" % sweep_dir)
    runs = os.path.join(sweep_dir, "runs")
    hint = ""
    if os.path.exists(os.path.join(sweep_dir, "metrics.jsonl")):
        hint = " (it holds metrics.jsonl: a run folder? scripts/plot_run.py plots one run)"
    if not os.path.isdir(runs):
        raise UserError("%s: not a sweep folder: %s not found; expected runs/<variant>/seed<s>/ "
                        "as scripts/sweep.py writes%s" % (sweep_dir, runs, hint))
    found = []
    for name in sorted(os.listdir(runs)):
        vdir = os.path.join(runs, name)
        if os.path.isdir(vdir) and any(SEED_DIR.match(s) and os.path.isdir(os.path.join(vdir, s))
                                       for s in os.listdir(vdir)):
            found.append(name)
    if not found:
        raise UserError("%s: not a sweep folder: %s holds no <variant>/seed<s>/ folder; expected "
                        "runs/<variant>/seed<s>/ as scripts/sweep.py writes%s" % (sweep_dir, runs, hint))
    ordered = []
    try:
        with open(os.path.join(sweep_dir, "runs.csv"), encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        if rows and rows[0] and rows[0][0] == "variant":
            for row in rows[1:]:
                if row and row[0] and row[0] not in ordered and "/" not in row[0]:
                    ordered.append(row[0])
    except (OSError, UnicodeDecodeError, csv.Error):
        ordered = []   # the order only; the folders are the truth
    return ordered + [v for v in found if v not in ordered]


def seeds_present(sweep_dir, variants):
    seeds = set()
    for v in variants:
        vdir = os.path.join(sweep_dir, "runs", v)
        if os.path.isdir(vdir):
            for s in os.listdir(vdir):
                m = SEED_DIR.match(s)
                if m and os.path.isdir(os.path.join(vdir, s)):
                    seeds.add(int(m.group(1)))
    return sorted(seeds)


def load_runs(sweep_dir, seed):
    """[(variant, run)] for the variants with an epoch for `seed`, run = {"dir", "metrics",
    "report", "state"}; prints a note for each variant skipped. UserError when none is left."""
    variants = sweep_variants(sweep_dir)
    locks = outputs.held_locks()
    out = []
    for v in variants:
        rdir = os.path.join(sweep_dir, "runs", v, "seed%d" % seed)
        mpath = os.path.join(rdir, "metrics.jsonl")
        if not os.path.isdir(rdir):
            print("note: %s: no run folder for seed %d (%s), skipped" % (v, seed, rdir))
            continue
        if not os.path.isfile(mpath):
            print("note: %s: %s not found (the run has not started writing), skipped" % (v, mpath))
            continue
        metrics = load_metrics(mpath)
        if not metrics["epochs"]:
            print("note: %s: %s has no epoch yet, skipped" % (v, mpath))
            continue
        report = load_report(os.path.join(rdir, "report.json"))
        state = run_state(report, outputs.lock_held(rdir, locks))
        out.append((v, {"dir": rdir, "metrics": metrics, "report": report, "state": state}))
    if not out:
        present = seeds_present(sweep_dir, variants)
        raise UserError("%s: no variant has a run folder with a finished epoch for seed %d "
                        "(expected %s/runs/<variant>/seed%d/metrics.jsonl with an epoch record; "
                        "seeds with run folders: %s)"
                        % (sweep_dir, seed, sweep_dir, seed, ", ".join(map(str, present)) or "none"))
    return out


def worst_group(runs):
    """The group with the lowest mean over the runs of the last epoch's test accuracy (NaN values
    left out); the first in metrics.jsonl order on ties."""
    groups = runs[0][1]["metrics"]["groups"]
    best, best_mean = None, None
    for g in groups:
        vals = [r["metrics"]["test"][-1].get(g) for _, r in runs]
        vals = [x for x in vals if x is not None and math.isfinite(x)]
        if not vals:
            continue
        mean = sum(vals) / len(vals)
        if best_mean is None or mean < best_mean:
            best, best_mean = g, mean
    return best if best is not None else groups[0]


def check_group(group, runs):
    for _, r in runs:
        if group not in r["metrics"]["groups"]:
            raise UserError("--group %s: no such group in %s (expected one of its test_acc groups: %s)"
                            % (group, os.path.join(r["dir"], "metrics.jsonl"), ", ".join(r["metrics"]["groups"])))


# ----------------------------------------------------------------------------- figure

def variant_colors(n):
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(n)]
    return [plt.get_cmap("turbo")(i / (n - 1)) for i in range(n)]


def selected_point(run, group):
    """(epoch, test accuracy, rule) of report.json's "selected" for this group, or None. The dot
    sits on the test curve (metrics.jsonl's value at that epoch; the selected model's own test_acc
    when that epoch is not in the file)."""
    rep = run["report"]
    sel = rep.get("selected") if rep else None
    if not isinstance(sel, dict):
        return None
    ep = sel["epoch"]
    m = run["metrics"]
    if ep in m["epochs"]:
        y = m["test"][m["epochs"].index(ep)][group]
    else:
        y = (sel.get("test_acc") or {}).get(group)
        if not isinstance(y, (int, float)) or isinstance(y, bool):
            return None
    return ep, float(y), str(sel.get("rule", "?"))


def majority(runs, group):
    """The group's majority_acc from the first report that has it, or None."""
    for _, r in runs:
        maj = (r["report"] or {}).get("majority_acc")
        if isinstance(maj, dict) and isinstance(maj.get(group), (int, float)) and not isinstance(maj.get(group), bool):
            return float(maj[group])
    return None


def curves_figure(runs, group, seed, title):
    """The figure, and info: {"labels": [legend label per variant], "selected": {variant: (epoch,
    acc, rule)}, "majority": value or None} for checks and the printed summary."""
    fig, ax = plt.subplots(figsize=(13, 6))
    colors = variant_colors(len(runs))
    labels, selected, rules, any_val, all_epochs = [], {}, [], False, set()
    handles = []
    for (v, r), color in zip(runs, colors):
        m = r["metrics"]
        ep = m["epochs"]
        all_epochs.update(ep)
        label = v if r["state"] == "complete" else "%s (%s)" % (v, r["state"])
        labels.append(label)
        test = [t[group] for t in m["test"]]
        line, = ax.plot(ep, test, color=color, linestyle="-", marker="o", markersize=3, linewidth=1.6)
        handles.append(Line2D([], [], color=color, linewidth=2.5, label=label))
        val = [(e, x[group]) for e, x in zip(ep, m["val"]) if x is not None and group in x]
        if val:
            any_val = True
            ax.plot([e for e, _ in val], [x for _, x in val], color=color, linestyle="--", linewidth=1.3)
        sel = selected_point(r, group)
        if sel is not None:
            selected[v] = sel
            if sel[2] not in rules:
                rules.append(sel[2])
            ax.plot([sel[0]], [sel[1]], linestyle="none", marker="o", markersize=10, color=color,
                    markeredgecolor="black", markeredgewidth=1.2, zorder=4)
    # The y range: the curves', and the majority line's when that at most doubles the span (a
    # baseline of 0.1 under curves near 0.8 would flatten them); otherwise the line is named as
    # below (or above) the axes.
    ys = [y for line in ax.get_lines() for y in line.get_ydata() if math.isfinite(y)]
    lo, hi = min(ys), max(ys)
    maj = majority(runs, group)
    maj_where = ""
    if maj is not None:
        span = max(hi - lo, 0.01)
        if lo - span <= maj <= hi + span:
            lo, hi = min(lo, maj), max(hi, maj)
            ax.axhline(maj, color="0.55", linewidth=1.5, zorder=1)
        else:
            maj_where = ", below the axes" if maj < lo else ", above the axes"
            ax.annotate("majority baseline %.4f%s" % (maj, maj_where), xy=(0.01, 0.01 if maj < lo else 0.97),
                        xycoords="axes fraction", color="0.45", fontsize=8,
                        va="bottom" if maj < lo else "top")
    pad = max(0.05 * (hi - lo), 0.005)
    ax.set_ylim(lo - pad, hi + pad)
    key = [Line2D([], [], color="0.2", linestyle="-", label="test accuracy")]
    if any_val:
        key.append(Line2D([], [], color="0.2", linestyle="--", label="validation accuracy"))
    if selected:
        key.append(Line2D([], [], linestyle="none", marker="o", markersize=9, color="0.6",
                          markeredgecolor="black", label="selected epoch (%s)" % ", ".join(rules)))
    if maj is not None:
        key.append(Line2D([], [], color="0.55", linewidth=1.5, label="majority baseline (%.4f%s)" % (maj, maj_where)))
    ax.set_xlabel("epoch")
    ax.set_ylabel("%s accuracy" % group)
    if len(all_epochs) <= 30:
        ax.set_xticks(sorted(all_epochs))
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=10)
    leg = ax.legend(handles=handles, title="variant", fontsize=8, loc="upper left",
                    bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.add_artist(leg)
    ax.legend(handles=key, fontsize=8, loc="lower left", bbox_to_anchor=(1.01, 0.0), borderaxespad=0)
    fig.tight_layout()
    return fig, {"labels": labels, "selected": selected, "majority": maj, "majority_where": maj_where}


def png_bytes(fig):
    """The figure as PNG bytes, grown to hold the legends outside the axes (an add_artist legend
    is not counted by bbox_inches="tight" alone); the figure is closed."""
    legends = [a for ax in fig.axes for a in ax.get_children() if isinstance(a, Legend)]
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", bbox_extra_artists=legends)
    finally:
        plt.close(fig)
    return buf.getvalue()


# ----------------------------------------------------------------------------- main

def png_output(path, sweep_dir):
    reads = [(os.path.join(sweep_dir, "worst_group.png"), "the sweep's worst_group.png")]
    return outputs.Output(path, "a PNG plot_sweep_curves.py writes (or nothing there)",
                          outputs.starts_with(outputs.PNG_SIGNATURE), reads)


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Plot a seed sweep (a folder scripts/sweep.py wrote): for one seed and one "
                    "group, every variant's test (solid) and validation (dashed) accuracy per "
                    "epoch, with the selected epoch and the majority baseline.",
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", metavar="SWEEP_DIR",
                   help="a sweep folder (scripts/sweep.py --out): holds runs/<variant>/seed<s>/")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="which seed's runs (default 0)")
    p.add_argument("--group", metavar="NAME",
                   help="which group (default: the lowest mean last-epoch test accuracy over the variants)")
    p.add_argument("--out", metavar="PNG", help="the picture (default SWEEP_DIR/curves_<group>_seed<S>.png)")
    args = p.parse_args(argv)

    sweep_dir = args.sweep_dir
    runs = load_runs(sweep_dir, args.seed)
    group = args.group if args.group is not None else worst_group(runs)
    check_group(group, runs)
    out_path = args.out or os.path.join(sweep_dir, "curves_%s_seed%d.png" % (group, args.seed))
    if not out_path:
        raise UserError("--out is empty, expected a PNG path")
    png = png_output(out_path, sweep_dir)
    png.check()
    folder = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(folder):
        raise UserError("--out %s: folder %s does not exist; expected a PNG path in an existing folder"
                        % (out_path, folder))

    how = "" if args.group is not None else " (the worst: lowest mean last-epoch test accuracy)"
    print("group %s%s, seed %d, %d variant(s) drawn" % (group, how, args.seed, len(runs)))
    title = ("%s, seed %d: %s accuracy per epoch, test (solid) and validation (dashed)"
             % (os.path.abspath(sweep_dir), args.seed, group))
    fig, info = curves_figure(runs, group, args.seed, title)
    for (v, r), label in zip(runs, info["labels"]):
        sel = info["selected"].get(v)
        last = r["metrics"]["test"][-1][group]
        print("  %s: %d epoch(s), %s; last test %.4f%s" % (
            v, len(r["metrics"]["epochs"]), r["state"], last,
            "; selected epoch %d (%s), test %.4f" % (sel[0], sel[2], sel[1]) if sel else ""))
    if info["majority"] is None:
        print("note: no report.json with majority_acc.%s yet, no majority baseline drawn" % group)
    png.write(png_bytes(fig))
    print(out_path)
    return 0


if __name__ == "__main__":
    sys.exit(outputs.run(main))
