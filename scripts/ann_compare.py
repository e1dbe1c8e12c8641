#!/usr/bin/env python3
"""latentdb (`latentdb bench ann`, the whole database) next to hnswlib and faiss IndexHNSWFlat
on the same .npy files in one run, and the ratios at a target recall.

    python3 -m venv /tmp/annvenv && /tmp/annvenv/bin/pip install numpy hnswlib faiss-cpu
    target/release/latentdb bench gen-data --n 100000 --dim 384 --queries 1000 --gt-k 10 --out /tmp/ann
    /tmp/annvenv/bin/python scripts/ann_compare.py --dir /tmp/ann --ef 16,24,32,48,64,96,128 --rounds 3

What it measures, per library: the build rate (vectors/s, all threads; latentdb's includes
its storage: upserts in batches of 10,000 through the database, as `bench ann` reports it) and,
per ef, recall@k and single-thread QPS. latentdb runs as a subprocess (`latentdb --json bench
ann`: one query per call through `Database::search`, Rust-side loop). hnswlib and faiss run
in this process (scripts/ann_hnswlib.py) twice per ef: one query per Python call (`call`: pays
the Python/binding overhead per query) and all queries in one call on one thread (`batch`: the
library's own speed, the figure to beat). Every library answers all queries once, untimed,
before its measured rows.

The QPS at `--target-recall` is interpolated linearly (QPS against recall) between the first
two ef rows, in ef order, whose recalls bracket the target; it is null, with the reason, when
even the largest ef stays below the target or the smallest is already above it (then add a
smaller ef). With `--rounds R` the libraries run R times, in alternating order (forwards,
then backwards, ...), and every figure is the median over rounds (recall and QPS per ef, then
interpolated). With `--passes P` each run times every ef P times, cycling through the ef list,
and keeps each ef's median QPS (latentdb through `bench ann --passes`, hnswlib and faiss in
the same way): the host's speed drifts within seconds, and one slow second then moves no
single ef's row. The machine's load average before and after, and the CPU count, are recorded:
figures from a loaded or shared machine are not results.

With `--graph-baseline`, each latentdb run also builds its HNSW graph alone (in memory, no
storage, the same batches, batch by batch in turn with the database: `bench ann
--graph-baseline`), so the summary also has the graph's build rate, the database's rate against
it (`vs_graph`) and the graph's against the others; without quantization the graph alone also
answers the queries at every ef, in turn with the database (mode `graph`: `Index::search`, the
index crate's API), so the summary has its QPS at the target recall too, which splits the
database's gap to the others into the graph walk and what the database adds per query.

The last line printed is one JSON object with everything (`"summary": "ann_compare"`).
`--quantization int8` applies to latentdb only; hnswlib and faiss keep f32 vectors.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no scripts/__pycache__ left in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ann_hnswlib as ref  # noqa: E402  (the sibling script: hnswlib and faiss runners)

np = ref.np
LIBS = ("latentdb", "hnswlib", "faiss")


def run_latentdb(a, efs):
    cmd = [a.latentdb, "--json", "bench", "ann",
           "--base", os.path.join(a.dir, "base.npy"),
           "--queries", os.path.join(a.dir, "queries.npy"),
           "--gt", os.path.join(a.dir, "gt.npy"),
           "--metric", a.metric, "--k", str(a.k), "--ef", ",".join(map(str, efs)),
           "--m", str(a.m), "--ef-construction", str(a.ef_construction),
           "--quantization", a.quantization]
    if a.oversampling is not None:
        cmd += ["--oversampling", str(a.oversampling)]
    if a.threads is not None:
        cmd += ["--threads", str(a.threads)]
    cmd += ["--passes", str(a.passes)]
    if a.graph_baseline:
        cmd += ["--graph-baseline"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        sys.exit(f"cannot run {a.latentdb}: {e} (build it: cargo build --release -p latentdb-cli)")
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stderr[-4000:]}")
    build, graph, rows = None, None, []
    for line in p.stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        obj = json.loads(line)
        if obj.get("phase") == "build":
            build = dict(obj, lib="latentdb")
        elif obj.get("phase") == "graph_build":
            graph = obj
        elif obj.get("phase") == "search":
            rows.append(dict(obj, lib="latentdb"))
    if build is None or not rows:
        sys.exit(f"no build/search rows in the output of {' '.join(cmd)}:\n{p.stdout[-2000:]}")
    if graph is not None:
        build["graph_vectors_per_s"] = graph["vectors_per_s"]
    return {"build": build, "rows": rows, "command": cmd}


def median_result(results):
    """The per-round results of one library folded into one: medians per figure and per ef."""
    build = dict(results[0]["build"])
    for key in ("build_s", "vectors_per_s", "persist_s", "graph_vectors_per_s", "vs_graph",
                "cpu_us_per_vector", "graph_cpu_us_per_vector", "cpu_vs_graph"):
        vals = [r["build"][key] for r in results if r["build"].get(key) is not None]
        if vals:
            build[key] = statistics.median(vals)
    by_ef = {}
    for r in results:
        for row in r["rows"]:
            by_ef.setdefault(row["ef"], []).append(row)
    rows = []
    for ef in sorted(by_ef):
        group = by_ef[ef]
        row = dict(group[0])
        for key in ("recall", "qps", "p50_ms", "p99_ms", "batch_qps", "batch_recall", "graph_qps",
                    "graph_recall", "vs_graph_qps"):
            vals = [g[key] for g in group if g.get(key) is not None]
            if vals:
                row[key] = statistics.median(vals)
        row["rounds"] = len(group)
        rows.append(row)
    return {"build": build, "rows": rows}


def qps_at_recall(rows, target, recall_key, qps_key):
    """(QPS, None) interpolated at `target`, or (None, reason)."""
    pts = [(r["ef"], r[recall_key], r[qps_key]) for r in sorted(rows, key=lambda r: r["ef"])
           if r.get(recall_key) is not None and r.get(qps_key) is not None]
    if not pts:
        return None, "no rows"
    for ef, rec, qps in pts:
        if rec == target:
            return qps, None
    if pts[0][1] > target:
        # The QPS at the smallest ef is a lower bound of the QPS at the target (reported
        # apart, never used in a ratio).
        return None, (f"recall at the smallest ef ({pts[0][0]}) is already {pts[0][1]:.4f} > {target}: "
                      "add smaller ef values")
    for (ef0, r0, q0), (ef1, r1, q1) in zip(pts, pts[1:]):
        if r0 < target < r1:
            return q0 + (target - r0) * (q1 - q0) / (r1 - r0), None
    best = max(pts, key=lambda p: p[1])
    return None, f"recall never reaches {target} (best {best[1]:.4f} at ef {best[0]}): add larger ef values"


def ratio(num, den, what):
    if num is None or den is None:
        return None, f"{what}: no figure on both sides"
    if den == 0:
        return None, f"{what}: zero denominator"
    return num / den, None


def nproc():
    try:
        return int(subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, ValueError, subprocess.CalledProcessError):
        return ref.default_threads()


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="base.npy, queries.npy, gt.npy (latentdb bench gen-data)")
    ap.add_argument("--latentdb", default="target/release/latentdb", help="the latentdb binary")
    ap.add_argument("--ef", default="16,32,64,128,256", help="comma-separated search ef values")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--metric", choices=ref.METRICS, default="cosine",
                    help="the metric of gt.npy (default cosine)")
    ap.add_argument("--rounds", type=int, default=1, help="runs per library, alternating order; medians")
    ap.add_argument("--target-recall", type=float, default=0.95)
    ap.add_argument("--passes", type=int, default=1,
                    help="timed passes per ef within each run, cycling through the ef list; each "
                         "ef's QPS is the median of its passes (then of the rounds)")
    ap.add_argument("--quantization", choices=("none", "int8"), default="none", help="latentdb only")
    ap.add_argument("--oversampling", type=int, default=None, help="latentdb with int8 only")
    ap.add_argument("--threads", type=int, default=None, help="build threads for all (default: all cores)")
    ap.add_argument("--libs", default=",".join(LIBS), help="which of latentdb,hnswlib,faiss to run")
    ap.add_argument("--graph-baseline", action="store_true",
                    help="latentdb also builds its graph alone (no storage) in each run, batch "
                         "by batch in turn with the database (`bench ann --graph-baseline`): "
                         "reports that rate and the database's against it (vs_graph, median of "
                         "the per-run ratios)")
    a = ap.parse_args()
    if a.k <= 0 or a.m <= 0 or a.ef_construction <= 0 or a.rounds <= 0 or a.passes <= 0:
        sys.exit("--k, --m, --ef-construction, --rounds and --passes must be positive")
    if a.threads is not None and a.threads <= 0:
        sys.exit("--threads must be positive")
    if not 0 < a.target_recall <= 1:
        sys.exit("--target-recall must be in (0, 1]")
    libs = [x.strip() for x in a.libs.split(",") if x.strip()]
    if not libs or any(x not in LIBS for x in libs):
        sys.exit(f"--libs must name some of {','.join(LIBS)}, got {a.libs!r}")
    efs = ref.parse_efs(a.ef)
    base, queries, truth = ref.load_dir(a.dir, a.k)
    if "latentdb" in libs and not os.path.isfile(a.latentdb):
        sys.exit(f"{a.latentdb} does not exist (build it: cargo build --release -p latentdb-cli, or pass --latentdb)")
    ref_threads = a.threads if a.threads is not None else ref.default_threads()
    latentdb_version = None
    if "latentdb" in libs:
        v = subprocess.run([a.latentdb, "--version"], capture_output=True, text=True)
        latentdb_version = v.stdout.strip() or None

    machine = {"nproc": nproc(), "cpu_count": os.cpu_count(), "load_before": list(os.getloadavg())}
    started = time.time()
    per_round = {lib: [] for lib in libs}
    for rnd in range(a.rounds):
        order = libs if rnd % 2 == 0 else libs[::-1]
        for lib in order:
            load = list(os.getloadavg())
            print(f"round {rnd + 1}/{a.rounds}: {lib} (load {load[0]:.2f})", file=sys.stderr, flush=True)
            if lib == "latentdb":
                r = run_latentdb(a, efs)
            elif lib == "hnswlib":
                r = ref.run_hnswlib(base, queries, truth, a.k, a.m, a.ef_construction, efs, ref_threads, a.metric,
                                    passes=a.passes)
            else:
                r = ref.run_faiss(base, queries, truth, a.k, a.m, a.ef_construction, efs, ref_threads, a.metric,
                                    passes=a.passes)
            r["round"] = rnd + 1
            r["load_before"] = load
            per_round[lib].append(r)
    machine["load_after"] = list(os.getloadavg())
    machine["wall_s"] = time.time() - started

    target = a.target_recall
    med = {lib: median_result(per_round[lib]) for lib in libs}
    summary = {}
    for lib in libs:
        rows = med[lib]["rows"]
        s = {"build_vectors_per_s": med[lib]["build"]["vectors_per_s"], "build_s": med[lib]["build"]["build_s"],
             "rows": rows}
        if med[lib]["build"].get("graph_vectors_per_s") is not None:
            s["graph_build_vectors_per_s"] = med[lib]["build"]["graph_vectors_per_s"]
            s["vs_graph"] = med[lib]["build"].get("vs_graph")
            for key in ("cpu_us_per_vector", "graph_cpu_us_per_vector", "cpu_vs_graph"):
                s[key] = med[lib]["build"].get(key)
        modes = [("", "recall", "qps")]
        if lib != "latentdb":
            modes.append(("batch_", "batch_recall", "batch_qps"))
        elif any(r.get("graph_qps") is not None for r in rows):
            modes.append(("graph_", "graph_recall", "graph_qps"))
        for prefix, rkey, qkey in modes:
            q, why = qps_at_recall(rows, target, rkey, qkey)
            s[prefix + "qps_at_target"], s[prefix + "qps_at_target_reason"] = q, why
            first = min(rows, key=lambda r: r["ef"])
            if q is None and first[rkey] > target:
                s[prefix + "qps_at_target_lower_bound"] = first[qkey]
        summary[lib] = s

    ratios = {}
    if "latentdb" in libs:
        ours = summary["latentdb"]
        for other in (x for x in libs if x != "latentdb"):
            theirs = summary[other]
            r = ratios[f"latentdb/{other}"] = {}
            for key, num, den in (
                ("build", ours["build_vectors_per_s"], theirs["build_vectors_per_s"]),
                ("qps_vs_call", ours["qps_at_target"], theirs["qps_at_target"]),
                ("qps_vs_batch", ours["qps_at_target"], theirs["batch_qps_at_target"]),
            ):
                r[key], why = ratio(num, den, f"latentdb/{other} {key}")
                if why:
                    r[key + "_reason"] = why
            if ours.get("graph_build_vectors_per_s") is not None:
                r["graph_build"], _ = ratio(ours["graph_build_vectors_per_s"], theirs["build_vectors_per_s"],
                                            "graph build")
            if ours.get("graph_qps_at_target") is not None:
                r["graph_qps_vs_batch"], _ = ratio(ours["graph_qps_at_target"], theirs.get("batch_qps_at_target"),
                                                   "graph QPS")

    n, dim = base.shape
    print(f"data {a.dir}: n={n} dim={dim} queries={len(queries)} k={a.k} metric={a.metric} "
          f"M={a.m} ef_construction={a.ef_construction} quantization(latentdb)={a.quantization} "
          f"rounds={a.rounds} (medians)")
    print(f"machine: nproc={machine['nproc']} load before {' '.join(f'{x:.2f}' for x in machine['load_before'])}"
          f" after {' '.join(f'{x:.2f}' for x in machine['load_after'])}; build threads: "
          f"{'all' if a.threads is None else a.threads}; queries on 1 thread")
    print()
    print(f"{'library':<10}{'build vec/s':>12}")
    for lib in libs:
        print(f"{lib:<10}{summary[lib]['build_vectors_per_s']:>12.0f}")
    graph_rate = summary.get("latentdb", {}).get("graph_build_vectors_per_s")
    if graph_rate is not None:
        print(f"{'(graph)':<10}{graph_rate:>12.0f}  latentdb's graph alone, no storage; database / graph "
              f"alone: {fmt(summary['latentdb'].get('vs_graph'), '.3f')} (median of per-run ratios)")
        ours = summary["latentdb"]
        if ours.get("cpu_vs_graph") is not None:
            print(f"{'(cpu)':<10}{'':>12}  CPU time per vector loaded, all threads: database "
                  f"{fmt(ours.get('cpu_us_per_vector'), '.1f')} us, graph alone "
                  f"{fmt(ours.get('graph_cpu_us_per_vector'), '.1f')} us; graph / database "
                  f"{fmt(ours.get('cpu_vs_graph'), '.3f')} (the load ratio follows it while every core is busy)")
    print()
    print(f"{'library':<10}{'mode':<7}{'ef':>5}{'recall@' + str(a.k):>11}{'QPS':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for lib in libs:
        for row in summary[lib]["rows"]:
            print(f"{lib:<10}{'call':<7}{row['ef']:>5}{row['recall']:>11.4f}{row['qps']:>10.0f}"
                  f"{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}")
            if lib != "latentdb":
                print(f"{lib:<10}{'batch':<7}{row['ef']:>5}{row['batch_recall']:>11.4f}{row['batch_qps']:>10.0f}"
                      f"{'-':>9}{'-':>9}")
            elif row.get("graph_qps") is not None:
                print(f"{lib:<10}{'graph':<7}{row['ef']:>5}{row['graph_recall']:>11.4f}{row['graph_qps']:>10.0f}"
                      f"{'-':>9}{'-':>9}")
    print()
    print(f"QPS at recall@{a.k} = {target} (interpolated):")
    for lib in libs:
        s = summary[lib]
        for prefix, mode in (("", "call"), ("batch_", "batch"), ("graph_", "graph")):
            if prefix + "qps_at_target" not in s:
                continue
            line = f"  {lib:<10}{mode:<7}{fmt(s[prefix + 'qps_at_target'], '.0f'):>8}"
            if s[prefix + "qps_at_target_reason"]:
                line += f"  ({s[prefix + 'qps_at_target_reason']})"
            if prefix + "qps_at_target_lower_bound" in s:
                line += f"  [>= {s[prefix + 'qps_at_target_lower_bound']:.0f}]"
            print(line)
    if ratios:
        print()
        print("ratios (latentdb / other; > 1: latentdb faster):")
        for name, r in ratios.items():
            print(f"  {name:<18} build {fmt(r['build'], '.2f'):>6}   QPS vs per-call {fmt(r['qps_vs_call'], '.2f'):>6}"
                  f"   QPS vs batch {fmt(r['qps_vs_batch'], '.2f'):>6}"
                  + (f"   graph-alone build {fmt(r['graph_build'], '.2f')}" if "graph_build" in r else "")
                  + (f"   graph-alone QPS vs batch {fmt(r['graph_qps_vs_batch'], '.2f')}"
                     if "graph_qps_vs_batch" in r else ""))
    print(json.dumps({
        "summary": "ann_compare",
        "data": {"dir": os.path.abspath(a.dir), "n": n, "dim": dim, "queries": len(queries)},
        "params": {"k": a.k, "m": a.m, "ef_construction": a.ef_construction, "ef": efs, "metric": a.metric,
                   "rounds": a.rounds, "target_recall": target, "quantization": a.quantization,
                   "oversampling": a.oversampling, "build_threads": a.threads, "search_threads": 1,
                   "passes": a.passes},
        "versions": {"latentdb": latentdb_version, "hnswlib": ref.lib_version("hnswlib"),
                     "faiss": ref.lib_version("faiss-cpu"), "numpy": np.__version__,
                     "python": sys.version.split()[0]},
        "machine": machine,
        "libs": summary,
        "ratios": ratios,
        "per_round": {lib: [{"round": r["round"], "load_before": r["load_before"], "build": r["build"],
                             "rows": r["rows"]} for r in per_round[lib]] for lib in libs},
    }))


if __name__ == "__main__":
    main()
