#!/usr/bin/env bash
# A rank killed mid-run must take the whole job down (docs/DESIGN.md §7, issue 11): starts
# `hetdro train` as 2 MPI ranks on the synthetic data, kills rank 1 with SIGKILL once training
# runs, and checks that mpirun exits non-zero within 30 s. Then a failure on rank 0 alone (its
# run folder already holds a run) must stop rank 1 too, with a message naming rank 0.
# Then SIGINT to the ranks must stop them with a resume command, and Ctrl-C to mpirun must
# leave a checkpoint that loads.
# Usage: scripts/test_mpi_abort.sh HETDRO_BINARY "MPIEXEC[;FLAG...]"   (ctest passes both)
set -euo pipefail
usage="usage: $0 HETDRO_BINARY 'MPIEXEC[;FLAG...]' (e.g. build-cpu/hetdro 'mpirun;--oversubscribe')"
if [[ ${1:-} == --help || ${1:-} == -h ]]; then
  echo "$usage"
  exit 0
fi
if [[ $# -ne 2 ]]; then
  echo "$usage" >&2
  exit 2
fi
hetdro=$1
IFS=';' read -r -a mpiexec <<<"$2"
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
dir=$(mktemp -d)
trap 'kill -9 ${job:-} 2>/dev/null || true; rm -rf "$dir"' EXIT
"$hetdro" prepare synthetic --out "$dir/data" >/dev/null

"${mpiexec[@]}" -np 2 "$hetdro" train --config "$dir/data/config.toml" --out "$dir/run" \
  --set train.epochs=1000 >"$dir/log" 2>&1 &
job=$!

# Rank 1: the process whose environment says OMPI_COMM_WORLD_RANK=1 (PMI_RANK elsewhere).
rank1=""
for _ in $(seq 1 300); do
  for p in $(pgrep -f -- "$dir/data/config.toml" || true); do
    [[ $p == "$job" ]] && continue
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qxE '(OMPI_COMM_WORLD_RANK|PMI_RANK)=1'; then
      rank1=$p
    fi
  done
  # Mid-run: the lead has written the run folder and the first steps are under way.
  [[ -n $rank1 && -f $dir/run/config.toml ]] && break
  sleep 0.1
done
if [[ -z $rank1 ]]; then
  echo "FAIL: rank 1 never started" >&2
  cat "$dir/log" >&2
  exit 1
fi
sleep 1
kill -9 "$rank1"
start=$(date +%s)
status=0
for _ in $(seq 1 300); do
  kill -0 "$job" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$job" 2>/dev/null; then
  echo "FAIL: mpirun still running 30 s after rank 1 was killed" >&2
  exit 1
fi
wait "$job" || status=$?
elapsed=$(($(date +%s) - start))
if [[ $status -eq 0 ]]; then
  echo "FAIL: mpirun exited 0 after rank 1 was killed" >&2
  cat "$dir/log" >&2
  exit 1
fi
echo "ok: rank 1 killed; mpirun exited with status $status after ${elapsed} s"

# Rank 0 refuses the folder (it holds the run above); rank 1, which writes nothing, would wait
# for it in the first collective unless the job is aborted.
start=$(date +%s)
status=0
timeout 30 "${mpiexec[@]}" -np 2 "$hetdro" train --config "$dir/data/config.toml" \
  --out "$dir/run" >"$dir/log" 2>&1 || status=$?
elapsed=$(($(date +%s) - start))
if [[ $status -eq 0 || $status -eq 124 ]] || ! grep -q "rank 0 of 2" "$dir/log"; then
  echo "FAIL: a failure on rank 0 gave status $status after ${elapsed} s (124: still running)" >&2
  cat "$dir/log" >&2
  exit 1
fi
echo "ok: rank 0 failed alone; mpirun exited with status $status after ${elapsed} s"

# Stopping a multi-rank run (docs/DESIGN.md §7). SIGINT to the ranks: they stop at the same
# step, checkpoint, and the lead prints the resume command with its mpirun.
ranks_of() {  # the hetdro processes of job $1 writing folder $2
  for p in $(pgrep -f -- "--out $2" || true); do [[ $p != "$1" ]] && echo "$p"; done
}
start_job() {  # $1: the run folder; sets job
  "${mpiexec[@]}" -np 2 "$hetdro" train --config "$dir/data/config.toml" --out "$1" \
    --set train.epochs=1000 --set train.checkpoint_every=5 >"$dir/log" 2>&1 &
  job=$!
  for _ in $(seq 1 300); do
    [[ -f $1/checkpoint.safetensors && $(ranks_of "$job" "$1" | wc -l) -eq 2 ]] && return
    sleep 0.1
  done
  echo "FAIL: the 2-rank run into $1 never wrote a checkpoint" >&2
  cat "$dir/log" >&2
  exit 1
}
start_job "$dir/stopped"
# shellcheck disable=SC2046  # one pid per word
kill -INT $(ranks_of "$job" "$dir/stopped")
status=0
timeout 30 tail --pid="$job" -f /dev/null || true
wait "$job" || status=$?
if [[ $status -eq 0 ]] || ! grep -q "Resume with: mpirun -np 2 hetdro train --resume $dir/stopped" "$dir/log"; then
  echo "FAIL: SIGINT to the ranks gave status $status and no mpirun resume command" >&2
  cat "$dir/log" >&2
  exit 1
fi
echo "ok: SIGINT to the ranks; mpirun exited with status $status and the log says how to resume"

# Ctrl-C to mpirun itself: Open MPI ends the ranks without waiting, so no message can be
# printed, but the checkpoint on disk is one written whole (atomically) and loads.
start_job "$dir/killed"
kill -INT "$job"
status=0
timeout 30 tail --pid="$job" -f /dev/null || true
wait "$job" || status=$?
if ! "$hetdro" eval --run "$dir/killed" >"$dir/eval.log" 2>&1; then
  echo "FAIL: after Ctrl-C to mpirun (status $status) the checkpoint does not load" >&2
  cat "$dir/eval.log" >&2
  exit 1
fi
echo "ok: Ctrl-C to mpirun (status $status); the checkpoint left behind loads"
