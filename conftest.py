"""Shared pytest setup (at the repository root, so it applies to ``tests/``
and to the notebooks nbmake collects from ``chapters/`` alike).

Set at import, before any test or notebook runs, so that Jupyter kernels
started by nbmake or nbclient inherit them:

* ``DGM_QUICK=1`` (unless already set): notebooks run their small version;
* ``DGM_PROGRESS=off``: no progress bars in test output or notebook outputs.

Student notebooks (``*_student.ipynb``) are collected by nbmake too: without
``DGM_CHECKS_STRICT`` their checkers report failures instead of raising, so
this proves a learner can run the untouched hand-out top to bottom.
``tests/test_assignment_*.py`` run them again in strict mode and expect the
checks to fail.
"""

import os

os.environ.setdefault("DGM_QUICK", "1")
os.environ["DGM_PROGRESS"] = "off"
