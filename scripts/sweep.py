#!/usr/bin/env python3
"""Seed sweep over a grid of config values: runs `hetdro train` once per (grid point, seed),
resumably, and tables each variant's per-group test accuracy as mean ± sd over the seeds.

Runs: the Cartesian product of the --grid values, times the --seeds. Every run gets the --set
values, its grid values and train.seed = its seed, and goes to DIR/runs/<variant>/seed<s>/,
<variant> being its grid values as a file name (e.g. fit=pooled,objective=groupdro). They run
in seed order (every variant's seed 0 first), so a sweep cut short has every variant's first
seeds. What happens to each run folder (docs/DESIGN.md §4):
  skip     report.json with "status": "complete" (or, from older runs, test_acc and no status):
           nothing runs, its results are reused
  resume   checkpoint.safetensors but no complete report (interrupted, or failed after a good
           checkpoint): `hetdro train --resume RUNDIR`, which continues it exactly
  restart  other files of a run but no checkpoint: `hetdro train ... --overwrite`
  start    no run folder yet: `hetdro train --config C --out RUNDIR --set ...`
A run folder that is reused or resumed must have been made with this sweep's settings: every
key of --config (data paths resolved against its folder) and every --set, --grid and seed value
is compared with the run's config.toml, and a difference is an error (exit 2) naming the run
and the key, so a table never reports runs under settings they were not trained with.

--tables-only runs nothing: it writes table.md, table.csv, runs.csv and worst_group.png from the
runs complete so far (e.g. between the sessions of a long sweep, or to table the same runs again
with --use selected). Every check above and below still happens (the options, the run folders'
settings, the output paths); a run that is not complete is "not run" in the tables (a run whose
.lock a hetdro holds, seen in /proc/locks without taking the lock, is noted "running"); no run is
started, resumed or restarted, no log is written and no run folder is made or changed. The
reproduce command in table.md is the sweep's command without --tables-only, and its header says
"--tables-only: K of N runs complete". It exits 0 however many runs are missing (2 for bad
input, as always; an --out folder that does not exist is one). --tables-only with --dry-run is
an error.

A run that fails (non-zero exit) is reported with its exit code and the last lines of its
output, recorded as failed, and the sweep goes on; the sweep exits 1 at the end then. Ctrl-C
(SIGINT) or SIGTERM stops the sweep: each running hetdro gets one SIGINT (SIGTERM), finishes
its step and checkpoints itself; a second Ctrl-C kills them (they continue from their last
checkpoint). Run the same command again to continue the sweep. Each hetdro's output goes to
DIR/logs/<variant>/seed<s>.log, appended to as hetdro prints (after what an earlier attempt
logged; the logs are the one output written in place, so `tail -f` follows them); with
--jobs 1 it is also echoed, indented (not with --quiet).

Writes to DIR (table.md, table.csv, runs.csv again after every run; the picture at the end;
with --tables-only the four once, from the runs complete so far, and nothing else):
  table.md         header (config, grid, seeds, --set, --use, the command that reproduces it;
                   with --tables-only the line "--tables-only: K of N runs complete"),
                   then one row per variant: each group's test accuracy, worst-group and
                   mean-group accuracy as mean ± sd over the complete seeds (sample sd, ddof = 1;
                   one seed: the value and "n=1"), and seeds complete / asked (failed); then
                   (with a --grid) each knob's effect on the worst group, seed by seed: for each
                   value after a key's first, the differences between a run and its twin with
                   the key at its first value (same seed, same other values), as mean, sd, min,
                   max and up / down, beside the worst group's sd across seeds for scale
  table.csv        the same numbers, one row per variant: variant, the grid keys,
                   acc_<group>_mean, acc_<group>_sd, ..., worst_group_mean, worst_group_sd,
                   mean_group_mean, mean_group_sd, n_complete, n_seeds, n_failed
  worst_group.png  worst-group accuracy per variant: mean with ±sd error bars, each seed a dot
  runs.csv         every run: variant, grid keys, seed, status (complete, failed, interrupted,
                   not run), action, exit_code, acc_<group>..., worst_group_acc, mean_group_acc,
                   (with --use selected: selected_epoch, selected_rule), seconds (hetdro's wall
                   time in this sweep; empty when reused), train_seconds (report.json), run_dir

Every file the sweep writes itself (the four above and the logs; the run folders are hetdro's)
follows one rule (scripts/outputs.py, the same as hetdro's): it is written to NAME.tmp-PID
beside it, synced, then renamed over NAME. NAME may be replaced only when it is absent, empty, or
what the sweep writes there, known by its start (table.md: "# hetdro seed sweep"; table.csv and
runs.csv: their header line; worst_group.png: the PNG signature; a log: "=== "). A link is
followed and the file it names replaced. A folder, FIFO, device, socket, the --config or a file
with other content is refused (exit 2) before any run starts. Standard output is checked too:
what is printed and lost (a full disk, a closed pipe) makes the exit code 1 (or keeps a non-zero
one), with a message on stderr.

--use last (default) takes test_acc, worst_group_acc and mean_group_acc from report.json;
--use selected from report.json's "selected" object (written when the run used a
model-selection rule; a report without it is an error naming the run, exit 2).
With --jobs N > 1 each hetdro gets OMP_NUM_THREADS = max(1, cores // N) unless it is set.

Exit codes: 0 all runs complete (--tables-only: the tables were written, however many runs are
complete); 1 some run failed or was interrupted (the others completed; the tables hold them), or
a write failed (a full disk), or standard output lost what was printed;
2 bad input (an option, the config, a run folder made with other settings, a malformed
report.json, an output path the rule refuses): the message names the file or option and what
was expected, and no run is started; 130/143 the sweep was stopped by SIGINT/SIGTERM.

Example:
  /usr/bin/python3 scripts/sweep.py --config data/hf/config.toml --seeds 0-4 \\
      --grid train.fit=none,pooled,per_group --grid train.objective=erm,groupdro \\
      --set train.epochs=5 --out sweeps/fit-x-objective
  # -> sweeps/fit-x-objective/{table.md,table.csv,worst_group.png,runs.csv}; the same command
  #    again skips the complete runs and continues interrupted ones.
  /usr/bin/python3 scripts/sweep.py ... --dry-run     # list the runs and what each would do
  /usr/bin/python3 scripts/sweep.py ... --tables-only # tables of the runs complete so far; runs nothing
  /usr/bin/python3 scripts/sweep.py ... --tables-only --use selected   # the same runs, each run's
                                                      #    selected model (report.json "selected")
"""

