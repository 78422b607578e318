#!/usr/bin/env bash
# scripts/gpu_check.sh — the one script to run on a GPU machine (H100 / H200), from the repository root:
#
#     bash scripts/gpu_check.sh
#
# Order: (1) environment; (2) build test/cuda/gpu/check.cu with the CUDA library sources for sm_90 (mma.sync
# kernels only) and sm_90a (wgmma/TMA), unless $BUILD_DIR already holds both programs (BUILD_ONLY=1 builds them on a
# CPU machine beforehand, to be carried); (3) the addon's device checks (test/cuda/helpers/device_child.ts) against
# the carried libadapters_cuda.so, mma.sync GEMMs only; (4) the kernel tests of check.cu, each risky group in its own
# process so a faulting kernel cannot hide the others; (5) bench/cuda/train.ts (adapter training step, ours vs torch
# eager on the same GPU, with a per-op profile of our step) and, when the wgmma tests passed, the device checks again
# through the wgmma GEMMs; (6) our GEMM timings and torch.matmul's on the same shapes; (7) if time remains, the
# descriptor probe and compute-sanitizer. Files under $OUT (default /tmp/gpu_check_out); at the end all but env.txt,
# summary.md, device.json and train_bench.txt are packed into logs.tar.gz (the device tool returns at most 8 files):
#   env.txt       GPU / driver / toolchain, and the time each step took
#   build.log     compiler output, register / spill report of the GEMM kernels, SASS instruction counts
#   tests.jsonl   one JSON line per test (check.cu --tests)
#   bench.jsonl   our GEMM timings (check.cu --bench)
#   torch.jsonl   torch.matmul timings (bench/cuda/torch_gemm.py)
#   stderr.log    everything the programs wrote to stderr, compute-sanitizer's report
#   results.json  all of the above's JSON lines gathered in one object
#   summary.md    pass/fail per group, ours vs torch TFLOP/s and ratios
#   device.json   the device checks' results (one JSON line per run) when node and the addon were carried
#   train_bench.txt  bench/cuda/train.ts's output, same condition
# Keeps going after a failing step (set -u, no set -e) so that whatever did work still comes back; it
# stops starting new steps past $DEADLINE seconds.
set -u
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
B=${BUILD_DIR:-/tmp/adapters_gpu_build}
mkdir -p "$B/sm90" "$B/sm90a"
ENV="$OUT/env.txt" BUILD="$OUT/build.log" TESTS="$OUT/tests.jsonl" BENCH="$OUT/bench.jsonl"
TORCH="$OUT/torch.jsonl" ERR="$OUT/stderr.log"
: >"$ENV"; : >"$BUILD"; : >"$TESTS"; : >"$BENCH"; : >"$TORCH"; : >"$ERR"
T0=$(date +%s)
DEADLINE=${DEADLINE:-330}  # seconds after start past which no optional step starts
elapsed() { echo $(($(date +%s) - T0)); }
step() { echo "[$(elapsed)s] $*" | tee -a "$ENV" >&2; }
# timeout for a step: its own cap, or what is left before the deadline (at least 20 s)
budget() { local cap=$1 left=$((DEADLINE - $(elapsed))); [ $left -lt 20 ] && left=20; [ $cap -lt $left ] && echo $cap || echo $left; }

# ---- 1. environment ------------------------------------------------------------------------------------
step "environment"
{
  date -u
  uname -a
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu,utilization.gpu --format=csv 2>&1
  nvidia-smi -L 2>&1
  nvcc --version 2>&1 | tail -2
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' 2>&1
  command -v cuobjdump compute-sanitizer 2>&1
} >>"$ENV" 2>&1
# ---- 2. build (both targets in parallel; gemm.cu is the slow one). Skipped when $B already holds both
# programs (built beforehand on a CPU machine: BUILD_ONLY=1 BUILD_DIR=... bash scripts/gpu_check.sh there, then carry
# the folder; nvcc links the CUDA runtime statically, so the programs need only the driver) ----------------------
if [ -x "$B/sm90/check" ] && [ -x "$B/sm90a/check" ] && [ -z "${FORCE_BUILD:-}" ]; then
  step "build skipped: prebuilt programs in $B"
  [ -f "$B/build.log" ] && cp "$B/build.log" "$BUILD"
