#!/usr/bin/env python3
"""PyTorch reference of hetdro's training method (docs/DESIGN.md §1-§2, §4).

What this is for: the baseline a PyTorch user would write for the method, and the
yardstick for the C++/CUDA trainer's accuracy and speed. It reads the same config.toml
(every key hetdro reads, the same --set overrides) and NPY data as `hetdro train`, makes the
same validation split and the same initial parameters (hetdro's counter RNG, value for value),
and trains the same model with the same loss, Adam/AdamW and GroupDRO rules; it prints
per-epoch test accuracy per group and the median step time. Its batches hold the same rows in
the same order as hetdro's (host/data.cpp StratifiedSampler: train.group_batch, batch_share,
the seeded shuffles); only the anchor noise comes from PyTorch's generators. The step is
batched over groups, classes and pairs (one call per group encoder); the W2 backward is
docs/DESIGN.md §2's autograd.Function.

Portable across PyTorch 1.13 (CPU) and 2.x (CUDA); --compile needs torch.compile (2.x).

Timing: step_ms is the median over an epoch's steps after --warmup steps, each step
timed from batch gather to optimizer step (CUDA synchronized on both ends);
samples_per_s = batch_size / step time. --time-steps N is the speed baseline of
scripts/bench_vs_torch.sh: --warmup untimed steps (and with --compile one more, for the
compilation), then N steps each timed with CUDA events (perf_counter on the CPU), no
evaluation; --timing-json FILE gets {impl, mode, device, torch, median_ms, p10_ms, p90_ms,
steps, batch_size}. On a CPU shared with other busy processes,
OpenMP's spin-waiting can make 2 threads ~8x slower than 1 (measured 1784 vs 271 ms/step);
OMP_WAIT_POLICY=PASSIVE in the environment avoids it (232 ms/step, same load).

Examples:
  python3 scripts/torch_reference.py --config data/hetero-fashion/config.toml --device cpu \\
       --threads 2 --epochs 1 --json-out /tmp/ref.jsonl
  python3 scripts/torch_reference.py --config data/hetero-fashion/config.toml --device cuda \\
       --set model.latent_dim=256 --time-steps 100 --warmup 20 --compile --timing-json t.json
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class UserError(Exception):
    """A problem with the user's input (config, files, options): exit code 2."""


# ----------------------------------------------------------------------------- config

def _parse_toml_minimal(text):
    """Tiny TOML subset parser, used only when neither tomllib (Python >= 3.11) nor the
    `toml` package is present. Supports what hetdro configs use: [table], [[array.table]],
    key = string | int | float | bool | array (arrays may span lines), # comments."""
    root = {}
    cur = root

    def strip_comment(line):
        out, quote = [], None
        for ch in line:
            if quote:
                if ch == quote:
                    quote = None
            elif ch in "\"'":
                quote = ch
            elif ch == "#":
                break
            out.append(ch)
        return "".join(out).strip()

    def parse_value(s, pos):
        while pos < len(s) and s[pos] in " \t\n,":
            pos += 1
        ch = s[pos]
        if ch in "\"'":
            end = s.index(ch, pos + 1)
            raw = s[pos + 1:end]
            if ch == '"':
                raw = raw.encode("utf-8").decode("unicode_escape")
            return raw, end + 1
        if ch == "[":
            pos += 1
            items = []
            while True:
                while pos < len(s) and s[pos] in " \t\n,":
                    pos += 1
                if s[pos] == "]":
                    return items, pos + 1
                v, pos = parse_value(s, pos)
                items.append(v)
        end = pos
        while end < len(s) and s[end] not in ",]\n":
            end += 1
        tok = s[pos:end].strip().replace("_", "")
        if tok == "true":
            return True, end
        if tok == "false":
            return False, end
        try:
            return int(tok), end
        except ValueError:
            pass
        try:
            return float(tok), end
        except ValueError:
            raise UserError("cannot parse TOML value %r" % tok)

    pending = ""
    for lineno, line in enumerate(text.splitlines(), 1):
        line = strip_comment(line)
        if pending:
            line = pending + "\n" + line
            pending = ""
        if not line:
            continue
        if line.startswith("[["):
            names = line.strip("[] ").split(".")
            t = root
            for n in names[:-1]:
                t = t.setdefault(n, {})
                if isinstance(t, list):
                    t = t[-1]
            lst = t.setdefault(names[-1], [])
            lst.append({})
            cur = lst[-1]
            continue
        if line.startswith("["):
            t = root
            for n in line.strip("[] ").split("."):
                t = t.setdefault(n, {})
                if isinstance(t, list):
                    t = t[-1]
            cur = t
            continue
        if "=" not in line:
            raise UserError("config line %d: expected key = value" % lineno)
        key, val = line.split("=", 1)
        val = val.strip()
        if val.count("[") > val.count("]"):   # array continues on the next line
            pending = line
            continue
        cur[key.strip().strip('"')] = parse_value(val, 0)[0]
    return root


def load_toml(path):
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError("%s: cannot parse TOML: %s" % (path, e))
    return load_toml_text(text, path)


def load_toml_text(text, path):
    try:
        import tomllib
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise UserError("%s: cannot parse TOML: %s" % (path, e))
    except ImportError:
        pass
    try:
        import toml
        parse = toml.loads
    except ImportError:
        parse = _parse_toml_minimal
    try:
        return parse(text)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad config file
        raise UserError("%s: cannot parse TOML: %s" % (path, e))


# Every key hetdro reads (host/config.cpp) with its default (None: required) and allowed values.
# Unknown keys are errors (docs/DESIGN.md §4), so a typo never silently trains with a default;
# a key this reference cannot honour is refused by name (_refuse_unsupported).
# data.val_fraction's 0.1 here is its type; left out of the config it follows train.select (load_config).
_DATA_KEYS = {"classes": 10, "groups": None, "val_fraction": 0.1, "val_seed": 0}
_GROUP_KEYS = {"name": None, "train_x": None, "train_y": None, "test_x": None, "test_y": None,
               "encoder": "", "channels": [32, 64], "kernel": 3, "hidden": [128], "label_column": "label",
               "val_x": "", "val_y": "", "batch_share": 0.0}
_MODEL_KEYS = {"latent_dim": 64, "classifier": "linear", "classifier_hidden": 128, "latent_activation": "none",
               "anchor_scale": 1.0, "anchor_mean_init": "zero"}
_TRAIN_KEYS = {"epochs": 10, "batch_size": 100, "lr": 1e-3, "lambda_fit": 1e-3, "lambda_sep": 1e-3,
               "samples_per_anchor": 16, "eps": 1e-5, "fit": "pooled", "objective": "erm",
               "group_batch": "proportional", "groupdro_eta": 0.01, "weight_decay": 0.0, "seed": 0,
               "device": "auto", "deterministic": True, "eval_batch": 1000, "checkpoint_every": 0, "select": "last", "groupdro": {}}
_GROUPDRO_KEYS = {"update": "exp", "objective": "weighted", "tau": 1.0, "gamma": 0.1, "adjustment": 0.0}
_CHOICES = {("model", "classifier"): ("linear", "mlp2"),
            ("model", "latent_activation"): ("none", "relu"),
            ("model", "anchor_mean_init"): ("zero", "random"),
            ("train", "fit"): ("pooled", "per_group", "none"),
            ("train", "objective"): ("erm", "groupdro"),
            ("train", "group_batch"): ("proportional", "sqrt", "equal"),
            ("train", "device"): ("auto", "cuda", "cpu"),
            ("train", "select"): ("last", "worst_val", "mean_val"),
            ("train.groupdro", "update"): ("exp", "softmax", "smooth"),
            ("train.groupdro", "objective"): ("weighted", "max", "logsumexp")}


