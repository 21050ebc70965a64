#!/usr/bin/env python3
"""The table scripts/test-all prints at its end: suite x target x containerd, with passed,
failed and skipped counts; critest's counts per handler; and every skip with its reason.

Reads the results directory test-all fills: for each cargo run NAME,
  NAME.meta   "<target>\t<containerd version>" (target: strata-native, ..., runc, or "unit";
              strata-microvm:strata for the microvm tier under Strata's own VMM)
  NAME.out    cargo test's output
  NAME.skips  lines "<kind>\t<test path>\t<reason>" (strata_backend::testing), kind "missing"
              (a prerequisite missing: a failure on CI) or "n/a" (cannot apply here)
and critest.tsv, lines "critest\t<handler>\t<containerd>\t<passed>\t<failed>\t<skipped>".

A skipped test returns early and so counts as passed in cargo's own totals: it is moved from
passed to skipped here.
"""

import collections
import os
import re
import sys

RUNNING = re.compile(r"^\s*Running (?:unittests )?(\S+)")
RESULT = re.compile(r"^test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored")
FAILED_TEST = re.compile(r"^test (\S+) \.\.\. FAILED")


def suite_of(path):
    """tests/lifecycle.rs -> lifecycle; src/lib.rs of crate X -> unit."""
    base = os.path.basename(path)
    if path.startswith("tests/") and base.endswith(".rs"):
        return base[:-3]
    return "unit"


def parse_run(out_path):
    """{suite: [passed, failed, ignored]} and the names of failed tests."""
    counts = collections.defaultdict(lambda: [0, 0, 0])
    failed = []
    suite = "unit"
    with open(out_path, errors="replace") as f:
        for line in f:
            m = RUNNING.match(line)
            if m:
                suite = suite_of(m.group(1))
                continue
            m = FAILED_TEST.match(line)
            if m:
                failed.append(f"{suite}::{m.group(1)}")
                continue
            m = RESULT.match(line)
            if m:
                c = counts[suite]
                for i in range(3):
                    c[i] += int(m.group(i + 1))
    return counts, failed


def main(results):
    rows = {}
    failures = []
    skips = []
    for name in sorted(os.listdir(results)):
        if not name.endswith(".meta"):
            continue
        run = name[: -len(".meta")]
        with open(os.path.join(results, name)) as f:
            target, ctrd = f.read().strip().split("\t")
        out = os.path.join(results, run + ".out")
        if not os.path.exists(out):
            continue
        counts, failed = parse_run(out)
        failures += [f"{t} [{target}, containerd {ctrd}]" for t in failed]
        skipped = collections.Counter()
        path = os.path.join(results, run + ".skips")
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                for line in f:
                    parts = line.rstrip("\n").split("\t", 2)
                    if len(parts) != 3:
                        continue
                    kind, test, reason = parts
                    suite = test.split("::")[0] if "::" in test else "unit"
                    if suite not in counts:
                        suite = "unit"
                    skipped[suite] += 1
                    skips.append((target, ctrd, kind, test, reason))
        for suite, (p, fl, ign) in counts.items():
            s = skipped.get(suite, 0)
            key = (suite, target, ctrd)
            old = rows.get(key, [0, 0, 0])
            rows[key] = [old[0] + max(p - s, 0), old[1] + fl, old[2] + s + ign]

    print()
    print("== results: suite x target x containerd")
    print(f"{'suite':<16} {'target':<21} {'containerd':<11} {'passed':>6} {'failed':>6} {'skipped':>7}")
    for (suite, target, ctrd), (p, fl, s) in sorted(rows.items()):
        print(f"{suite:<16} {target:<21} {ctrd:<11} {p:>6} {fl:>6} {s:>7}")

    critest = os.path.join(results, "critest.tsv")
    if os.path.exists(critest):
        print()
        print("== critest (cri-tools v1.26.1) per handler")
        with open(critest) as f:
            rows = [p for p in (l.rstrip("\n").split("\t") for l in f)
                    if len(p) == 6 and p[0] == "critest"]
        # As wide as the longest run's name (`strata-wasm(wasm images)`).
        w = max([len("handler")] + [len(r[1]) for r in rows])
        print(f"{'handler':<{w}} {'containerd':<11} {'passed':>6} {'failed':>6} {'skipped':>7}")
        for _, h, c, p, fl, s in rows:
            print(f"{h:<{w}} {c:<11} {p:>6} {fl:>6} {s:>7}")

    if skips:
        print()
        print(f"== skipped tests ({len(skips)}), with their reasons")
        seen = collections.Counter()
        for target, ctrd, kind, test, reason in skips:
            seen[(kind, test, reason)] += 1
        by_reason = collections.defaultdict(list)
        for (kind, test, reason), n in seen.items():
            by_reason[(kind, reason)].append(test if n == 1 else f"{test} (x{n})")
        for (kind, reason), tests in sorted(by_reason.items()):
            print(f"  [{kind}] {reason}")
            for t in sorted(tests):
                print(f"      {t}")

    if failures:
        print()
        print(f"== failed tests ({len(failures)})")
        for f in failures:
            print(f"  {f}")


if __name__ == "__main__":
    main(sys.argv[1])
