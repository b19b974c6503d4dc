"""asyncio: a session for a task exception nothing retrieved; ``tasks`` lists a loop's tasks.

Real processes in socket mode, attached with ``autodbg attach`` on a real pty.
"""

import os
import sys

import pexpect
import pytest
from harness import BIN, plain, target, wait_for_record

AUTODBG = os.path.join(BIN, "autodbg")
PYTHON = sys.executable
pytestmark = pytest.mark.timeout(90)


def test_a_never_retrieved_task_exception_opens_a_session(env, runtime_dir, start, spawn):
    env["AUTODBG_MODE"] = "socket"
    proc = start([PYTHON, target("async_never_retrieved.py")], env)
    record = wait_for_record(runtime_dir, pid=proc.pid, state="waiting")
    assert record["exception"] == "FileNotFoundError: weights.pt after 3 attempts"
    assert record["where"].endswith("async_never_retrieved.py:8 in load")
    # asyncio's own report came first, once, as without autodbg.
    assert proc.output.count("Task exception was never retrieved") == 1
    assert proc.output.count("Traceback (most recent call last)") == 1
    client = spawn(f"{AUTODBG} attach {proc.pid}", env)
    client.expect("ipdb>")
    client.sendline("p (path, attempts)")
    client.expect(r"\('weights.pt', 3\)")
    client.sendline("c")
    client.expect(pexpect.EOF)
    assert proc.wait(30) == 0  # the program goes on and ends as without autodbg
    assert "main done" in proc.output


def test_a_handler_of_the_programs_keeps_it(env, runtime_dir, start):
    env["AUTODBG_MODE"] = "socket"
    code = (
        "import asyncio\n"
        "async def fail():\n"
        "    raise ValueError('x')\n"
        "async def main():\n"
        "    asyncio.get_running_loop().set_exception_handler(\n"
        "        lambda loop, context: print('handled:', context['message'], flush=True))\n"
        "    task = asyncio.create_task(fail())\n"
        "    while not task.done():\n"
        "        await asyncio.sleep(0)\n"
        "    del task\n"
        "    print('main done', flush=True)\n"
        "asyncio.run(main())\n"
    )
    proc = start([PYTHON, "-c", code], env)
    assert proc.wait(30) == 0
    assert "handled: Task exception was never retrieved" in proc.output
    assert "main done" in proc.output and "waiting" not in proc.output


def test_tasks_lists_the_pending_tasks_and_what_they_await(env, runtime_dir, start, spawn):
    env["AUTODBG_MODE"] = "socket"
    proc = start([PYTHON, target("async_tasks.py")], env)
    wait_for_record(runtime_dir, pid=proc.pid, state="waiting")
    client = spawn(f"{AUTODBG} attach {proc.pid}", env)
    client.expect("ipdb>")
    client.sendline("tasks")
    client.expect("awaits task producer")
    client.expect("ipdb>")
    shown = plain(client.logfile_read.getvalue())
    assert "loop in thread MainThread" in shown, shown
    assert "consumer (pending)" in shown and "producer (pending)" in shown, shown
    assert f"consume at {target('async_tasks.py')}:11" in shown, shown
    assert f"fetch at {target('async_tasks.py')}:7" in shown, shown
    assert "Event.wait at " in shown, shown
    client.sendline("c")
    client.expect(pexpect.EOF)
    assert proc.wait(30) == 0 and "main done" in proc.output