else
step "build"
NVCC="nvcc -O3 -std=c++17 -Icuda"
if command -v c++filt >/dev/null; then DEMANGLE=c++filt; else DEMANGLE=cat; fi
declare -A ARCH=([sm90]="-arch=sm_90" [sm90a]="-gencode arch=compute_90a,code=sm_90a")
pids=()
for t in sm90 sm90a; do
  for f in memory optim table; do
    $NVCC ${ARCH[$t]} -c cuda/$f.cu -o "$B/$t/$f.o" >"$B/$t/$f.log" 2>&1 &
    pids+=($!)
  done
  $NVCC ${ARCH[$t]} -c test/cuda/gpu/check.cu -o "$B/$t/check.o" >"$B/$t/check.log" 2>&1 &
  pids+=($!)
  $NVCC ${ARCH[$t]} -Xptxas -v -c cuda/gemm.cu -o "$B/$t/gemm.o" >"$B/$t/gemm.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for t in sm90 sm90a; do
  rm -f "$B/$t/check"
  $NVCC ${ARCH[$t]} "$B/$t/memory.o" "$B/$t/optim.o" "$B/$t/table.o" "$B/$t/gemm.o" "$B/$t/check.o" \
    -o "$B/$t/check" >"$B/$t/link.log" 2>&1
  {
    echo "==== $t: compiler messages (ptxas register report filtered below)"
    cat "$B/$t"/memory.log "$B/$t"/optim.log "$B/$t"/table.log "$B/$t"/check.log "$B/$t"/link.log
    grep -v -E "ptxas info|bytes stack frame" "$B/$t/gemm.log"
    echo "==== $t: GEMM kernels: registers, spills (ptxas -v)"
    # kernel name, registers, spill stores
    paste <(grep -E "Compiling entry" "$B/$t/gemm.log" | grep -oE "_Z[A-Za-z0-9_]+" | $DEMANGLE | sed -E 's/\(anonymous namespace\):://g; s/\(.*//') \
          <(grep -E "Used [0-9]+ registers" "$B/$t/gemm.log" | sed -E 's/.*Used ([0-9]+) registers.*/regs=\1/') \
          <(grep -E "spill stores" "$B/$t/gemm.log" | sed -E 's/.* ([0-9]+) bytes spill stores.*/spill_st=\1/')
    if [ -x "$B/$t/check" ]; then echo "==== $t: link OK"; else echo "==== $t: BUILD FAILED"; fi
  } >>"$BUILD" 2>&1
done
if command -v cuobjdump >/dev/null && [ -f "$B/sm90a/gemm.o" ]; then
  {
    echo "==== sm90a SASS instruction counts per kernel (HGMMA = wgmma, HMMA = mma.sync, UTMALDG = TMA load,"
    echo "     LDSM = ldmatrix, LDGSTS = cp.async, USETMAXREG = setmaxnreg, LDL/STL = local memory)"
    cuobjdump --dump-sass "$B/sm90a/gemm.o" 2>&1 | awk '
      /Function :/ { if (name) print name, c["HGMMA"]+0, c["HMMA"]+0, c["UTMALDG"]+0, c["LDSM"]+0, c["LDGSTS"]+0, c["USETMAXREG"]+0, c["LDL"]+0, c["STL"]+0;
                     name=$3; delete c; next }
      { for (k in want) if (index($0, k" ") || index($0, k".")) c[k]++ }
      BEGIN { split("HGMMA HMMA UTMALDG LDSM LDGSTS USETMAXREG LDL STL", w, " "); for (i in w) want[w[i]]=1;
              print "kernel HGMMA HMMA UTMALDG LDSM LDGSTS USETMAXREG LDL STL" }
      END { if (name) print name, c["HGMMA"]+0, c["HMMA"]+0, c["UTMALDG"]+0, c["LDSM"]+0, c["LDGSTS"]+0, c["USETMAXREG"]+0, c["LDL"]+0, c["STL"]+0 }' \
      | $DEMANGLE | sed -E 's/\(anonymous namespace\):://g; s/\(CUtensorMap_st, CUtensorMap_st, GemmArgs\)|\(GemmArgs\)//'
  } >>"$BUILD" 2>&1
