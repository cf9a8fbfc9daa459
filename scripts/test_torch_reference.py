#!/usr/bin/env python3
"""Checks of scripts/torch_reference.py: the safe W2 backward (docs/DESIGN.md §2) against float64
central differences, the claim that autograd through eigh breaks on repeated eigenvalues
while the safe form does not, batch counts and the sampler's order (train.group_batch,
batch_share), config errors and defaults, and a tiny end-to-end run.

With the hetdro binary as the argument (ctest passes it) or in $HETDRO_BIN, also the same initial
parameters, training split sizes, batch counts and steps per epoch as `hetdro train`.

Run: python3 -m pytest scripts/test_torch_reference.py   or   python3 scripts/test_torch_reference.py [HETDRO]
"""

import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference as tr  # noqa: E402

EPS = 1e-5
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference.py")


def _gaussian_pair_inputs(k, n_samples, zero_units=0, seed=0, dtype=torch.float64):
    """Ŝ from n samples (rank ≤ n−1, as in training) with some units exactly 0, and an
    anchor S = LLᵀ + εI."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_samples, k, generator=g, dtype=dtype)
    if zero_units:
        z[:, :zero_units] = 0
    L = torch.eye(k, dtype=dtype) + 0.3 * torch.randn(k, k, generator=g, dtype=dtype)
    m2 = torch.randn(k, generator=g, dtype=dtype)
    return z, L, m2


def _w2_from_samples(z, L, m2, mode):
    """The training path: moments of z, S = LLᵀ + εI, W2² — so gradients flow to the
    samples and the Cholesky-like factor as in compute_loss."""
    k = z.shape[1]
    key = torch.zeros(z.shape[0], dtype=torch.long)
    n, mean, scatter = tr.class_moments(z, key, 1)
    eye = torch.eye(k, dtype=z.dtype)
    A = scatter / (n - 1).view(-1, 1, 1) + EPS * eye
    S = (L @ L.t() + EPS * eye).unsqueeze(0)
    return tr.w2_squared(mean, A, m2.unsqueeze(0), S, EPS, mode).sum()


def test_safe_backward_gradcheck_full_rank():
    # A, B parametrised by free matrices (A = XXᵀ/… + εI) so that finite differences see
    # symmetric perturbations, like training does; n > k: full rank, distinct eigenvalues.
    # gradcheck's central differences in float64 (eps = h = 1e-6): truncation h²·|f‴|/6 and rounding
    # ~γ_N·Σ|terms|/h, about 1e-8 here (tests/testing.h, numeric_gradient), well inside atol/rtol.
    z, L, m2 = _gaussian_pair_inputs(k=5, n_samples=12, seed=1)
    z.requires_grad_(True)
    L.requires_grad_(True)
    m2.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z, L, m2: _w2_from_samples(z, L, m2, "safe"), (z, L, m2),
                                    eps=1e-6, atol=1e-6, rtol=1e-5)


def test_safe_backward_gradcheck_rank_deficient():
    # n ≤ k (the normal case: Ŝ has many eigenvalues exactly ε after the clamp), plus a unit
    # that is 0 for every sample.
    z, L, m2 = _gaussian_pair_inputs(k=6, n_samples=4, zero_units=1, seed=2)
    z.requires_grad_(True)
    L.requires_grad_(True)
    m2.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z, L, m2: _w2_from_samples(z, L, m2, "safe"), (z, L, m2),
                                    eps=1e-6, atol=1e-6, rtol=1e-5)


def test_safe_matches_naive_when_eigenvalues_distinct():
    z, L, m2 = _gaussian_pair_inputs(k=8, n_samples=20, seed=3)
    grads = {}
    for mode in ("safe", "naive"):
        zz, LL, mm = (t.clone().requires_grad_(True) for t in (z, L, m2))
        v = _w2_from_samples(zz, LL, mm, mode)
        v.backward()
        grads[mode] = (v.detach(), zz.grad, LL.grad, mm.grad)
    # Two backwards in float64: autograd through eigh divides by eigenvalue gaps, so they differ
    # by about u·‖A‖/gap (u = 2^-53), ≲ 1e-12 for these distinct spectra; the bars leave room.
    for a, b in zip(grads["safe"], grads["naive"]):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def test_w2_value_closed_form_for_commuting_case():
    # Diagonal A, B: W2² = ‖Δm‖² + Σ(√a − √b)².
    a = torch.tensor([[0.5, 2.0, 3.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 0.25, 4.0]], dtype=torch.float64)
    m1 = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    m2 = torch.tensor([[0.0, 2.0, 0.0]], dtype=torch.float64)
    v = tr.w2_squared(m1, torch.diag_embed(a), m2, torch.diag_embed(b), EPS, "safe")
    want = 5.0 + ((a.sqrt() - b.sqrt()) ** 2).sum()
    torch.testing.assert_close(v, want.view(1))


def test_naive_nonfinite_safe_finite_on_dead_units():
    # docs/DESIGN.md §2: 20 of 64 latent units 0 for a class → Ŝ has exactly repeated eigenvalues
    # ε; autograd through eigh divides by their zero gaps.
    for dtype in (torch.float32, torch.float64):
        z, L, m2 = _gaussian_pair_inputs(k=64, n_samples=10, zero_units=20, seed=4, dtype=dtype)
        L = torch.eye(64, dtype=dtype)   # the anchors' init
        out = {}
        for mode in ("naive", "safe"):
            zz = z.clone().requires_grad_(True)
            LL = L.clone().requires_grad_(True)
            v = _w2_from_samples(zz, LL, m2, mode)
            v.backward()
            out[mode] = bool(torch.isfinite(zz.grad).all() and torch.isfinite(LL.grad).all())
            assert torch.isfinite(v), (mode, dtype)
        assert not out["naive"], "expected autograd through eigh to give non-finite gradients (%s)" % dtype
        assert out["safe"], "safe backward must be finite (%s)" % dtype


def test_class_moments_many_keys_path_agrees():
    # More keys than latent units takes the [B,k²] outer-product path: the same scatter.
    g = torch.Generator().manual_seed(9)
    z = torch.randn(40, 3, generator=g, dtype=torch.float64)
    key = torch.randint(0, 7, (40,), generator=g)
    n, mean, scatter = tr.class_moments(z, key, 7)
    for K in range(7):
        zc = z[key == K] - mean[K]
        torch.testing.assert_close(scatter[K], zc.t() @ zc)
    onehot = torch.nn.functional.one_hot(key, 7).double()
    torch.testing.assert_close(tr._scatter(onehot, z), torch.einsum("bK,bi,bj->Kij", onehot, z, z))


def test_batch_counts_proportional_largest_remainder():
    assert tr.batch_counts(100, [42000, 15000, 3000]) == [70, 25, 5]
    assert tr.batch_counts(10, [1, 1, 1]) == [4, 3, 3]
    assert sum(tr.batch_counts(97, [123, 4567, 89])) == 97
    # As hetdro's tests/test_sampler.cpp CountsAreRoundedSharesSummingToTheBatch: a tiny group
    # still gets one sample per batch, taken from the largest count.
    assert tr.batch_counts(100, [10, 10, 10]) == [34, 33, 33]
    assert tr.batch_counts(10, [100000, 10]) == [9, 1]


def test_batch_counts_follow_group_batch_and_batch_share():
    # The counts of hetdro's tests/test_sampler.cpp CountsFollowGroupBatchAndBatchShare, by hand:
    sizes = [42000, 15000, 3000]
    # sqrt: 100·√N_g/Σ√N = 53.62, 32.05, 14.33 → floors 53, 32, 14; the largest remainder (.62) takes 1.
    assert tr.batch_counts(100, sizes, "sqrt") == [54, 32, 14]
    # equal: 33.33 each → 33 each, and the first of the tied remainders takes the 100th.
    assert tr.batch_counts(100, sizes, "equal") == [34, 33, 33]
    # proj64 fixed at 0.2 → 20; the others split 80 by size: 80·42/57 = 58.95, 80·15/57 = 21.05.
    assert tr.batch_counts(100, sizes, "proportional", [0, 0, 0.2]) == [59, 21, 20]
    # The same under equal: 40, 40 for the two free groups.
    assert tr.batch_counts(100, sizes, "equal", [0, 0, 0.2]) == [40, 40, 20]
    assert tr.batch_counts(100, sizes, "sqrt", [0.5, 0.3, 0.2]) == [50, 30, 20]
    # No shares and all-zero shares are the proportional counts, 70/25/5.
    assert tr.batch_counts(100, sizes, "proportional", [0, 0, 0]) == [70, 25, 5]
    # A share below one sample still gives one, taken from the largest count.
    assert tr.batch_counts(10, [1000, 10], "proportional", [0, 0.01]) == [9, 1]
    # And the Resampling suite's counts, sizes {700, 250, 53} at B = 20:
    # sqrt: 20·(26.46, 15.81, 7.28)/49.55 = 10.68, 6.38, 2.94 → 10, 6, 2, remainders .94 then .68 → 11, 6, 3.
    assert tr.batch_counts(20, [700, 250, 53], "sqrt") == [11, 6, 3]
    # equal: 6.67 each → 6, 6, 6 and the first two tied remainders take the 2 left → 7, 7, 6.
    assert tr.batch_counts(20, [700, 250, 53], "equal") == [7, 7, 6]
    # batch_share 0.3 → 6; the others split 14 by size: 14·700/950 = 10.32, 14·250/950 = 3.68 → 10, 3,
    # and the larger remainder (.68) takes the 20th → 10, 4.
    assert tr.batch_counts(20, [700, 250, 53], "proportional", [0, 0, 0.3]) == [10, 4, 6]


_RESAMPLED = (("sqrt", None, [11, 6, 3]), ("equal", None, [7, 7, 6]), ("proportional", [0, 0, 0.3], [10, 4, 6]))


def test_proportional_order_is_one_seeded_shuffle_per_group():
    # No resampling: hetdro's epoch order, one seeded_permutation per group, seeded by (seed, epoch, g).
    sizes = [700, 250, 53]
    a, b = tr.StratifiedSampler(sizes, 20, 7), tr.StratifiedSampler(sizes, 20, 7, "proportional", [0, 0, 0])
    assert not a.resamples and not b.resamples
    assert a.per_batch == [14, 5, 1] and a.steps == min(700 // 14, 250 // 5, 53 // 1) == 50
    oa, ob = a.order(3), b.order(3)
    assert oa == ob
    for g, N in enumerate(sizes):
        assert a.order_size(g) == N
        assert oa[g] == tr.seeded_permutation(N, tr.splitmix64(7 ^ tr.splitmix64(3 * 1000003 + g)))


def test_resampled_order_covers_each_group_once_per_pass():
    # As hetdro's Resampling suite (tests/test_sampler.cpp): exact counts, an epoch is one pass over
    # the largest group, each complete pass over a group is a permutation of its rows, the passes
    # differ, and the part of a pass that the epoch's end cuts off repeats nothing.
    sizes = [700, 250, 53]
    for mode, shares, want in _RESAMPLED:
        s = tr.StratifiedSampler(sizes, 20, 7, mode, shares)
        assert s.per_batch == want and s.resamples, mode
        assert s.steps == 700 // want[0]
        for epoch in (0, 1):
            order = s.order(epoch)
            for g, N in enumerate(sizes):
                o, n = order[g], s.per_batch[g]
                assert len(o) == s.order_size(g) == s.steps * n, (mode, g)
                assert all(0 <= i < N for i in o)
                # Pass 0 is the proportional sampler's shuffle; pass p ≥ 1 a fresh one seeded from it.
                pass_seed = tr.splitmix64(7 ^ tr.splitmix64(epoch * 1000003 + g))
                assert o[:N] == tr.seeded_permutation(N, pass_seed)[:len(o)]
                passes = len(o) // N
                if g == 0:
                    assert len(o) <= N
                seen = []
                for p in range(passes):
                    chunk = o[p * N:(p + 1) * N]
                    assert sorted(chunk) == list(range(N)), (mode, g, p)
                    assert chunk not in seen
                    seen.append(chunk)
                    if p > 0:
                        assert chunk == tr.seeded_permutation(N, tr.splitmix64(pass_seed ^ tr.splitmix64(p)))
                tail = o[passes * N:]
                assert len(set(tail)) == len(tail)
                if g == 2:
                    assert passes >= 2
    # Epoch e's order depends on (sizes, counts, seed, e) alone, and epochs differ.
    s = tr.StratifiedSampler(sizes, 20, 7, "equal")
    assert s.order(2) == tr.StratifiedSampler(sizes, 20, 7, "equal").order(2)
    assert s.order(1)[2] != s.order(2)[2]


def _write_tiny_data(folder, extra_train=""):
    rng = np.random.default_rng(0)
    for name, shape in (("img", (8, 8)), ("vec", (12,))):
        for split, n in (("train", 60), ("test", 30)):
            y = rng.integers(0, 3, n).astype(np.int64)
            x = rng.standard_normal((n,) + shape).astype(np.float32) + y.reshape((-1,) + (1,) * len(shape))
            np.save(os.path.join(folder, "%s_%s_x.npy" % (name, split)), x)
            np.save(os.path.join(folder, "%s_%s_y.npy" % (name, split)), y.astype(np.uint8))
    groups = ""
    for name, enc in (("img", 'encoder = "cnn"\nchannels = [4, 8]'), ("vec", 'encoder = "mlp"\nhidden = [16]')):
        groups += ('[[data.groups]]\nname = "%s"\ntrain_x = "%s_train_x.npy"\ntrain_y = "%s_train_y.npy"\n'
                   'test_x = "%s_test_x.npy"\ntest_y = "%s_test_y.npy"\n%s\n\n' % ((name,) * 5 + (enc,)))
    cfg = os.path.join(folder, "config.toml")
    with open(cfg, "w") as f:
        f.write('[data]\nclasses = 3\n\n%s[model]\nlatent_dim = 8\n\n[train]\nepochs = 1\nbatch_size = 20\n'
                'objective = "groupdro"\nfit = "per_group"\ndevice = "cpu"\n%s' % (groups, extra_train))
    return cfg


def _hetdro_bin():
    b = os.environ.get("HETDRO_BIN") or (sys.argv[1] if __name__ == "__main__" and len(sys.argv) > 1 else "")
    return b if b and os.access(b, os.X_OK) else None


def test_same_init_and_split_as_hetdro_binary():
    # hetdro writes the initial model when a run takes no step (docs/DESIGN.md §4 Checkpoint):
    # every tensor must equal torch_reference's, bit for bit, under non-default init keys; and
    # the validation split must leave both with the same training set sizes.
    hetdro = _hetdro_bin()
    if not hetdro:
        print("     (skipped: no hetdro binary given)")
        return
    import json
    import re
    import struct
    with tempfile.TemporaryDirectory() as d:
        data, run = os.path.join(d, "data"), os.path.join(d, "run")
        subprocess.run([hetdro, "prepare", "synthetic", "--out", data, "--classes", "4", "--per-class", "33"],
                       check=True, capture_output=True)
        sets = ["train.seed=5", "model.anchor_scale=0.3", 'model.anchor_mean_init="random"', 'model.classifier="mlp2"',
                "model.latent_dim=12", "data.val_fraction=0.15"]
        r = subprocess.run([hetdro, "train", "--config", os.path.join(data, "config.toml"), "--out", run,
                            "--set", "train.epochs=0"] + sum((["--set", x] for x in sets), []),
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        raw = open(os.path.join(run, "checkpoint.safetensors"), "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8:8 + n])
        cfg = tr.load_config(os.path.join(data, "config.toml"), sets)
        groups = tr.load_data(cfg)
        state = tr.HetModel(cfg, groups).state_dict()
        assert state
        for name, t in state.items():
            a, b = header[name]["data_offsets"]
            got = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=np.float32).reshape(header[name]["shape"])
            assert np.array_equal(got, t.numpy()), name
        sizes = {m.group(1): int(m.group(2)) for m in re.finditer(r"group (\w+)\s+encoder \w+\s+train\s+(\d+)", r.stdout)}
        assert sizes == {g["name"]: len(g["ytr"]) for g in groups}, (sizes, r.stdout)
        # The run's config.toml spells out every key hetdro read (docs/DESIGN.md §4): the
        # reference reads them all, and the same values.
        full = tr.load_config(os.path.join(run, "config.toml"))
        assert full["train"]["deterministic"] is True and full["model"]["latent_dim"] == 12, full
        assert full["data"]["val_fraction"] == 0.15 and full["train"]["seed"] == 5, full
        assert tr.load_config(os.path.join(run, "config.toml"), ["train.deterministic=false"])["train"]["deterministic"] is False


def test_same_batch_counts_and_val_default_as_hetdro_binary():
    # With the data.val_fraction line taken out of the synthetic config and select = "last", both
    # train on every sample; under sqrt shares and a batch_share both take the same counts per
    # batch and the same steps per epoch (hetdro prints them in the run's header).
    hetdro = _hetdro_bin()
    if not hetdro:
        print("     (skipped: no hetdro binary given)")
        return
    import re
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "data")
        subprocess.run([hetdro, "prepare", "synthetic", "--out", data, "--classes", "4", "--per-class", "33"],
                       check=True, capture_output=True)
        path = os.path.join(data, "config.toml")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write("\n".join(l for l in text.splitlines() if not l.startswith("val_fraction")) + "\n")
        for i, sets in enumerate((['train.group_batch="sqrt"', "data.groups.2.batch_share=0.25",
                                   "train.batch_size=20"],
                                  ['train.group_batch="equal"', "train.batch_size=17"],
                                  ["train.batch_size=30", 'train.select="worst_val"'])):
            run = os.path.join(d, "run%d" % i)
            r = subprocess.run([hetdro, "train", "--config", path, "--out", run, "--set", "train.epochs=0"]
                               + sum((["--set", x] for x in sets), []), capture_output=True, text=True)
            assert r.returncode == 0, r.stdout + r.stderr
            cfg = tr.load_config(path, sets)
            groups = tr.load_data(cfg)
            Ns = [len(g["ytr"]) for g in groups]
            sampler = tr.make_sampler(cfg, Ns)
            header = {m.group(1): (int(m.group(2)), int(m.group(3))) for m in
                      re.finditer(r"group (\w+)\s+encoder \w+\s+train\s+(\d+).*per batch\s+(\d+)", r.stdout)}
            assert header == {g["name"]: (N, n) for g, N, n in zip(groups, Ns, sampler.per_batch)}, (sets, r.stdout)
            steps = re.search(r"epochs x (\d+) steps of batch (\d+)", r.stdout)
            assert steps and int(steps.group(1)) == sampler.steps, (sets, r.stdout)
            assert ("drawn again" in r.stdout) == sampler.resamples, (sets, r.stdout)
            assert cfg["data"]["val_fraction"] == (0.1 if i == 2 else 0.0)


def test_make_sampler_bounds_a_resampled_epoch():
    # host/trainer.cpp's bound: 900 steps of one img8 sample each, in batches of 10^6, would need
    # 9·10^8 indices; refused before the order is built.
    cfg = {"train": {"batch_size": 1000000, "seed": 0, "group_batch": "proportional"},
           "data": {"groups": [{"name": "img8", "batch_share": 1e-6}, {"name": "vec16", "batch_share": 0},
                               {"name": "vec40", "batch_share": 0}]}}
    try:
        tr.make_sampler(cfg, [900, 540, 180])
    except tr.UserError as e:
        assert "needs an order of 900000000 sample indices" in str(e), str(e)
    else:
        raise AssertionError("a 9e8-index epoch was not refused")


def _run(args):
    return subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True, timeout=60)


def test_end_to_end_tiny_run_and_json():
    with tempfile.TemporaryDirectory() as d:
        cfg = _write_tiny_data(d)
        out = os.path.join(d, "m.jsonl")
        r = _run(["--config", cfg, "--threads", "1", "--epochs", "2", "--json-out", out])
        assert r.returncode == 0, r.stderr
        import json
        lines = [json.loads(s) for s in open(out)]
        assert [l.get("epoch") for l in lines[:2]] == [1, 2] and lines[-1]["final"]
        assert set(lines[0]["test_acc"]) == {"img", "vec"}
        assert abs(sum(lines[1]["group_weights"].values()) - 1) < 1e-5
        assert "val_acc" not in lines[0]   # select = "last" and no data.val_fraction: no split
        # train.select picks the epoch of the best worst-group validation accuracy; data.val_fraction
        # left out is then 0.1, evaluated every epoch.
        r = _run(["--config", cfg, "--threads", "1", "--epochs", "3", "--json-out", out,
                  "--set", 'train.select="worst_val"'])
        assert r.returncode == 0, r.stderr
        lines = [json.loads(s) for s in open(out)]
        assert set(lines[0]["val_acc"]) == {"img", "vec"}
        best = max(lines[:3], key=lambda l: l["worst_val_acc"])   # max keeps the first on ties
        assert lines[-1]["selected_epoch"] == best["epoch"] and lines[-1]["selected_test_acc"] == best["test_acc"]


def test_resampled_run_end_to_end():
    # 60 training rows per group, B = 20: img's batch_share 0.7 gives 14 + 6 per batch, and an epoch
    # is one pass over img (the first of the largest groups): 60 // 14 = 4 steps.
    import json
    with tempfile.TemporaryDirectory() as d:
        cfg = _write_tiny_data(d)
        out = os.path.join(d, "m.jsonl")
        r = _run(["--config", cfg, "--threads", "1", "--epochs", "1", "--json-out", out,
                  "--set", 'train.group_batch="sqrt"', "--set", "data.groups.0.batch_share=0.7"])
        assert r.returncode == 0, r.stderr
        assert "batch 14+6 = 20 (group_batch = sqrt and batch_share: a group that runs out is drawn again)" \
            " | 4 steps/epoch" in r.stdout, r.stdout
        assert json.loads(open(out).readline())["step"] == 4


def test_group_batch_and_batch_share_config():
    with tempfile.TemporaryDirectory() as d:
        path = _write_tiny_data(d)
        cfg = tr.load_config(path)
        assert cfg["train"]["group_batch"] == "proportional"
        assert [g["batch_share"] for g in cfg["data"]["groups"]] == [0.0, 0.0]
        cfg = tr.load_config(path, ['train.group_batch="equal"', "data.groups.1.batch_share=0.25"])
        assert cfg["train"]["group_batch"] == "equal" and cfg["data"]["groups"][1]["batch_share"] == 0.25
        # Shares for every group that add up to 1 (within 1e-6) are accepted.
        tr.load_config(path, ["data.groups.0.batch_share=0.6", "data.groups.1.batch_share=0.4"])
        bad = ((['train.group_batch="balanced"'], "group_batch = 'balanced', expected one of proportional, sqrt, equal"),
               (["data.groups.1.batch_share=0"], "group vec: batch_share = 0, expected the group's share of every "
                                                 "batch, in (0, 1)"),
               (["data.groups.1.batch_share=1"], "batch_share = 1,"),
               (["data.groups.1.batch_share=-0.1"], "batch_share = -0.1,"),
               (['data.groups.1.batch_share="half"'], "batch_share = 'half' has the wrong type"),
               (["data.groups.0.batch_share=0.5", "data.groups.1.batch_share=0.3"],
                "every group has a batch_share, and they add up to 0.8: expected them to add up to 1 "
                "(data.groups[0].batch_share, data.groups[1].batch_share)"))
        for sets, message in bad:
            try:
                tr.load_config(path, sets)
            except tr.UserError as e:
                assert message in str(e), (sets, str(e))
            else:
                raise AssertionError("expected an error for %s" % sets)
    with tempfile.TemporaryDirectory() as d:   # shares that leave nothing for the group without one
        path = _write_tiny_data(d)
        with open(path) as f:
            text = f.read()
        third = ('[[data.groups]]\nname = "vec2"\ntrain_x = "vec_train_x.npy"\ntrain_y = "vec_train_y.npy"\n'
                 'test_x = "vec_test_x.npy"\ntest_y = "vec_test_y.npy"\n\n[model]')
        with open(path, "w") as f:
            f.write(text.replace("[model]", third, 1))
        try:
            tr.load_config(path, ["data.groups.0.batch_share=0.6", "data.groups.2.batch_share=0.4"])
        except tr.UserError as e:
            assert ("the keys data.groups[0].batch_share, data.groups[2].batch_share add up to 1, which leaves "
                    "nothing of a batch for the 1 group(s) without a batch_share: expected a sum below 1") in str(e), e
        else:
            raise AssertionError("expected an error for shares adding up to 1 with a free group")
        assert tr.load_config(path, ["data.groups.2.batch_share=0.3"])["data"]["groups"][2]["batch_share"] == 0.3
        r = _run(["--config", path, "--set", "data.groups.0.batch_share=0.7", "--set", "data.groups.1.batch_share=0.3"])
        assert r.returncode == 2 and "expected a sum below 1" in r.stderr, r.stderr


def test_val_fraction_default_follows_select():
    # hetdro (host/config.cpp): left out, data.val_fraction is 0.1 when train.select uses the split and
    # 0 when select = "last"; a value the config (or --set) gives is kept.
    with tempfile.TemporaryDirectory() as d:
        path = _write_tiny_data(d)
        assert tr.load_config(path)["data"]["val_fraction"] == 0.0
        assert tr.load_config(path, ['train.select="last"'])["data"]["val_fraction"] == 0.0
        assert tr.load_config(path, ['train.select="worst_val"'])["data"]["val_fraction"] == 0.1
        assert tr.load_config(path, ['train.select="mean_val"'])["data"]["val_fraction"] == 0.1
        assert tr.load_config(path, ["data.val_fraction=0.2"])["data"]["val_fraction"] == 0.2
        assert tr.load_config(path, ["data.val_fraction=0.1"])["data"]["val_fraction"] == 0.1
        assert tr.load_config(path, ['train.select="worst_val"', "data.val_fraction=0.3"])["data"]["val_fraction"] == 0.3
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:   # given in the file, not by --set
            f.write(text.replace("classes = 3\n", "classes = 3\nval_fraction = 0.25\n", 1))
        assert tr.load_config(path)["data"]["val_fraction"] == 0.25
        groups = tr.load_data(tr.load_config(path))
        assert all(g["xva"] is not None for g in groups)


def test_config_errors_exit_2():
    with tempfile.TemporaryDirectory() as d:
        cfg = _write_tiny_data(d, extra_train="lamda_fit = 0.1\n")
        r = _run(["--config", cfg])
        assert r.returncode == 2 and "unknown key 'lamda_fit'" in r.stderr, r.stderr
        r = _run(["--config", os.path.join(d, "missing.toml")])
        assert r.returncode == 2 and "not found" in r.stderr, r.stderr
        cfg = _write_tiny_data(d)
        r = _run(["--config", cfg, "--set", 'train.deterministic="yes"'])
        assert r.returncode == 2 and "deterministic = 'yes' has the wrong type (expected bool)" in r.stderr, r.stderr
        os.remove(os.path.join(d, "vec_test_y.npy"))
        r = _run(["--config", cfg])
        assert r.returncode == 2 and "vec_test_y.npy" in r.stderr, r.stderr


def test_minimal_toml_parser_agrees():
    text = ('[data]\nclasses = 10 # c\n[[data.groups]]\nname = "a#b"\nchannels = [32,\n 64]\n'
            '[[data.groups]]\nname = \'x\'\n[train]\nlr = 1e-3\nseed = 0\nflag = true\n')
    got = tr._parse_toml_minimal(text)
    assert got == {"data": {"classes": 10, "groups": [{"name": "a#b", "channels": [32, 64]}, {"name": "x"}]},
                   "train": {"lr": 1e-3, "seed": 0, "flag": True}}


def _adamw_hetdro(p, grads, lr, wd, beta1=0.9, beta2=0.999, eps=1e-8):
    """kernels/adam.h in float64: the step's scalars folded on the host, then per element
    m, v, and p ← p(1 − lr·wd) − (lr/bc1)·m / (√v/√bc2 + ε)."""
    p, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    for step, g in enumerate(grads, 1):
        step_size = lr / (1 - beta1 ** step)
        inv_sqrt_bc2 = 1 / np.sqrt(1 - beta2 ** step)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p * (1 - lr * wd) - step_size * m / (np.sqrt(v) * inv_sqrt_bc2 + eps)
    return p


def test_weight_decay_matches_hetdro_adamw():
    # The optimizer torch_reference builds for train.weight_decay > 0, against hetdro's update
    # written out by hand, over three steps with a large decay so that it shows.
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal(7)
    grads = [rng.standard_normal(7) for _ in range(3)]
    for wd in (0.0, 0.3):
        param = torch.nn.Parameter(torch.tensor(p0))
        opt = (torch.optim.AdamW([param], lr=0.05, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd) if wd > 0
               else torch.optim.Adam([param], lr=0.05, betas=(0.9, 0.999), eps=1e-8))
        for g in grads:
            param.grad = torch.tensor(g)
            opt.step()
        # float64 both: torch folds the same scalars but updates m with lerp_, so each step's
        # update (|m̂|/√v̂ ≤ 2 in three steps: ≤ 2·lr) differs by ~12 roundings and p by 2: within
        # γ_42·(|p| + 0.3) ≈ 5e-15·(|p| + 0.3), inside rtol and atol.
        np.testing.assert_allclose(param.detach().numpy(), _adamw_hetdro(p0, grads, 0.05, wd), rtol=1e-12, atol=1e-14)
    # And the one torch_reference.main makes: decoupled decay on every parameter.
    assert "torch.optim.AdamW(model.parameters()" in open(SCRIPT).read()


def _splitmix64_int(x):
    m = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


def _uniform01_int(seed, i):
    bits = _splitmix64_int(_splitmix64_int(seed) ^ _splitmix64_int((i * 2 + 1) & ((1 << 64) - 1)))
    return ((bits >> 11) + 1) / 9007199254740992.0


def test_init_anchor_scale_and_hetdro_counter_rng():
    with tempfile.TemporaryDirectory() as d:
        cfg_path = _write_tiny_data(d)
        cfg = tr.load_config(cfg_path, ["model.anchor_scale=0.25", "train.seed=7"])
        groups = tr.load_data(cfg)
        model = tr.HetModel(cfg, groups)
        C, k = 3, 8
        torch.testing.assert_close(model.anchors.chol.detach(), 0.25 * torch.eye(k).repeat(C, 1, 1))
        assert float(model.anchors.mean.detach().abs().max()) == 0.0
        # host/model.cpp Model::init: parameter at flat offset i is (2u − 1)/√fan_in with
        # u = uniform01(splitmix64(seed ^ 0x1A1D), i); conv1 of "img" comes first (fan_in 1·3·3).
        stream = _splitmix64_int(7 ^ 0x1A1D)
        w = model.encoders["img"].conv1.weight.detach().reshape(-1)
        # torch holds the parameter in float32: within u_32·1/3 = 2e-8 of the float64 formula.
        for i in (0, 5, 35):
            assert abs(float(w[i]) - (2 * _uniform01_int(stream, i) - 1) / 3.0) < 1e-7
        # The bias right after it uses the weight's fan_in, at the next offsets.
        b = model.encoders["img"].conv1.bias.detach()
        assert abs(float(b[0]) - (2 * _uniform01_int(stream, w.numel()) - 1) / 3.0) < 1e-7
        cfg = tr.load_config(cfg_path, ['model.anchor_mean_init="random"'])
        model = tr.HetModel(cfg, tr.load_data(cfg))
        m = model.anchors.mean.detach().reshape(-1).double()
        want = tr.normal01(_splitmix64_int(0 ^ 0x1A1D) ^ 0xA0C4, np.arange(C * k, dtype=np.uint64))
        np.testing.assert_allclose(m.numpy(), want, rtol=1e-6)
        assert 0.3 < float(m.std()) < 2.0


def test_validation_split_as_hetdro():
    # host/data.cpp split_validation: round(0.1·n) per class leave the training rows.
    y = np.repeat(np.arange(3), [20, 15, 5])
    mask = tr.split_validation(y, 0.1, tr.splitmix64(tr.splitmix64(0)), 3)
    assert [int(mask[y == c].sum()) for c in range(3)] == [2, 2, 1]   # 1.5 rounds away from zero
    assert tr.split_validation(y, 0.01, 1, 3) is None                 # a class too small: no split
    assert sorted(tr.seeded_permutation(50, 123)) == list(range(50))


def test_groupdro_family_by_hand():
    ce = torch.tensor([1.0, 3.0, 2.0, 4.0], dtype=torch.float64)
    g = torch.tensor([0, 0, 2, 2])                      # group 1 absent: ℓ = (2, 0, 3)
    q0 = torch.full((3,), 1 / 3, dtype=torch.float64)
    base = dict(adjustment=0.0, eta=0.5, gd_tau=2.0, gd_gamma=0.1)
    loss, q = tr.groupdro(ce, g, q0, 3, dict(base, gd_update="exp", gd_objective="weighted"))
    e = torch.tensor([np.exp(1.0), 1.0, np.exp(1.5)], dtype=torch.float64)
    torch.testing.assert_close(q, e / e.sum())
    torch.testing.assert_close(loss, (q * torch.tensor([2.0, 0.0, 3.0], dtype=torch.float64)).sum())
    _, q = tr.groupdro(ce, g, q0, 3, dict(base, gd_update="softmax", gd_objective="max"))
    s = torch.tensor([np.exp(1.0), 0.0, np.exp(1.5)], dtype=torch.float64)
    torch.testing.assert_close(q, s / s.sum())
    loss, q = tr.groupdro(ce, g, q0, 3, dict(base, gd_update="smooth", gd_objective="logsumexp"))
    s = torch.tensor([np.exp(1.0), 0.0, np.exp(1.5)], dtype=torch.float64)
    torch.testing.assert_close(q, 0.9 * q0 + 0.1 * s / s.sum())
    torch.testing.assert_close(loss, torch.tensor(2.0 * np.log(np.exp(1.0) + np.exp(1.5)), dtype=torch.float64))
    loss, _ = tr.groupdro(ce.clone().requires_grad_(True), g, q0, 3, dict(base, gd_update="exp", gd_objective="max"))
    assert float(loss) == 3.0


def test_timing_mode_json_fields():
    import json
    with tempfile.TemporaryDirectory() as d:
        cfg = _write_tiny_data(d)
        out = os.path.join(d, "t.json")
        r = _run(["--config", cfg, "--threads", "1", "--time-steps", "3", "--warmup", "1", "--timing-json", out,
                  "--set", "model.latent_dim=16", "--set", "train.batch_size=30"])
        assert r.returncode == 0, r.stderr
        j = json.load(open(out))
        assert j["impl"] == "torch" and j["mode"] == "eager" and j["steps"] == 3 and j["batch_size"] == 30
        assert j["torch"] == torch.__version__ and j["device"].startswith("cpu")
        assert 0 < j["p10_ms"] <= j["median_ms"] <= j["p90_ms"]


def test_unsupported_and_bad_options_exit_2():
    with tempfile.TemporaryDirectory() as d:
        cfg = _write_tiny_data(d, extra_train="checkpoint_every = 5\n")
        r = _run(["--config", cfg])
        assert r.returncode == 2 and "checkpoint_every" in r.stderr, r.stderr
        cfg = _write_tiny_data(d)
        r = _run(["--config", cfg, "--set", "model.hidden=3"])   # hetdro's key is classifier_hidden
        assert r.returncode == 2 and "unknown key 'hidden'" in r.stderr, r.stderr
        r = _run(["--config", cfg, "--set", "train.groupdro.update=fast"])
        assert r.returncode == 2 and "update" in r.stderr, r.stderr
        r = _run(["--config", cfg, "--set", "train.select=worst_val", "--set", "data.val_fraction=0"])
        assert r.returncode == 2 and "select" in r.stderr, r.stderr
        if not hasattr(torch, "compile"):
            r = _run(["--config", cfg, "--compile", "--time-steps", "1"])
            assert r.returncode == 2 and "torch.compile" in r.stderr, r.stderr


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
