"""`autodbg attach`: time from the command to the first prompt, and of a one-command line client.

Usage: .venv/bin/python benchmarks/attach.py [--rounds N]

One process crashes with ``AUTODBG_MODE=socket`` and waits in its session.
Each round starts a new ``autodbg attach PID`` under a pty (what a person
types) and times it until the session's ``ipdb>`` prompt is drawn, the CLI's
own start-up and the debugger's first prompt included; Ctrl-D then detaches
and the session waits for the next round's client. The same is done for
``autodbg attach PID -c 'p 6 * 7'`` (a script's line client) until its
answer and its exit. The figures are medians and 90th percentiles over the
rounds, side by side with the CLI's bare start-up (``autodbg --version``), the
floor of both.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import pexpect
from measure import clean_env, log

BIN = os.path.dirname(sys.executable)
AUTODBG = os.path.join(BIN, "autodbg")
PROGRAM = "def f():\n    x = 6\n    raise ValueError(x)\nf()\n"


def summary(name, times):
    ordered = sorted(times)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return f"{name:<42} median {statistics.median(times) * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runtime = os.path.join(tmp, "rt")
        os.mkdir(runtime, 0o700)
        env = dict(clean_env("1"), AUTODBG_DIR=runtime, AUTODBG_MODE="socket", AUTODBG_WAIT="600")
        script = os.path.join(tmp, "crash.py")
        with open(script, "w") as f:
            f.write(PROGRAM)
        target = subprocess.Popen(
            [sys.executable, script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            for line in target.stderr:
                if b"waiting up to" in line:
                    break
            else:
                sys.exit("the target never waited for a debugger")
            pid = str(target.pid)
            bare, prompt, line_client = [], [], []
            for n in range(args.rounds):
                log(f"round {n + 1}/{args.rounds}")
                started = time.perf_counter()
                subprocess.run(
                    [AUTODBG, "--version"], env=env, stdout=subprocess.DEVNULL, check=True
                )
                bare.append(time.perf_counter() - started)

                started = time.perf_counter()
                child = pexpect.spawn(AUTODBG, ["attach", pid], env=env, timeout=30)
                child.expect("ipdb>")
                prompt.append(time.perf_counter() - started)
                child.sendcontrol("d")  # detach: the session waits for the next client
                child.expect(pexpect.EOF)
                child.close()

                started = time.perf_counter()
                answer = subprocess.run(
                    [AUTODBG, "attach", pid, "-c", "p 6 * 7"],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                line_client.append(time.perf_counter() - started)
                assert answer.returncode == 0 and "42" in answer.stdout, answer
        finally:
            target.kill()
            target.wait()
    print(summary("autodbg --version (CLI start-up)", bare))
    print(summary("autodbg attach PID, to the first prompt", prompt))
    print(summary("autodbg attach PID -c 'p 6 * 7', to its end", line_client))
    print(
        f"ratio to CLI start-up: prompt {statistics.median(prompt) / statistics.median(bare):.2f}, "
        f"line client {statistics.median(line_client) / statistics.median(bare):.2f}"
    )


if __name__ == "__main__":
    main()