def _fill(section_name, given, spec):
    if not isinstance(given, dict):
        raise UserError("config: [%s] must be a table" % section_name)
    for k in given:
        if k not in spec:
            raise UserError("config: unknown key '%s' in [%s] (known: %s)"
                            % (k, section_name, ", ".join(sorted(spec))))
    out = {}
    for k, default in spec.items():
        if k in given:
            v = given[k]
            # Type follows the default's type; ints are accepted where floats are expected.
            if default is not None and default != "":
                if isinstance(default, bool) or isinstance(v, bool):
                    ok = type(v) is type(default)
                elif isinstance(default, float):
                    ok = isinstance(v, (int, float))
                    v = float(v) if ok else v
                elif isinstance(default, list):
                    ok = isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                                                     for x in v)
                else:
                    ok = isinstance(v, type(default))
                if not ok:
                    raise UserError("config: [%s] %s = %r has the wrong type (expected %s)"
                                    % (section_name, k, v, type(default).__name__))
            elif not isinstance(v, str) and k != "groups":
                raise UserError("config: [%s] %s must be a string" % (section_name, k))
            out[k] = v
        elif default is None:
            raise UserError("config: [%s] needs key '%s'" % (section_name, k))
        else:
            out[k] = default
        choices = _CHOICES.get((section_name, k))
        if choices and out[k] not in choices:
            raise UserError("config: [%s] %s = %r, expected one of %s"
                            % (section_name, k, out[k], ", ".join(choices)))
    return out


def _parse_value(text):
    """A --set value: TOML, as hetdro reads it (host/config.cpp apply_override); a bare word
    that is not TOML is taken as a string."""
    try:
        return load_toml_text("v = " + text, "--set")["v"]
    except UserError:
        return text


def apply_override(raw, text):
    """hetdro's --set KEY=VALUE on the parsed TOML: a dotted path, array items by index
    ("data.groups.0.encoder=mlp"), missing tables created."""
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise UserError("--set '%s': expected KEY=VALUE, for example train.epochs=3" % text)
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(part, {})
        elif isinstance(node, list):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                raise UserError("--set '%s': '%s' is not an index into the array (%d items)"
                                % (text, part, len(node)))
        else:
            raise UserError("--set '%s': '%s' is not a table" % (text, part))
    if not isinstance(node, dict):
        raise UserError("--set '%s': the parent of '%s' is not a table" % (text, parts[-1]))
    node[parts[-1]] = _parse_value(value)


def _refuse_unsupported(cfg):
    """Keys hetdro reads that change nothing this reference measures, but which it cannot do:
    refused by name (exit 2) rather than ignored."""
    if cfg["train"]["checkpoint_every"] != 0:
        raise UserError("config: [train] checkpoint_every = %d is not supported by the PyTorch reference "
                        "(it writes no checkpoints); set it to 0" % cfg["train"]["checkpoint_every"])


def _check_batch_shares(groups):
    """host/config.cpp check_batch_shares: the batch_share values fix those groups' shares of a
    batch and the others split what is left, so shares that leave nothing for the others, or that
    do not fill the batch when every group has one, cannot be met."""
    fixed, free, keys = 0.0, 0, []
    for i, g in enumerate(groups):
        if g["batch_share"] > 0:
            fixed += g["batch_share"]
            keys.append("data.groups[%d].batch_share" % i)
        else:
            free += 1
    if not keys:
        return
    if free > 0 and fixed >= 1:
        raise UserError("config: the keys %s add up to %.6g, which leaves nothing of a batch for the %d group(s) "
                        "without a batch_share: expected a sum below 1" % (", ".join(keys), fixed, free))
    if free == 0 and abs(fixed - 1) > 1e-6:
        raise UserError("config: every group has a batch_share, and they add up to %.6g: expected them to add up "
                        "to 1 (%s)" % (fixed, ", ".join(keys)))


def load_config(path, overrides=()):
    if not os.path.isfile(path):
        raise UserError("config file not found: %s" % path)
    raw = load_toml(path)
    for o in overrides:
        apply_override(raw, o)
    for k in raw:
        if k not in ("data", "model", "train"):
            raise UserError("config: unknown table [%s] (known: data, model, train)" % k)
    if "data" not in raw:
        raise UserError("config: missing [data] table")
    cfg = {"data": _fill("data", raw["data"], _DATA_KEYS),
           "model": _fill("model", raw.get("model", {}), _MODEL_KEYS),
           "train": _fill("train", raw.get("train", {}), _TRAIN_KEYS)}
    cfg["train"]["groupdro"] = _fill("train.groupdro", cfg["train"]["groupdro"], _GROUPDRO_KEYS)
    groups = cfg["data"]["groups"]
    if not isinstance(groups, list) or not groups:
        raise UserError("config: [[data.groups]] must list at least one group")
    base = os.path.dirname(os.path.abspath(path))
    cfg["data"]["groups"] = [_fill("data.groups", g, _GROUP_KEYS) for g in groups]
    names = set()
    for raw_g, g in zip(groups, cfg["data"]["groups"]):
        if "batch_share" in raw_g and not 0 < g["batch_share"] < 1:
            raise UserError("config: group %s: batch_share = %r, expected the group's share of every batch, "
                            "in (0, 1)" % (g["name"], raw_g["batch_share"]))
        if g["name"] in names:
            raise UserError("config: group name '%s' is used twice" % g["name"])
        names.add(g["name"])
        if g["encoder"] not in ("", "cnn", "mlp"):
            raise UserError("config: group %s: encoder = %r, expected cnn or mlp" % (g["name"], g["encoder"]))
        if bool(g["val_x"]) != bool(g["val_y"]):
            raise UserError("config: group %s gives one of val_x/val_y but not the other: a validation split "
                            "needs both" % g["name"])
        for k in ("train_x", "train_y", "test_x", "test_y", "val_x", "val_y"):
            if g[k]:
                g[k] = os.path.join(base, g[k])
    t, m, gd = cfg["train"], cfg["model"], cfg["train"]["groupdro"]
    for sec, key, lo in (("data", "classes", 2), ("model", "latent_dim", 1), ("model", "classifier_hidden", 1),
                         ("train", "epochs", 0), ("train", "batch_size", 1), ("train", "eval_batch", 1),
                         ("train", "samples_per_anchor", 1), ("train", "checkpoint_every", 0)):
        if cfg[sec][key] < lo:
            raise UserError("config: [%s] %s must be >= %d" % (sec, key, lo))
    for sec, key in (("train", "eps"), ("train", "lr"), ("model", "anchor_scale")):
        if not cfg[sec][key] > 0:
            raise UserError("config: [%s] %s must be > 0" % (sec, key))
    for key in ("lambda_fit", "lambda_sep", "groupdro_eta", "weight_decay"):
        if t[key] < 0:
            raise UserError("config: [train] %s must be >= 0" % key)
    _check_batch_shares(cfg["data"]["groups"])
    # The validation split costs every group a tenth of its training data: left out of the config,
    # it is taken only when train.select uses it (host/config.cpp load_config, docs/DESIGN.md §4).
    if "val_fraction" not in raw["data"]:
        cfg["data"]["val_fraction"] = 0.1 if t["select"] != "last" else 0.0
    if not 0 <= cfg["data"]["val_fraction"] <= 0.5:
        raise UserError("config: [data] val_fraction must lie in [0, 0.5]")
    if not gd["tau"] > 0 or not 0 <= gd["gamma"] <= 1 or gd["adjustment"] < 0:
        raise UserError("config: [train.groupdro] needs tau > 0, 0 <= gamma <= 1, adjustment >= 0")
    if t["batch_size"] < len(groups):
        raise UserError("config: [train] batch_size %d is smaller than the number of groups (%d)"
                        % (t["batch_size"], len(groups)))
    del m  # validated above
    _refuse_unsupported(cfg)
    return cfg