import argparse
import collections
import csv
import datetime
import hashlib
import io
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import tomllib

import numpy as np
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import outputs  # noqa: E402  (scripts/outputs.py: the rule for every file written)

DPI = 120
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_HETDRO = os.path.join(REPO, "build", "hetdro")
PATH_KEYS = ("train_x", "train_y", "test_x", "test_y")   # data.groups.N.*: resolved against the config's folder
RESULT_KEYS = ("test_acc", "worst_group_acc", "mean_group_acc")
TAIL_LINES = 12
MISSING = object()


class UserError(outputs.BadInput):
    """A problem with the user's input (options, config, run folders): exit code 2."""


class NoSelection(UserError):
    """--use selected, and a report without "selected"."""


# ----------------------------------------------------------------------------- options

def parse_seeds(spec):
    """'0-4' -> [0..4], '0,2,5', '0-2,7' -> [0,1,2,7] (in the order given). Seeds are integers
    >= 0; a range is LOW-HIGH with LOW <= HIGH; a seed listed twice is an error."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError("--seeds: empty, expected e.g. 0-4, 0,2,5 or 0-2,7")
    seeds = []
    for part in spec.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise UserError("--seeds %s: %r is not a seed (an integer >= 0) or a range LOW-HIGH; "
                            "expected e.g. 0-4, 0,2,5 or 0-2,7" % (spec, part))
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise UserError("--seeds %s: range %s runs backwards, expected LOW-HIGH with LOW <= HIGH"
                            % (spec, part))
        if hi - lo >= 100000:
            raise UserError("--seeds %s: range %s has %d seeds, expected at most 100000" % (spec, part, hi - lo + 1))
        for s in range(lo, hi + 1):
            if s in seeds:
                raise UserError("--seeds %s: seed %d is listed twice" % (spec, s))
            seeds.append(s)
    return seeds


def split_values(text, what):
    """Split 'a,b,[1,2],"x,y"' at the commas outside brackets, braces and quotes (so TOML arrays
    and strings can be grid values)."""
    out, cur, depth, quote = [], [], 0, None
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
            cur.append(ch)
        elif ch in "[{":
            depth += 1
            cur.append(ch)
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                raise UserError("%s: unbalanced %r in %r" % (what, ch, text))
            cur.append(ch)
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if quote or depth:
        raise UserError("%s: unclosed %s in %r" % (what, "quote" if quote else "bracket", text))
    out.append("".join(cur).strip())
    return out


KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+")


def parse_assignment(text, option):
    """'section.key=VALUE' -> (key, value)."""
    key, eq, value = text.partition("=")
    key = key.strip()
    if not eq or not KEY_RE.fullmatch(key):
        raise UserError("%s %s: expected KEY=VALUE with a dotted key, e.g. %s" % (
            option, text, "train.fit=none,pooled" if option == "--grid" else "train.epochs=5"))
    return key, value.strip()


def parse_grid(items):
    """['train.fit=none,pooled', ...] -> [(key, [values])], checking for repeats."""
    grid = []
    for item in items:
        key, values_text = parse_assignment(item, "--grid")
        if any(key == k for k, _ in grid):
            raise UserError("--grid %s: key %s is given twice (put all its values in one --grid)" % (item, key))
        values = split_values(values_text, "--grid %s" % item)
        if any(v == "" for v in values):
            raise UserError("--grid %s: an empty value, expected KEY=V1,V2,..." % item)
        dup = [v for v in values if values.count(v) > 1]
        if dup:
            raise UserError("--grid %s: value %s is listed twice" % (item, dup[0]))
        grid.append((key, values))
    return grid


def parse_sets(items, grid):
    sets = []
    for item in items:
        key, value = parse_assignment(item, "--set")
        if any(key == k for k, _ in sets):
            raise UserError("--set %s: key %s is set twice" % (item, key))
        if any(key == k for k, _ in grid):
            raise UserError("--set %s: key %s is also a --grid key; give it in one place" % (item, key))
        sets.append((key, value))
    for key, _ in list(grid) + sets:
        if key == "train.seed":
            raise UserError("--%s train.seed: the sweep sets train.seed per run from --seeds"
                            % ("grid" if any(k == key for k, _ in grid) else "set"))
    return sets


def toml_value(text):
    """A --set VALUE as hetdro reads it: TOML, or a bare word taken as a string."""
    try:
        return tomllib.loads("v = " + text)["v"]
    except tomllib.TOMLDecodeError:
        return text


# ----------------------------------------------------------------------------- variants

def short_keys(keys):
    """Each key's shortest dotted suffix that no other key ends with (train.fit -> fit)."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            cand = ".".join(parts[-n:])
            if not any(o != key and (o == cand or o.endswith("." + cand)) for o in keys):
                break
        out[key] = cand
    return out


def safe_name(text):
    return re.sub(r"[^A-Za-z0-9._+=,-]", "_", text)


class Variant:
    def __init__(self, values, shorts):
        self.values = values                     # [(key, value text)] in --grid order
        parts = ["%s=%s" % (shorts[k], v) for k, v in values]
        self.label = " ".join(parts) if parts else "(no grid)"
        self.name = safe_name(",".join(parts)) if parts else "base"


def make_variants(grid):
    shorts = short_keys([k for k, _ in grid])
    combos = [[]]
    for key, values in grid:
        combos = [c + [(key, v)] for c in combos for v in values]
    variants = [Variant(c, shorts) for c in combos]
    seen = {}
    for v in variants:   # two values that differ only in unsafe characters: tell them apart
        if v.name in seen or len(v.name) > 200:
            digest = hashlib.sha1(json.dumps(v.values).encode()).hexdigest()[:8]
            v.name = v.name[:190] + "~" + digest
        seen[v.name] = v
    return variants


class Run:
    def __init__(self, index, variant, seed, out_dir):
        self.index, self.variant, self.seed = index, variant, seed
        self.dir = os.path.join(out_dir, "runs", variant.name, "seed%d" % seed)
        self.log = os.path.join(out_dir, "logs", variant.name, "seed%d.log" % seed)
        self.label = "%s seed %d" % (variant.label, seed)
        self.action = None       # skip | resume | restart | start
        self.note = ""
        self.status = "not run"  # complete | failed | interrupted | not run
        self.exit_code = None
        self.seconds = None
        self.results = None      # {test_acc: {g: acc}, worst_group_acc, mean_group_acc, [epoch, rule]}
        self.train_seconds = None

    def overrides(self, sets):
        return (["%s=%s" % kv for kv in sets] + ["%s=%s" % kv for kv in self.variant.values]
                + ["train.seed=%d" % self.seed])


