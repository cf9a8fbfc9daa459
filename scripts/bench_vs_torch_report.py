#!/usr/bin/env python3
"""scripts/bench_vs_torch.sh's arithmetic: the analytic floor of one training step, and summary.md.

floor: FLOPs and bytes of one training step (docs/DESIGN.md §1-§2), counted from a config and the
shapes of its data, for fp32. What is counted:
  GEMM-like work, forward: each encoder's convs (2·n·c_out·h_out·w_out·c_in·K²) and linear
  layers (2·n·in·out) on its n_g rows; the classifier on B + C·J rows (batch and anchor samples);
  the anchor samples Z = m + Lξ (2·C·J·k²); the anchor covariances S = LLᵀ (2·C·k³); the class
  moments (2·B·k² scatter, 2·B·k means); softmax cross-entropy (5 per logit).
  Backward counted as twice the forward (input and weight gradients): forward + backward = 3×.
  W2 per pair (C pairs pooled, G·C per_group, none when L_fit is off): two symmetric
  eigendecompositions at ~9k³ each (a rough count with eigenvectors) plus ~26k³ of k×k products
  (forward R, RBR; backward G_M, RG_MR, the Daleckii–Krein sandwiches).
  Adam: 12 per parameter.
  Bytes: the batch's inputs read once; every forward activation written and read once, its
  gradient written and read once (16 B per element); every parameter read in the forward and the
  backward, its gradient written, Adam's p, g, m, v read and p, m, v written (40 B per
  parameter); W2: A, B and the two saved eigenvector matrices written and read, in the forward
  and the backward (32·k² B per pair).
  compute floor = FLOPs / sgemm ceiling, memory floor = bytes / copy ceiling, floor = the larger.
  Eigensolvers run far below the SGEMM rate: the floor is a lower bound, not a prediction.

summary: reads results.tsv and the JSON files in a bench_vs_torch.sh folder and writes summary.md.
"""

import argparse
import datetime
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference as tr  # noqa: E402  (config reader and batch split, shared with the reference)


def step_counts(cfg, shapes, Ns):
    """(flops, bytes, details) of one training step; shapes: per group the per-sample input
    shape and the input's bytes per element; Ns: training samples per group."""
    C, k = cfg["data"]["classes"], cfg["model"]["latent_dim"]
    t, m = cfg["train"], cfg["model"]
    B, J = t["batch_size"], t["samples_per_anchor"]
    nb = tr.make_sampler(cfg, Ns).per_batch  # train.group_batch and batch_share included
    fwd = 0.0      # GEMM-like forward FLOPs
    act = 0.0      # forward activation elements
    inputs = 0.0   # input bytes
    params = 0
    for g, (shape, elem_bytes), n in zip(cfg["data"]["groups"], shapes, nb):
        inputs += n * float(np.prod(shape)) * elem_bytes
        if g["encoder"] == "cnn":
            cin, H, W = (1,) + tuple(shape) if len(shape) == 2 else tuple(shape)
            K, (c1, c2) = g["kernel"], g["channels"]
            h1, w1 = H - K + 1, W - K + 1
            h2, w2 = h1 - K + 1, w1 - K + 1
            hp, wp = h2 // 2, w2 // 2
            fwd += 2.0 * n * (c1 * h1 * w1 * cin * K * K + c2 * h2 * w2 * c1 * K * K + c2 * hp * wp * k)
            act += n * (c1 * h1 * w1 + c2 * h2 * w2 + c2 * hp * wp + k)
            params += c1 * cin * K * K + c1 + c2 * c1 * K * K + c2 + c2 * hp * wp * k + k
        else:
            dims = [int(np.prod(shape))] + list(g["hidden"]) + [k]
            for a, b in zip(dims[:-1], dims[1:]):
                fwd += 2.0 * n * a * b
                act += n * b
                params += a * b + b
    rows = B + C * J
    if m["classifier"] == "linear":
        fwd += 2.0 * rows * k * C
        act += rows * C
        params += k * C + C
    else:
        h = m["classifier_hidden"]
        fwd += 2.0 * rows * (k * h + h * C)
        act += rows * (h + C)
        params += k * h + h + h * C + C
    fwd += 5.0 * rows * C                      # softmax cross-entropy
    fwd += 2.0 * C * J * k * k + 2.0 * C * k ** 3 + 2.0 * B * k * k + 2.0 * B * k
    act += C * J * k
    params += C * k + C * k * k
    if t["fit"] == "none" or t["lambda_fit"] == 0:
        pairs = 0
    else:
        pairs = C if t["fit"] == "pooled" else len(Ns) * C
    eigh = pairs * 2 * 9.0 * k ** 3
    w2_products = pairs * 26.0 * k ** 3
    adam = 12.0 * params
    flops = 3 * fwd + eigh + w2_products + adam
    nbytes = inputs + 16.0 * act + 40.0 * params + 32.0 * pairs * k * k
    return flops, nbytes, {"gemm_like_fwd_bwd": 3 * fwd, "w2_eigh": eigh, "w2_products": w2_products,
                           "adam": adam, "parameters": params, "activations": act, "w2_pairs": pairs,
                           "batch_per_group": nb}