# ----------------------------------------------------------------------------- data

def _load_npy(path, what):
    if not os.path.isfile(path):
        raise UserError("%s file not found: %s" % (what, path))
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
        raise UserError("cannot read %s as NPY (the PyTorch reference reads NPY files only; hetdro also "
                        "reads IDX and CSV): %s" % (path, e))


def _features(path, encoder, name):
    x = _load_npy(path, "features")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif x.dtype in (np.float32, np.float64):
        x = x.astype(np.float32, copy=False)
    else:
        raise UserError("%s: features must be float32, float64 or uint8, got %s" % (path, x.dtype))
    if encoder == "cnn":
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4:
            raise UserError("%s: group %s (cnn) needs x of shape [n,H,W] or [n,C,H,W], got %s"
                            % (path, name, x.shape))
    elif x.ndim != 2:
        raise UserError("%s: group %s (mlp) needs x of shape [n,d], got %s" % (path, name, x.shape))
    return np.ascontiguousarray(x)


def _labels(path, n, classes):
    y = _load_npy(path, "labels")
    if y.dtype.kind not in "iu":
        raise UserError("%s: labels must be integers (int64/int32/uint8), got %s" % (path, y.dtype))
    y = y.reshape(-1).astype(np.int64)
    if len(y) != n:
        raise UserError("%s: %d labels for %d samples" % (path, len(y), n))
    if len(y) and (y.min() < 0 or y.max() >= classes):
        raise UserError("%s: labels must lie in [0, %d), found %d..%d" % (path, classes, y.min(), y.max()))
    return y


# hetdro's counter-based random numbers (include/hetdro/rng.h), bit for bit, so that the
# validation split and the initial parameters are the ones `hetdro train` uses.
_M64 = (1 << 64) - 1


def splitmix64(x):
    """splitmix64 on a Python int or a numpy uint64 array (wrapping like C's uint64_t)."""
    if isinstance(x, np.ndarray):
        with np.errstate(over="ignore"):
            x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            return x ^ (x >> np.uint64(31))
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def uniform01(seed, i):
    """rng.h uniform01 for counters i (uint64 array): uniform in (0, 1], 53 bits."""
    with np.errstate(over="ignore"):
        bits = splitmix64(np.uint64(splitmix64(seed)) ^ splitmix64(np.asarray(i, np.uint64) * np.uint64(2)
                                                                   + np.uint64(1)))
    return ((bits >> np.uint64(11)) + np.uint64(1)).astype(np.float64) * (1.0 / 9007199254740992.0)