# ----------------------------------------------------------------------------- run folders

def read_json(path):
    """A JSON object from path, None when the file is absent; malformed -> UserError."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError("%s: cannot read as JSON: %s (remove it, or the run folder, to redo the run)" % (path, e))
    if not isinstance(obj, dict):
        raise UserError("%s: expected a JSON object" % path)
    return obj


def report_complete(rep):
    """status "complete"; older reports have no status but test_acc."""
    if rep is None:
        return False
    if "status" in rep:
        return rep["status"] == "complete"
    return "test_acc" in rep


def _acc(v, path, key):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise UserError("%s: %s = %r, expected a finite number" % (path, key, v))
    return float(v)


def extract_results(rep, use, path, label):
    """The three accuracies (and, for --use selected, the epoch and rule) from a complete report."""
    src, where = rep, ""
    if use == "selected":
        src = rep.get("selected")
        if not isinstance(src, dict):
            raise NoSelection('run %s: %s has no "selected" object (written when the run used a '
                              'model-selection rule), but --use selected asks for it; use --use last, '
                              'or train with a selection rule' % (label, path))
        where = "selected."
    out = {}
    acc = src.get("test_acc")
    if not isinstance(acc, dict) or not acc:
        raise UserError("%s: %stest_acc = %r, expected a non-empty {group: accuracy} object"
                        % (path, where, acc if acc is None else type(acc).__name__))
    out["test_acc"] = {str(g): _acc(v, path, where + "test_acc." + g) for g, v in acc.items()}
    for key in ("worst_group_acc", "mean_group_acc"):
        if key not in src:
            raise UserError("%s: missing key '%s%s'" % (path, where, key))
        out[key] = _acc(src[key], path, where + key)
    if use == "selected":
        out["epoch"] = src.get("epoch")
        out["rule"] = src.get("rule")
    return out


def folder_state(run):
    """(action, note) for a run folder, from what it holds."""
    rep = read_json(os.path.join(run.dir, "report.json"))
    if report_complete(rep):
        return "skip", "complete"
    has_ckpt = os.path.isfile(os.path.join(run.dir, "checkpoint.safetensors"))
    has_cfg = os.path.isfile(os.path.join(run.dir, "config.toml"))
    why = ""
    if rep is not None and rep.get("status") == "failed":
        why = "its last attempt failed: %s" % str(rep.get("error", "no error given"))[:100]
    if has_ckpt and has_cfg:
        return "resume", why or "interrupted"
    if os.path.isdir(run.dir) and any(n != ".lock" for n in os.listdir(run.dir)):
        return "restart", why or ("no config.toml" if has_ckpt else "no checkpoint yet")
    return "start", ""


def _leaves(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, prefix + (k,))
    elif isinstance(node, list) and node and all(isinstance(x, dict) for x in node):
        for i, x in enumerate(node):
            yield from _leaves(x, prefix + (str(i),))
    else:
        yield prefix, node


def _lookup(node, path):
    for p in path:
        if isinstance(node, dict):
            if p not in node:
                return MISSING
            node = node[p]
        elif isinstance(node, list):
            if not p.isdigit() or int(p) >= len(node):
                return MISSING
            node = node[int(p)]
        else:
            return MISSING
    return node


def _is_path_key(path):
    return len(path) == 4 and path[0] == "data" and path[1] == "groups" and path[3] in PATH_KEYS


def _same(want, got, is_path=False):
    if is_path and isinstance(want, str) and isinstance(got, str):
        return (os.path.normpath(want) == os.path.normpath(got)
                or os.path.realpath(want) == os.path.realpath(got))
    if isinstance(want, bool) or isinstance(got, bool):
        return type(want) is type(got) and want == got
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return math.isclose(want, got, rel_tol=1e-9, abs_tol=0.0)
    if isinstance(want, list) and isinstance(got, list):
        return len(want) == len(got) and all(_same(a, b) for a, b in zip(want, got))
    if isinstance(want, dict) and isinstance(got, dict):
        return all(k in got and _same(v, got[k]) for k, v in want.items())
    return type(want) is type(got) and want == got


def _show(v):
    if v is MISSING:
        return "(not there)"
    if isinstance(v, str):
        return '"%s"' % v
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v) if isinstance(v, (list, dict)) else repr(v)


def load_config(config_path):
    try:
        with open(config_path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UserError("%s: cannot read as TOML: %s" % (config_path, e))


def expected_settings(cfg, config_path, sets, run):
    """[(path tuple, value, where it comes from)] that the run's config.toml must hold: the
    --config's keys (data paths resolved against its folder, as hetdro does), then the --set,
    --grid and seed values in their place."""
    base = os.path.dirname(os.path.abspath(config_path))
    overrides = ([(k, v, "--set %s=%s" % (k, v)) for k, v in sets]
                 + [(k, v, "--grid %s" % k) for k, v in run.variant.values]
                 + [("train.seed", str(run.seed), "--seeds")])
    opaths = [tuple(k.split(".")) for k, _, _ in overrides]
    out = []
    for path, value in _leaves(cfg):
        if any(o[:len(path)] == path or path[:len(o)] == o for o in opaths):
            continue
        if _is_path_key(path) and isinstance(value, str):
            value = os.path.join(base, value)
        out.append((path, value, "--config"))
    for (key, text, where), path in zip(overrides, opaths):
        value = toml_value(text)
        if _is_path_key(path) and isinstance(value, str):
            value = os.path.join(base, value)
        out.append((path, value, where))
    return out


def check_run_config(run, cfg, config_path, sets):
    """Differences between what the sweep asks for and the run folder's config.toml, as text."""
    path = os.path.join(run.dir, "config.toml")
    try:
        with open(path, "rb") as f:
            have = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UserError("%s: cannot read as TOML: %s (needed to check the run used this sweep's "
                        "settings; remove the run folder to redo the run)" % (path, e))
    diffs = []
    for key, want, where in expected_settings(cfg, config_path, sets, run):
        got = _lookup(have, key)
        if got is MISSING or not _same(want, got, _is_path_key(key)):
            diffs.append("%s = %s, this sweep asks for %s (%s)" % (".".join(key), _show(got), _show(want), where))
    return diffs


