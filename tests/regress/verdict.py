#!/usr/bin/python3
"""Reads pg_regress's summary and checks it against a mode's known failures.

usage: verdict.py MODE SUMMARY EXPECTED_FILE SECONDS [DIFFS]
EXPECTED_FILE lists the tests that may fail in this mode, one per line, `name  reason`
('#' starts a comment). Some differences show only when a client lands on a server another
client used before (a library already loaded, currval from another transaction), so a
listed test may pass. A line `~REGEX` names a line that may be added to any test's output
(a difference that lands on whichever test meets the server first): a failing test whose
diff adds only such lines fails for that known reason. Exit 0 when every failing test is
known; prints the counts either way.
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
floating = []  # regexes of lines any test's output may gain
try:
    for line in open(expected_path, encoding="utf-8"):
        if line.startswith("~"):
            floating.append(re.compile(line[1:].rstrip("\n")))
            continue
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, reason = line.partition(" ")
            known[name] = reason.strip()
except FileNotFoundError:
    pass

# regression.diffs holds one `diff ... expected/NAME.out results/NAME.out` block per failed test.
blocks = []
if len(sys.argv) > 5:
    try:
        text = open(sys.argv[5], encoding="utf-8", errors="replace").read()
        blocks = re.split(r"(?m)^(?=diff )", text)
    except FileNotFoundError:
        pass


def diff_of(name):
    for block in blocks:
        if re.search(rf"/results/{re.escape(name)}\.out", block.split("\n", 1)[0]):
            return block
    return None


def only_floating(name):
    # The test's diff only adds lines a floating difference allows.
    block = diff_of(name)
    if block is None or not floating:
        return False
    changed = [l for l in block.splitlines()[1:]
               if l[:1] in "+-" and not l.startswith(("+++", "---"))]
    return bool(changed) and all(
        l.startswith("+") and any(f.fullmatch(l[1:]) for f in floating) for l in changed)


failed = sorted(n for n, ok in results.items() if not ok)
passed = len(results) - len(failed)
print(f"pg_regress {mode}: {passed} of {len(results)} passed in {seconds} s")
new = []
for name in failed:
    if name in known:
        print(f"  failed: {name}  (known: {known[name]})")
    elif only_floating(name):
        print(f"  failed: {name}  (known: its diff adds only lines listed with ~ in the expected file)")
    else:
        print(f"  failed: {name}  (NEW)")
        new.append(name)
fixed = [n for n in known if results.get(n) is True]
missing = [n for n in known if n not in results]
for name in fixed:
    print(f"  listed difference passed this time: {name}")
for name in missing:
    print(f"  known failure did not run: {name}")
# The diff of each new failure, so a report that keeps little still shows it.
for name in new:
    block = diff_of(name)
    if block is not None:
        print(f"---- {name}: diff (head) ----")
        print("\n".join(block.splitlines()[:80]))
if not results:
    print(open(summary_path, encoding="utf-8", errors="replace").read()[-3000:])
sys.exit(1 if new or missing or not results else 0)