def normal01(seed, i):
    i = np.asarray(i, np.uint64)
    u1, u2 = uniform01(seed, 2 * i), uniform01(seed, 2 * i + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(6.283185307179586476925 * u2)


def seeded_permutation(n, seed):
    """host/data.cpp seeded_permutation: Fisher–Yates with the counter RNG."""
    p = list(range(n))
    if n > 1:
        i = np.arange(n - 1, 0, -1, dtype=np.uint64)
        js = np.minimum(i, (uniform01(seed, i) * (i + 1).astype(np.float64)).astype(np.uint64)).tolist()
        for ii, j in zip(range(n - 1, 0, -1), js):
            p[ii], p[j] = p[j], p[ii]
    return p


def split_validation(y, fraction, seed, classes):
    """host/data.cpp split_validation: per class, round(fraction·n) samples by a seeded
    permutation go to validation. Returns the validation mask, or None when a present class
    has too few samples (hetdro then keeps no validation split for the group)."""
    to_val = np.zeros(len(y), bool)
    for c in range(classes):
        rows = np.flatnonzero(y == c)
        n = len(rows)
        take = int(math.floor(fraction * n + 0.5))   # llround: halves away from zero
        if n == 0:
            continue
        if take == 0 or take == n:
            return None
        order = seeded_permutation(n, splitmix64(seed ^ splitmix64(c + 0x5A11)))
        to_val[rows[order[:take]]] = True
    return to_val


def load_data(cfg):
    C = cfg["data"]["classes"]
    groups = []
    for index, g in enumerate(cfg["data"]["groups"]):
        enc = g["encoder"]
        if not enc:  # default: images are cnn, vectors are mlp
            enc = "mlp" if _load_npy(g["train_x"], "features").ndim == 2 else "cnn"
            g["encoder"] = enc
        xtr = _features(g["train_x"], enc, g["name"])
        xte = _features(g["test_x"], enc, g["name"])
        if xtr.shape[1:] != xte.shape[1:]:
            raise UserError("group %s: train x %s and test x %s differ in shape"
                            % (g["name"], xtr.shape[1:], xte.shape[1:]))
        ytr = _labels(g["train_y"], len(xtr), C)
        # The validation split as hetdro makes it (host/data.cpp load_groups): the group's own
        # val_x/val_y, else data.val_fraction of its training samples, so both train on the same rows.
        xva = yva = None
        if g["val_x"]:
            xva = _features(g["val_x"], enc, g["name"])
            yva = _labels(g["val_y"], len(xva), C)
        elif cfg["data"]["val_fraction"] > 0:
            mask = split_validation(ytr, cfg["data"]["val_fraction"],
                                    splitmix64(cfg["data"]["val_seed"] ^ splitmix64(index)), C)
            if mask is not None:
                xva, yva, xtr, ytr = xtr[mask], ytr[mask], xtr[~mask], ytr[~mask]
        if len(xtr) == 0:
            raise UserError("group %s: no training samples" % g["name"])
        groups.append(dict(name=g["name"], encoder=enc, cfg=g, xtr=np.ascontiguousarray(xtr), ytr=ytr,
                           xte=xte, yte=_labels(g["test_y"], len(xte), C), xva=xva, yva=yva))
    return groups


def batch_counts(B, Ns, mode="proportional", shares=None):
    """host/data.cpp batch_counts, in the same double arithmetic: group g's samples per batch.
    shares[g] > 0 fixes it at B·shares[g]; the other groups split B·(1 − Σ shares) in proportion
    to N_g (proportional), √N_g (sqrt) or 1 (equal). Floors, then one more each by largest
    remainder (ties: the first group), then at least one per group (taken from the largest count).
    Σ n_g = B. With no shares, proportional is round(B·N_g/N) (docs/DESIGN.md §1)."""
    G = len(Ns)
    if B < G:
        raise UserError("batch size %d is smaller than the number of groups (%d)" % (B, G))
    shares = [float(v) for v in shares] if shares else [0.0] * G
    if len(shares) != G:
        raise ValueError("batch_counts: %d shares for %d groups" % (len(shares), G))

    def weight(g):
        if mode == "sqrt":
            return math.sqrt(float(Ns[g]))
        if mode == "equal":
            return 1.0
        return float(Ns[g])
    fixed = total = 0.0   # the fixed shares' sum; the free groups' weight
    for g in range(G):
        if shares[g] > 0:
            fixed += shares[g]
        else:
            total += weight(g)
    free_rows = B * (1 - fixed)   # B exactly with no fixed shares
    counts, remainder = [], []
    for g in range(G):
        exact = B * shares[g] if shares[g] > 0 else free_rows * weight(g) / total
        counts.append(int(math.floor(exact)))
        remainder.append(exact - counts[g])
    order = sorted(range(G), key=lambda g: -remainder[g])   # stable: ties keep the group order
    assigned, i = sum(counts), 0
    while assigned < B:
        counts[order[i]] += 1
        i, assigned = (i + 1) % G, assigned + 1
    for g in range(G):   # every group in every batch: the extra sample comes from the largest count
        if counts[g] == 0:
            counts[g] += 1
            counts[counts.index(max(counts))] -= 1
    return counts


class StratifiedSampler:
    """host/data.cpp StratifiedSampler: every batch holds per_batch[g] samples of group g, and
    order(epoch) gives each group's order for that epoch (step s takes per_batch[g] entries from
    s·per_batch[g]), the same indices as hetdro's for the same sizes, counts and train.seed.
     - Proportional counts (no batch_share, the default): one seeded shuffle per group and epoch;
       an epoch has min_g floor(N_g / n_g) steps and repeats no sample.
     - Otherwise (resamples): an epoch is one pass over the largest group (the first on ties),
       floor(N_L / n_L) steps; a group that runs out is drawn again from a fresh shuffle (pass
       p ≥ 1 seeded from pass 0's seed and p), the passes cut where the epoch ends."""

    def __init__(self, sizes, batch_size, seed, mode="proportional", shares=None):
        self.sizes = [int(n) for n in sizes]
        self.per_batch = batch_counts(batch_size, self.sizes, mode, shares)
        self.resamples = mode != "proportional" or any(v > 0 for v in (shares or ()))
        self.seed = int(seed) & _M64
        if self.resamples:
            largest = self.sizes.index(max(self.sizes))
            self.steps = self.sizes[largest] // self.per_batch[largest]
        else:
            self.steps = min(N // n for N, n in zip(self.sizes, self.per_batch))

    def order_size(self, g):
        return self.steps * self.per_batch[g] if self.resamples else self.sizes[g]

    def order(self, epoch):
        """Each group's order of training rows for `epoch` (0-based), a list of lists."""
        out = []
        for g, N in enumerate(self.sizes):
            pass_seed = splitmix64(self.seed ^ splitmix64((epoch * 1000003 + g) & _M64))
            o = seeded_permutation(N, pass_seed)
            if self.resamples:
                need, p = self.order_size(g), 1
                while len(o) < need:
                    o += seeded_permutation(N, splitmix64(pass_seed ^ splitmix64(p)))
                    p += 1
                del o[need:]
            out.append(o)
        return out


def make_sampler(cfg, Ns):
    """The sampler hetdro's trainer makes (host/trainer.cpp make_sampler), with its refusals."""
    t, groups = cfg["train"], cfg["data"]["groups"]
    s = StratifiedSampler(Ns, t["batch_size"], t["seed"], t["group_batch"], [g["batch_share"] for g in groups])
    for g, N, n in zip(groups, Ns, s.per_batch):
        if not s.resamples and N < n:
            raise UserError("config: group '%s' has %d training samples, fewer than the %d that every batch of "
                            "train.batch_size = %d takes from it; lower train.batch_size"
                            % (g["name"], N, n, t["batch_size"]))
    if s.steps < 1:
        L = Ns.index(max(Ns))
        raise UserError("config: the largest group, '%s', has %d training samples, fewer than the %d that every "
                        "batch takes from it: an epoch would have no step; lower train.batch_size"
                        % (groups[L]["name"], Ns[L], s.per_batch[L]))
    if s.resamples and s.steps * t["batch_size"] > 1 << 28:   # host/trainer.cpp's bound, before allocating
        L = Ns.index(max(Ns))
        raise UserError("config: an epoch of %d steps (one pass over the largest group, '%s', %d of it per batch) "
                        "of train.batch_size = %d needs an order of %d sample indices; raise that group's share "
                        "of a batch or lower train.batch_size"
                        % (s.steps, groups[L]["name"], s.per_batch[L], t["batch_size"], s.steps * t["batch_size"]))
    return s


# ----------------------------------------------------------------------------- model
# Module and parameter names follow docs/DESIGN.md §4's checkpoint names, so a state_dict of this
# model and hetdro's checkpoint.safetensors share keys and layouts.

def latent_act(name):
    return nn.ReLU() if name == "relu" else nn.Identity()


class CNNEncoder(nn.Module):
    # docs/DESIGN.md §1 literally: no activation between the convs; sigmoid after the pool.
    def __init__(self, in_shape, channels, kernel, k, act):
        super().__init__()
        if len(channels) != 2:
            raise UserError("cnn encoder needs channels = [c1, c2], got %r" % (channels,))
        cin, H, W = in_shape
        c1, c2 = channels
        self.conv1 = nn.Conv2d(cin, c1, kernel)
        self.conv2 = nn.Conv2d(c1, c2, kernel)
        h, w = (H - 2 * (kernel - 1)) // 2, (W - 2 * (kernel - 1)) // 2
        if h < 1 or w < 1:
            raise UserError("cnn encoder: input %dx%d is too small for two %dx%d convs and a 2x2 pool"
                            % (H, W, kernel, kernel))
        self.fc = nn.Linear(c2 * h * w, k)
        self.act = latent_act(act)

    def forward(self, x):
        x = self.conv2(self.conv1(x))
        x = torch.sigmoid(F.max_pool2d(x, 2))
        return self.act(self.fc(x.flatten(1)))


class MLPEncoder(nn.Module):
    def __init__(self, d, hidden, k, act):
        super().__init__()
        sizes = [d] + list(hidden) + [k]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = latent_act(act)

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = F.relu(x)
        return self.act(x)


class MLP2(nn.Module):
    def __init__(self, k, h, C):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(k, h), nn.Linear(h, C)])

    def forward(self, z):
        return self.layers[1](F.relu(self.layers[0](z)))


class Anchors(nn.Module):
    """Per-class Gaussians N(m_c, L_c L_cᵀ + εI) (docs/DESIGN.md §1); hetdro_init sets them."""

    def __init__(self, C, k):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(C, k))
        self.chol = nn.Parameter(torch.eye(k).repeat(C, 1, 1))


class HetModel(nn.Module):
    def __init__(self, cfg, groups):
        super().__init__()
        m = cfg["model"]
        k, C = m["latent_dim"], cfg["data"]["classes"]
        enc = {}
        for g in groups:
            gc = g["cfg"]
            if g["encoder"] == "cnn":
                enc[g["name"]] = CNNEncoder(g["xtr"].shape[1:], gc["channels"], gc["kernel"], k,
                                            m["latent_activation"])
            else:
                enc[g["name"]] = MLPEncoder(g["xtr"].shape[1], gc["hidden"], k, m["latent_activation"])
        self.encoders = nn.ModuleDict(enc)
        self.classifier = nn.Linear(k, C) if m["classifier"] == "linear" else MLP2(k, m["classifier_hidden"], C)
        self.anchors = Anchors(C, k)
        hetdro_init(self, cfg["train"]["seed"], m["anchor_scale"], m["anchor_mean_init"])


