#!/usr/bin/env python3
"""Checks of scripts/plot_sweep_curves.py on a fake sweep folder (no trainer needed): two variants
with seed-0 runs, one complete (4 epochs, report.json with "selected" epoch 3 and majority_acc),
one unfinished (2 epochs, no report.json), and a third variant listed in runs.csv without a run
folder; the PNG written (a PNG, at the default path), the default --group (the lowest mean over
the variants of the last epoch's test accuracy, which is not the lowest single value), the legend
labels ("(running)" while a process holds the run's .lock, "(unfinished)" otherwise), the
selected-epoch dot and the majority line; the errors (exit 2, the message naming the path): a
missing folder, a folder that is not a sweep, a seed without runs, an unknown group, a malformed
metrics.jsonl, a foreign file at --out.

Run: python3 -m pytest scripts/test_plot_sweep_curves.py   or   python3 scripts/test_plot_sweep_curves.py
"""

import fcntl
import json
import os
import pathlib
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plot_sweep_curves as psc  # noqa: E402

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plot_sweep_curves.py")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GROUPS = ("alpha", "beta", "gamma")
A = "fit=none,objective=erm"      # complete, selected epoch 3
B = "fit=pooled,objective=erm"    # unfinished
C = "fit=per_group,objective=erm"  # in runs.csv, no run folder
# Test accuracy per epoch. Last epochs: A alpha .80 beta .62 gamma .70, B alpha .80 beta .80
# gamma .68: means alpha .80, beta .71, gamma .69, so the default group is gamma although beta
# has the lowest single value (A's).
TEST = {
    A: [{"alpha": 0.60, "beta": 0.40, "gamma": 0.55}, {"alpha": 0.70, "beta": 0.50, "gamma": 0.62},
        {"alpha": 0.78, "beta": 0.60, "gamma": 0.71}, {"alpha": 0.80, "beta": 0.62, "gamma": 0.70}],
    B: [{"alpha": 0.65, "beta": 0.50, "gamma": 0.60}, {"alpha": 0.80, "beta": 0.80, "gamma": 0.68}],
}
MAJORITY = {"alpha": 0.1, "beta": 0.12, "gamma": 0.6}


def _record(epoch, test):
    val = {g: a + 0.01 for g, a in test.items()}
    return {"epoch": epoch, "step": 100 * epoch, "loss": 1.0 / epoch, "loss_clf": 1.0 / epoch,
            "loss_fit": 0.0, "loss_sep": 0.1, "test_acc": test, "worst_group_acc": min(test.values()),
            "mean_group_acc": sum(test.values()) / len(test), "val_acc": val,
            "worst_val_acc": min(val.values()), "mean_val_acc": sum(val.values()) / len(val),
            "group_weights": {g: 1 / 3 for g in test}, "step_ms": 10.0, "samples_per_s": 1000.0,
            "fit_skipped": 0}


def make_sweep(root):
    """The fake sweep folder under `root` (a path); returns it as a str."""
    sweep = os.path.join(str(root), "sweep")
    for v, epochs in TEST.items():
        run = os.path.join(sweep, "runs", v, "seed0")
        os.makedirs(run)
        open(os.path.join(run, ".lock"), "w").close()
        with open(os.path.join(run, "config.toml"), "w") as f:
            f.write("[train]\nselect = 'worst_val'\nseed = 0\n")
        with open(os.path.join(run, "metrics.jsonl"), "w") as f:
            for e, test in enumerate(epochs, 1):
                f.write(json.dumps(_record(e, test)) + "\n")
    last = TEST[A][-1]
    report = {"status": "complete", "epochs": 4, "test_acc": last, "majority_acc": MAJORITY,
              "worst_group_acc": min(last.values()), "mean_group_acc": sum(last.values()) / 3,
              "selected": {"rule": "worst_val", "epoch": 3, "val_score": 0.61, "test_acc": TEST[A][2],
                           "worst_group_acc": 0.60, "mean_group_acc": 0.6967}}
    with open(os.path.join(sweep, "runs", A, "seed0", "report.json"), "w") as f:
        json.dump(report, f)
    with open(os.path.join(sweep, "runs.csv"), "w") as f:   # sweep order: C between A and B
        f.write("variant,train.fit,train.objective,seed,status\n")
        for v in (A, C, B):
            f.write('"%s",x,erm,0,not run\n' % v)
    return sweep


