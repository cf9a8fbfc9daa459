#!/usr/bin/env bash
# Checks of scripts/bench_vs_torch.sh on the CPU (ctest: bench_vs_torch). First with a test
# double of `hetdro bench-step` (a script that writes fixed numbers; every other subcommand is
# the real binary's), whose graph runs fail at B ≥ 400: the script must record that failure,
# measure those points without the graph, go on, write summary.md and exit 1. Then, when the
# real binary has bench-step, the --quick run end to end with it: exit 0 and every number there.
# Usage: scripts/test_bench_vs_torch.sh HETDRO_BINARY [PYTHON]   (exit 77: skipped, no torch)
set -euo pipefail
cd "$(dirname "$0")/.."
hetdro=${1:?usage: test_bench_vs_torch.sh HETDRO_BINARY [PYTHON]}
python=${2:-/usr/bin/python3}
"$python" -c 'import torch, numpy' 2>/dev/null || { echo "skipped: $python has no torch"; exit 77; }
export OMP_WAIT_POLICY=passive
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# The test double: bench-step's JSON with made-up times (1 ms hetdro), never used as results.
cat >"$tmp/hetdro" <<EOF
#!/usr/bin/env bash
if [[ "\${1:-}" != bench-step ]]; then exec "$hetdro" "\$@"; fi
shift; json="" graph=true steps=0 batch=60
while [[ \$# -gt 0 ]]; do
  case "\$1" in
    --json) json=\$2; shift 2 ;;
    --no-graph) graph=false; shift ;;
    --steps) steps=\$2; shift 2 ;;
    --set) [[ "\$2" == train.batch_size=* ]] && batch=\${2#*=}; shift 2 ;;
    *) shift 2 ;;
  esac
done
if [[ \$graph == true && \$batch -ge 400 ]]; then echo "test double: graph capture failed" >&2; exit 3; fi
printf '{"impl":"hetdro","backend":"cpu","device":"test double","graph":%s,"steps":%s,"median_ms":1.0,"p10_ms":0.9,"p90_ms":1.1,"back_to_back_ms":1.0,"batch_size":%s}\n' \$graph \$steps \$batch >"\$json"
EOF
chmod +x "$tmp/hetdro"

set +e
bash scripts/bench_vs_torch.sh --device cpu --quick --hetdro "$tmp/hetdro" --python "$python" --out "$tmp/a" \
  >"$tmp/a.log" 2>&1
rc=$?
set -e
s=$tmp/a/summary.md
[[ $rc = 1 ]] || { cat "$tmp/a.log"; fail "expected exit 1 after a failed command, got $rc"; }
[[ -f $s ]] || fail "no summary.md"
grep -q '^| sweep_hetdro_C10_k32_B400 | 3 | sweep_hetdro_C10_k32_B400.log |$' "$s" ||
  { cat "$s"; fail "the failed graph run is not listed with its exit code"; }
grep -q '^| 10 | 32 | 400 | 1.000 | [0-9.]* | [0-9.]*× | – | – | hetdro without the graph' "$s" ||
  { cat "$s"; fail "the B = 400 point was not measured without the graph"; }
grep -q '^| torch eager | [0-9.]* | [0-9.]* | [0-9.]* | – | 5 | 60 | ok |$' "$s" || { cat "$s"; fail "torch eager row"; }
grep -q '^| hetdro, CUDA Graph (graph: [a-z]*) | [0-9.]* | [0-9.]* | [0-9.]* | [0-9.]* | 5 | 60 | ok |$' "$s" ||
  { cat "$s"; fail "hetdro's row with its back-to-back time"; }
grep -q '^| hetdro train | 1 | [0-9.]* | img8 0\.[0-9]*, vec16 0\.[0-9]*, vec40 0\.[0-9]* |' "$s" ||
  { cat "$s"; fail "hetdro's time to train with its accuracies"; }
grep -q '^| torch_reference.py (eager) | 1 | [0-9.]* | img8 0\.[0-9]*' "$s" || { cat "$s"; fail "torch's time to train"; }
grep -q '^+ .*torch_reference.py .*--time-steps 5 --warmup 2' "$tmp/a/commands.txt" || fail "commands.txt"
"$python" - "$tmp/a" <<'PY' || fail "JSON files"
import json, sys
d = sys.argv[1]
t = json.load(open(d + "/step_torch_eager.json"))
assert {"impl", "mode", "device", "torch", "median_ms", "p10_ms", "p90_ms", "steps", "batch_size"} <= set(t), t
assert t["impl"] == "torch" and t["mode"] == "eager" and t["steps"] == 5
f = json.load(open(d + "/floor_C100_k32_B1000.json"))
assert f["classes"] == 100 and f["detail"]["w2_pairs"] == 100 and f["flops"] > f["detail"]["w2_eigh"] > 0
PY
echo "ok   bench_vs_torch.sh with a test double: failures recorded, the rest measured ($(wc -l <"$tmp/a/results.tsv") commands)"

# Bad arguments: exit 2.
for args in "--device tpu" "--sweep some" "--steps x" "--frobnicate"; do
  set +e
  # shellcheck disable=SC2086  # the words on purpose
  bash scripts/bench_vs_torch.sh $args --hetdro "$tmp/hetdro" >/dev/null 2>&1
  rc=$?
  set -e
  [[ $rc = 2 ]] || fail "'$args' gave exit $rc, expected 2"
done
echo "ok   bad arguments exit 2"

if "$hetdro" --help 2>/dev/null | grep -q "bench-step"; then
  bash scripts/bench_vs_torch.sh --device cpu --quick --hetdro "$hetdro" --python "$python" --out "$tmp/b" \
    >"$tmp/b.log" 2>&1 || { cat "$tmp/b.log"; fail "the --quick run with the real hetdro failed"; }
  ! grep -q FAILED "$tmp/b/summary.md" || { cat "$tmp/b/summary.md"; fail "a FAILED row"; }
  echo "ok   bench_vs_torch.sh --quick with the real hetdro bench-step"
else
  echo "note: $hetdro has no bench-step yet: the end-to-end run with it is skipped"
fi