@torch.no_grad()
def hetdro_init(model, seed, anchor_scale, anchor_mean_init):
    """host/model.cpp Model::init, value for value: the parameters in hetdro's flat order (which
    named_parameters() follows: encoders in config order, classifier, anchors.mean, anchors.chol),
    every weight and bias U(±1/√fan_in of the weight) drawn at its flat offset; anchors m = 0 or
    N(0,1) (model.anchor_mean_init), L = anchor_scale·I (model.anchor_scale)."""
    stream = splitmix64(seed ^ 0x1A1D)
    offset, fan_in = 0, 1
    named = list(model.named_parameters())
    for name, p in named:
        n = p.numel()
        if name.endswith(".weight"):
            fan_in = int(np.prod(p.shape[1:])) if p.dim() > 1 else 1
        if not name.startswith("anchors."):
            bound = 1.0 / math.sqrt(fan_in)   # a bias uses the weight just before it
            u = uniform01(stream, np.arange(offset, offset + n, dtype=np.uint64))
            p.copy_(torch.from_numpy((2 * u - 1) * bound).view(p.shape))
        offset += n
    C, k = model.anchors.mean.shape
    if anchor_mean_init == "random":
        m = normal01(stream ^ 0xA0C4, np.arange(C * k, dtype=np.uint64))
        model.anchors.mean.copy_(torch.from_numpy(m).view(C, k))
    else:
        model.anchors.mean.zero_()
    model.anchors.chol.copy_(anchor_scale * torch.eye(k).repeat(C, 1, 1))


# ----------------------------------------------------------------------------- W2

def _sym(X):
    return 0.5 * (X + X.transpose(-1, -2))


def _trace(X):
    return X.diagonal(dim1=-2, dim2=-1).sum(-1)


def _sqrt_divided_differences(a, fa, eps):
    """K_ij of docs/DESIGN.md §2 step 4 for f(a) = sqrt(max(a, eps)): the divided differences
    (f(a_i) - f(a_j)) / (a_i - a_j), written so that no branch divides by ~0."""
    ai, aj = a.unsqueeze(-1), a.unsqueeze(-2)
    fi, fj = fa.unsqueeze(-1), fa.unsqueeze(-2)
    above_i, above_j = ai > eps, aj > eps
    both = above_i & above_j
    # Both unclamped: (√a_i − √a_j)/(a_i − a_j) = 1/(√a_i + √a_j), exact also at a_i = a_j.
    k_both = 1.0 / (fi + fj)
    # One clamped: the plain quotient, or f' at the midpoint when the gap is rounding noise.
    d = ai - aj
    tiny = d.abs() <= 64 * torch.finfo(a.dtype).eps * torch.maximum(ai.abs(), aj.abs()).clamp_min(eps)
    safe_d = torch.where(tiny, torch.ones_like(d), d)
    k_mixed = (fi - fj) / safe_d
    mid = 0.5 * (ai + aj)
    fprime_mid = torch.where(mid > eps, 0.5 / mid.clamp_min(eps).sqrt(), torch.zeros_like(mid))
    k_mixed = torch.where(tiny, fprime_mid, k_mixed)
    zero = torch.zeros_like(k_both)
    return torch.where(both, k_both, torch.where(above_i | above_j, k_mixed, zero))


class W2SquaredSafe(torch.autograd.Function):
    """W2²(N(m1,A), N(m2,B)) for a batch of pairs, with docs/DESIGN.md §2's analytic backward:
    two eigendecompositions in the forward, none in the backward, and no 1/(λ_i − λ_j)
    anywhere, so exactly repeated (clamped) eigenvalues give finite gradients.
    A, B: [P,k,k] symmetric; m1, m2: [P,k]. Returns [P]."""

    @staticmethod
    def forward(ctx, m1, A, m2, B, eps):
        a, U = torch.linalg.eigh(A)
        fa = a.clamp_min(eps).sqrt()
        R = (U * fa.unsqueeze(-2)) @ U.transpose(-1, -2)
        M = _sym(R @ B @ R)
        mu, V = torch.linalg.eigh(M)
        T = mu.clamp_min(eps * eps).sqrt().sum(-1)  # M's floor is ε² (DESIGN §2 step 2)
        delta = m1 - m2
        ctx.eps = eps
        ctx.save_for_backward(delta, B, a, U, fa, R, mu, V)
        return (delta * delta).sum(-1) + _trace(A) + _trace(B) - 2.0 * T

    @staticmethod
    def backward(ctx, g):
        delta, B, a, U, fa, R, mu, V = ctx.saved_tensors
        eps = ctx.eps
        # 2. G_M = V diag(h) Vᵀ, h = 1/(2√μ) above the ε² floor, 0 below (the floor is flat).
        h = torch.where(mu > eps * eps, 0.5 / mu.clamp_min(eps * eps).sqrt(), torch.zeros_like(mu))
        GM = (V * h.unsqueeze(-2)) @ V.transpose(-1, -2)
        # 3. Through M = R B R.
        dT_dB = R @ GM @ R
        GMR = GM @ R
        dT_dR = GMR @ B + B @ GMR.transpose(-1, -2)
        # 4. Daleckii–Krein through R = f(A).
        K = _sqrt_divided_differences(a, fa, eps)
        Ut = U.transpose(-1, -2)
        dT_dA = U @ (K * (Ut @ dT_dR @ U)) @ Ut
        # 5. Assemble; g is [P].
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        gg = g.view(-1, 1, 1)
        gA = gg * (eye - 2.0 * dT_dA)
        gB = gg * (eye - 2.0 * dT_dB)
        gm1 = g.view(-1, 1) * 2.0 * delta
        return gm1, gA, -gm1, gB, None


def _sqrtm_psd_autograd(X, eps):
    lam, V = torch.linalg.eigh(X)
    return (V * lam.clamp_min(eps).sqrt().unsqueeze(-2)) @ V.transpose(-1, -2)


def w2_squared_naive(m1, A, m2, B, eps):
    """The paper's pseudocode: matrix square roots via eigh, differentiated by autograd
    (which divides by eigenvalue gaps: non-finite on repeated eigenvalues)."""
    R = _sqrtm_psd_autograd(A, eps)
    C = _sqrtm_psd_autograd(_sym(R @ B @ R), eps * eps)
    return ((m1 - m2) ** 2).sum(-1) + _trace(A) + _trace(B) - 2.0 * _trace(C)


def w2_squared(m1, A, m2, B, eps, mode="safe"):
    if mode == "safe":
        return W2SquaredSafe.apply(m1, A, m2, B, eps)
    return w2_squared_naive(m1, A, m2, B, eps)


# ----------------------------------------------------------------------------- loss

