#!/usr/bin/env python3
"""Checks of scripts/sweep.py against a fake hetdro (a small Python script written into a temp
folder and passed with --hetdro), so no trainer is needed: the run list of a 2x2 grid x 3 seeds,
the tables' mean ± sd and each knob's paired effect on the worst group (worked by hand), skipping complete runs on a re-run (the fake logs every
call), --resume of an interrupted run, --overwrite of a run folder without a checkpoint, a failing
run (exit 1, the others complete), --use selected, Ctrl-C (one SIGINT to the running trainer,
exit 130, then resumed), --tables-only (the tables of the complete runs, nothing run and the run
folders and logs untouched, a locked run noted "running", --use selected on the same runs),
--jobs and OMP_NUM_THREADS, a run folder made with other settings,
seed parsing and the option errors (exit 2), and worst_group.png; the output rule
(scripts/outputs.py): a FIFO, a foreign file or the --config at an output path refused before any
run, a link followed and its target replaced, and output lost on standard output (/dev/full)
turned into exit code 1.

The fake's accuracies, for group i (alpha: 0, beta: 1) of a run with train.fit F,
train.objective O and train.seed S:
    acc = 0.60 + FIT[F] + OBJ[O] + SEED[S] - 0.10 i
so the worst group is beta, the mean group acc is 0.05 below alpha's, and over seeds 0, 1, 2
every variant's numbers have the mean and sd of SEED = 0, 0.03, 0.01.

Run: python3 -m pytest scripts/test_sweep.py   or   python3 scripts/test_sweep.py
"""

import csv
import fcntl
import json
import os
import shlex
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sweep  # noqa: E402

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sweep.py")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIT = {"none": 0.0, "pooled": 0.10, "per_group": 0.05}
OBJ = {"erm": 0.0, "groupdro": 0.02}
SEED = {0: 0.0, 1: 0.03, 2: 0.01, 7: 0.05}
GRID = ["--grid", "train.fit=none,pooled", "--grid", "train.objective=erm,groupdro"]

# By hand, SEED over seeds 0, 1, 2 = 0, 0.03, 0.01: mean 0.04/3 = 0.013333..., deviations
# -0.013333, +0.016667, -0.003333, squares 1.7778e-4 + 2.7778e-4 + 1.111e-5 = 4.6667e-4,
# / (3 - 1) = 2.3333e-4, sd = sqrt(2.3333e-4) = 0.0152753.
MEAN3, SD3 = 0.04 / 3, 0.0152753
# Seeds 0 and 2 only (seed 1 failed): mean 0.005, sd = |0.01 - 0| / sqrt(2) = 0.0070711.
MEAN2, SD2 = 0.005, 0.0070711

CONFIG = """\
[data]
classes = 3

[[data.groups]]
name = "alpha"
train_x = "alpha_train_x.npy"
train_y = "alpha_train_y.npy"
test_x = "alpha_test_x.npy"
test_y = "alpha_test_y.npy"
encoder = "mlp"
hidden = [16]

[[data.groups]]
name = "beta"
train_x = "beta_train_x.npy"
train_y = "beta_train_y.npy"
test_x = "beta_test_x.npy"
test_y = "beta_test_y.npy"
encoder = "mlp"
hidden = [16]

[model]
latent_dim = 8

[train]
epochs = 2
lr = 1e-3
"""

