"""The comparison table of bench/run.sh: reads every run (RUNS.tsv: figure,
system, round, value, requests, non2xx, succeeded), prints one aligned
plain-text table (median and range per system, ratios, targets) and writes
the same as SUMMARY.tsv for machines.

usage: table.py RUNS.tsv SUMMARY.tsv "key=value ..."   (run facts for the header)
"""
import csv
import statistics
import sys
from datetime import datetime, timezone

# figure id, description, unit, higher is better, target (text), target test
FIGURES = [
    ("pg_text_100", "PostgreSQL fsync on, text, 100 users", "infer/s", True,
     ">= 3x peer, >= 1.5x floor today",
     lambda r: r["per_peer"] >= 3 and r["per_floor"] >= 1.5),
    ("pg_image_100", "PostgreSQL fsync on, image, 100 users", "infer/s", True, "", None),
    ("pg_text_hot", "PostgreSQL fsync on, text, 1 hot user", "infer/s", True, ">= 3x peer",
     lambda r: r["per_peer"] >= 3),
    ("pg_p99_16", "PostgreSQL, text, p99 at 16 connections", "ms", False, "< peer",
     lambda r: r["per_peer"] < 1),
    ("sqlite_text_100", "SQLite embedded, text, 100 users", "infer/s", True, ">= 5000",
     lambda r: r["lensroom"] >= 5000),
    ("sqlite_image_100", "SQLite embedded, image, 100 users", "infer/s", True, ">= 2000",
     lambda r: r["lensroom"] >= 2000),
]
SYSTEMS = ["lensroom", "peer", "floor_today", "floor_peer"]
HEADINGS = ["figure", "unit", "LensRoom", "Node peer", "floor today", "floor peer",
            "LR/peer", "LR/floor", "target", "met"]


def load(path):
    runs = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if not row["value"]:
                continue
            runs.setdefault((row["figure"], row["system"]), []).append(row)
    return runs


def suspicious(rows, unit):
    """A run whose answers were not all successes: wrk saw non-2xx answers,
    or fewer generations succeeded in the database than wrk counted."""
    for r in rows:
        if int(r["non2xx"] or 0) > 0:
            return True
        if unit == "infer/s" and r["requests"] and r["succeeded"] and \
                int(r["succeeded"]) < 0.99 * int(r["requests"]):
            return True
    return False


def cell(values, unit, flag):
    if not values:
        return "-"
    fmt = (lambda v: f"{v:.1f}") if unit == "ms" else (lambda v: f"{v:.0f}")
    text = fmt(statistics.median(values))
    if len(values) > 1:
        text += f" ({fmt(min(values))}-{fmt(max(values))})"
    return text + ("!" if flag else "")


def summarise(runs):
    out = []
    for fid, desc, unit, _higher, target, test in FIGURES:
        r = {"figure": fid, "description": desc, "unit": unit, "target": target}
        flagged = False
        for s in SYSTEMS:
            rows = runs.get((fid, s), [])
            vals = [float(x["value"]) for x in rows]
            r[s + "_values"] = vals
            r[s] = statistics.median(vals) if vals else None
            r[s + "_flag"] = suspicious(rows, unit)
            flagged |= r[s + "_flag"]
        r["per_peer"] = r["lensroom"] / r["peer"] if r["lensroom"] and r["peer"] else None
        r["per_floor"] = (r["lensroom"] / r["floor_today"]
                          if r["lensroom"] and r["floor_today"] else None)
        try:
            r["met"] = ("yes" if test(r) else "no") if test else ""
        except TypeError:  # a figure it needs is missing
            r["met"] = "?"
        r["flagged"] = flagged
        out.append(r)
    return out


def ratio(v):
    return f"{v:.2f}x" if v is not None else "-"


def print_table(rows, facts):
    lines = [HEADINGS]
    for r in rows:
        lines.append([r["description"], r["unit"]] +
                     [cell(r[s + "_values"], r["unit"], r[s + "_flag"]) for s in SYSTEMS] +
                     [ratio(r["per_peer"]), ratio(r["per_floor"]), r["target"] or "-",
                      r["met"] or "-"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADINGS))]
    print(f"LensRoom benchmark, {facts['date']} (UTC), commit {facts.get('commit', '?')}, "
          f"{facts.get('cpus', '?')} CPUs, load {facts.get('load_before', '?')} before, "
          f"{facts.get('load_after', '?')} after")
    print(f"{facts.get('rounds', '?')} interleaved rounds x {facts.get('seconds', '?')} s, "
          f"wrk -t2 -c{facts.get('conns', '?')} (p99 row: -c16); median (min-max) over rounds")
    for i, line in enumerate(lines):
        print("  ".join(v.ljust(widths[j]) if j < 2 or j >= 8 else v.rjust(widths[j])
                        for j, v in enumerate(line)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    if any(r["flagged"] for r in rows):
        print("! some answers were not successes (non-2xx, or fewer successes in the database"
              " than wrk counted): see the runs file")


def write_tsv(rows, facts, path):
    cols = ["date", "commit", "figure", "description", "unit"]
    for s in SYSTEMS:
        cols += [f"{s}_median", f"{s}_min", f"{s}_max"]
    cols += ["lensroom_per_peer", "lensroom_per_floor_today", "target", "met", "flagged",
             "rounds", "seconds", "conns", "cpus", "load_before", "load_after"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            vals = [facts["date"], facts.get("commit", ""), r["figure"], r["description"],
                    r["unit"]]
            for s in SYSTEMS:
                v = r[s + "_values"]
                vals += [f"{statistics.median(v):.2f}", f"{min(v):.2f}", f"{max(v):.2f}"] if v \
                    else ["", "", ""]
            vals += [f"{r['per_peer']:.3f}" if r["per_peer"] is not None else "",
                     f"{r['per_floor']:.3f}" if r["per_floor"] is not None else "",
                     r["target"], r["met"], "yes" if r["flagged"] else "no"]
            vals += [facts.get(k, "") for k in
                     ("rounds", "seconds", "conns", "cpus", "load_before", "load_after")]
            w.writerow(vals)


def main():
    runs_path, summary_path, fact_text = sys.argv[1], sys.argv[2], sys.argv[3]
    facts = dict(kv.split("=", 1) for kv in fact_text.split())
    facts["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
    rows = summarise(load(runs_path))
    print_table(rows, facts)
    write_tsv(rows, facts, summary_path)
    print(f"(machine-readable: {summary_path}; every run: {runs_path})")


if __name__ == "__main__":
    main()
