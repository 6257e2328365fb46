"""The paper test's parts (see benchmarks/paper.py and docs/benchmarks.md).

- :mod:`paper_test`: photos, the 150 mm box, the one renderer, arm's-length scores, plot time;
- :mod:`hatching`, :mod:`tsp`, :mod:`greedy`, :mod:`plotterd_method`: the methods, each giving
  pen-down polylines in box mm for one setting.
"""