# The fake trainer. Environment: FAKE_LOG (a JSON line per call, and one per SIGINT),
# FAKE_FAIL / FAKE_INTERRUPT (comma lists of fit/objective/seed that fail with exit 1, or write a
# checkpoint only and exit 130), FAKE_SLEEP (seconds to train; SIGINT then checkpoints and exits
# 130), FAKE_SELECTED=1 (write report.json's "selected"), FAKE_OLD_REPORT=1 (no "status").
FAKE = r'''#!%(python)s
import json, os, signal, sys, time, tomllib

FIT = %(fit)r
OBJ = %(obj)r
SEED = %(seed)r
RUN_FILES = ("metrics.jsonl", "checkpoint.safetensors", "report.json", "latents.npz")


def log(rec):
    with open(os.environ["FAKE_LOG"], "a") as f:
        f.write(json.dumps(rec) + "\n")


def value(text):
    try:
        return tomllib.loads("v = " + text)["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply(cfg, kv):
    key, _, text = kv.partition("=")
    parts = key.split(".")
    node = cfg
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    node[parts[-1]] = value(text)


def scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(scalar(x) for x in v) + "]"
    return repr(v)


def dump(cfg):
    out = []
    def table(name, t):
        out.append("[%%s]" %% name)
        for k, v in t.items():
            if not isinstance(v, dict) and not (isinstance(v, list) and v and isinstance(v[0], dict)):
                out.append("%%s = %%s" %% (k, scalar(v)))
        for k, v in t.items():
            if isinstance(v, dict):
                table(name + "." + k, v)
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                for x in v:
                    out.append("[[%%s.%%s]]" %% (name, k))
                    out.extend("%%s = %%s" %% (kk, scalar(vv)) for kk, vv in x.items())
    for name, t in cfg.items():
        table(name, t)
    return "\n".join(out) + "\n"


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


args = sys.argv[1:]
assert args[0] == "train", args
config = out = resume = None
sets, overwrite, i = [], False, 1
while i < len(args):
    a = args[i]
    if a == "--overwrite":
        overwrite, i = True, i + 1
        continue
    if a == "--config":
        config = args[i + 1]
    elif a == "--out":
        out = args[i + 1]
    elif a == "--resume":
        resume = args[i + 1]
    elif a == "--set":
        sets.append(args[i + 1])
    else:
        print("fake hetdro: unknown option " + a, file=sys.stderr)
        sys.exit(2)
    i += 2
log({"mode": "resume" if resume else "train", "dir": resume or out, "config": config, "sets": sets,
     "overwrite": overwrite, "omp": os.environ.get("OMP_NUM_THREADS")})
if resume:
    out = resume
    if not os.path.isfile(os.path.join(out, "checkpoint.safetensors")):
        print("error: %%s: cannot resume: the folder holds no checkpoint.safetensors" %% out, file=sys.stderr)
        sys.exit(2)
    with open(os.path.join(out, "config.toml"), "rb") as f:
        cfg = tomllib.load(f)
    for kv in sets:
        apply(cfg, kv)
else:
    if os.path.exists(os.path.join(out, "metrics.jsonl")) and not overwrite:
        print("error: %%s: this folder already holds a run (metrics.jsonl)" %% out, file=sys.stderr)
        sys.exit(2)
    with open(config, "rb") as f:
        cfg = tomllib.load(f)
    for kv in sets:
        apply(cfg, kv)
    base = os.path.dirname(os.path.abspath(config))
    for g in cfg["data"]["groups"]:
        for k in ("train_x", "train_y", "test_x", "test_y"):
            g[k] = os.path.normpath(os.path.join(base, g[k]))
    os.makedirs(out, exist_ok=True)
    if overwrite:
        for name in RUN_FILES:
            if os.path.exists(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
    write(os.path.join(out, "config.toml"), dump(cfg))
write(os.path.join(out, "metrics.jsonl"), '{"epoch": 1}\n')
train = cfg["train"]
fit, obj, seed = train.get("fit", "pooled"), train.get("objective", "erm"), train["seed"]
key = "%%s/%%s/%%d" %% (fit, obj, seed)
print("fake hetdro: training %%s in %%s" %% (key, out), flush=True)

stop = []
signal.signal(signal.SIGINT, lambda s, f: (stop.append(s), log({"signal": s, "dir": out})))
t_end = time.monotonic() + float(os.environ.get("FAKE_SLEEP", "0.02"))
while time.monotonic() < t_end and not stop:
    time.sleep(0.01)
if stop or key in os.environ.get("FAKE_INTERRUPT", "").split(","):
    write(os.path.join(out, "checkpoint.safetensors"), "fake checkpoint")
    print("interrupted: SIGINT at epoch 1 step 3 of 10; checkpoint written. Resume with: hetdro train --resume " + out)
    sys.exit(130)
write(os.path.join(out, "checkpoint.safetensors"), "fake checkpoint")
if key in os.environ.get("FAKE_FAIL", "").split(","):
    for n in range(1, 20):
        print("fake hetdro: step %%d of %%s" %% (n, key))
    sys.stdout.flush()
    write(os.path.join(out, "report.json"), json.dumps({"status": "failed", "error": "fake: loss turned non-finite"}))
    print("error: fake: boom at step 19", file=sys.stderr)
    sys.exit(1)
groups = [g["name"] for g in cfg["data"]["groups"]]
acc = {g: 0.60 + FIT[fit] + OBJ[obj] + SEED[seed] - 0.10 * i for i, g in enumerate(groups)}
rep = {"status": "complete", "config": config, "epochs": train.get("epochs", 10), "train_seconds": 1.25,
       "test_acc": acc, "worst_group_acc": min(acc.values()), "mean_group_acc": sum(acc.values()) / len(acc)}
if os.environ.get("FAKE_OLD_REPORT"):
    del rep["status"]
if os.environ.get("FAKE_SELECTED"):
    sel = {g: a - 0.01 for g, a in acc.items()}
    rep["selected"] = {"test_acc": sel, "worst_group_acc": min(sel.values()),
                       "mean_group_acc": sum(sel.values()) / len(sel), "epoch": 3, "rule": "worst_group"}
write(os.path.join(out, "report.json"), json.dumps(rep))
sys.exit(0)
'''