def _run(args, timeout=120):
    return subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True, timeout=timeout)


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_MAGIC, "%s is not a PNG" % path
    assert head[12:16] == b"IHDR", path
    return struct.unpack(">II", head[16:24])


def test_png_written_with_the_worst_group_by_default(tmp_path):
    sweep = make_sweep(tmp_path)
    r = _run([sweep])
    assert r.returncode == 0, r.stderr
    png = os.path.join(sweep, "curves_gamma_seed0.png")
    assert png in r.stdout and "group gamma (the worst" in r.stdout, r.stdout
    w, h = _png_size(png)
    assert w >= 1000 and h >= 500 and os.path.getsize(png) > 20000, (w, h)
    assert "%s: no run folder for seed 0" % C in r.stdout, r.stdout
    assert "%s: 4 epoch(s), complete" % A in r.stdout and "selected epoch 3 (worst_val)" in r.stdout, r.stdout
    assert "%s: 2 epoch(s), unfinished" % B in r.stdout, r.stdout
    assert sorted(n for n in os.listdir(sweep) if not n.startswith("runs")) == ["curves_gamma_seed0.png"], \
        "no temporary file left"
    # again over its own PNG: replaced (the rule lets a PNG be replaced)
    r = _run([sweep])
    assert r.returncode == 0, r.stderr


def test_figure_contents(tmp_path):
    sweep = make_sweep(tmp_path)
    runs = psc.load_runs(sweep, 0)
    assert [v for v, _ in runs] == [A, B], "runs.csv order, C skipped"
    assert psc.worst_group(runs) == "gamma"
    fig, info = psc.curves_figure(runs, "gamma", 0, "t")
    assert info["labels"] == [A, B + " (unfinished)"], info["labels"]
    assert info["selected"] == {A: (3, 0.71, "worst_val")}, info["selected"]
    assert info["majority"] == 0.6 and info["majority_where"] == "", info
    ax = fig.axes[0]
    styles = [(line.get_linestyle(), len(line.get_xdata())) for line in ax.get_lines()]
    # A: test solid 4, val dashed 4, selected dot; B: test 2, val 2; majority line
    assert ("-", 4) in styles and ("--", 4) in styles and ("-", 2) in styles and ("--", 2) in styles, styles
    assert any(list(line.get_ydata()) == [0.6, 0.6] for line in ax.get_lines()), "majority line"
    dots = [line for line in ax.get_lines() if line.get_linestyle() == "None"]
    assert len(dots) == 1 and list(dots[0].get_xdata()) == [3] and list(dots[0].get_ydata()) == [0.71]
    psc.plt.close(fig)
    # alpha's majority 0.1 is far below its curves: not drawn inside the axes, but named
    fig, info = psc.curves_figure(runs, "alpha", 0, "t")
    assert info["majority"] == 0.1 and "below" in info["majority_where"], info
    assert fig.axes[0].get_ylim()[0] > 0.5, fig.axes[0].get_ylim()
    psc.plt.close(fig)


