#!/usr/bin/env python3
"""The scaling model of docs/scaling.md, fitted to the emulated runs of scripts/scaling-runs.sh.

For each link rate, fit alpha and beta of the remote link class by least squares (relative
errors) to every bench allreduce time of the H x 1 runs, with the ring's (and for H = 2 the
tree's) alpha-beta formula; print measured vs fitted and vs the start-up probe's prediction; then
predict 64 hosts on 25 GbE for a 25M-parameter model. Writes a markdown table to stdout and
docs/scaling.png when matplotlib is available.

    python3 scripts/scaling_model.py runs/scaling
"""
import json
import math
import os
import sys

RUNS = sys.argv[1] if len(sys.argv) > 1 else "runs/scaling"


def steps(h, algo):
    """(latency terms, bytes factor) of one allreduce over h hosts x 1 worker."""
    if algo == "tree" and h == 2:
        return 1, 1.0
    return 2 * (h - 1), 2 * (h - 1) / h


def load(rate):
    pts = []
    for h in (2, 4, 8):
        path = os.path.join(RUNS, f"bench-h{h}-w1-{rate}.json")
        if not os.path.exists(path):
            continue
        for r in json.load(open(path))["rows"]:
            pts.append((h, r["bytes"], r["algo"], r["p50_us"] * 1e-6, r.get("predicted_us")))
    return pts


def fit(pts):
    # Weighted least squares on t = a*A + b*B with weights 1/t (relative errors).
    saa = sab = sbb = sat = sbt = 0.0
    for h, m, algo, t, _ in pts:
        A, B = steps(h, algo)
        B *= m
        w = 1.0 / (t * t)
        saa += w * A * A
        sab += w * A * B
        sbb += w * B * B
        sat += w * A * t
        sbt += w * B * t
    det = saa * sbb - sab * sab
    a = (sat * sbb - sbt * sab) / det
    b = (saa * sbt - sab * sat) / det
    return max(a, 0.0), b


def predict(a, b, h, m, algo="ring"):
    A, B = steps(h, algo)
    return A * a + B * m * b


def main():
    print("| rate | hosts | bytes | measured ms | fitted model ms | error | probe model ms | probe error |")
    print("|---|---|---|---|---|---|---|---|")
    fits = {}
    series = {}
    for rate in ("1gbit", "10gbit"):
        pts = load(rate)
        if not pts:
            continue
        a, b = fit(pts)
        fits[rate] = (a, b)
        for h, m, algo, t, probe in pts:
            p = predict(a, b, h, m, algo)
            pe = f"{probe / 1e3:.1f}" if probe else "-"
            perr = f"{(probe * 1e-6 / t - 1) * 100:+.0f}%" if probe else "-"
            print(f"| {rate} | {h} | {m} | {t * 1e3:.1f} | {p * 1e3:.1f} | {(p / t - 1) * 100:+.1f}% | {pe} | {perr} |")
            series.setdefault((rate, m), []).append((h, t, p))
    print()
    for rate, (a, b) in fits.items():
        print(f"fit {rate}: alpha {a * 1e6:.1f} us, beta {b * 1e9:.3f} ns/B = {8e-9 / b:.2f} Gbit/s effective")
    # 64 hosts on 25 GbE, 25M parameters (100 MB of f32 gradients). The link efficiency measured
    # at 1 Gbit/s (link-bound) is carried over; alpha is a typical 25 GbE TCP one-way latency.
    if "1gbit" in fits:
        a1, b1 = fits["1gbit"]
        eff = (8 / 1e9) / b1
        b25 = 8 / (25e9 * eff)
        a25 = 25e-6
        m = 25_000_000 * 4
        print()
        print("| hosts (25 GbE) | allreduce ms (100 MB) | scaling efficiency, 250 ms compute/step, no overlap |")
        print("|---|---|---|")
        for h in (2, 4, 8, 16, 32, 64):
            t = predict(a25, b25, h, m)
            comp = 0.250
            print(f"| {h} | {t * 1e3:.1f} | {comp / (comp + t) * 100:.0f}% |")
        print(f"\nlink efficiency carried over from 1 Gbit/s: {eff:.2f}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no matplotlib: plot skipped)", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (rate, m), pts in sorted(series.items()):
        pts.sort()
        hs = [p[0] for p in pts]
        ax.plot(hs, [p[1] * 1e3 for p in pts], "o", label=f"measured {rate}, {m / 1e6:.1f} MB")
        ax.plot(hs, [p[2] * 1e3 for p in pts], "-", alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("hosts (1 worker each, emulated)")
    ax.set_ylabel("allreduce time (ms)")
    ax.set_title("Ring allreduce: measured (points) vs fitted alpha-beta model (lines)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "scaling.png")
    fig.savefig(out, dpi=110)
    print(f"(plot written to {os.path.normpath(out)})", file=sys.stderr)


main()
