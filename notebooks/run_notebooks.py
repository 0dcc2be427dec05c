#!/usr/bin/env python3
"""Executes every notebook in this folder headless against a sweep directory.

Usage: FEDSIM_RESULTS=path/to/sweep python notebooks/run_notebooks.py [NOTEBOOK...]

The notebooks read the sweep directory from the FEDSIM_RESULTS environment variable. Executed
copies (with outputs) go to FEDSIM_NOTEBOOK_OUT if set; the committed notebooks are never
rewritten, so they stay without outputs. Prints "notebooks: N passed, M failed" and exits
non-zero if any notebook raised.
"""

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

CELL_TIMEOUT_SECONDS = 300


def main() -> int:
    here = Path(__file__).resolve().parent
    results = os.environ.get("FEDSIM_RESULTS")
    if not results or not Path(results, "runs.csv").is_file():
        print(f"run_notebooks: FEDSIM_RESULTS={results!r}: no runs.csv there", file=sys.stderr)
        return 2
    # The notebook kernel inherits our environment, so pass an absolute path.
    os.environ["FEDSIM_RESULTS"] = str(Path(results).resolve())
    saved_to = os.environ.get("FEDSIM_NOTEBOOK_OUT")
    paths = [Path(arg) for arg in sys.argv[1:]] or sorted(here.glob("*.ipynb"))
    passed, failed = 0, 0
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        client = NotebookClient(
            notebook,
            timeout=CELL_TIMEOUT_SECONDS,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        )
        started = time.monotonic()
        try:
            client.execute()
        except CellExecutionError as error:
            failed += 1
            # The first line names the exception; the traceback follows for the log.
            print(f"FAILED {path.name}: {str(error).strip().splitlines()[-1]}", file=sys.stderr)
            print(error, file=sys.stderr)
        except Exception as error:  # a kernel that died or timed out
            failed += 1
            print(f"FAILED {path.name}: {type(error).__name__}: {error}", file=sys.stderr)
        else:
            passed += 1
            print(f"ok     {path.name} ({time.monotonic() - started:.1f} s)")
        if saved_to:
            Path(saved_to).mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, Path(saved_to, path.name))
    print(f"notebooks: {passed} passed, {failed} failed")
    return 1 if failed or not paths else 0


if __name__ == "__main__":
    sys.exit(main())