def cmd_floor(args):
    cfg = tr.load_config(args.config, args.set)
    shapes, Ns = [], []
    for g in cfg["data"]["groups"]:
        x = np.load(g["train_x"], mmap_mode="r", allow_pickle=False)
        shapes.append((x.shape[1:], 1 if x.dtype == np.uint8 else 4))
        Ns.append(int(x.shape[0] * (1 - cfg["data"]["val_fraction"])))
    flops, nbytes, detail = step_counts(cfg, shapes, Ns)
    out = {"name": args.name, "config": args.config, "overrides": args.set, "classes": cfg["data"]["classes"],
           "latent_dim": cfg["model"]["latent_dim"], "batch_size": cfg["train"]["batch_size"],
           "flops": flops, "bytes": nbytes, "detail": detail}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print("%s: %.3g FLOP, %.3g bytes per step" % (args.name, flops, nbytes))
    return 0


# ----------------------------------------------------------------------------- summary

def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _last_json_line(path):
    try:
        lines = [ln for ln in open(path) if ln.strip()]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def _ms(x):
    return "%.3f" % x if isinstance(x, (int, float)) else "–"


def _ratio(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0:
        return "%.2f×" % (a / b)
    return "–"


def _floor_ms(fl, ceilings):
    """(compute ms, memory ms, floor ms) or Nones without ceilings."""
    if not fl or not ceilings or not ceilings.get("sgemm_tflops") or not ceilings.get("copy_gbps"):
        return None, None, None
    c = 1e3 * fl["flops"] / (ceilings["sgemm_tflops"] * 1e12)
    m = 1e3 * fl["bytes"] / (ceilings["copy_gbps"] * 1e9)
    return c, m, max(c, m)


def cmd_summary(args):
    d = args.out
    rows = []
    for line in open(os.path.join(d, "results.tsv")):
        f = line.rstrip("\n").split("\t")
        if len(f) >= 7:
            rows.append(dict(name=f[0], kind=f[1], rc=f[2], secs=f[3], result=f[4], log=f[5], extra=f[6]))
    by = {r["name"]: r for r in rows}

    def js(name):
        r = by.get(name)
        return _load(os.path.join(d, r["result"])) if r and r["rc"] == "0" and r["result"] else None

    # The ceilings from any hetdro JSON of this run (the same device for all).
    ceilings, devices = None, set()
    for r in rows:
        if r["kind"] == "hetdro" and r["rc"] == "0":
            j = js(r["name"])
            if j:
                devices.add("hetdro: %s (%s)" % (j.get("device"), j.get("backend")))
                ceilings = ceilings or j.get("ceilings")
        if r["kind"] == "torch" and r["rc"] == "0":
            j = js(r["name"])
            if j:
                devices.add("torch %s: %s" % (j.get("torch"), j.get("device")))
    L = ["# hetdro vs PyTorch, %s" % datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"), ""]
    L.append("- command: `%s`" % args.command)
    L.append("- device asked: %s; found: %s" % (args.device, "; ".join(sorted(devices)) or "none ran"))
    L.append("- hetdro: `%s`; per-step config: `%s`" % (args.hetdro, args.config))
    if ceilings:
        L.append("- ceilings (hetdro bench-step): copy %.1f GB/s, SGEMM %.2f TFLOP/s"
                 % (ceilings.get("copy_gbps", float("nan")), ceilings.get("sgemm_tflops", float("nan"))))
    else:
        L.append("- ceilings: none reported (hetdro reports them on CUDA only), so no floor in ms")
    L += ["", "Times are per training step in ms (median, 10th and 90th percentile over the timed steps, "
          "each step timed alone between two CUDA events). hetdro also times as many steps back to "
          "back, as training runs them (their mean); torch_reference.py times steps one by one only."]

    # Per-step at the config.
    L += ["", "## Per-step time at the config", "",
          "| implementation | median ms | p10 ms | p90 ms | back to back ms | steps | batch | status |",
          "|---|---:|---:|---:|---:|---:|---:|---|"]
    med = {}
    for name, label in (("step_hetdro_graph", "hetdro, CUDA Graph"), ("step_hetdro_nograph", "hetdro, no graph"),
                        ("step_torch_eager", "torch eager"), ("step_torch_compile", "torch.compile")):
        r, j = by.get(name), js(name)
        status = "not run" if not r else ("skipped: " + r["extra"]) if r["rc"] == "skip" else \
            ("ok" if r["rc"] == "0" and j else "FAILED (exit %s, %s)" % (r["rc"], r["log"]))
        if j and name.startswith("step_hetdro") and "graph" in j:
            label += " (graph: %s)" % str(j["graph"]).lower()
        med[name] = j.get("median_ms") if j else None
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (label, _ms(j and j.get("median_ms")), _ms(j and j.get("p10_ms")),
                                                            _ms(j and j.get("p90_ms")), _ms(j and j.get("back_to_back_ms")),
                                                            j.get("steps", "–") if j else "–",
                                                            j.get("batch_size", "–") if j else "–", status))
    L += ["", "Speed-ups (the first's time over the second's):", ""]
    for a, b, text in (("step_torch_eager", "step_hetdro_graph", "torch eager / hetdro graph"),
                       ("step_torch_compile", "step_hetdro_graph", "torch.compile / hetdro graph"),
                       ("step_torch_eager", "step_hetdro_nograph", "torch eager / hetdro no graph"),
                       ("step_torch_compile", "step_hetdro_nograph", "torch.compile / hetdro no graph"),
                       ("step_hetdro_nograph", "step_hetdro_graph", "hetdro no graph / hetdro graph")):
        L.append("- %s: %s" % (text, _ratio(med[a], med[b])))
    fl = _load(os.path.join(d, "floor_step.json"))
    if fl:
        c, m, f = _floor_ms(fl, ceilings)
        L += ["", "Floor of this step: %.3g FLOP (W2 eigendecompositions %.3g, W2 products %.3g, GEMM-like fwd+bwd "
              "%.3g, Adam %.3g), %.3g bytes; %s"
              % (fl["flops"], fl["detail"]["w2_eigh"], fl["detail"]["w2_products"], fl["detail"]["gemm_like_fwd_bwd"],
                 fl["detail"]["adam"], fl["bytes"],
                 ("compute floor %.4f ms, memory floor %.4f ms, floor %.4f ms; hetdro graph / floor: %s"
                  % (c, m, f, _ratio(med["step_hetdro_graph"], f))) if f else "no ceilings, no floor in ms")]

    # Time to train.
    L += ["", "## Time to train", "", "Wall clock from launch to exit (loading, every epoch's evaluation, writing).", "",
          "| implementation | epochs | wall s | test accuracy per group | worst | mean | status |",
          "|---|---:|---:|---|---:|---:|---|"]
    for name, label in (("train_hetdro", "hetdro train"), ("train_torch", "torch_reference.py (eager)")):
        r = by.get(name)
        if not r:
            continue
        acc = worst = mean = None
        if r["rc"] == "0":
            if name == "train_hetdro":
                rep = _load(os.path.join(d, r["result"], "report.json")) or {}
                acc, worst, mean = rep.get("test_acc"), rep.get("worst_group_acc"), rep.get("mean_group_acc")
            else:
                last = _last_json_line(os.path.join(d, r["result"])) or {}
                acc = last.get("test_acc")
                if acc:
                    worst, mean = min(acc.values()), sum(acc.values()) / len(acc)
        status = ("skipped: " + r["extra"]) if r["rc"] == "skip" else \
            ("ok" if r["rc"] == "0" and acc else "FAILED (exit %s, %s)" % (r["rc"], r["log"]))
        accs = ", ".join("%s %.4f" % kv for kv in acc.items()) if acc else "–"
        L.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            label, r["extra"] if r["rc"] != "skip" else "–", r["secs"] if r["rc"] != "skip" else "–", accs,
            "%.4f" % worst if worst is not None else "–", "%.4f" % mean if mean is not None else "–", status))

    # Scaling.
    sweep = {}
    for r in rows:
        if r["name"].startswith("sweep_"):
            parts = r["name"].split("_")
            tag = "_".join(parts[-3:])
            impl = "_".join(parts[1:-3])
            sweep.setdefault(tag, {})[impl] = r
    if sweep:
        def parse(tag):
            c, k, b = tag.split("_")
            return int(c[1:]), int(k[1:]), int(b[1:])
        points = sorted(sweep, key=parse)
        # The point the three sweeps share: the commonest C, k and B.
        base = tuple(max(set(v), key=v.count) for v in zip(*map(parse, points)))
        L += ["", "## Scaling on synthetic data", "",
              "`hetdro prepare synthetic --classes C --per-class N` data; one parameter varied at a time around "
              "C = %d, k = %d, B = %d (the C sweep uses B = max(B, 10·C), so each class has about 10 samples in a batch)."
              % base if base else "", ""]
        L += ["| C | k | B | hetdro ms | torch eager ms | torch / hetdro | floor ms | hetdro / floor | status |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for t in points:
            c, k, b = parse(t)
            e = sweep[t]
            hj = None
            note = []
            for impl in ("hetdro", "hetdro_nograph"):
                r = e.get(impl)
                if r and r["rc"] == "0":
                    hj = _load(os.path.join(d, r["result"]))
                    if impl == "hetdro_nograph":
                        note.append("hetdro without the graph (the graph run failed)")
                    break
            for impl, r in e.items():
                if r["rc"] not in ("0",):
                    note.append("%s %s" % (impl, ("skipped: " + r["extra"]) if r["rc"] == "skip"
                                           else "FAILED (exit %s, %s)" % (r["rc"], r["log"])))
            tr_ = e.get("torch")
            tj = _load(os.path.join(d, tr_["result"])) if tr_ and tr_["rc"] == "0" else None
            hm, tm = hj and hj.get("median_ms"), tj and tj.get("median_ms")
            _, _, f = _floor_ms(_load(os.path.join(d, "floor_%s.json" % t)), ceilings)
            L.append("| %d | %d | %d | %s | %s | %s | %s | %s | %s |" % (
                c, k, b, _ms(hm), _ms(tm), _ratio(tm, hm), _ms(f), _ratio(hm, f), "; ".join(note) or "ok"))

    # Failures and commands.
    bad = [r for r in rows if r["rc"] not in ("0", "skip")]
    L += ["", "## Failed commands", ""]
    if bad:
        L += ["| step | exit code | log |", "|---|---:|---|"] + ["| %s | %s | %s |" % (r["name"], r["rc"], r["log"])
                                                                 for r in bad]
    else:
        L.append("None.")
    L += ["", "## Commands", "", "```"] + [ln.rstrip("\n") for ln in open(os.path.join(d, "commands.txt"))] + ["```",
                                                                                                           ""]
    L.append("Raw results: each command's JSON (`step_*.json`, `sweep_*.json`), `floor_*.json`, `train_torch.jsonl`, "
             "`run_hetdro/report.json` and a log per command beside this file. The floor's counting rules: "
             "`scripts/bench_vs_torch_report.py --help`.")
    with open(os.path.join(d, "summary.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("floor", help="FLOPs and bytes of one step of CONFIG (+ --set overrides), as JSON")
    f.add_argument("--config", required=True)
    f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    f.add_argument("--name", required=True)
    f.add_argument("--out", required=True, help="JSON file to write")
    s = sub.add_parser("summary", help="summary.md of a bench_vs_torch.sh results folder")
    s.add_argument("--out", required=True, help="the results folder (holds results.tsv)")
    s.add_argument("--command", default="")
    s.add_argument("--device", default="")
    s.add_argument("--hetdro", default="")
    s.add_argument("--config", default="")
    args = p.parse_args(argv)
    return cmd_floor(args) if args.cmd == "floor" else cmd_summary(args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except tr.UserError as e:
        print("error: %s" % e, file=sys.stderr)
        sys.exit(2)
