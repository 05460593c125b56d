"""Choose a memory size before deploying: run the function under each size's CPU share and memory limit, and price it.

``lambda-ml-serve tune MODEL`` is :func:`lambda_ml_serve.tune.session.run`; the parts are usable alone:
:mod:`~lambda_ml_serve.tune.cgroups` (the limits), :mod:`~lambda_ml_serve.tune.measure` (cold starts,
warm latency, peak memory), :mod:`~lambda_ml_serve.tune.cost` (the price table and the arithmetic),
:mod:`~lambda_ml_serve.tune.report` (ranking, JSON, the terminal table) and
:mod:`~lambda_ml_serve.tune.plot` (PNG and SVG).
"""