fi
fi
step "build done: sm90 $([ -x "$B/sm90/check" ] && echo ok || echo FAILED), sm90a $([ -x "$B/sm90a/check" ] && echo ok || echo FAILED)"
if [ -n "${BUILD_ONLY:-}" ]; then cp "$BUILD" "$B/build.log"; rm -f "$B"/*/*.o; exit 0; fi

run() {  # run <timeout> <label> <stdout file> cmd...
  local to=$1 label=$2 out=$3
  shift 3
  step "$label (timeout ${to}s)"
  echo "==== $label: $*" >>"$ERR"
  timeout -k 5 "$to" "$@" >>"$out" 2>>"$ERR"
  local rc=$?
  echo "{\"type\":\"exit\",\"label\":\"$label\",\"rc\":$rc}" >>"$out"
  step "$label: exit $rc"
  return $rc
}

# ---- 3. the addon on the GPU: device checks (test/cuda/helpers/device_child.ts) against the real library, first
# with the mma.sync GEMMs only (ADAPTERS_CUDA_DISABLE_WGMMA=1: a faulting wgmma kernel cannot hide the rest), when a
# node binary (NODE, e.g. unpacked from a carried .xz) and the built addon + node_modules were carried ---------------
NODE_BIN=${NODE:-$(command -v node || true)}
ADDON=0
if [ -n "$NODE_BIN" ] && [ -f build/Release/adapters_node.node ] && [ -d node_modules/tsx ]; then ADDON=1; fi
if [ $ADDON = 1 ]; then
  LIB=build/Release/libadapters_cuda.so   # CMake's build (80-real;90a-real;90-virtual), next to the addon
  if [ ! -f "$LIB" ]; then
    step "no carried libadapters_cuda.so: building one (sm_90a)"
    $NVCC -gencode arch=compute_90a,code=sm_90a -Xcompiler -fPIC -shared cuda/*.cu -o "$B/libadapters_cuda.so" >>"$BUILD" 2>&1
    LIB="$B/libadapters_cuda.so"
  fi
  export ADAPTERS_CUDA_LIB=$PWD/$LIB
  run "$(budget 150)" "device checks (mma.sync GEMMs)" "$OUT/device.json" env ADAPTERS_CUDA_DISABLE_WGMMA=1 "$NODE_BIN" --import tsx test/cuda/helpers/device_child.ts
else
  step "device checks skipped (needs NODE, build/Release/adapters_node.node and node_modules/tsx)"
fi

# ---- 4. the library's kernel tests (check.cu) ----------------------------------------------------------------
# WG: ok (wgmma tests passed), wrong (some results wrong, no fault: still worth timing), crashed (a fault,
# hang or no sm_90a build: benchmark without the wgmma kernels)
WG=crashed
PIPE=--no-pipe
if [ -x "$B/sm90/check" ]; then
  # mma.sync, f32, AdamW, allocator, copies, errors: the plain sm_90 build (what CMake builds without 90a); the
  # pipelined 3xTF32 kernel (not yet run on a GPU) in a process of its own, and benchmarked only once it passed
  run "$(budget 120)" "tests sm_90 (no wgmma)" "$TESTS" "$B/sm90/check" --tests --no-wgmma \
    --only=alloc,errors,copy,bf16,bf16out,f32,batched,adamw
  run "$(budget 60)" "tests sm_90 f32pipe" "$TESTS" "$B/sm90/check" --tests --no-wgmma --only=f32pipe && PIPE=
fi
if [ -x "$B/sm90a/check" ]; then
  # the wgmma kernels and auto dispatch in the sm_90a build, in their own process
  run "$(budget 90)" "tests sm_90a wgmma" "$TESTS" "$B/sm90a/check" --tests --only=wgmma
  rc=$?
  if [ $rc = 0 ]; then WG=ok
  elif [ $rc = 1 ] && ! tail -n 3 "$TESTS" | grep -q '"aborted":true'; then WG=wrong
  fi
  step "wgmma state: $WG"
fi

# ---- 5. the adapter training step on the GPU vs torch eager (bench/cuda/train.ts); wgmma GEMMs only when their
# tests passed; and the device checks once more through the wgmma GEMMs --------------------------------------------
if [ $ADDON = 1 ]; then
  WGENV="ADAPTERS_CUDA_DISABLE_WGMMA=1"
  [ $WG = ok ] && WGENV="ADAPTERS_CUDA_WGMMA_ON=1"
  run "$(budget 240)" "adapter training step vs torch ($WGENV)" "$OUT/train_bench.txt" env $WGENV TORCH_PYTHON=python3 "$NODE_BIN" --import tsx bench/cuda/train.ts
  # ours only (no torch run): the f32 step with 3xTF32 GEMMs (matmul precision "high") instead of FFMA, and both
  # dtypes with the fused attention kernels instead of attention through products
  [ $(elapsed) -lt $DEADLINE ] && run "$(budget 60)" "f32 training step with 3xTF32 GEMMs" "$OUT/train_bench.txt" \
    env $WGENV ADAPTERS_CUDA_F32_GEMM=3xtf32 BENCH_DTYPES=f32 TORCH_PYTHON=/nonexistent/python3 "$NODE_BIN" --import tsx bench/cuda/train.ts
  [ $(elapsed) -lt $DEADLINE ] && run "$(budget 60)" "training step with the fused attention kernels" "$OUT/train_bench.txt" \
    env $WGENV ADAPTERS_CUDA_ATTN=1 TORCH_PYTHON=/nonexistent/python3 "$NODE_BIN" --import tsx bench/cuda/train.ts
  if [ $WG = ok ] && [ $(elapsed) -lt $DEADLINE ]; then
    run "$(budget 90)" "device checks (wgmma GEMMs)" "$OUT/device.json" "$NODE_BIN" --import tsx test/cuda/helpers/device_child.ts
  fi
fi

# ---- 6. GEMM benchmarks: ours, then torch.matmul on the same shapes ----------------------------------------------
if [ -x "$B/sm90a/check" ] && [ $(elapsed) -lt $DEADLINE ]; then
  if [ $WG != crashed ]; then
    run "$(budget 150)" "bench sm_90a" "$BENCH" "$B/sm90a/check" --bench $PIPE
    rc=$?
    # a fault in a wgmma kernel ends the process's CUDA context: time the rest without them
    if [ $rc != 0 ] && tail -n 3 "$BENCH" | grep -q -E '"error"|"aborted"' && [ $(elapsed) -lt $((DEADLINE - 90)) ]; then
      WG=crashed
      run "$(budget 120)" "bench sm_90a --no-wgmma (after a fault)" "$BENCH" "$B/sm90a/check" --bench --no-wgmma $PIPE
    fi
  else
    run "$(budget 150)" "bench sm_90a --no-wgmma (wgmma crashed or missing)" "$BENCH" "$B/sm90a/check" --bench --no-wgmma $PIPE
  fi
fi
[ $(elapsed) -lt $DEADLINE ] && run "$(budget 120)" "torch.matmul bench" "$TORCH" env PYTHONUNBUFFERED=1 python3 bench/cuda/torch_gemm.py

# ---- 7. if time remains: the descriptor probe and compute-sanitizer on small shapes ---------------------------------
if [ -x "$B/sm90a/check" ] && [ $WG != ok ] && [ $(elapsed) -lt $((DEADLINE - 45)) ]; then
  # descriptor probe (LBO/SBO swapped): informative only, may fault, so alone
  run "$(budget 45)" "probe sm_90a swapped MN-major descriptors" "$TESTS" "$B/sm90a/check" --tests --only=wgmma --probe --quick
fi
if command -v compute-sanitizer >/dev/null && [ -x "$B/sm90a/check" ] && [ $(elapsed) -lt $((DEADLINE - 60)) ]; then
  only="bf16,f32,batched,adamw,alloc,errors"
  [ $WG != crashed ] && only="$only,wgmma"
  run "$(budget 75)" "compute-sanitizer memcheck (quick)" "$ERR" \
    compute-sanitizer --tool memcheck --print-limit 20 "$B/sm90a/check" --tests --quick --only=$only
fi

# ---- 6. results.json and summary.md -----------------------------------------------------------------------
step "summary"
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def lines(name):
    rows = []
    try:
        with open(os.path.join(out, name)) as f:
            for ln in f:
                ln = ln.strip()
                if ln.startswith("{"):
                    try: rows.append(json.loads(ln))
                    except ValueError: pass
    except OSError: pass
    return rows
tests, bench, torch_rows = lines("tests.jsonl"), lines("bench.jsonl"), lines("torch.jsonl")
sanit = []
try:
    sanit = [l.rstrip() for l in open(os.path.join(out, "stderr.log")) if "ERROR SUMMARY" in l or "Invalid" in l][:20]
except OSError: pass
env = open(os.path.join(out, "env.txt")).read() if os.path.exists(os.path.join(out, "env.txt")) else ""
all_bench = [r for r in bench + torch_rows if r.get("type") == "bench"]
res = {"env": env, "tests": [r for r in tests if r.get("type") == "test"],
       "runs": [r for r in tests + bench + torch_rows if r.get("type") in ("exit", "summary", "device", "ceiling", "note")],
       "bench": all_bench, "sanitizer": sanit}
json.dump(res, open(os.path.join(out, "results.json"), "w"), indent=1)

md = ["# CUDA backend check", ""]
dev = [r for r in tests + bench + torch_rows if r.get("type") == "device"]
if dev: md += ["Device: %s" % json.dumps(dev[0]), ""]
md += ["## Tests", "", "| group | pass | FAIL | skip |", "|---|---|---|---|"]
groups = {}
for r in res["tests"]:
    g = groups.setdefault(r["group"], [0, 0, 0])
    g[{"pass": 0, "FAIL": 1, "skip": 2}[r["status"]]] += 1
for g, (p, f, s) in groups.items(): md.append("| %s | %d | %d | %d |" % (g, p, f, s))
fails = [r for r in res["tests"] if r["status"] == "FAIL"]
if fails:
    md += ["", "Failures (first 25):", ""]
    for r in fails[:25]:
        md.append("- [%s] %s — %s" % (r["group"], r["name"], json.dumps({k: v for k, v in r.items() if k not in ("type", "group", "name", "status")})))
probes = [r for r in res["tests"] if r.get("probe")]
if probes:
    md += ["", "Descriptor probe (swapped LBO/SBO; expected to fail where the MN-major layouts matter): %d ran, %d matched"
           % (len(probes), sum(1 for r in probes if r["status"] == "pass"))]
md += ["", "Process exits: " + ", ".join("%s=%s" % (r["label"], r["rc"]) for r in res["runs"] if r.get("type") == "exit")]
if sanit: md += ["", "compute-sanitizer: " + "; ".join(sanit[:3])]

def key(r): return (r["dtype"], r["layout"], r["M"], r["N"], r["K"])
ours = [r for r in all_bench if r.get("impl") == "ours"]
theirs = [r for r in all_bench if r.get("impl") == "torch"]
def torch_of(dtype, lay, r, variant_prefix):
    for t in theirs:
        if t["dtype"] == dtype and t["layout"] == lay and (t["M"], t["N"], t["K"]) == (r["M"], r["N"], r["K"]) \
                and t["variant"].startswith(variant_prefix):
            return t
    return None
md += ["", "## GEMM TFLOP/s (median; ours: f32 output; torch.matmul bf16: bf16 output)", "",
       "| dtype | layout | shape | ours auto (kernel) | best ours (variant) | torch | auto/torch | best/torch | torch f32-out | torch tf32 |",
       "|---|---|---|---|---|---|---|---|---|---|"]
seen = []
for r in ours:
    if r["variant"] != "auto": continue
    k = key(r)
    if k in seen: continue
    seen.append(k)
    same = [o for o in ours if key(o) == k]
    best = max(same, key=lambda o: o["tflops"])
    if r["dtype"] == "bf16":
        t = torch_of("bf16", r["layout"], r, "torch.matmul")
        t2 = torch_of("bf16", r["layout"], r, "torch.mm(out_dtype")
        t3 = None
    else:
        t = torch_of("f32", r["layout"], r, "torch.matmul")
        t2 = None
        t3 = torch_of("f32_tf32", r["layout"], r, "torch.matmul")
    f = lambda x: ("%.1f" % x["tflops"]) if x else "-"
    ratio = lambda a, b: ("%.2f" % (a["tflops"] / b["tflops"])) if (a and b and b["tflops"] > 0) else "-"
    md.append("| %s | %s | %s | %.1f (%s) | %.1f (%s) | %s | %s | %s | %s | %s |" % (
        r["dtype"], r["layout"], r["shape"], r["tflops"], r["kernel"], best["tflops"], best["variant"],
        f(t), ratio(r, t), ratio(best, t), f(t2), f(t3)))
md += ["", "## All our variants (TFLOP/s)", "", "| dtype | layout | shape | variant | TFLOP/s | ms | spread min-max ms |", "|---|---|---|---|---|---|---|"]
for r in ours:
    md.append("| %s | %s | %s | %s | %.1f | %.4f | %.4f-%.4f |" % (r["dtype"], r["layout"], r["shape"], r["variant"], r["tflops"], r["ms"], r["ms_min"], r["ms_max"]))
ceil = [r for r in torch_rows if r.get("type") == "ceiling"]
if ceil: md += ["", "Ceilings: " + "; ".join("%s = %s" % (c["what"], c["value"]) for c in ceil)]
open(os.path.join(out, "summary.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md[:60]))
PY
step "done"
# the device tool returns at most 8 files: keep the ones read first, pack the rest into one archive
( cd "$OUT" && tar czf logs.tar.gz build.log tests.jsonl bench.jsonl torch.jsonl stderr.log results.json 2>/dev/null &&
  rm -f build.log tests.jsonl bench.jsonl torch.jsonl stderr.log results.json )
ls -la "$OUT" >&2