def class_moments(z, key, K):
    """Per-key counts, means and unnormalised centred scatter Σ(z−m̂)(z−m̂)ᵀ, vectorised
    with a one-hot matrix (deterministic on CUDA, unlike index_add_ with atomics)."""
    onehot = F.one_hot(key, K).to(z.dtype)            # [B,K]
    n = onehot.sum(0)                                  # [K]
    mean = (onehot.t() @ z) / n.clamp_min(1).unsqueeze(1)
    zc = z - mean[key]
    return n, mean, _scatter(onehot, zc)


def _scatter(onehot, zc):
    """Σ_b onehot[b,K] zc_b zc_bᵀ as one matmul, through whichever intermediate is smaller:
    [B,K,k] (few keys) or the per-sample outer products [B,k²] (many keys: C = 1000 would make
    the first 2.6 GB at B = 10⁴, k = 64). The same FLOPs either way, both deterministic."""
    B, K = onehot.shape
    k = zc.shape[1]
    if K <= k:
        return torch.einsum("bK,bi,bj->Kij", onehot, zc, zc)
    return (onehot.t() @ (zc.unsqueeze(2) * zc.unsqueeze(1)).reshape(B, k * k)).view(K, k, k)


def fit_loss(z, y, g, anchors, opts):
    """λ_fit's term: Σ over classes (pooled) or (group, class) pairs of
    W2²(N(m̂, Ŝ), anchor), skipping keys with fewer than 2 samples. Returns (L_fit, skipped)."""
    C, eps, G = opts["classes"], opts["eps"], len(opts["group_names"])
    zero = z.new_zeros(())
    if opts["fit"] == "none" or opts["lambda_fit"] == 0:
        return zero, zero
    K = C if opts["fit"] == "pooled" else G * C
    key = y if opts["fit"] == "pooled" else g * C + y
    n, mean, scatter = class_moments(z, key, K)
    skipped = (n == 1).sum().to(z.dtype)          # present but too few for a covariance
    # Boolean selection syncs on CUDA, but eigh syncs anyway (info check); it saves
    # solving padded pairs, and PyTorch's fp32 eigh cost grows with the pair count.
    idx = (n >= 2).nonzero().squeeze(1)
    if idx.numel() == 0:
        return zero, skipped
    k = z.shape[1]
    eye = torch.eye(k, dtype=z.dtype, device=z.device)
    A = scatter[idx] / (n[idx] - 1).view(-1, 1, 1) + eps * eye
    cls = idx % C
    Lc = anchors.chol[cls]
    S = Lc @ Lc.transpose(-1, -2) + eps * eye
    return w2_squared(mean[idx], A, anchors.mean[cls], S, eps, opts["eigh"]).sum(), skipped


def _present_softmax(x, present):
    """softmax over the present groups; 0 for an absent one (kernels/clf_objective.h)."""
    return torch.softmax(torch.where(present, x, torch.full_like(x, -math.inf)), 0)


def groupdro(ce, g, q, G, opts):
    """L_clf of the GroupDRO family and the next q (docs/DESIGN.md §1; ops.def clf_objective),
    as batched tensor ops over the groups. q and its update in float64, as hetdro keeps them;
    ℓ̃_g = ℓ_g + C/√N_g (train.groupdro.adjustment) drives the update, the objective uses ℓ_g."""
    # index_add, not bincount: static output shape, so torch.compile keeps one graph.
    cnt = ce.new_zeros(G).index_add(0, g, torch.ones_like(ce))
    lg = ce.new_zeros(G).index_add(0, g, ce) / cnt.clamp_min(1)
    present = cnt > 0
    ld = lg.detach().double()
    adj = ld + opts["adjustment"]
    update, eta, tau, gamma = opts["gd_update"], opts["eta"], opts["gd_tau"], opts["gd_gamma"]
    if update == "exp" and eta != 0:
        e = torch.where(present, eta * adj, torch.zeros_like(adj))
        top = torch.where(present, e, torch.full_like(e, -math.inf)).max()
        q = q * torch.exp(e - top)
        q = q / q.sum()
    elif update == "softmax":
        q = _present_softmax(adj / tau, present)
    elif update == "smooth":
        q = (1 - gamma) * q + gamma * _present_softmax(eta * adj, present)
    objective = opts["gd_objective"]
    if objective == "weighted":
        loss_clf = (q.to(lg.dtype) * lg).sum()
    elif objective == "max":
        masked = torch.where(present, lg, torch.full_like(lg, -math.inf))
        loss_clf = lg[masked.detach().argmax()]     # the subgradient: the worst group only
    else:
        masked = torch.where(present, lg / tau, torch.full_like(lg, -math.inf))
        loss_clf = tau * torch.logsumexp(masked, 0)
    return loss_clf, q


def compute_loss(model, xs, ys, xi, q, opts):
    """One step's loss. xs/ys: per-group batch tensors (None where n_g = 0); xi: [C,J,k]
    anchor noise; q: GroupDRO weights [G]. Returns (loss, parts, new_q)."""
    C = opts["classes"]
    G = len(xs)
    zs, gids = [], []
    for gi, (name, x) in enumerate(zip(opts["group_names"], xs)):
        if x is None:
            continue
        zs.append(model.encoders[name](x))            # one forward per group encoder
        gids.append(torch.full((x.shape[0],), gi, dtype=torch.long, device=x.device))
    z = torch.cat(zs)
    y = torch.cat([t for t in ys if t is not None])
    g = torch.cat(gids)
    Bn = z.shape[0]

    # L_sep samples Z_cj = m_c + L_c ξ_j go through the classifier with the batch: one call.
    anchors = model.anchors
    J = xi.shape[1]
    Zsep = anchors.mean.unsqueeze(1) + torch.einsum("cij,cJj->cJi", anchors.chol, xi)
    logits = model.classifier(torch.cat([z, Zsep.reshape(C * J, -1)]))
    ce = F.cross_entropy(logits[:Bn], y, reduction="none")
    sep_targets = torch.arange(C, device=z.device).repeat_interleave(J)
    loss_sep = F.cross_entropy(logits[Bn:], sep_targets)   # mean over (c, j) = (1/C)Σ(1/J)Σ

    if opts["objective"] == "groupdro":
        loss_clf, q = groupdro(ce, g, q, G, opts)
    else:
        loss_clf = ce.mean()

    loss_fit, skipped = opts["fit_fn"](z, y, g, anchors, opts)
    loss = loss_clf + opts["lambda_fit"] * loss_fit + opts["lambda_sep"] * loss_sep
    parts = torch.stack([loss.detach(), loss_clf.detach(), loss_fit.detach(), loss_sep.detach(), skipped])
    return loss, parts, q


# ----------------------------------------------------------------------------- train

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(model, names, splits, relu_latent, batch):
    """Accuracy per group on (x, y) device tensors, in chunks of train.eval_batch; with a ReLU
    latent also the units never positive on the split (dead latents)."""
    acc, dead = {}, {}
    for name, (x, y) in zip(names, splits):
        enc = model.encoders[name]
        correct = 0
        alive = None
        for s in range(0, x.shape[0], batch):
            z = enc(x[s:s + batch])
            correct += (model.classifier(z).argmax(1) == y[s:s + batch]).sum()
            if relu_latent:
                a = (z > 0).any(0)
                alive = a if alive is None else alive | a
        acc[name] = float(correct) / max(1, x.shape[0])
        if relu_latent and alive is not None:
            dead[name] = int((~alive).sum())
    return acc, dead