def test_running_while_the_lock_is_held(tmp_path):
    sweep = make_sweep(tmp_path)
    if psc.outputs.held_locks() is None:
        return   # not Linux: every unfinished run reads "(running)"
    with open(os.path.join(sweep, "runs", B, "seed0", ".lock"), "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)   # as hetdro holds it while it runs
        runs = psc.load_runs(sweep, 0)
        fig, info = psc.curves_figure(runs, "beta", 0, "t")
        psc.plt.close(fig)
        assert info["labels"] == [A, B + " (running)"], info["labels"]
        out = os.path.join(str(tmp_path), "beta.png")
        r = _run([sweep, "--group", "beta", "--out", out])
        assert r.returncode == 0, r.stderr
        assert "%s: 2 epoch(s), running" % B in r.stdout, r.stdout
        _png_size(out)


def test_missing_folder_and_not_a_sweep_exit_2(tmp_path):
    missing = os.path.join(str(tmp_path), "nowhere")
    r = _run([missing])
    assert r.returncode == 2 and missing in r.stderr and "not found" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    plain = os.path.join(str(tmp_path), "plain")
    os.makedirs(os.path.join(plain, "other"))
    r = _run([plain])
    runs = os.path.join(plain, "runs")
    assert r.returncode == 2 and "not a sweep folder" in r.stderr and runs in r.stderr, r.stderr
    assert "runs/<variant>/seed<s>/" in r.stderr, r.stderr
    os.makedirs(os.path.join(runs, "v", "notaseed"))
    r = _run([plain])
    assert r.returncode == 2 and runs in r.stderr and "no <variant>/seed<s>/" in r.stderr, r.stderr
    afile = os.path.join(str(tmp_path), "file")
    open(afile, "w").close()
    r = _run([afile])
    assert r.returncode == 2 and afile in r.stderr and "not a folder" in r.stderr, r.stderr
    assert sorted(os.listdir(plain)) == ["other", "runs"], "nothing written"


def test_unknown_group_seed_and_bad_metrics_exit_2(tmp_path):
    sweep = make_sweep(tmp_path)
    r = _run([sweep, "--group", "delta"])
    metrics = os.path.join(sweep, "runs", A, "seed0", "metrics.jsonl")
    assert r.returncode == 2 and "--group delta" in r.stderr and metrics in r.stderr, r.stderr
    assert "alpha, beta, gamma" in r.stderr, r.stderr
    r = _run([sweep, "--seed", "1"])
    assert r.returncode == 2 and sweep in r.stderr and "seed 1" in r.stderr, r.stderr
    assert "seeds with run folders: 0" in r.stderr, r.stderr
    with open(metrics, "a") as f:
        f.write('{"epoch": 5, "test_acc\n')
    r = _run([sweep])
    assert r.returncode == 2 and metrics in r.stderr and "line 5" in r.stderr, r.stderr
    assert not [n for n in os.listdir(sweep) if n.endswith(".png") or ".tmp-" in n], "nothing written"


def test_foreign_file_at_out_refused(tmp_path):
    sweep = make_sweep(tmp_path)
    notes = os.path.join(str(tmp_path), "notes.png")
    with open(notes, "wb") as f:
        f.write(b"my notes\n")
    r = _run([sweep, "--out", notes])
    assert r.returncode == 2 and notes in r.stderr and "expected a PNG" in r.stderr, r.stderr
    assert open(notes, "rb").read() == b"my notes\n"


def test_help_explains_inputs_and_outputs():
    r = _run(["--help"])
    assert r.returncode == 0, r.stderr
    for word in ("SWEEP_DIR", "--seed", "--group", "--out", "metrics.jsonl", "report.json",
                 "majority_acc", "selected", "(running)", "Exit codes", "Example:"):
        assert word in r.stdout, word


if __name__ == "__main__":
    import inspect
    failed = 0
    for name, fn in sorted(globals().items()):
        if name.startswith("test_") and callable(fn):
            try:
                if "tmp_path" in inspect.signature(fn).parameters:
                    with tempfile.TemporaryDirectory() as d:
                        fn(pathlib.Path(d))
                else:
                    fn()
                print("ok   %s" % name)
            except Exception as e:  # noqa: BLE001
                failed += 1
                print("FAIL %s: %r" % (name, e))
    sys.exit(1 if failed else 0)
