"""``python -m lab.bench``: the same as ``python -m bench`` (and ``make bench``), run from a checkout.

The measurements live in the top-level ``bench/`` package, one module per section, because they start
apps, baselines and GPU checks that a notebook importing ``lab`` never needs. This name stays so that
``python -m lab.bench [sections] [--quick] [--json]`` keeps working.
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("bench", run_name="__main__", alter_sys=True)
