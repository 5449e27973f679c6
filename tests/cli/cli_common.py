"""Helpers shared by the command-line tests: run `kiln`, record checks, expect a clean error."""
import os
import subprocess

FAILURES = []
PASSED = [0]


def run(kiln, *args, timeout=300):
    p = subprocess.run([kiln, *args], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def check(name, cond, detail=""):
    if cond:
        PASSED[0] += 1
    else:
        FAILURES.append(f"{name}: {detail}")
        print(f"FAIL {name}: {detail}")


def expect_error(kiln, name, args, code, needles, empty_dir=None, absent=None):
    """The command must exit with `code`, its stderr must name every needle (case-insensitive),
    and it must leave nothing in `empty_dir` and no file at `absent`."""
    rc, out, err = run(kiln, *args)
    low = err.lower()
    ok = rc == code and all(n.lower() in low for n in needles) and "Traceback" not in err
    check(name, ok, f"rc={rc} (want {code}), stderr={err.strip()[:300]!r}, want {needles}")
    if empty_dir is not None:
        left = os.listdir(empty_dir) if os.path.isdir(empty_dir) else []
        check(name + " (no partial output)", not left, f"left behind: {left}")
    if absent is not None:
        check(name + " (no partial file)", not os.path.exists(absent), f"{absent} exists")


def summary():
    print(f"{PASSED[0]} passed, {len(FAILURES)} failed")
    return 1 if FAILURES else 0