def plan(runs, config_path, sets, use):
    """Decide each run's action; load the results of the complete ones. Raises UserError for a
    reused/resumed run made with other settings, a malformed report, or --use selected without
    a selection."""
    mismatched = []
    cfg = None
    for run in runs:
        run.action, run.note = folder_state(run)
        if run.action in ("skip", "resume"):
            if cfg is None:
                cfg = load_config(config_path)
            diffs = check_run_config(run, cfg, config_path, sets)
            if diffs:
                mismatched.append((run, diffs))
                continue
        if run.action == "skip":
            path = os.path.join(run.dir, "report.json")
            rep = read_json(path)
            run.results = extract_results(rep, use, path, run.label)
            run.train_seconds = rep.get("train_seconds")
            run.status = "complete"
    if mismatched:
        run, diffs = mismatched[0]
        shown = "; ".join(diffs[:4]) + (" (and %d more keys)" % (len(diffs) - 4) if len(diffs) > 4 else "")
        more = (" (%d more run folders differ too)" % (len(mismatched) - 1)) if len(mismatched) > 1 else ""
        raise UserError("%s: this run folder was made with other settings than this sweep asks for: %s. "
                        "Its results would be tabled under settings it was not trained with: give another "
                        "--out, or remove the run folder to train it again%s" % (run.dir, shown, more))


# ----------------------------------------------------------------------------- running

