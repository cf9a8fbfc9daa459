#!/usr/bin/env python3
"""ptxas's register, stack and spill counts of every kernel, as a Markdown table.

Reads a build log made with -DHETDRO_PTXAS_VERBOSE=ON (ptxas -v), e.g.

    cmake --preset default -DHETDRO_PTXAS_VERBOSE=ON
    cmake --build build --target hetdro_cuda --clean-first > build.log 2>&1
    python3 scripts/ptxas_table.py build.log > bench/results/ptxas.md

Kernels of libraries instantiated in our files (CUB) are listed apart from ours.
"""
import argparse
import re
import subprocess
import sys


def demangle(names):
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True,
                             check=True).stdout.splitlines()
        return out if len(out) == len(names) else names
    except (OSError, subprocess.CalledProcessError):
        return names


def short(name):
    # void hetdro::cuda::(anonymous namespace)::grad_kernel<...>(float*, ...) -> grad_kernel<...>
    name = re.sub(r"\(anonymous namespace\)::", "", name)
    name = re.sub(r"^void ", "", name)
    depth, cut = 0, len(name)
    for i, ch in enumerate(name):  # drop the parameter list: the last top-level '('
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            cut = i
    return name[:cut].replace("hetdro::cuda::", "")


def parse(lines):
    source, entry, arch = "?", None, None
    rows = []
    for line in lines:
        m = re.search(r"Building CUDA object \S*?kernels/(\S+?)\.o", line)
        if m:
            source = m.group(1)
            continue
        m = re.search(r"Compiling entry function '(\S+)' for '(sm_\d+)'", line)
        if m:
            entry, arch = m.group(1), m.group(2)
            rows.append({"file": source, "mangled": entry, "arch": arch, "stack": 0,
                         "spill_st": 0, "spill_ld": 0, "regs": None})
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                      line)
        if m and rows:
            rows[-1].update(stack=int(m.group(1)), spill_st=int(m.group(2)),
                            spill_ld=int(m.group(3)))
            continue
        m = re.search(r"Used (\d+) registers", line)
        if m and rows and rows[-1]["regs"] is None:
            rows[-1]["regs"] = int(m.group(1))
    for r, name in zip(rows, demangle([r["mangled"] for r in rows])):
        r["name"] = short(name)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", help="a build log with ptxas -v output")
    args = ap.parse_args()
    try:
        with open(args.log, encoding="utf-8", errors="replace") as f:
            rows = parse(f)
    except OSError as e:
        print(f"ptxas_table.py: {args.log}: {e.strerror}", file=sys.stderr)
        sys.exit(2)
    if not rows:
        print(f"ptxas_table.py: {args.log}: no ptxas -v output (build with "
              "-DHETDRO_PTXAS_VERBOSE=ON)", file=sys.stderr)
        sys.exit(2)
    archs = sorted({r["arch"] for r in rows})
    table = {}
    for r in rows:
        key = (r["name"].startswith("cub::"), r["file"], r["name"])
        table.setdefault(key, {})[r["arch"]] = r
    print("| file | kernel | " + " | ".join(f"{a} regs / stack / spills (B)" for a in archs) + " |")
    print("|---|---|" + "---:|" * len(archs))
    for (lib, file, name), by_arch in sorted(table.items()):
        cells = []
        for a in archs:
            r = by_arch.get(a)
            cells.append("-" if r is None else
                         f"{r['regs']} / {r['stack']} / {r['spill_st']}+{r['spill_ld']}")
        label = f"{name} (CUB)" if lib else name
        print(f"| {file} | `{label}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
