#!/usr/bin/python3
"""Reads pg_regress's summary and checks it against a mode's known failures.

usage: verdict.py MODE SUMMARY EXPECTED_FILE SECONDS [DIFFS]
EXPECTED_FILE lists the tests that may fail in this mode, one per line, `name  reason`
('#' starts a comment). Some differences show only when a client lands on a server another
client used before (a library already loaded, currval from another transaction), so a
listed test may pass. Exit 0 when every failing test is listed; prints the counts either way.
"""
import re
import sys

mode, summary_path, expected_path, seconds = sys.argv[1:5]
results = {}
for line in open(summary_path, encoding="utf-8", errors="replace"):
    m = re.match(r"^\s*(?:test\s+)?([\w.]+)\s+\.\.\. (ok|FAILED|failed \(ignored\))", line)
    if m:
        results[m.group(1)] = m.group(2) == "ok"

known = {}
try:
    for line in open(expected_path, encoding="utf-8"):
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, reason = line.partition(" ")
            known[name] = reason.strip()
except FileNotFoundError:
    pass

failed = sorted(n for n, ok in results.items() if not ok)
passed = len(results) - len(failed)
print(f"pg_regress {mode}: {passed} of {len(results)} passed in {seconds} s")
for name in failed:
    print(f"  failed: {name}" + (f"  (known: {known[name]})" if name in known else "  (NEW)"))
new = [n for n in failed if n not in known]
fixed = [n for n in known if results.get(n) is True]
missing = [n for n in known if n not in results]
for name in fixed:
    print(f"  listed difference passed this time: {name}")
for name in missing:
    print(f"  known failure did not run: {name}")
# The diff of each new failure (regression.diffs holds one `diff ... expected/NAME.out
# results/NAME.out` block per failed test), so a report that keeps little still shows it.
if new and len(sys.argv) > 5:
    blocks = re.split(r"(?m)^(?=diff )", open(sys.argv[5], encoding="utf-8", errors="replace").read())
    for name in new:
        for block in blocks:
            if re.search(rf"/results/{re.escape(name)}\.out", block.split("\n", 1)[0]):
                print(f"---- {name}: diff (head) ----")
                print("\n".join(block.splitlines()[:80]))
if not results:
    print(open(summary_path, encoding="utf-8", errors="replace").read()[-3000:])
sys.exit(1 if new or missing or not results else 0)