def pick_device(cfg, arg):
    want = arg or cfg["train"]["device"]
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda requested but torch.cuda.is_available() is False")
    return torch.device(want)


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    return "cpu (%s, %d threads)" % (platform.processor() or platform.machine(), torch.get_num_threads())


class StepTimer:
    """Per-step times: CUDA events on CUDA (no host sync inside the step), perf_counter with a
    synchronize at both ends on the CPU. ms() waits for the events once, after the last step."""

    def __init__(self, device):
        self.device, self.spans = device, []

    def start(self):
        if self.device.type == "cuda":
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def stop(self, t0):
        if self.device.type == "cuda":
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.spans.append((t0, e))
        else:
            self.spans.append(1e3 * (time.perf_counter() - t0))

    def ms(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return [a.elapsed_time(b) for a, b in self.spans]
        return list(self.spans)


def percentile(values, q):
    return float(np.percentile(np.asarray(values, np.float64), q))


def main(argv=None):
    p = argparse.ArgumentParser(
        description="PyTorch reference trainer for hetdro's method (docs/DESIGN.md §1): per-group encoders, "
                    "shared classifier, Gaussian class anchors with W2 alignment and anchor separation.",
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="hetdro config.toml (paths relative to its folder)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key as `hetdro train --set` does (repeatable), "
                        "e.g. model.latent_dim=256, train.batch_size=10000, data.groups.0.encoder=mlp")
    p.add_argument("--device", choices=("cpu", "cuda"), help="overrides [train] device")
    p.add_argument("--threads", type=int, help="torch.set_num_threads(N) for CPU ops")
    p.add_argument("--epochs", type=int, help="overrides [train] epochs")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the loss computation (PyTorch >= 2; exit 2 where unavailable)")
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps in total (for timing)")
    p.add_argument("--eigh", choices=("naive", "safe"), default="safe",
                   help="W2 backward: naive = autograd through torch.linalg.eigh (paper's pseudocode); "
                        "safe = docs/DESIGN.md §2 analytic backward (default)")
    p.add_argument("--json-out", help="write per-epoch metrics as JSON lines (docs/DESIGN.md §4 metrics.jsonl) "
                                      "plus a final summary line; with --time-steps, the timing JSON")
    p.add_argument("--warmup", type=int, default=5,
                   help="steps left out of the timing: at the start of each epoch when training, before the "
                        "timed steps with --time-steps (default 5)")
    p.add_argument("--time-steps", type=int, metavar="N",
                   help="speed baseline: run --warmup untimed steps, then N timed steps (no evaluation), and "
                        "print/write {impl, mode, device, torch, median_ms, p10_ms, p90_ms, steps, batch_size}")
    p.add_argument("--timing-json", metavar="FILE", help="with --time-steps: write the timing JSON here")
    args = p.parse_args(argv)

    cfg = load_config(args.config, args.set)
    if args.epochs is not None:
        if args.epochs < 0:
            raise UserError("--epochs must be >= 0")
        cfg["train"]["epochs"] = args.epochs
    if args.threads is not None:
        if args.threads < 1:
            raise UserError("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    if args.warmup < 0:
        raise UserError("--warmup must be >= 0")
    if args.time_steps is not None and args.time_steps < 1:
        raise UserError("--time-steps must be >= 1")
    if args.timing_json and args.time_steps is None:
        raise UserError("--timing-json needs --time-steps N")
    if args.compile and not hasattr(torch, "compile"):
        raise UserError("--compile needs torch.compile (PyTorch >= 2.0); this is torch %s" % torch.__version__)
    device = pick_device(cfg, args.device)
    t, C = cfg["train"], cfg["data"]["classes"]
    if device.type == "cuda":
        # train.deterministic (docs/DESIGN.md §3, Determinism) governs cuDNN here: its
        # deterministic algorithms when true; chosen by heuristics, never by timing, either way.
        # Unlike hetdro, nothing else follows it: index_add and the backward of indexing may
        # still use float atomics on CUDA, as in any plain PyTorch script.
        torch.backends.cudnn.deterministic = t["deterministic"]
        torch.backends.cudnn.benchmark = False
    gd = t["groupdro"]

    groups = load_data(cfg)
    if t["select"] != "last" and not any(g["xva"] is not None for g in groups):
        raise UserError("config: [train] select = %r needs a validation split, but no group has one "
                        "(set data.val_fraction > 0, or val_x/val_y for a group)" % t["select"])
    torch.manual_seed(t["seed"])
    model = HetModel(cfg, groups).to(device)
    # Adam on every parameter, as hetdro's one flat buffer (kernels/adam.h): with weight decay,
    # AdamW's decoupled p ← p(1 − lr·wd) before the Adam step, on all of them (biases and anchors too).
    if t["weight_decay"] > 0:
        opt = torch.optim.AdamW(model.parameters(), lr=t["lr"], betas=(0.9, 0.999), eps=1e-8,
                                weight_decay=t["weight_decay"])
    else:
        opt = torch.optim.Adam(model.parameters(), lr=t["lr"], betas=(0.9, 0.999), eps=1e-8)

    # Whole data set on the device: batches are gathers, no host round trip per step.
    def dev(a):
        return None if a is None else torch.from_numpy(a).to(device)
    tensors = [(dev(g["xtr"]), dev(g["ytr"]), dev(g["xte"]), dev(g["yte"])) for g in groups]
    val = [(dev(g["xva"]), dev(g["yva"])) for g in groups]
    Ns = [len(g["ytr"]) for g in groups]
    B = t["batch_size"]
    sampler = make_sampler(cfg, Ns)   # refuses a batch that a group (or under resampling, an epoch) cannot fill
    nb, steps_per_epoch = sampler.per_batch, sampler.steps
    k, J, G = cfg["model"]["latent_dim"], t["samples_per_anchor"], len(groups)
    names = [g["name"] for g in groups]

    adjustment = 0.0
    if gd["adjustment"] > 0:
        adjustment = torch.tensor([gd["adjustment"] / math.sqrt(max(n, 1)) for n in Ns], dtype=torch.float64,
                                  device=device)
    opts = dict(classes=C, eps=t["eps"], group_names=names, objective=t["objective"],
                eta=t["groupdro_eta"], fit=t["fit"], lambda_fit=t["lambda_fit"], lambda_sep=t["lambda_sep"],
                eigh=args.eigh, fit_fn=fit_loss, adjustment=adjustment, gd_update=gd["update"],
                gd_objective=gd["objective"], gd_tau=gd["tau"], gd_gamma=gd["gamma"])
    loss_fn = compute_loss
    if args.compile:
        # The fit term (eigh, data-dependent pair selection, custom autograd.Function)
        # stays eager: dynamo would only break the graph there; compile the dense rest.
        disable = getattr(getattr(torch, "compiler", None), "disable", None) or torch._dynamo.disable
        opts["fit_fn"] = disable(fit_loss)
        loss_fn = torch.compile(compute_loss)

    xi_gen = torch.Generator(device=device).manual_seed(t["seed"] + 2)  # anchor noise
    q = torch.full((G,), 1.0 / G, device=device, dtype=torch.float64)

    print("torch %s on %s%s | groups %s | batch %s = %d%s | %d steps/epoch | eigh %s%s%s"
          % (torch.__version__, device,
             " (%d threads)" % torch.get_num_threads() if device.type == "cpu" else
             " (%s)" % torch.cuda.get_device_name(device),
             ", ".join("%s:%s N=%d" % (g["name"], g["encoder"], n) for g, n in zip(groups, Ns)),
             "+".join(map(str, nb)), B,
             " (group_batch = %s%s: a group that runs out is drawn again)"
             % (t["group_batch"], " and batch_share" if any(g["batch_share"] > 0 for g in cfg["data"]["groups"])
                else "") if sampler.resamples else "",
             steps_per_epoch, args.eigh, " compiled" if args.compile else "",
             " | weight decay %g" % t["weight_decay"] if t["weight_decay"] > 0 else ""),
          flush=True)

    def new_perms(epoch):   # 0-based, as hetdro's sampler counts epochs
        return [torch.tensor(o, dtype=torch.long).to(device) for o in sampler.order(epoch)]

    def train_step(perms, s, q):
        xs, ys = [], []
        for (xtr, ytr, _, _), perm, n in zip(tensors, perms, nb):
            idx = perm[s * n:(s + 1) * n]
            xs.append(xtr.index_select(0, idx))
            ys.append(ytr.index_select(0, idx))
        xi = torch.randn(C, J, k, device=device, generator=xi_gen)
        loss, parts, q = loss_fn(model, xs, ys, xi, q, opts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return parts, q

    if args.time_steps is not None:
        return time_steps(args, device, B, steps_per_epoch, new_perms, train_step, q)

    jf = open(args.json_out, "w") if args.json_out else None
    all_times = []
    step = 0
    relu_latent = cfg["model"]["latent_activation"] == "relu"
    best = None   # (score, epoch, test_acc) under train.select
    last_acc = None
    for epoch in range(1, t["epochs"] + 1):
        if args.max_steps is not None and step >= args.max_steps:
            break
        perms = new_perms(epoch - 1)
        sums = torch.zeros(5, device=device)
        times = []
        nsteps = 0
        for s in range(steps_per_epoch):
            if args.max_steps is not None and step >= args.max_steps:
                break
            sync(device)
            t0 = time.perf_counter()
            parts, q = train_step(perms, s, q)
            sums += parts
            sync(device)
            times.append(time.perf_counter() - t0)
            step += 1
            nsteps += 1
        if nsteps == 0:
            break
        timed = times[args.warmup:] if len(times) > args.warmup else times
        all_times += timed
        step_ms = 1e3 * statistics.median(timed)
        mean_parts = (sums / nsteps).tolist()
        if not all(math.isfinite(v) for v in mean_parts[:4]):
            print("warning: non-finite loss in epoch %d" % epoch, file=sys.stderr)
        model.eval()
        acc, dead = evaluate(model, names, [(x, y) for _, _, x, y in tensors], relu_latent, t["eval_batch"])
        last_acc = acc
        worst, mean = min(acc.values()), sum(acc.values()) / len(acc)
        rec = {"epoch": epoch, "step": step, "loss": mean_parts[0], "loss_clf": mean_parts[1],
               "loss_fit": mean_parts[2], "loss_sep": mean_parts[3], "fit_skipped": int(sums[4].item()),
               "test_acc": acc, "worst_group_acc": worst, "mean_group_acc": mean}
        with_val = [(nm, v) for nm, v in zip(names, val) if v[0] is not None]
        if with_val:   # every epoch, as hetdro does (metrics.jsonl's val_acc, docs/DESIGN.md §4)
            vacc, _ = evaluate(model, [nm for nm, _ in with_val], [v for _, v in with_val], False, t["eval_batch"])
            rec.update({"val_acc": vacc, "worst_val_acc": min(vacc.values()),
                        "mean_val_acc": sum(vacc.values()) / len(vacc)})
            if t["select"] != "last":
                score = rec["worst_val_acc"] if t["select"] == "worst_val" else rec["mean_val_acc"]
                if best is None or score > best[0]:   # the first best epoch wins ties, as in hetdro
                    best = (score, epoch, acc)
        model.train()
        qd = {nm: float(v) for nm, v in zip(names, q.tolist())}
        rec.update({"group_weights": qd, "step_ms": step_ms, "samples_per_s": B / (step_ms / 1e3)})
        if relu_latent:
            rec["dead_latents"] = dead
        print("epoch %d step %d | loss %.4f clf %.4f fit %.4g sep %.4f | acc %s | worst %.4f mean %.4f | q %s | "
              "%.1f ms/step %.0f samples/s%s"
              % (epoch, step, mean_parts[0], mean_parts[1], mean_parts[2], mean_parts[3],
                 " ".join("%s %.4f" % kv for kv in acc.items()), worst, mean,
                 "/".join("%.3f" % v for v in qd.values()), step_ms, rec["samples_per_s"],
                 (" | dead latents %s" % dead) if relu_latent else ""), flush=True)
        if jf:
            jf.write(json.dumps(rec) + "\n")
            jf.flush()
    if all_times:
        med = 1e3 * statistics.median(all_times)
        summary = {"final": True, "median_step_ms": med, "samples_per_s": B / (med / 1e3), "steps": step,
                   "timed_steps": len(all_times), "device": str(device), "torch": torch.__version__,
                   "threads": torch.get_num_threads() if device.type == "cpu" else None,
                   "eigh": args.eigh, "compiled": args.compile, "batch_size": B, "test_acc": last_acc}
        if best is not None:
            summary.update({"select": t["select"], "selected_epoch": best[1], "selected_score": best[0],
                            "selected_test_acc": best[2]})
        if device.type == "cuda":
            summary["gpu"] = torch.cuda.get_device_name(device)
        print("median step %.2f ms over %d steps (%.0f samples/s)" % (med, len(all_times), summary["samples_per_s"]))
        if jf:
            jf.write(json.dumps(summary) + "\n")
    if jf:
        jf.close()
    return 0


def time_steps(args, device, B, steps_per_epoch, new_perms, train_step, q):
    """The speed baseline: warm-up steps untimed (with --compile one more first, for the
    compilation), then --time-steps steps timed one by one; batches cycle through epochs, the
    next epoch's order drawn between steps, outside the timed span."""
    timer = StepTimer(device)
    epoch = 0
    perms, s = new_perms(epoch), 0
    total = args.warmup + (1 if args.compile else 0) + args.time_steps
    for i in range(total):
        if s == steps_per_epoch:
            epoch += 1
            perms, s = new_perms(epoch), 0
        timed = i >= total - args.time_steps
        t0 = timer.start() if timed else None
        _, q = train_step(perms, s, q)
        if timed:
            timer.stop(t0)
        s += 1
    ms = timer.ms()
    out = {"impl": "torch", "mode": "compile" if args.compile else "eager", "device": device_name(device),
           "torch": torch.__version__, "median_ms": percentile(ms, 50), "p10_ms": percentile(ms, 10),
           "p90_ms": percentile(ms, 90), "steps": len(ms), "batch_size": B, "warmup": args.warmup,
           "eigh": args.eigh}
    print("torch %s %s on %s: median %.3f ms/step (p10 %.3f, p90 %.3f) over %d steps, batch %d"
          % (torch.__version__, out["mode"], out["device"], out["median_ms"], out["p10_ms"], out["p90_ms"],
             out["steps"], B), flush=True)
    for path in (args.timing_json, args.json_out):
        if path:
            with open(path, "w") as f:
                json.dump(out, f)
                f.write("\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as e:
        print("error: %s" % e, file=sys.stderr)
        sys.exit(2)
