"""Start awslambdaric for the handler in _HANDLER, as the official image does.

sys.path is laid out like the managed Python runtime's: the function code in
LAMBDA_TASK_ROOT first (its .pth files honoured), then /opt/python (layers)
unless PYTHONPATH is set, then the interpreter's own paths, and the runtime
directory (awslambdaric and its dependencies) last, so that the function's
own copies of packages win.
"""

import os
import site
import sys


def _opt_site_packages():
    return "/opt/python/lib/python{}.{}/site-packages".format(*sys.version_info[:2])


def _set_default_sys_path():
    runtime_dir = os.path.dirname(os.path.abspath(__file__))
    # The script's own directory was put first by the interpreter; move it last.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != runtime_dir]

    task_root = os.environ.get("LAMBDA_TASK_ROOT", "/var/task")
    front = [task_root]
    if "PYTHONPATH" not in os.environ:
        front += [_opt_site_packages(), "/opt/python"]
    for path in reversed(front):
        sys.path.insert(0, path)
    before = list(sys.path)
    site.addsitedir(task_root)  # process .pth files shipped with the code
    # addsitedir appends; keep the entries it added right after the task root.
    added = [p for p in sys.path if p not in before]
    sys.path[:] = [task_root] + added + [p for p in before if p != task_root]
    sys.path.append(runtime_dir)


def main():
    _set_default_sys_path()
    import awslambdaric.__main__ as ric_main

    ric_main.main([os.environ.get("LAMBDA_TASK_ROOT", "/var/task"), os.environ["_HANDLER"]])


if __name__ == "__main__":
    main()
