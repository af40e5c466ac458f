"""Time and peak memory of ReCLIP's label propagation: sparse (ours) vs dense (the official code's structure).

    python -m bench.label_propagation            # from the repository root: N = 10k, 50k, 100k; D = 512, C = 100,
                                                 # k = 20; 2 threads
    python -m bench.label_propagation --sizes 10000 --device cuda

Each (implementation, N) runs in a fresh process. Reported: wall time of the propagation (graph, solve, labels;
the random features are made before the clock starts), the process's peak resident set size during the
propagation (Linux VmHWM, reset just before it starts, so it includes the Python/torch runtime and the input
features) and its growth over the RSS before the propagation; on CUDA, the peak allocated GPU memory and its
growth. The dense implementation builds (N+C) x (N+C) matrices as the official code does (with the
degrees as row sums rather than its O(N^3) product); it runs only where its estimated memory fits in the
machine's available memory (`--dense on` forces it). Target: 50k nodes under 60 s and 4 GB peak on
a 2-core CPU.
"""
import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from clip_adapt.reclip.label_propagation import conjugate_gradient, label_propagation

TARGET_N, TARGET_SECONDS, TARGET_GB = 50_000, 60.0, 4.0


def make_data(n, dim, classes, seed=0, device="cpu"):
    """Clustered unit vectors: N image features around C centres, and C anchors near the centres."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=-1)
    labels = torch.randint(0, classes, (n,), generator=g)
    feats = F.normalize(centres[labels] + 0.05 * torch.randn(n, dim, generator=g), dim=-1)
    anchors = F.normalize(centres + 0.02 * torch.randn(classes, dim, generator=g), dim=-1)
    return feats.to(device), anchors.to(device), labels.to(device)


def dense_label_propagation(features, anchors, k=20, alpha=0.99, cg_iters=20):
    """The same algorithm on dense (N+C) x (N+C) matrices (the official code's data structures)."""
    c = anchors.shape[0]
    x = F.normalize(torch.cat([anchors, features]), dim=-1)
    m = x.shape[0]
    a = x @ x.t()
    a.add_(1).div_(2).fill_diagonal_(0)
    val, idx = a.topk(k, dim=1)
    a.zero_().scatter_(1, idx, val)  # top-k affinity A
    del val, idx
    w = (a + a.t()) / 2
    del a
    d = w.sum(1).rsqrt()
    w.mul_(d[:, None]).mul_(d[None, :])  # S
    y = torch.zeros(m, c, dtype=x.dtype, device=x.device)
    y[:c] = torch.eye(c, dtype=x.dtype, device=x.device)
    scores = conjugate_gradient(lambda v: v - alpha * (w @ v), y, max_iters=cg_iters)
    return scores[c:].argmax(1)


def dense_bytes(n, classes):
    return 2.2 * (n + classes) ** 2 * 4


def available_bytes():
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return info["MemAvailable"]
    except (OSError, KeyError, ValueError):
        return None


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss():
    """Start a new peak-RSS window (Linux: `5` to /proc/self/clear_refs resets VmHWM); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_now_and_peak():
    """(current RSS, peak RSS since the last reset) in bytes; ru_maxrss (lifetime peak) where /proc is missing."""
    try:
        return _status_kb("VmRSS") * 1024, _status_kb("VmHWM") * 1024
    except (OSError, KeyError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return peak, peak


def worker(args):
    """One case in this process; prints one JSON line."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    feats, anchors, labels = make_data(args.n, args.dim, args.classes, device=device)
    gc.collect()
    rss_before, _ = rss_now_and_peak()
    reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        gpu_before = torch.cuda.memory_allocated()
    start = time.perf_counter()
    if args.impl == "sparse":
        pred = label_propagation(feats, anchors, k=args.k, alpha=0.99, cg_iters=20, chunk=args.chunk).labels
    else:
        pred = dense_label_propagation(feats, anchors, k=args.k, alpha=0.99, cg_iters=20)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    out = {"impl": args.impl, "n": args.n, "seconds": seconds,
           "peak_rss_bytes": rss_now_and_peak()[1],
           "rss_before_bytes": rss_before, "accuracy": (pred == labels).float().mean().item()}
    if device.type == "cuda":
        out["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
        out["gpu_before_bytes"] = gpu_before
    print(json.dumps(out))


def run_case(args, impl, n):
    cmd = [sys.executable, "-W", "ignore", "-m", "bench.label_propagation", "--worker", impl, "--n", str(n),
           "--dim", str(args.dim), "--classes", str(args.classes), "--k", str(args.k), "--threads",
           str(args.threads), "--device", args.device, "--chunk", str(args.chunk)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        return {"impl": impl, "n": n, "error": (proc.stderr.strip().splitlines() or ["killed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def gb(x):
    return x / 2**30


def fmt_case(r, key):
    """(seconds, "peak (growth)") of one case, as text."""
    if r is None:
        return "-", "-"
    if "error" in r:
        return "error", "error"
    peak, before = (r["peak_gpu_bytes"], r["gpu_before_bytes"]) if key == "gpu" else (r["peak_rss_bytes"],
                                                                                      r["rss_before_bytes"])
    return f"{r['seconds']:.1f}", f"{gb(peak):.2f} ({gb(peak - before):.2f})"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target is for a 2-core CPU)")
    p.add_argument("--chunk", type=int, default=4096, help="block size of the top-k search (TRAINER.RECLIP.CHUNK)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dense", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--json", default="", help="also write the results to this file")
    p.add_argument("--worker", choices=["sparse", "dense"], help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.impl = args.worker
        return worker(args)

    mem_key = "gpu" if args.device.startswith("cuda") else "rss"
    avail = available_bytes()
    print(f"label propagation bench: D={args.dim} C={args.classes} k={args.k} alpha=0.99 CG 20 iterations, "
          f"device {args.device}, {args.threads} threads, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.2f}")
    rows = []
    for n in args.sizes:
        sparse = run_case(args, "sparse", n)
        fits = avail is None or dense_bytes(n, args.classes) < 0.8 * avail
        if args.device.startswith("cuda"):
            fits = dense_bytes(n, args.classes) < 0.8 * torch.cuda.get_device_properties(0).total_memory
        dense = None
        if args.dense == "on" or (args.dense == "auto" and fits):
            dense = run_case(args, "dense", n)
        else:
            print(f"N={n}: dense skipped (needs about {gb(dense_bytes(n, args.classes)):.0f} GB)")
        rows.append({"n": n, "sparse": sparse, "dense": dense})
        st, sm = fmt_case(sparse, mem_key)
        dt, dm = fmt_case(dense, mem_key)
        print(f"N={n}: sparse {st} s, {sm} GB peak | dense {dt} s, {dm} GB peak", flush=True)

    mem_label = "peak GPU GB (growth)" if mem_key == "gpu" else "peak RSS GB (growth)"
    header = ["N", "sparse s", f"sparse {mem_label}", "dense s", f"dense {mem_label}", "time dense/sparse",
              "memory dense/sparse: peak / growth", "accuracy sparse / dense"]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        s, d = row["sparse"], row["dense"]
        st, sm = fmt_case(s, mem_key)
        dt, dm = fmt_case(d, mem_key)
        ok = d is not None and "error" not in d and "error" not in s
        memk = "peak_gpu_bytes" if mem_key == "gpu" else "peak_rss_bytes"
        tr = f"{d['seconds'] / s['seconds']:.1f}x" if ok else "-"
        before = "gpu_before_bytes" if mem_key == "gpu" else "rss_before_bytes"
        mr = (f"{d[memk] / s[memk]:.1f}x / {(d[memk] - d[before]) / max(s[memk] - s[before], 1):.1f}x"
              if ok else "-")
        acc = f"{s['accuracy']:.3f} / {d['accuracy']:.3f}" if ok else "-"
        print(f"| {row['n']} | {st} | {sm} | {dt} | {dm} | {tr} | {mr} | {acc} |")
    target = next((r["sparse"] for r in rows if r["n"] == TARGET_N and "error" not in r["sparse"]), None)
    if target is not None and mem_key == "rss":
        ok = target["seconds"] < TARGET_SECONDS and gb(target["peak_rss_bytes"]) < TARGET_GB
        print(f"\ntarget (N={TARGET_N}: < {TARGET_SECONDS:.0f} s and < {TARGET_GB:.0f} GB peak): "
              f"{'met' if ok else 'NOT met'} ({target['seconds']:.1f} s, {gb(target['peak_rss_bytes']):.2f} GB)")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k not in ("worker", "n")}, "rows": rows}, f,
                      indent=2)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    main()