class Env:
    """A temp folder with config.toml, the fake hetdro and its log."""

    def __init__(self, d):
        self.d = d
        self.config = os.path.join(d, "data", "config.toml")
        os.makedirs(os.path.dirname(self.config))
        with open(self.config, "w") as f:
            f.write(CONFIG)
        self.hetdro = os.path.join(d, "fake-hetdro")
        with open(self.hetdro, "w") as f:
            f.write(FAKE % {"python": sys.executable, "fit": FIT, "obj": OBJ, "seed": SEED})
        os.chmod(self.hetdro, 0o755)
        self.log = os.path.join(d, "fake.log")
        self.out = os.path.join(d, "sweep")

    def args(self, seeds="0-2", grid=GRID, extra=()):
        return (["--config", self.config, "--seeds", seeds] + list(grid)
                + ["--out", self.out, "--hetdro", self.hetdro] + list(extra))

    def env(self, **kw):
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_") and k != "OMP_NUM_THREADS"}
        env["FAKE_LOG"] = self.log
        env.update({k: str(v) for k, v in kw.items()})
        return env

    def run(self, args, timeout=120, **kw):
        return subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True,
                              timeout=timeout, env=self.env(**kw))

    def calls(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [json.loads(line) for line in f if line.strip()]

    def csv(self, name):
        with open(os.path.join(self.out, name), newline="") as f:
            return list(csv.DictReader(f))

    def md(self):
        with open(os.path.join(self.out, "table.md"), encoding="utf-8") as f:
            return f.read()

    def run_dir(self, fit, obj, seed):
        return os.path.join(self.out, "runs", "fit=%s,objective=%s" % (fit, obj), "seed%d" % seed)


def _close(a, b, tol=1e-6):
    assert abs(float(a) - float(b)) <= tol, "%r != %r" % (a, b)


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_MAGIC, "%s is not a PNG" % path
    assert head[12:16] == b"IHDR", path
    return struct.unpack(">II", head[16:24])


def _base(fit, obj):
    """alpha's accuracy without the seed's term."""
    return 0.60 + FIT[fit] + OBJ[obj]


def _check_variant_row(row, fit, obj, mean_off, sd_off, n):
    b = _base(fit, obj)
    _close(row["acc_alpha_mean"], b + mean_off)
    _close(row["acc_beta_mean"], b - 0.10 + mean_off)
    _close(row["worst_group_mean"], b - 0.10 + mean_off)
    _close(row["mean_group_mean"], b - 0.05 + mean_off)
    for key in ("acc_alpha_sd", "acc_beta_sd", "worst_group_sd", "mean_group_sd"):
        if sd_off is None:
            assert row[key] == "", (key, row[key])
        else:
            _close(row[key], sd_off)
    assert int(row["n_complete"]) == n, row


# ----------------------------------------------------------------------------- parsing

def test_parse_seeds():
    assert sweep.parse_seeds("0-2,7") == [0, 1, 2, 7]
    assert sweep.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert sweep.parse_seeds("0,2,5") == [0, 2, 5]
    assert sweep.parse_seeds(" 3 ") == [3]
    assert sweep.parse_seeds("5,0-1") == [5, 0, 1]
    for bad in ("", "a", "3-1", "1,1", "0-2,2", "-1", "1.5", "0--2", "1,", "0-"):
        try:
            sweep.parse_seeds(bad)
            raise AssertionError("--seeds %r must be refused" % bad)
        except sweep.UserError as e:
            assert "--seeds" in str(e), str(e)


def test_bad_seeds_exit_2():
    with tempfile.TemporaryDirectory() as d:
        env = Env(d)
        for bad, word in (("3-1", "backwards"), ("0,x", "'x'"), ("1,1", "twice")):
            r = env.run(env.args(seeds=bad))
            assert r.returncode == 2 and "--seeds" in r.stderr and word in r.stderr, (bad, r.stderr)
        assert env.calls() == [] and not os.path.exists(env.out)


def test_grid_values_and_variant_names():
    assert sweep.split_values("none,pooled,per_group", "x") == ["none", "pooled", "per_group"]
    assert sweep.split_values('[256],[128, 64],"a,b"', "x") == ["[256]", "[128, 64]", '"a,b"']
    grid = sweep.parse_grid(["train.fit=none,pooled", "data.groups.1.hidden=[256],[128,64]"])
    names = [v.name for v in sweep.make_variants(grid)]
    assert names == ["fit=none,hidden=_256_", "fit=none,hidden=_128,64_",
                     "fit=pooled,hidden=_256_", "fit=pooled,hidden=_128,64_"], names
    # two keys with the same last part: the shortest suffixes that tell them apart
    assert sweep.short_keys(["data.groups.0.hidden", "data.groups.1.hidden", "train.lr"]) == {
        "data.groups.0.hidden": "0.hidden", "data.groups.1.hidden": "1.hidden", "train.lr": "lr"}
    # values that differ only in characters a file name cannot hold still get two folders
    v = sweep.make_variants(sweep.parse_grid(["train.x=a/b,a:b"]))
    assert len({x.name for x in v}) == 2, [x.name for x in v]
    assert sweep.toml_value("none") == "none" and sweep.toml_value("1e-3") == 0.001
    assert sweep.toml_value("[1, 2]") == [1, 2] and sweep.toml_value("true") is True


def test_option_errors_exit_2():
    with tempfile.TemporaryDirectory() as d:
        env = Env(d)
        cases = [
            (["--config", os.path.join(d, "nope.toml"), "--seeds", "0", "--out", env.out,
              "--hetdro", env.hetdro], "nope.toml"),
            (["--config", env.config, "--seeds", "0", "--out", env.out, "--hetdro", os.path.join(d, "no-exe")],
             "no-exe"),
            (env.args(grid=["--grid", "train.fit"]), "--grid train.fit"),
            (env.args(grid=["--grid", "train.fit=a", "--grid", "train.fit=b"]), "twice"),
            (env.args(grid=["--grid", "train.fit=a,,b"]), "empty value"),
            (env.args(grid=["--grid", "train.fit=a,a"]), "listed twice"),
            (env.args(extra=["--set", "train.seed=3"]), "train.seed"),
            (env.args(grid=["--grid", "train.seed=1,2"]), "train.seed"),
            (env.args(extra=["--set", "train.fit=none"]), "also a --grid key"),
            (env.args(extra=["--set", "epochs5"]), "--set epochs5"),
            (env.args(extra=["--jobs", "0"]), "--jobs"),
        ]
        for args, word in cases:
            r = env.run(args)
            assert r.returncode == 2 and word in r.stderr, (args, r.returncode, r.stderr)
            assert "Traceback" not in r.stderr, r.stderr
        assert env.calls() == [] and not os.path.exists(env.out)


def test_invalid_grid_exit_2():
    with tempfile.TemporaryDirectory() as d:
        env = Env(d)
        for grid, word in ((["--grid", "train.fit"], "expected KEY=VALUE"),
                           (["--grid", "train.fit="], "empty value"),
                           (["--grid", "train.fit=,"], "empty value"),
                           (["--grid", "=none,pooled"], "expected KEY=VALUE"),
                           (["--grid", "train.fit=[none"], "unclosed bracket")):
            r = env.run(env.args(grid=grid))
            assert r.returncode == 2 and word in r.stderr and grid[1] in r.stderr, (grid, r.stderr)
            assert "Traceback" not in r.stderr, r.stderr
        assert env.calls() == [] and not os.path.exists(env.out)


def test_help_has_example():
    r = subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Example:" in r.stdout and "--grid" in r.stdout and "--use" in r.stdout, r.stdout


# ----------------------------------------------------------------------------- sweeps

def test_dry_run_lists_the_runs():
    with tempfile.TemporaryDirectory() as d:
        env = Env(d)
        r = env.run(env.args(extra=["--dry-run"]))
        assert r.returncode == 0, r.stderr
        lines = [line for line in r.stdout.splitlines() if line.startswith("[")]
        assert len(lines) == 12, r.stdout
        want = {("fit=%s objective=%s seed %d" % (f, o, s)) for f in ("none", "pooled")
                for o in ("erm", "groupdro") for s in (0, 1, 2)}
        got = {line.split("] ", 1)[1].split(":")[0] for line in lines}
        assert got == want, got
        assert all(" start " in line for line in lines), lines
        assert lines[0].startswith("[1/12] fit=none objective=erm seed 0:"), lines[0]
        assert "seed 0" in lines[3] and "seed 1" in lines[4], lines   # seed order: every variant's seed 0 first
        assert "12 to start" in r.stdout and "dry run" in r.stdout, r.stdout
        assert env.calls() == [] and not os.path.exists(env.out), "a dry run runs and writes nothing"


def test_sweep_tables_and_rerun_skips():
    with tempfile.TemporaryDirectory() as d:
        env = Env(d)
        r = env.run(env.args())
        assert r.returncode == 0, (r.stdout, r.stderr)
        calls = env.calls()
        assert len(calls) == 12, calls
        for c in calls:
            assert c["mode"] == "train" and not c["overwrite"] and c["config"] == env.config, c
            assert c["omp"] is None, c   # --jobs 1: OMP_NUM_THREADS left alone
        c = [c for c in calls if c["dir"] == env.run_dir("pooled", "groupdro", 2)]
        assert len(c) == 1 and c[0]["sets"] == ["train.fit=pooled", "train.objective=groupdro", "train.seed=2"], c
        assert "[12/12] fit=pooled objective=groupdro seed 2: done in" in r.stdout, r.stdout
        assert "worst 0.6500" in r.stdout   # pooled/groupdro seed 2: 0.6 + 0.1 + 0.02 + 0.01 - 0.1
        assert "    | fake hetdro: training" in r.stdout, "with --jobs 1 the trainer's output is echoed"

        rows = {(row["train.fit"], row["train.objective"]): row for row in env.csv("table.csv")}
        assert sorted(rows) == [("none", "erm"), ("none", "groupdro"), ("pooled", "erm"), ("pooled", "groupdro")]
        for (fit, obj), row in rows.items():
            _check_variant_row(row, fit, obj, MEAN3, SD3, 3)
            assert row["n_seeds"] == "3" and row["n_failed"] == "0"
            assert row["variant"] == "fit=%s,objective=%s" % (fit, obj)

        md = env.md()
        assert "config: `%s`" % env.config in md, md
        assert "`train.fit` = none, pooled; `train.objective` = erm, groupdro" in md, md
        assert "seeds: 0-2 (0, 1, 2; 3)" in md and "`--use last`" in md, md
        assert "reproduce: `cd " in md and "sweep.py --config " in md and "--seeds 0-2" in md, md
        # pooled/groupdro: alpha 0.72 + 0.013333 = 0.7333, beta 0.6333, mean group 0.6833; sd 0.0153
        assert ("| pooled | groupdro | 0.7333 ± 0.0153 | 0.6333 ± 0.0153 | 0.6333 ± 0.0153 | "
                "0.6833 ± 0.0153 | 3/3 |") in md, md
        assert "| none | erm | 0.6133 ± 0.0153 | 0.5133 ± 0.0153 |" in md, md
        # Each knob's effect: FIT and OBJ add constants, so every pair differs by the same amount.
        assert "## Each knob's effect on the worst group, seed by seed" in md, md
        assert "pooled over the 4 variants with two or more complete seeds: 0.0153." in md, md
        assert "| train.fit | none → pooled | 6 | +0.1000 | 0.0000 | +0.1000 | +0.1000 | 6 / 0 |" in md, md
        assert "| train.objective | erm → groupdro | 6 | +0.0200 | 0.0000 | +0.0200 | +0.0200 | 6 / 0 |" in md, md

        runs = env.csv("runs.csv")
        assert len(runs) == 12 and all(x["status"] == "complete" and x["action"] == "start" for x in runs), runs
        x = [x for x in runs if x["variant"] == "fit=none,objective=groupdro" and x["seed"] == "1"][0]
        _close(x["acc_alpha"], 0.65)
        _close(x["worst_group_acc"], 0.55)
        _close(x["mean_group_acc"], 0.60)
        assert float(x["seconds"]) > 0 and x["exit_code"] == "0" and x["train_seconds"] == "1.25", x

        png = os.path.join(env.out, "worst_group.png")
        w, h = _png_size(png)
        assert w >= 800 and h >= 300 and os.path.getsize(png) > 10000, (w, h, os.path.getsize(png))

        # A report from before "status" (test_acc, no status) counts as complete too.
        path = os.path.join(env.run_dir("none", "erm", 1), "report.json")
        rep = json.load(open(path))
        del rep["status"]
        json.dump(rep, open(path, "w"))
        r = env.run(env.args())
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert len(env.calls()) == 12, "a re-run must start nothing"
        assert r.stdout.count("complete already, reused") == 12, r.stdout
        assert env.csv("table.csv") == list(rows.values()), "the reused results give the same table"
        assert all(x["action"] == "reused" and x["seconds"] == "" for x in env.csv("runs.csv"))

        # Other settings than the run folders were made with: refused, naming the run and the key.
        r = env.run(env.args(extra=["--set", "train.epochs=3"]))
        assert r.returncode == 2 and env.run_dir("none", "erm", 0) in r.stderr, r.stderr
        assert "train.epochs = 2, this sweep asks for 3" in r.stderr and "11 more" in r.stderr, r.stderr
        with open(env.config, "a") as f:
            f.write("lambda_sep = 0.5\n")
        r = env.run(env.args())
        assert r.returncode == 2 and "train.lambda_sep = (not there), this sweep asks for 0.5 (--config)" in r.stderr, r.stderr
        assert len(env.calls()) == 12


def test_knob_effects_pair_runs_by_seed():
    """knob_effects on made-up results, worked by hand: a 3-value knob (each later value against
    the first), a run not complete leaves its pairs out, and the seed spread pools the variants."""
    grid = [("train.fit", ["none", "pooled", "per_group"]), ("train.objective", ["erm", "groupdro"])]
    variants = sweep.make_variants(grid)
    worst = {  # (fit, objective): worst-group accuracy for seeds 0, 1 (None: not complete)
        ("none", "erm"): [0.70, 0.72], ("pooled", "erm"): [0.75, 0.73], ("per_group", "erm"): [0.71, None],
        ("none", "groupdro"): [0.69, 0.74], ("pooled", "groupdro"): [0.70, 0.76],
        ("per_group", "groupdro"): [0.68, 0.70]}
    runs = []
    for seed in (0, 1):
        for v in variants:
            r = sweep.Run(len(runs), v, seed, "/nonexistent")
            acc = worst[tuple(val for _, val in v.values)][seed]
            if acc is not None:
                r.status, r.results = "complete", {"worst_group_acc": acc, "mean_group_acc": acc,
                                                   "test_acc": {"a": acc}}
            runs.append(r)
    eff = {(e["key"], e["value"]): e for e in sweep.knob_effects(runs, grid)}
    assert sorted(eff) == [("train.fit", "per_group"), ("train.fit", "pooled"), ("train.objective", "groupdro")]
    # none -> pooled: erm +0.05, +0.01; groupdro +0.01, +0.02 (in run order: seed 0 first).
    e = eff[("train.fit", "pooled")]
    assert [round(x, 10) for x in e["diffs"]] == [0.05, 0.01, 0.01, 0.02], e
    # mean 0.0225; deviations 0.0275, -0.0125, -0.0125, -0.0025; squares 7.5625e-4 + 1.5625e-4
    # + 1.5625e-4 + 6.25e-6 = 1.075e-3; / 3 = 3.5833e-4; sd 0.0189297.
    _close(e["stats"][0], 0.0225)
    _close(e["stats"][1], 0.0189297)
    assert e["stats"][2] == 4
    # none -> per_group: erm seed 0 +0.01 (seed 1 not complete: no pair), groupdro -0.01, -0.04.
    e = eff[("train.fit", "per_group")]
    assert [round(x, 10) for x in e["diffs"]] == [0.01, -0.01, -0.04], e
    # erm -> groupdro: none -0.01, +0.02; pooled -0.05, +0.03; per_group (erm seed 1 missing) -0.03.
    e = eff[("train.objective", "groupdro")]
    assert [round(x, 10) for x in e["diffs"]] == [-0.01, -0.05, -0.03, 0.02, 0.03], e
    # Seed spread: five variants with two seeds, each (n - 1) s^2 = (a - b)^2 / 2:
    # (0.02^2 + 0.02^2 + 0.05^2 + 0.06^2 + 0.02^2) / 2 = 0.0073 / 2 = 0.00365, over the five
    # degrees of freedom 0.00073: sd 0.0270185.
    _, rows = sweep.aggregate(runs, variants)
    spread, used = sweep.seed_spread(rows)
    assert used == 5
    _close(spread, 0.0270185)
    md = sweep.effects_md(sweep.knob_effects(runs, grid), rows)
    assert "| train.fit | none → per_group | 3 | -0.0133 | 0.0252 | -0.0400 | +0.0100 | 1 / 2 |" in md, md
    assert "pooled over the 5 variants with two or more complete seeds: 0.0270." in md, md


def test_interrupted_run_resumes_and_empty_checkpoint_restarts():
    with tempfile.TemporaryDirectory() as d:
        env = Env(d)
        r = env.run(env.args(), FAKE_INTERRUPT="none/erm/2")
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "fit=none objective=erm seed 2: interrupted" in r.stdout and "--resume" in r.stdout, r.stdout
        runs = {(x["variant"], x["seed"]): x for x in env.csv("runs.csv")}
        assert runs[("fit=none,objective=erm", "2")]["status"] == "interrupted"
        assert runs[("fit=none,objective=erm", "2")]["exit_code"] == "130"
        assert sum(x["status"] == "complete" for x in runs.values()) == 11
        assert "| none | erm | " in env.md() and "2/3 (1 failed)" in env.md()

        # A folder that holds a run but no checkpoint: trained again with --overwrite.
        victim = env.run_dir("pooled", "erm", 1)
        for name in ("checkpoint.safetensors", "report.json"):
            os.remove(os.path.join(victim, name))
        r = env.run(env.args(extra=["--dry-run"]))
        assert "1 to resume, 1 to restart (--overwrite)" in r.stdout, r.stdout
        n = len(env.calls())
        r = env.run(env.args())
        assert r.returncode == 0, (r.stdout, r.stderr)
        new = env.calls()[n:]
        assert len(new) == 2, new
        res = [c for c in new if c["mode"] == "resume"]
        assert len(res) == 1 and res[0]["dir"] == env.run_dir("none", "erm", 2) and res[0]["sets"] == [], new
        over = [c for c in new if c["mode"] == "train"]
        assert len(over) == 1 and over[0]["dir"] == victim and over[0]["overwrite"], new
        assert "resumed (--resume" in r.stdout and "restarted (--overwrite" in r.stdout, r.stdout
        for row in env.csv("table.csv"):
            _check_variant_row(row, row["train.fit"], row["train.objective"], MEAN3, SD3, 3)


def test_failing_run_is_recorded_and_sweep_exits_1():
    with tempfile.TemporaryDirectory() as d:
        env = Env(d)
        r = env.run(env.args(), FAKE_FAIL="pooled/groupdro/1")
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert len(env.calls()) == 12, "the sweep goes on after a failure"
        assert "fit=pooled objective=groupdro seed 1: FAILED (exit 1)" in r.stdout, r.stdout
        assert "error: fake: boom at step 19" in r.stdout, "the last lines of its output are shown"
        assert "report.json: fake: loss turned non-finite" in r.stdout, r.stdout
        assert "fake hetdro: step 19 of" in r.stdout.split("FAILED")[1], r.stdout
        runs = env.csv("runs.csv")
        bad = [x for x in runs if x["status"] != "complete"]
        assert len(bad) == 1 and bad[0]["variant"] == "fit=pooled,objective=groupdro", bad
        assert bad[0]["seed"] == "1" and bad[0]["status"] == "failed" and bad[0]["exit_code"] == "1", bad
        assert bad[0]["worst_group_acc"] == "" and "exit 1" in bad[0]["note"], bad
        rows = {(x["train.fit"], x["train.objective"]): x for x in env.csv("table.csv")}
        _check_variant_row(rows[("pooled", "groupdro")], "pooled", "groupdro", MEAN2, SD2, 2)
        assert rows[("pooled", "groupdro")]["n_failed"] == "1"
        _check_variant_row(rows[("none", "erm")], "none", "erm", MEAN3, SD3, 3)
        assert "| pooled | groupdro | 0.7250 ± 0.0071 |" in env.md() and "2/3 (1 failed)" in env.md(), env.md()
        assert os.path.isfile(os.path.join(env.out, "worst_group.png"))
        # The failed run has a checkpoint and a failed report: the next sweep resumes it.
        r = env.run(env.args())
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert env.calls()[-1]["mode"] == "resume", env.calls()[-1]
        assert "its last attempt failed: fake: loss turned non-finite" in r.stdout, r.stdout


def test_use_selected():
    with tempfile.TemporaryDirectory() as d:
        env = Env(d)
        r = env.run(env.args(extra=["--use", "selected"]), FAKE_SELECTED=1)
        assert r.returncode == 0, (r.stdout, r.stderr)
        for row in env.csv("table.csv"):   # the selected model is 0.01 below the last one
            _check_variant_row(row, row["train.fit"], row["train.objective"], MEAN3 - 0.01, SD3, 3)
        runs = env.csv("runs.csv")
        assert all(x["selected_epoch"] == "3" and x["selected_rule"] == "worst_group" for x in runs), runs[0]
        md = env.md()
        assert "`--use selected`" in md and "rule: worst_group" in md, md
        r = env.run(env.args())            # --use last: the same runs, their final numbers
        assert r.returncode == 0 and len(env.calls()) == 12, r.stderr
        for row in env.csv("table.csv"):
            _check_variant_row(row, row["train.fit"], row["train.objective"], MEAN3, SD3, 3)

    with tempfile.TemporaryDirectory() as d:
        env = Env(d)
        assert env.run(env.args(seeds="0")).returncode == 0
        before = open(os.path.join(env.out, "table.md"), encoding="utf-8").read()
        r = env.run(env.args(seeds="0", extra=["--use", "selected"]))
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert "fit=none objective=erm seed 0" in r.stderr and '"selected"' in r.stderr, r.stderr
        assert os.path.join(env.run_dir("none", "erm", 0), "report.json") in r.stderr, r.stderr
        assert len(env.calls()) == 4 and env.md() == before, "nothing runs and nothing is written"
        # Fresh runs without "selected": the sweep stops after the first one, exit 2, naming it.
        r = env.run(env.args(seeds="1", extra=["--use", "selected"]))
        assert r.returncode == 2 and "fit=none objective=erm seed 1" in r.stderr, (r.stdout, r.stderr)
        assert len(env.calls()) == 5, env.calls()


def test_one_seed_and_jobs():
    with tempfile.TemporaryDirectory() as d:
        env = Env(d)
        r = env.run(env.args(seeds="7", grid=["--grid", "train.fit=none,pooled,per_group"],
                             extra=["--jobs", "2", "--set", "train.epochs=1"]))
        assert r.returncode == 0, (r.stdout, r.stderr)
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:
            cores = os.cpu_count()
        calls = env.calls()
        assert len(calls) == 3 and all(c["omp"] == str(max(1, cores // 2)) for c in calls), calls
        # Two jobs at once: the calls may be logged in either order.
        none = [c for c in calls if "train.fit=none" in c["sets"]]
        assert len(none) == 1 and none[0]["sets"] == ["train.epochs=1", "train.fit=none", "train.seed=7"], calls
        assert "    | " not in r.stdout, "with --jobs 2 the trainers' output goes to the logs only"
        assert os.path.isfile(os.path.join(env.out, "logs", "fit=pooled", "seed7.log"))
        rows = {x["train.fit"]: x for x in env.csv("table.csv")}
        _check_variant_row(rows["per_group"], "per_group", "erm", 0.05, None, 1)
        md = env.md()
        assert "| per_group | 0.7000 (n=1) | 0.6000 (n=1) | 0.6000 (n=1) | 0.6500 (n=1) | 1/1 |" in md, md
        _png_size(os.path.join(env.out, "worst_group.png"))
    with tempfile.TemporaryDirectory() as d:
        env = Env(d)
        r = env.run(env.args(seeds="0-1", grid=[], extra=["--jobs", "3"]), OMP_NUM_THREADS="3")
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert [c["omp"] for c in env.calls()] == ["3", "3"], env.calls()
        assert os.path.isdir(os.path.join(env.out, "runs", "base", "seed1"))
        assert "| (no grid) | 0.7150 ± 0.0212 | 0.6150 ± 0.0212 |" in env.md(), env.md()   # fit pooled (the default): 0.70 + 0, 0.03


def test_ctrl_c_interrupts_once_and_resumes():
    with tempfile.TemporaryDirectory() as d:
        env = Env(d)
        p = subprocess.Popen([sys.executable, SCRIPT] + env.args(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env.env(FAKE_SLEEP=30))
        deadline = time.monotonic() + 30
        while not env.calls() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert env.calls(), "the first run never started"
        time.sleep(0.3)   # let the fake install its SIGINT handler
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 130, (p.returncode, out, err)
        calls = env.calls()
        signals = [c for c in calls if "signal" in c]
        assert len(signals) == 1 and signals[0]["signal"] == signal.SIGINT, calls   # exactly one SIGINT
        assert len([c for c in calls if "mode" in c]) == 1, "no run starts after Ctrl-C"
        assert "run the same command again" in out and "sweep.py" in out.split("run the same command again")[1], out
        assert "fit=none objective=erm seed 0: interrupted" in out, out
        runs = env.csv("runs.csv")
        assert [x["status"] for x in runs].count("not run") == 11, runs
        r = env.run(env.args())
        assert r.returncode == 0, (r.stdout, r.stderr)
        new = [c for c in env.calls()[len(calls):]]
        assert len(new) == 12 and new[0]["mode"] == "resume" and new[0]["dir"] == env.run_dir("none", "erm", 0), new


def _tree(folder):
    """{relative path: (kind, bytes, mtime_ns)} of everything under folder, to see it untouched."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            data = open(path, "rb").read() if name in files else None
            out[os.path.relpath(path, folder)] = (stat.S_IFMT(st.st_mode), data, st.st_mtime_ns)
    return out


def test_tables_only_tables_the_complete_runs_and_runs_nothing():
    grid = ["--grid", "train.fit=none,pooled"]
    with tempfile.TemporaryDirectory() as d:
        env = Env(d)
        args = env.args(seeds="0-1", grid=grid)
        # 2 variants x 2 seeds; pooled seed 1 interrupted (a checkpoint, no report): 3 of 4 complete.
        r = env.run(args, FAKE_SELECTED=1, FAKE_INTERRUPT="pooled/erm/1")
        assert r.returncode == 1, (r.stdout, r.stderr)
        calls = len(env.calls())
        assert calls == 4, env.calls()
        unfinished = os.path.join(env.out, "runs", "fit=pooled", "seed1")
        assert not os.path.exists(os.path.join(unfinished, "report.json"))
        # A hetdro training it holds its .lock (flock): it is just not complete.
        lock_fd = os.open(os.path.join(unfinished, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            before = {"runs": _tree(os.path.join(env.out, "runs")), "logs": _tree(os.path.join(env.out, "logs"))}
            r = env.run(["--tables-only"] + args)
            assert r.returncode == 0, (r.stdout, r.stderr)
            assert len(env.calls()) == calls, "--tables-only starts nothing"
            after = {"runs": _tree(os.path.join(env.out, "runs")), "logs": _tree(os.path.join(env.out, "logs"))}
            assert after == before, "the run folders and the logs are left as they were"
            assert "3 of 4 runs complete (3 reused), 0 failed or interrupted, 1 not run" in r.stdout, r.stdout
            for name in ("table.md", "table.csv", "worst_group.png", "runs.csv"):
                assert os.path.join(env.out, name) in r.stdout, r.stdout
            assert "--tables-only: nothing was run" in r.stdout and "started" not in r.stdout, r.stdout

            rows = {x["train.fit"]: x for x in env.csv("table.csv")}
            _check_variant_row(rows["none"], "none", "erm", 0.015, 0.0212132, 2)   # seeds 0, 1: SEED 0, 0.03
            _check_variant_row(rows["pooled"], "pooled", "erm", 0.0, None, 1)      # seed 0 only
            assert rows["pooled"]["n_seeds"] == "2" and rows["pooled"]["n_failed"] == "0", rows["pooled"]
            runs = {(x["variant"], x["seed"]): x for x in env.csv("runs.csv")}
            missing = runs[("fit=pooled", "1")]
            assert missing["status"] == "not run" and missing["worst_group_acc"] == "", missing
            assert missing["action"] == "resume" and missing["exit_code"] == "", missing
            if sweep.outputs.held_locks() is not None:
                assert "running" in missing["note"], missing
            assert all(x["status"] == "complete" and x["action"] == "reused"
                       for k, x in runs.items() if k != ("fit=pooled", "1")), runs
            md = env.md()
            assert "--tables-only: 3 of 4 runs complete" in md, md
            assert "runs: 3 of 4 complete, 0 failed or interrupted, 1 not run" in md, md
            repro = [line for line in md.splitlines() if line.startswith("- reproduce: ")]
            assert len(repro) == 1 and "--tables-only" not in repro[0], md
            assert repro[0].endswith(" " + shlex.join(args) + "`"), "the sweep's command: " + repro[0]
            assert "| pooled | 0.7000 (n=1) | 0.6000 (n=1) |" in md and "| 1/2 |" in md, md
            assert "| none | 0.6150 ± 0.0212 |" in md and "| 2/2 |" in md, md
            _png_size(os.path.join(env.out, "worst_group.png"))
            assert not [n for n in os.listdir(env.out) if ".tmp" in n], os.listdir(env.out)

            # The same runs again with --use selected (an abbreviation of --tables-only, too).
            r = env.run(args + ["--use", "selected", "--tables"])
            assert r.returncode == 0, (r.stdout, r.stderr)
            assert len(env.calls()) == calls
            assert {"runs": _tree(os.path.join(env.out, "runs")),
                    "logs": _tree(os.path.join(env.out, "logs"))} == before
            rows = {x["train.fit"]: x for x in env.csv("table.csv")}   # the selected model: 0.01 below
            _check_variant_row(rows["none"], "none", "erm", 0.015 - 0.01, 0.0212132, 2)
            _check_variant_row(rows["pooled"], "pooled", "erm", -0.01, None, 1)
            runs = env.csv("runs.csv")
            assert [x["selected_epoch"] for x in runs] == ["3", "3", "3", ""], runs
            md = env.md()
            assert "`--use selected`" in md and "rule: worst_group" in md, md
            assert "--tables-only: 3 of 4 runs complete" in md, md
            repro = [line for line in md.splitlines() if line.startswith("- reproduce: ")][0]
            assert repro.endswith(" " + shlex.join(args + ["--use", "selected"]) + "`"), repro

            # Still checked: run folders made with other settings (exit 2, nothing written).
            md_before = open(os.path.join(env.out, "table.md"), "rb").read()
            r = env.run(env.args(seeds="0-1", grid=grid, extra=["--set", "train.epochs=3", "--tables-only"]))
            assert r.returncode == 2 and "train.epochs = 2, this sweep asks for 3" in r.stderr, r.stderr
            assert open(os.path.join(env.out, "table.md"), "rb").read() == md_before
        finally:
            os.close(lock_fd)

        # With --dry-run: an error naming both; nothing written.
        r = env.run(args + ["--tables-only", "--dry-run"])
        assert r.returncode == 2 and "--tables-only" in r.stderr and "--dry-run" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and open(os.path.join(env.out, "table.md"), "rb").read() == md_before
        # A sweep folder that does not exist: bad input, and nothing is made.
        nowhere = os.path.join(d, "nowhere")
        r = env.run(["--config", env.config, "--seeds", "0", "--out", nowhere, "--hetdro", env.hetdro,
                     "--tables-only"])
        assert r.returncode == 2 and nowhere in r.stderr and not os.path.exists(nowhere), r.stderr

        # The folders were left as a sweep can go on from: the next one resumes the missing run.
        r = env.run(args)
        assert r.returncode == 0, (r.stdout, r.stderr)
        new = env.calls()[calls:]
        assert len(new) == 1 and new[0]["mode"] == "resume" and new[0]["dir"] == unfinished, new
        assert "--tables-only" not in env.md(), env.md()


# ----------------------------------------------------------------------------- the output rule

def test_fifo_foreign_file_and_config_at_an_output_refused():
    with tempfile.TemporaryDirectory() as d:
        env = Env(d)
        os.makedirs(env.out)
        fifo = os.path.join(env.out, "table.md")
        os.mkfifo(fifo)
        r = env.run(env.args(seeds="0"))
        assert r.returncode == 2 and fifo in r.stderr and "FIFO" in r.stderr, r.stderr
        assert "# hetdro seed sweep" in r.stderr, "the message says what was expected"
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and os.listdir(env.out) == ["table.md"]
        os.remove(fifo)
        # A log that is a FIFO: refused without opening it (opening it waits for a reader).
        log = os.path.join(env.out, "logs", "fit=none,objective=erm", "seed0.log")
        os.makedirs(os.path.dirname(log))
        os.mkfifo(log)
        r = env.run(env.args(seeds="0"), timeout=30)
        assert r.returncode == 2 and log in r.stderr and "FIFO" in r.stderr, r.stderr
        os.remove(log)
        # Someone's own table.csv: kept, its start shown escaped.
        mine = os.path.join(env.out, "table.csv")
        with open(mine, "w") as f:
            f.write("name,score\nbob,3\n")
        r = env.run(env.args(seeds="0"))
        assert r.returncode == 2 and mine in r.stderr, r.stderr
        assert '"name,score\\x0abob,3\\x0a"' in r.stderr, r.stderr
        assert "n_complete,n_seeds,n_failed" in r.stderr, "the message says what was expected"
        assert open(mine).read() == "name,score\nbob,3\n"
        os.remove(mine)
        # The --config linked in as runs.csv: a file the sweep reads.
        config = open(env.config).read()
        os.symlink(env.config, os.path.join(env.out, "runs.csv"))
        r = env.run(env.args(seeds="0"))
        assert r.returncode == 2 and "--config" in r.stderr and "reads" in r.stderr, r.stderr
        assert open(env.config).read() == config
        assert env.calls() == [], "no run starts"
        assert sorted(os.listdir(env.out)) == ["logs", "runs.csv"], os.listdir(env.out)


def test_link_to_an_earlier_output_is_followed_and_replaced():
    with tempfile.TemporaryDirectory() as d:
        env = Env(d)
        first = env.out
        assert env.run(env.args(seeds="0", grid=[])).returncode == 0
        first_csv = open(os.path.join(first, "table.csv")).read()
        old_png = open(os.path.join(first, "worst_group.png"), "rb").read()
        env.out = os.path.join(d, "second")
        os.makedirs(env.out)
        os.symlink(os.path.join(first, "table.md"), os.path.join(env.out, "table.md"))
        os.symlink("../sweep/worst_group.png", os.path.join(env.out, "worst_group.png"))
        r = env.run(env.args(seeds="1", grid=[]))
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert os.readlink(os.path.join(env.out, "table.md")) == os.path.join(first, "table.md")
        assert os.readlink(os.path.join(env.out, "worst_group.png")) == "../sweep/worst_group.png"
        md = open(os.path.join(first, "table.md"), encoding="utf-8").read()
        assert "seeds: 1 (1; 1)" in md and "--out %s" % env.out in md, "the second sweep's table.md"
        new_png = open(os.path.join(first, "worst_group.png"), "rb").read()
        assert new_png != old_png and new_png.startswith(PNG_MAGIC)
        assert open(os.path.join(first, "table.csv")).read() == first_csv, "what is not linked stays"
        csv_path = os.path.join(env.out, "table.csv")
        assert os.path.isfile(csv_path) and not os.path.islink(csv_path)
        for folder in (first, env.out):
            assert not [n for n in os.listdir(folder) if ".tmp" in n], os.listdir(folder)


def test_lost_standard_output_exits_1():
    if not os.path.exists("/dev/full"):
        return
    with tempfile.TemporaryDirectory() as d:
        env = Env(d)
        with open("/dev/full", "w") as full:
            r = subprocess.run([sys.executable, SCRIPT] + env.args(seeds="0", grid=[]), stdout=full,
                               stderr=subprocess.PIPE, text=True, timeout=120, env=env.env())
        assert r.returncode == 1 and "standard output" in r.stderr, (r.returncode, r.stderr)
        assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
        assert len(env.calls()) == 1 and "(no grid)" in env.md(), "the sweep's work is done all the same"
        with open(os.path.join(env.out, "logs", "base", "seed0.log")) as f:
            assert f.readline().startswith("=== ") and "fake hetdro: training" in f.read()


if __name__ == "__main__":
    failed = 0
    for name, fn in sorted(globals().items()):
        if name.startswith("test_") and callable(fn):
            t0 = time.monotonic()
            try:
                fn()
                print("ok   %s (%.1f s)" % (name, time.monotonic() - t0))
            except Exception as e:  # noqa: BLE001
                failed += 1
                print("FAIL %s: %r" % (name, e))
    sys.exit(1 if failed else 0)
