#!/usr/bin/env python3
"""PyTorch reference of hetdro's training method (docs/DESIGN.md §1-§2, §4).

What this is for: the baseline a PyTorch user would write for the method, and the
yardstick for the C++/CUDA trainer's accuracy and speed. It reads the same config.toml
and NPY data as `hetdro train`, trains the same model with the same loss, and prints
per-epoch test accuracy per group and the median step time.

Portable across PyTorch 1.13 (CPU) and 2.x (CUDA); torch.compile is used only when it
exists and --compile is given.

Timing: step_ms is the median over an epoch's steps after --warmup steps, each step
timed from batch gather to optimizer step (CUDA synchronized on both ends);
samples_per_s = batch_size / step time. On a CPU shared with other busy processes,
OpenMP's spin-waiting can make 2 threads ~8x slower than 1 (measured 1784 vs 271 ms/step);
OMP_WAIT_POLICY=PASSIVE in the environment avoids it (232 ms/step, same load).

Example:
  python3 scripts/torch_reference.py --config data/hetero-fashion/config.toml --device cpu \\
       --threads 2 --epochs 1 --json-out /tmp/ref.jsonl
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
        import tomllib
        try:
            return tomllib.loads(data.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise UserError("%s: cannot parse TOML: %s" % (path, e))
    except ImportError:
        pass
    try:
        import toml
        parse = toml.loads
    except ImportError:
        parse = _parse_toml_minimal
    try:
        return parse(data.decode("utf-8"))
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad config file
        raise UserError("%s: cannot parse TOML: %s" % (path, e))


# Every key with its default (None: required) and allowed values. Unknown keys are errors
# (docs/DESIGN.md §4), so a typo never silently trains with a default.
_DATA_KEYS = {"classes": 10, "groups": None}
_GROUP_KEYS = {"name": None, "train_x": None, "train_y": None, "test_x": None, "test_y": None,
               "encoder": "", "channels": [32, 64], "kernel": 3, "hidden": [128]}
_MODEL_KEYS = {"latent_dim": 64, "classifier": "linear", "hidden": 128, "latent_activation": "none"}
_TRAIN_KEYS = {"epochs": 10, "batch_size": 100, "lr": 1e-3, "lambda_fit": 1e-3, "lambda_sep": 1e-3,
               "samples_per_anchor": 16, "eps": 1e-5, "fit": "pooled", "objective": "erm",
               "groupdro_eta": 0.01, "seed": 0, "device": "auto"}
_CHOICES = {("model", "classifier"): ("linear", "mlp2"),
            ("model", "latent_activation"): ("none", "relu"),
            ("train", "fit"): ("pooled", "per_group", "none"),
            ("train", "objective"): ("erm", "groupdro"),
            ("train", "device"): ("auto", "cuda", "cpu")}


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


def load_config(path):
    if not os.path.isfile(path):
        raise UserError("config file not found: %s" % path)
    raw = load_toml(path)
    for k in raw:
        if k not in ("data", "model", "train"):
            raise UserError("config: unknown table [%s] (known: data, model, train)" % k)
    if "data" not in raw:
        raise UserError("config: missing [data] table")
    cfg = {"data": _fill("data", raw["data"], _DATA_KEYS),
           "model": _fill("model", raw.get("model", {}), _MODEL_KEYS),
           "train": _fill("train", raw.get("train", {}), _TRAIN_KEYS)}
    groups = cfg["data"]["groups"]
    if not isinstance(groups, list) or not groups:
        raise UserError("config: [[data.groups]] must list at least one group")
    base = os.path.dirname(os.path.abspath(path))
    cfg["data"]["groups"] = [_fill("data.groups", g, _GROUP_KEYS) for g in groups]
    names = set()
    for g in cfg["data"]["groups"]:
        if g["name"] in names:
            raise UserError("config: group name '%s' is used twice" % g["name"])
        names.add(g["name"])
        if g["encoder"] not in ("", "cnn", "mlp"):
            raise UserError("config: group %s: encoder = %r, expected cnn or mlp" % (g["name"], g["encoder"]))
        for k in ("train_x", "train_y", "test_x", "test_y"):
            g[k] = os.path.join(base, g[k])
    t, m = cfg["train"], cfg["model"]
    for sec, key, lo in (("data", "classes", 2), ("model", "latent_dim", 1), ("model", "hidden", 1),
                         ("train", "epochs", 0), ("train", "batch_size", 1),
                         ("train", "samples_per_anchor", 1)):
        if cfg[sec][key] < lo:
            raise UserError("config: [%s] %s must be >= %d" % (sec, key, lo))
    if not t["eps"] > 0:
        raise UserError("config: [train] eps must be > 0")
    del m  # validated above
    return cfg


# ----------------------------------------------------------------------------- data

def _load_npy(path, what):
    if not os.path.isfile(path):
        raise UserError("%s file not found: %s" % (what, path))
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
        raise UserError("cannot read %s as NPY: %s" % (path, e))


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


def load_data(cfg):
    C = cfg["data"]["classes"]
    groups = []
    for g in cfg["data"]["groups"]:
        enc = g["encoder"]
        if not enc:  # default: images are cnn, vectors are mlp
            enc = "mlp" if _load_npy(g["train_x"], "features").ndim == 2 else "cnn"
            g["encoder"] = enc
        xtr = _features(g["train_x"], enc, g["name"])
        xte = _features(g["test_x"], enc, g["name"])
        if xtr.shape[1:] != xte.shape[1:]:
            raise UserError("group %s: train x %s and test x %s differ in shape"
                            % (g["name"], xtr.shape[1:], xte.shape[1:]))
        if len(xtr) == 0:
            raise UserError("group %s: no training samples" % g["name"])
        groups.append(dict(name=g["name"], encoder=enc, cfg=g, xtr=xtr, ytr=_labels(g["train_y"], len(xtr), C),
                           xte=xte, yte=_labels(g["test_y"], len(xte), C)))
    return groups


def group_batch_sizes(B, Ns):
    """n_g = round(B N_g / N) by the largest-remainder method, so that Σ n_g = B exactly
    (docs/DESIGN.md §1). Integer arithmetic: no float ties."""
    N = sum(Ns)
    base = [B * n // N for n in Ns]
    rem = [B * n % N for n in Ns]
    order = sorted(range(len(Ns)), key=lambda i: (-rem[i], i))
    for i in order[:B - sum(base)]:
        base[i] += 1
    return base


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
    """Per-class Gaussians N(m_c, L_c L_cᵀ + εI); init m = 0, L = I (docs/DESIGN.md §1)."""

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
        self.classifier = nn.Linear(k, C) if m["classifier"] == "linear" else MLP2(k, m["hidden"], C)
        self.anchors = Anchors(C, k)


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
    scatter = torch.einsum("bK,bi,bj->Kij", onehot, zc, zc)
    return n, mean, scatter


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
        # index_add, not bincount: static output shape, so torch.compile keeps one graph.
        cnt = ce.new_zeros(G).index_add(0, g, torch.ones_like(ce))
        lg = ce.new_zeros(G).index_add(0, g, ce) / cnt.clamp_min(1)
        present = cnt > 0
        q = torch.where(present, q * torch.exp(opts["eta"] * lg.detach()), q)
        q = q / q.sum()
        loss_clf = (q * lg).sum()
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
def evaluate(model, groups, tensors, relu_latent, batch=2000):
    acc, dead = {}, {}
    for g, (_, _, xte, yte) in zip(groups, tensors):
        enc = model.encoders[g["name"]]
        correct = 0
        alive = None
        for s in range(0, xte.shape[0], batch):
            z = enc(xte[s:s + batch])
            correct += (model.classifier(z).argmax(1) == yte[s:s + batch]).sum()
            if relu_latent:
                a = (z > 0).any(0)
                alive = a if alive is None else alive | a
        acc[g["name"]] = float(correct) / max(1, xte.shape[0])
        if relu_latent and alive is not None:
            dead[g["name"]] = int((~alive).sum())
    return acc, dead


def pick_device(cfg, arg):
    want = arg or cfg["train"]["device"]
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda requested but torch.cuda.is_available() is False")
    return torch.device(want)


def main(argv=None):
    p = argparse.ArgumentParser(
        description="PyTorch reference trainer for hetdro's method (docs/DESIGN.md §1): per-group encoders, "
                    "shared classifier, Gaussian class anchors with W2 alignment and anchor separation.",
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="hetdro config.toml (paths relative to its folder)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="overrides [train] device")
    p.add_argument("--threads", type=int, help="torch.set_num_threads(N) for CPU ops")
    p.add_argument("--epochs", type=int, help="overrides [train] epochs")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the loss computation (ignored with a warning where unavailable)")
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps in total (for timing)")
    p.add_argument("--eigh", choices=("naive", "safe"), default="safe",
                   help="W2 backward: naive = autograd through torch.linalg.eigh (paper's pseudocode); "
                        "safe = docs/DESIGN.md §2 analytic backward (default)")
    p.add_argument("--json-out", help="write per-epoch metrics as JSON lines (docs/DESIGN.md §4 metrics.jsonl) "
                                      "plus a final summary line")
    p.add_argument("--warmup", type=int, default=5,
                   help="steps at the start of each epoch left out of the median step time (default 5)")
    args = p.parse_args(argv)

    cfg = load_config(args.config)
    if args.epochs is not None:
        if args.epochs < 0:
            raise UserError("--epochs must be >= 0")
        cfg["train"]["epochs"] = args.epochs
    if args.threads is not None:
        if args.threads < 1:
            raise UserError("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    device = pick_device(cfg, args.device)
    t, C = cfg["train"], cfg["data"]["classes"]

    groups = load_data(cfg)
    torch.manual_seed(t["seed"])
    model = HetModel(cfg, groups).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=t["lr"], betas=(0.9, 0.999), eps=1e-8)

    # Whole data set on the device: batches are gathers, no host round trip per step.
    tensors = [(torch.from_numpy(g["xtr"]).to(device), torch.from_numpy(g["ytr"]).to(device),
                torch.from_numpy(g["xte"]).to(device), torch.from_numpy(g["yte"]).to(device))
               for g in groups]
    Ns = [len(g["ytr"]) for g in groups]
    B = t["batch_size"]
    if B > sum(Ns):
        raise UserError("batch_size %d exceeds the %d training samples" % (B, sum(Ns)))
    nb = group_batch_sizes(B, Ns)
    steps_per_epoch = min(N // n for N, n in zip(Ns, nb) if n > 0)
    k, J, G = cfg["model"]["latent_dim"], t["samples_per_anchor"], len(groups)

    opts = dict(classes=C, eps=t["eps"], group_names=[g["name"] for g in groups], objective=t["objective"],
                eta=t["groupdro_eta"], fit=t["fit"], lambda_fit=t["lambda_fit"], lambda_sep=t["lambda_sep"],
                eigh=args.eigh, fit_fn=fit_loss)
    loss_fn = compute_loss
    if args.compile:
        if hasattr(torch, "compile"):
            # The fit term (eigh, data-dependent pair selection, custom autograd.Function)
            # stays eager: dynamo would only break the graph there; compile the dense rest.
            disable = getattr(getattr(torch, "compiler", None), "disable", None) or torch._dynamo.disable
            opts["fit_fn"] = disable(fit_loss)
            loss_fn = torch.compile(compute_loss)
        else:
            print("warning: --compile ignored, torch %s has no torch.compile" % torch.__version__, file=sys.stderr)

    perm_gen = torch.Generator().manual_seed(t["seed"] + 1)     # batch order
    xi_gen = torch.Generator(device=device).manual_seed(t["seed"] + 2)  # anchor noise
    q = torch.full((G,), 1.0 / G, device=device)

    print("torch %s on %s%s | groups %s | batch %s = %d | %d steps/epoch | eigh %s%s"
          % (torch.__version__, device,
             " (%d threads)" % torch.get_num_threads() if device.type == "cpu" else
             " (%s)" % torch.cuda.get_device_name(device),
             ", ".join("%s:%s N=%d" % (g["name"], g["encoder"], n) for g, n in zip(groups, Ns)),
             "+".join(map(str, nb)), B, steps_per_epoch, args.eigh, " compiled" if loss_fn is not compute_loss else ""),
          flush=True)
    jf = open(args.json_out, "w") if args.json_out else None
    all_times = []
    step = 0
    relu_latent = cfg["model"]["latent_activation"] == "relu"
    for epoch in range(1, t["epochs"] + 1):
        if args.max_steps is not None and step >= args.max_steps:
            break
        perms = [torch.randperm(N, generator=perm_gen).to(device) for N in Ns]
        sums = torch.zeros(5, device=device)
        times = []
        nsteps = 0
        for s in range(steps_per_epoch):
            if args.max_steps is not None and step >= args.max_steps:
                break
            sync(device)
            t0 = time.perf_counter()
            xs, ys = [], []
            for (xtr, ytr, _, _), perm, n in zip(tensors, perms, nb):
                if n == 0:
                    xs.append(None)
                    ys.append(None)
                    continue
                idx = perm[s * n:(s + 1) * n]
                xs.append(xtr.index_select(0, idx))
                ys.append(ytr.index_select(0, idx))
            xi = torch.randn(C, J, k, device=device, generator=xi_gen)
            loss, parts, q = loss_fn(model, xs, ys, xi, q, opts)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
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
        acc, dead = evaluate(model, groups, tensors, relu_latent)
        model.train()
        worst, mean = min(acc.values()), sum(acc.values()) / len(acc)
        qd = {g["name"]: float(v) for g, v in zip(groups, q.tolist())}
        rec = {"epoch": epoch, "step": step, "loss": mean_parts[0], "loss_clf": mean_parts[1],
               "loss_fit": mean_parts[2], "loss_sep": mean_parts[3], "fit_skipped": int(sums[4].item()),
               "test_acc": acc, "worst_group_acc": worst, "mean_group_acc": mean, "group_weights": qd,
               "step_ms": step_ms, "samples_per_s": B / (step_ms / 1e3)}
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
                   "eigh": args.eigh, "compiled": loss_fn is not compute_loss, "batch_size": B}
        if device.type == "cuda":
            summary["gpu"] = torch.cuda.get_device_name(device)
        print("median step %.2f ms over %d steps (%.0f samples/s)" % (med, len(all_times), summary["samples_per_s"]))
        if jf:
            jf.write(json.dumps(summary) + "\n")
    if jf:
        jf.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as e:
        print("error: %s" % e, file=sys.stderr)
        sys.exit(2)