def fmt_seconds(s):
    if s < 9.95:
        return "%.1f s" % s
    s = int(round(s))
    if s < 90:
        return "%d s" % s
    if s < 3600:
        return "%d min %02d s" % (s // 60, s % 60)
    return "%d h %02d min" % (s // 3600, (s % 3600) // 60)


def _short_path(path):
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def hetdro_command(hetdro, config_path, sets, run):
    if run.action == "resume":
        return [hetdro, "train", "--resume", run.dir]
    cmd = [hetdro, "train", "--config", config_path, "--out", run.dir]
    for kv in run.overrides(sets):
        cmd += ["--set", kv]
    if run.action == "restart":
        cmd.append("--overwrite")
    return cmd


class Job:
    def __init__(self, run, cmd, env, stream, print_lock, log):
        self.run, self.cmd = run, cmd
        self.tail = collections.deque(maxlen=TAIL_LINES)
        self.signalled = False
        folder = os.path.dirname(run.log)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise UserError("%s: cannot create the folder: %s" % (folder, e.strerror))
        # Appended to as hetdro prints (tail -f follows it), after the earlier attempts' lines.
        self.log = log.open_log()
        self.log.write(("=== %s  %s\n" % (datetime.datetime.now().isoformat(timespec="seconds"),
                                           shlex.join(cmd))).encode())
        self.t0 = time.monotonic()
        try:
            # Its own session: a Ctrl-C at the terminal reaches only the sweep, which passes
            # exactly one SIGINT on (hetdro's second SIGINT would end it at once).
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except OSError as e:
            self.log.abort()
            raise UserError("cannot run %s: %s" % (cmd[0], e))
        self.thread = threading.Thread(target=self._read, args=(stream, print_lock), daemon=True)
        self.thread.start()

    def _read(self, stream, print_lock):
        for raw in self.proc.stdout:
            self.log.write(raw)
            line = raw.decode("utf-8", "replace").rstrip("\n").split("\r")[-1].rstrip()
            if line:
                self.tail.append(line)
                if stream:
                    with print_lock:
                        print("    | " + line, flush=True)

    def finish(self):
        """(exit code, seconds); WriteFailed when the log could not be written."""
        self.thread.join()
        self.proc.stdout.close()
        self.log.commit()
        return self.proc.returncode, time.monotonic() - self.t0


def _exit_text(rc):
    if rc >= 0:
        return "exit %d" % rc
    try:
        return "killed by %s" % signal.Signals(-rc).name
    except ValueError:
        return "killed by signal %d" % -rc


def child_env(jobs):
    env = dict(os.environ)
    note = ""
    if jobs > 1:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:
            cores = os.cpu_count() or 1
        if "OMP_NUM_THREADS" in os.environ:
            note = "OMP_NUM_THREADS=%s (yours) for each hetdro" % os.environ["OMP_NUM_THREADS"]
        else:
            env["OMP_NUM_THREADS"] = str(max(1, cores // jobs))
            note = "OMP_NUM_THREADS=%s for each hetdro (%d cores / %d jobs)" % (env["OMP_NUM_THREADS"], cores, jobs)
    return env, note


class Sweep:
    def __init__(self, args, runs, sets, config_path, hetdro, write_outputs, logs):
        self.args, self.runs, self.sets = args, runs, sets
        self.config_path, self.hetdro = config_path, hetdro
        self.write_outputs = write_outputs
        self.logs = logs   # {run index: outputs.Output}
        self.signals = []
        self.print_lock = threading.Lock()
        self.fatal = None
        self.fresh_seconds = []

    def say(self, text):
        with self.print_lock:
            print(text, flush=True)

    def _on_signal(self, signum, frame):   # noqa: ARG002
        self.signals.append(signum)

    def _progress(self):
        done = sum(1 for r in self.runs if r.status != "not run")
        left = len([r for r in self.runs if r.status == "not run"])
        text = "%d/%d done, %s elapsed" % (done, len(self.runs), fmt_seconds(time.monotonic() - self.t_start))
        if self.fresh_seconds and left:
            eta = np.mean(self.fresh_seconds) * left / self.args.jobs
            text += ", about %s left" % fmt_seconds(eta)
        return text

    def _finished(self, job):
        run = job.run
        rc, secs = job.finish()
        run.exit_code, run.seconds = rc, secs
        head = "[%d/%d] %s:" % (run.index, len(self.runs), run.label)
        report_path = os.path.join(run.dir, "report.json")
        if rc == 0:
            try:
                rep = read_json(report_path)
                if not report_complete(rep):
                    raise UserError("%s: %s after exit 0, expected \"status\": \"complete\"" % (
                        report_path, "absent" if rep is None else "status %r" % rep.get("status")))
                run.results = extract_results(rep, self.args.use, report_path, run.label)
                run.train_seconds = rep.get("train_seconds")
                run.status = "complete"
                self.fresh_seconds.append(secs)
                r = run.results
                self.say("%s done in %s, worst %.4f, mean %.4f  (%s)" % (
                    head, fmt_seconds(secs), r["worst_group_acc"], r["mean_group_acc"], self._progress()))
                return
            except NoSelection as e:
                run.status = "complete"   # trained fine; only the table cannot use it
                self.fatal = e
                self.say("%s done in %s, but %s" % (head, fmt_seconds(secs), e))
                return
            except UserError as e:
                run.status, run.note = "failed", str(e)
                self.say("%s FAILED after %s: exit 0 but %s; log: %s" % (head, fmt_seconds(secs), e, run.log))
                return
        how = _exit_text(rc)
        if rc in (130, 143) or rc in (-signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL):
            run.status = "interrupted"
            if os.path.isfile(os.path.join(run.dir, "checkpoint.safetensors")):
                run.note = "%s; checkpointed: the next sweep continues it (--resume)" % how
            else:
                run.note = "%s; no checkpoint yet: the next sweep starts it again" % how
            self.say("%s interrupted after %s (%s)" % (head, fmt_seconds(secs), run.note))
            return
        run.status = "failed"
        why = ""
        try:
            rep = read_json(report_path)
            if rep is not None and rep.get("status") == "failed" and rep.get("error"):
                why = "; report.json: %s" % rep["error"]
        except UserError:
            pass   # the exit code and the output below say what happened
        run.note = how + why
        lines = "\n".join("    " + t for t in job.tail) or "    (no output)"
        self.say("%s FAILED (%s) after %s%s; last lines of its output:\n%s\n    log: %s  (%s)"
                 % (head, how, fmt_seconds(secs), why, lines, run.log, self._progress()))

    def run_all(self):
        todo = [r for r in self.runs if r.action != "skip"]
        env, env_note = child_env(self.args.jobs)
        stream = self.args.jobs == 1 and not self.args.quiet
        for r in self.runs:
            if r.action == "skip":
                self.say("[%d/%d] %s: complete already, reused (worst %.4f, mean %.4f)" % (
                    r.index, len(self.runs), r.label, r.results["worst_group_acc"], r.results["mean_group_acc"]))
        if env_note:
            self.say(env_note)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        self.t_start = time.monotonic()
        pending = collections.deque(todo)
        active = []
        handled = 0
        try:
            while active or (pending and not self.signals and self.fatal is None):
                if len(self.signals) > handled:
                    if handled == 0:
                        names = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}
                        first = self.signals[0]
                        fwd = signal.SIGINT if first == signal.SIGINT else signal.SIGTERM
                        for job in active:
                            if job.proc.poll() is None:
                                job.proc.send_signal(fwd)
                                job.signalled = True
                        if active:
                            self.say("\n%s: stopping; %d running hetdro got %s and will checkpoint after "
                                     "their current step (press Ctrl-C again to kill them: they continue "
                                     "from their last checkpoint)" % (names.get(first, first), len(active),
                                                                      names[fwd]))
                    else:
                        for job in active:
                            if job.proc.poll() is None:
                                os.killpg(job.proc.pid, signal.SIGKILL)
                        if active:
                            self.say("killed %d running hetdro" % len(active))
                    handled = len(self.signals)
                while pending and not self.signals and self.fatal is None and len(active) < self.args.jobs:
                    run = pending.popleft()
                    cmd = hetdro_command(self.hetdro, self.config_path, self.sets, run)
                    what = {"start": "started", "restart": "restarted (--overwrite: %s)" % run.note,
                            "resume": "resumed (--resume: %s)" % run.note}[run.action]
                    self.say("[%d/%d] %s: %s" % (run.index, len(self.runs), run.label, what))
                    active.append(Job(run, cmd, env, stream, self.print_lock, self.logs[run.index]))
                time.sleep(0.05)
                for job in [j for j in active if j.proc.poll() is not None]:
                    active.remove(job)
                    self._finished(job)
                    if self.fatal is None:
                        self.write_outputs(final=False)
        finally:
            # Leaving early (an error): no hetdro may outlive the sweep unnoticed in its own session.
            for job in active:
                if job.proc.poll() is None:
                    job.proc.send_signal(signal.SIGINT)
            for job in active:
                job.proc.wait()
                try:
                    job.finish()
                except outputs.WriteFailed as e:   # the error that brought us here goes on
                    print("error: %s" % e, file=sys.stderr)
            for s, h in old.items():
                signal.signal(s, h)
        return self.signals[0] if self.signals else None


# ----------------------------------------------------------------------------- tables

def group_names(runs):
    groups = []
    for r in runs:
        if r.results:
            for g in r.results["test_acc"]:
                if g not in groups:
                    groups.append(g)
    return groups


def stats(values):
    """(mean, sd, n): sd is the sample standard deviation (ddof = 1), None for n < 2."""
    n = len(values)
    if n == 0:
        return None, None, 0
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), (float(a.std(ddof=1)) if n > 1 else None), n


def aggregate(runs, variants):
    """One dict per variant: variant, n_complete, n_seeds, n_failed, acc {g: (mean, sd, n)},
    worst (mean, sd, n), mean (mean, sd, n), worst_values [per seed]."""
    groups = group_names(runs)
    rows = []
    for v in variants:
        mine = [r for r in runs if r.variant is v]
        done = [r for r in mine if r.status == "complete" and r.results]
        rows.append({
            "variant": v,
            "n_seeds": len(mine),
            "n_complete": len(done),
            "n_failed": sum(1 for r in mine if r.status in ("failed", "interrupted")),
            "acc": {g: stats([r.results["test_acc"][g] for r in done if g in r.results["test_acc"]])
                    for g in groups},
            "worst": stats([r.results["worst_group_acc"] for r in done]),
            "mean": stats([r.results["mean_group_acc"] for r in done]),
            "worst_values": [r.results["worst_group_acc"] for r in done],
        })
    return groups, rows


def knob_effects(runs, grid):
    """Each grid key's effect on the worst group, seed by seed: for every value after the key's
    first, the differences worst_group_acc(run) - worst_group_acc(twin), the twin being the run
    with the same seed and the same other grid values but the key at its first value; only pairs
    whose two runs are complete. One dict per (key, value): key, base, value, diffs [in run
    order], and stats(diffs) as (mean, sd, n)."""
    done = {(tuple(r.variant.values), r.seed): r.results["worst_group_acc"]
            for r in runs if r.status == "complete" and r.results}
    effects = []
    for pos, (key, values) in enumerate(grid):
        for value in values[1:]:
            diffs = []
            for r in runs:
                if r.variant.values[pos] != (key, value):
                    continue
                twin = list(r.variant.values)
                twin[pos] = (key, values[0])
                a, b = done.get((tuple(r.variant.values), r.seed)), done.get((tuple(twin), r.seed))
                if a is not None and b is not None:
                    diffs.append(a - b)
            effects.append({"key": key, "base": values[0], "value": value, "diffs": diffs,
                            "stats": stats(diffs)})
    return effects


def seed_spread(rows):
    """The worst group's seed-to-seed sd within a variant, pooled over the variants with two or
    more complete seeds: sqrt(sum (n_v - 1) s_v^2 / sum (n_v - 1)); (sd, variants), sd None when
    no variant has two seeds."""
    num = den = 0.0
    used = 0
    for row in rows:
        _, sd, n = row["worst"]
        if n >= 2:
            num += (n - 1) * sd * sd
            den += n - 1
            used += 1
    return (math.sqrt(num / den) if den else None), used


def effects_md(effects, rows):
    """table.md's second section: knob_effects as a table, with the seed spread for scale."""
    spread, used = seed_spread(rows)
    lines = ["", "## Each knob's effect on the worst group, seed by seed", "",
             "Δ: a run's worst-group accuracy minus that of its twin, the run with the same seed and "
             "the same other grid values but this knob at its first value (pairs of complete runs "
             "only); mean, sample sd (ddof = 1), smallest and largest Δ over the pairs, and how many "
             "pairs went up / down. For scale, the worst group's sd across seeds within a variant, "
             "pooled over the %d variants with two or more complete seeds: %s."
             % (used, "—" if spread is None else "%.4f" % spread), ""]
    lines.append("| knob | change | pairs | mean Δ | sd Δ | min Δ | max Δ | up / down |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for e in effects:
        mean, sd, n = e["stats"]
        d = e["diffs"]
        lines.append("| %s | %s | %d | %s | %s | %s | %s | %s |" % (
            _md(e["key"]), _md("%s → %s" % (e["base"], e["value"])), n,
            "—" if n == 0 else "%+.4f" % mean, "—" if sd is None else "%.4f" % sd,
            "—" if n == 0 else "%+.4f" % min(d), "—" if n == 0 else "%+.4f" % max(d),
            "%d / %d" % (sum(x > 0 for x in d), sum(x < 0 for x in d))))
    return "\n".join(lines) + "\n"


def cell(st):
    mean, sd, n = st
    if n == 0:
        return "—"
    if n == 1:
        return "%.4f (n=1)" % mean
    return "%.4f ± %.4f" % (mean, sd)


def _md(text):
    return str(text).replace("|", "\\|")


def _num(x):
    return "" if x is None else "%.10g" % x


def sweep_outputs(out_dir, runs, reads):
    """The files the sweep writes itself (the run folders are hetdro's), each with how the rule
    knows it for the sweep's own: ({table name: Output}, {run index: log Output})."""
    def out(path, expected, ours):
        return outputs.Output(path, expected, ours, reads)
    tables = {
        "table.md": out(os.path.join(out_dir, "table.md"),
                        'a table.md this sweep wrote (first line "# hetdro seed sweep")',
                        outputs.first_line(b"# hetdro seed sweep")),
        "table.csv": out(os.path.join(out_dir, "table.csv"),
                         'a table.csv this sweep wrote (header "variant,...,n_complete,n_seeds,n_failed")',
                         outputs.first_line(b"variant,", b",n_complete,n_seeds,n_failed")),
        "runs.csv": out(os.path.join(out_dir, "runs.csv"),
                        'a runs.csv this sweep wrote (header "variant,...,note,run_dir")',
                        outputs.first_line(b"variant,", b",note,run_dir")),
        "worst_group.png": out(os.path.join(out_dir, "worst_group.png"), "a PNG this sweep wrote",
                               outputs.starts_with(outputs.PNG_SIGNATURE)),
    }
    logs = {r.index: out(r.log, 'a log this sweep wrote (first line "=== TIME COMMAND")',
                         outputs.starts_with(b"=== ")) for r in runs}
    return tables, logs


def table_md(groups, rows, info):
    grid = info["grid"]
    lines = ["# hetdro seed sweep", ""]
    lines.append("- config: `%s`" % info["config"])
    lines.append("- grid: %s" % ("; ".join("`%s` = %s" % (k, ", ".join(vs)) for k, vs in grid) or "none"))
    lines.append("- seeds: %s (%s; %d)" % (info["seeds_spec"], ", ".join(map(str, info["seeds"])), len(info["seeds"])))
    lines.append("- fixed: %s" % (" ".join("`--set %s=%s`" % kv for kv in info["sets"]) or "none"))
    if info["use"] == "selected":
        rules = sorted({str(r) for r in info["rules"]}) or ["?"]
        lines.append("- `--use selected`: the accuracies of the model the run's selection rule chose "
                     "(report.json `selected`; rule: %s; the epochs are in runs.csv)" % ", ".join(rules))
    else:
        lines.append("- `--use last`: the accuracies of the final model (report.json)")
    lines.append("- cells: mean ± sample sd (ddof = 1) over the complete seeds; \"n=1\": one seed only")
    lines.append("- runs: %d of %d complete, %d failed or interrupted, %d not run; %s"
                 % (info["n_complete"], info["n_runs"], info["n_failed"], info["n_not_run"], info["when"]))
    if info.get("tables_only"):
        lines.append("- written by --tables-only: %d of %d runs complete; nothing was run (the command "
                     "below runs the rest)" % (info["n_complete"], info["n_runs"]))
    lines.append("- reproduce: `%s`" % info["command"])
    lines.append("")
    keys = [k for k, _ in grid]
    shorts = short_keys(keys)
    head = [shorts[k] for k in keys] or ["variant"]
    head += groups + ["worst group", "mean group", "seeds"]
    lines.append("| " + " | ".join(_md(h) for h in head) + " |")
    lines.append("|" + "---|" * (len(keys) or 1) + "---:|" * (len(groups) + 2) + "---:|")
    for row in rows:
        v = row["variant"]
        cells = [val for _, val in v.values] or [v.label]
        cells += [cell(row["acc"][g]) for g in groups] + [cell(row["worst"]), cell(row["mean"])]
        seeds = "%d/%d" % (row["n_complete"], row["n_seeds"])
        if row["n_failed"]:
            seeds += " (%d failed)" % row["n_failed"]
        cells.append(seeds)
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def table_csv(groups, rows, grid):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = [k for k, _ in grid]
    head = ["variant"] + keys
    for g in groups:
        head += ["acc_%s_mean" % g, "acc_%s_sd" % g]
    head += ["worst_group_mean", "worst_group_sd", "mean_group_mean", "mean_group_sd",
             "n_complete", "n_seeds", "n_failed"]
    w.writerow(head)
    for row in rows:
        v = row["variant"]
        out = [v.name] + [val for _, val in v.values]
        for st in [row["acc"][g] for g in groups] + [row["worst"], row["mean"]]:
            out += [_num(st[0]), _num(st[1])]
        out += [row["n_complete"], row["n_seeds"], row["n_failed"]]
        w.writerow(out)
    return buf.getvalue()


def runs_csv(runs, groups, grid, use):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = [k for k, _ in grid]
    head = ["variant"] + keys + ["seed", "status", "action", "exit_code"]
    head += ["acc_%s" % g for g in groups] + ["worst_group_acc", "mean_group_acc"]
    if use == "selected":
        head += ["selected_epoch", "selected_rule"]
    head += ["seconds", "train_seconds", "note", "run_dir"]
    w.writerow(head)
    for r in runs:
        res = r.results if r.status == "complete" else None
        row = [r.variant.name] + [val for _, val in r.variant.values]
        row += [r.seed, r.status, {"skip": "reused"}.get(r.action, r.action),
                "" if r.exit_code is None else r.exit_code]
        row += [_num(res["test_acc"].get(g)) if res else "" for g in groups]
        row += [_num(res["worst_group_acc"]) if res else "", _num(res["mean_group_acc"]) if res else ""]
        if use == "selected":
            row += [res.get("epoch", "") if res else "", res.get("rule", "") if res else ""]
        row += ["" if r.seconds is None else "%.1f" % r.seconds,
                _num(r.train_seconds) if isinstance(r.train_seconds, (int, float)) else "",
                r.note if r.status != "complete" else "", r.dir]
        w.writerow(row)
    return buf.getvalue()


def worst_group_figure(rows, title):
    """Worst-group accuracy per variant, top to bottom in grid order: the mean (point) with ±sd
    error bars, each seed a small grey dot; the best mean in green; mean ± sd (n) on the right."""
    n = len(rows)
    fig, ax = plt.subplots(figsize=(10, max(2.8, 0.5 * n + 1.8)))
    ys = np.arange(n)[::-1].astype(float)
    means = [r["worst"][0] for r in rows]
    best = max((m for m in means if m is not None), default=None)
    values, labelled = [], False
    for y, row in zip(ys, rows):
        mean, sd, k = row["worst"]
        if k == 0:
            continue
        vals = row["worst_values"]
        values += vals + [mean - (sd or 0), mean + (sd or 0)]
        ax.scatter(vals, [y - 0.22] * len(vals), s=14, color="0.55", zorder=2,
                   label=None if labelled else "one seed")
        labelled = True
        color = "tab:green" if mean == best else "tab:blue"
        ax.errorbar([mean], [y], xerr=[[sd or 0.0], [sd or 0.0]], fmt="o", markersize=8, color=color,
                    ecolor=color, elinewidth=2, capsize=6, zorder=3)
    if values:
        lo, hi = min(values), max(values)
        pad = max(0.1 * (hi - lo), 0.005)
        ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_yticks(ys)
    ax.set_yticklabels([r["variant"].label for r in rows])
    right = ax.twinx()
    right.set_ylim(ax.get_ylim())
    right.set_yticks(ys)
    right.set_yticklabels(["no complete run" if r["worst"][2] == 0 else
                           ("%.4f (n=1)" % r["worst"][0] if r["worst"][2] == 1 else
                            "%.4f ± %.4f (n=%d)" % r["worst"]) for r in rows], fontsize=9)
    ax.set_xlabel("worst-group test accuracy\n(point: mean over seeds, bar: ±1 sample sd, grey: each seed; "
                  "green: best mean)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    if any(r["worst"][2] for r in rows):
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- main

def build_parser():
    p = argparse.ArgumentParser(
        description="Run hetdro train over a grid of config values times seeds, resumably, and table "
                    "each variant's per-group test accuracy as mean ± sd over the seeds.",
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, metavar="C", help="the config TOML every run starts from")
    p.add_argument("--seeds", required=True, metavar="SPEC",
                   help="seeds: 0-4, 0,2,5 or mixed 0-2,7 (train.seed of each run)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a grid dimension (repeatable); values are TOML, commas inside [..] or quotes "
                        "do not split")
    p.add_argument("--set", action="append", default=[], metavar="K=V",
                   help="passed to every run as hetdro's --set (repeatable)")
    p.add_argument("--out", required=True, metavar="DIR", help="sweep folder: runs/, logs/ and the tables")
    p.add_argument("--hetdro", default=DEFAULT_HETDRO, metavar="EXE",
                   help="the hetdro executable (default: %s)" % os.path.relpath(DEFAULT_HETDRO))
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="hetdro processes at once (default 1)")
    p.add_argument("--use", choices=("last", "selected"), default="last",
                   help="last: the final model's accuracies (default); selected: report.json's "
                        "\"selected\" (a model-selection rule's choice)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and what each would do; run nothing")
    p.add_argument("--tables-only", action="store_true",
                   help="write table.md, table.csv, runs.csv and worst_group.png from the runs complete "
                        "so far, and run nothing (no run started or resumed, no log written); exit 0 "
                        "however many are missing")
    p.add_argument("--quiet", action="store_true", help="do not echo hetdro's output (it still goes to DIR/logs)")
    return p


def main(argv=None):
    script = sys.argv[0] if argv is None else os.path.relpath(os.path.abspath(__file__))
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.tables_only and args.dry_run:
        raise UserError("--tables-only and --dry-run: give one of them (--dry-run lists the runs and writes "
                        "nothing; --tables-only writes the tables of the runs complete so far)")

    seeds = parse_seeds(args.seeds)
    grid = parse_grid(args.grid)
    sets = parse_sets(args.set, grid)
    if args.jobs < 1:
        raise UserError("--jobs %d: expected at least 1" % args.jobs)
    config_path = os.path.abspath(args.config)
    if not os.path.isfile(config_path):
        raise UserError("--config %s: file not found" % args.config)
    hetdro = os.path.abspath(args.hetdro)
    if not (os.path.isfile(hetdro) and os.access(hetdro, os.X_OK)):
        hint = ""
        alt = os.path.join(REPO, "build-cpu", "hetdro")
        if hetdro == DEFAULT_HETDRO and os.path.isfile(alt):
            hint = " (a CPU build is at %s: pass --hetdro %s)" % (os.path.relpath(alt), os.path.relpath(alt))
        raise UserError("--hetdro %s: not an executable file; build it (cmake --preset default && "
                        "cmake --build build) or pass --hetdro PATH%s" % (args.hetdro, hint))
    if not args.out:
        raise UserError("--out is empty, expected the sweep's folder")
    out_dir = os.path.abspath(args.out)
    outputs.check_folder(out_dir, "--out")
    if args.tables_only and not os.path.isdir(out_dir):
        raise UserError("--out %s: no such folder; --tables-only tables the runs of a sweep begun there "
                        "(run without --tables-only to start it)" % args.out)

    variants = make_variants(grid)
    runs = []
    for seed in seeds:
        for v in variants:
            runs.append(Run(len(runs) + 1, v, seed, out_dir))
    plan(runs, config_path, sets, args.use)
    # Every file the sweep will write, checked before any run starts.
    tables, logs = sweep_outputs(out_dir, runs, [(config_path, "the sweep's --config"),
                                                 (hetdro, "the --hetdro executable")])
    outputs.check_folder(os.path.join(out_dir, "logs"), "the logs' folder")
    for v in variants:
        outputs.check_folder(os.path.join(out_dir, "logs", v.name), "a log folder")
    outputs.check_all(list(tables.values()) + list(logs.values()))
    counts = collections.Counter(r.action for r in runs)
    summary = "%d complete (reused), %d to resume, %d to restart (--overwrite), %d to start" % (
        counts["skip"], counts["resume"], counts["restart"], counts["start"])
    print("sweep: %d variant%s x %d seed%s = %d runs in %s" % (
        len(variants), "s" * (len(variants) != 1), len(seeds), "s" * (len(seeds) != 1), len(runs),
        os.path.join(out_dir, "runs")))
    print("  hetdro %s, config %s, --use %s, %d job%s at a time" % (
        hetdro, config_path, args.use, args.jobs, "s" * (args.jobs != 1)))
    print("  " + summary)

    if args.dry_run:
        words = {"skip": "skip (complete)", "resume": "resume", "restart": "restart (--overwrite)",
                 "start": "start"}
        width = max(len(x.label) for x in runs) + 1
        for r in runs:
            note = (": " + r.note) if r.note and r.action != "skip" else ""
            print("[%d/%d] %-*s %s%s  -> %s" % (r.index, len(runs), width, r.label + ":", words[r.action],
                                                note, _short_path(r.dir)))
        first = next((r for r in runs if r.action != "skip"), None)
        if first:
            print("e.g. [%d]: %s" % (first.index, shlex.join(hetdro_command(hetdro, config_path, sets, first))))
        print("dry run: nothing was run or written")
        return 0

    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UserError("--out %s: cannot create the folder: %s" % (args.out, e))
    # The command that makes the sweep: without --tables-only (or an abbreviation of it; no
    # option's value can be one, argparse takes them for the option).
    sweep_argv = [a for a in argv if not (a.startswith("--t") and "--tables-only".startswith(a))]
    command = "cd %s && %s" % (shlex.quote(os.getcwd()),
                               shlex.join([sys.executable or "/usr/bin/python3", script] + sweep_argv))

    def write_outputs(final):
        groups, rows = aggregate(runs, variants)
        info = {"config": config_path, "grid": grid, "seeds_spec": args.seeds, "seeds": seeds, "sets": sets,
                "use": args.use, "command": command,
                "rules": [r.results.get("rule") for r in runs if r.results and r.results.get("rule") is not None],
                "n_runs": len(runs), "n_complete": sum(r.status == "complete" for r in runs),
                "n_failed": sum(r.status in ("failed", "interrupted") for r in runs),
                "n_not_run": sum(r.status == "not run" for r in runs),
                "when": datetime.datetime.now().isoformat(timespec="seconds"), "tables_only": args.tables_only}
        md = table_md(groups, rows, info)
        if grid:
            md += effects_md(knob_effects(runs, grid), rows)
        tables["table.md"].write(md.encode("utf-8"))
        tables["table.csv"].write(table_csv(groups, rows, grid).encode("utf-8"))
        tables["runs.csv"].write(runs_csv(runs, groups, grid, args.use).encode("utf-8"))
        if final:
            title = "worst-group accuracy over seeds %s (--use %s%s)\n%s" % (
                args.seeds, args.use, "; --tables-only: %d of %d runs complete" % (
                    info["n_complete"], info["n_runs"]) if args.tables_only else "", config_path)
            fig = worst_group_figure(rows, title)
            png = io.BytesIO()
            try:
                fig.savefig(png, format="png", dpi=DPI)
            finally:
                plt.close(fig)
            tables["worst_group.png"].write(png.getvalue())

    if args.tables_only:
        locks = outputs.held_locks()
        for r in runs:
            if r.status != "complete" and outputs.lock_held(r.dir, locks):
                r.note = "running (a hetdro holds its .lock)"
        stopped_by = None
    else:
        sweep = Sweep(args, runs, sets, config_path, hetdro, write_outputs, logs)
        stopped_by = sweep.run_all()
        if sweep.fatal is not None:
            raise sweep.fatal

    write_outputs(final=True)
    done = [r for r in runs if r.status == "complete"]
    bad = [r for r in runs if r.status in ("failed", "interrupted")]
    print("\n%d of %d runs complete (%d reused), %d failed or interrupted, %d not run" % (
        len(done), len(runs), counts["skip"], len(bad), sum(r.status == "not run" for r in runs)))
    for name in ("table.md", "table.csv", "worst_group.png", "runs.csv"):
        print(os.path.join(out_dir, name))
    for r in bad:
        print("%s: %s %s (%s); log: %s" % (r.status, r.label, r.dir, r.note, r.log))
    if args.tables_only:
        missing = len(runs) - len(done)
        if missing:
            print("\n--tables-only: nothing was run. To run the %d missing run%s (the complete ones are "
                  "skipped), run the sweep's command:\n  %s" % (missing, "s" * (missing != 1), command))
        else:
            print("\n--tables-only: nothing was run; every run is complete.")
        return 0
    if stopped_by is not None:
        print("\nsweep stopped by %s. To continue it (complete runs are skipped, interrupted ones "
              "resumed from their checkpoint), run the same command again:\n  %s"
              % (signal.Signals(stopped_by).name, command))
        return 128 + int(stopped_by)
    if bad:
        print("\n%d run%s did not complete; run the same command again to retry them "
              "(interrupted runs continue from their checkpoint)." % (len(bad), "s" * (len(bad) != 1)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(outputs.run(main, interrupted="interrupted; run the same command again to continue"))
