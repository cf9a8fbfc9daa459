#!/usr/bin/env bash
# Seed corpora for the fuzz targets: files written by hetdro itself (`prepare synthetic` and a
# tiny run's checkpoint and resolved config) plus small hand-made files that reach the other
# branches (NPY versions and dtypes, gzipped IDX, quoted CSV, safetensors metadata).
# Usage: fuzz/make_seeds.sh HETDRO_BINARY OUT_DIR   (writes OUT_DIR/<target>/...)
set -euo pipefail
hetdro=$1
out=$2
rm -rf "$out"
mkdir -p "$out"/{npy,idx,csv,safetensors,config}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- written by hetdro -------------------------------------------------------------------
"$hetdro" prepare synthetic --out "$work/syn" > /dev/null
# A model small enough for a seed: one-unit layers, latent 2, no training steps.
"$hetdro" train --config "$work/syn/config.toml" --out "$work/run" --set train.epochs=0 \
  --set model.latent_dim=2 --set 'data.groups.0.channels=[1,1]' \
  --set 'data.groups.1.hidden=[1]' --set 'data.groups.2.hidden=[1]' > /dev/null
cp "$work/syn/vec16_test_y.npy" "$out/npy/labels_int32.npy"
cp "$work/run/checkpoint.safetensors" "$out/safetensors/tiny_run.safetensors"
cp "$work/syn/config.toml" "$out/config/synthetic.toml"
cp "$work/run/config.toml" "$out/config/resolved.toml"
{ printf '#set train.epochs=3\n#set data.groups.1.hidden=[4, 2]\n'; cat "$work/syn/config.toml"; } \
  > "$out/config/with_set.toml"

# --- hand-made ---------------------------------------------------------------------------
# Little-endian bytes of $1 as printf escapes, $2 bytes wide.
le() {
  local v=$1 n=$2 s=""
  for ((i = 0; i < n; i++)); do s+=$(printf '\\x%02x' $(((v >> (8 * i)) & 255))); done
  printf '%s' "$s"
}
# npy VERSION HEADER PAYLOAD_BYTES [FILL] > file (the payload repeats byte FILL, octal, or '?').
npy() {
  local header="$2"$'\n'
  printf '\x93NUMPY'
  printf "$(printf '\\x%02x' "$1")\\x00"
  if [[ $1 == 1 ]]; then printf "$(le ${#header} 2)"; else printf "$(le ${#header} 4)"; fi
  printf '%s' "$header"
  head -c "$3" /dev/zero | tr '\0' "\\${4:-077}"
}
npy 1 "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" 24 > "$out/npy/f4_v1.npy"
npy 2 "{'descr': '<f8', 'fortran_order': False, 'shape': (2L, 2L), }" 32 > "$out/npy/f8_v2.npy"
npy 3 '{"descr": "|u1", "shape": (3, 2, 2), "fortran_order": False}' 12 > "$out/npy/u1_v3.npy"
npy 1 "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }" 24 000 > "$out/npy/i8.npy"
npy 1 "{'descr': '|i1', 'fortran_order': False, 'shape': (4, 1), }" 4 > "$out/npy/i1_column.npy"
npy 1 "{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (1,), }" 8 \
  > "$out/npy/structured.npy"
npy 1 "{'descr': '<f4', 'fortran_order': True, 'shape': (), }" 4 > "$out/npy/fortran_scalar.npy"

{ printf '\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04'
  head -c 24 /dev/zero | tr '\0' '\200'; } > "$out/idx/images-idx3-ubyte"
{ printf '\x00\x00\x08\x01\x00\x00\x00\x05'; printf '\x00\x01\x02\x03\x09'; } \
  > "$out/idx/labels-idx1-ubyte"
gzip -9 -n -c "$out/idx/images-idx3-ubyte" > "$out/idx/images-idx3-ubyte.gz"
gzip -9 -n -c "$out/idx/labels-idx1-ubyte" > "$out/idx/labels-idx1-ubyte.gz"

printf 'a,label,b\n1.5,3,-2\n0,0,1e-3\n' > "$out/csv/plain.csv"
printf '\xef\xbb\xbf"x","y ""q""",label\r\n"1", 2 ,0\r\n\r\n+4,-0.5,1\r\n' > "$out/csv/quoted_crlf.csv"
printf 'x,y,target\n1,2,0\n3,4,5\n' > "$out/csv/no_label.csv"

st() {
  printf "$(le ${#1} 8)"
  printf '%s' "$1"
  head -c "$2" /dev/zero
}
st '{"__metadata__":{"format":"hetdro","step":"1","epoch":"1"},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}' 24 \
  > "$out/safetensors/metadata.safetensors"
st '{"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}' 4 \
  > "$out/safetensors/empty_and_scalar.safetensors"

for t in npy idx csv safetensors config; do
  echo "seeds: $t: $(ls "$out/$t" | wc -l) files, $(du -sk "$out/$t" | cut -f1) KB"
done
