"""labcheck: what the Triton custom-metrics course checks, as opposed to what it teaches.

- ``labcheck.preflight``: is this machine ready for the course? (notebook 00;
  ``python -m labcheck.preflight`` in a terminal).
- ``labcheck.checks``: the exercise checkers. ``from labcheck import checks`` in a notebook's
  exercise cell; each ``checks.check_NN(answer)`` grades the learner's answer on a real Triton
  (and a real Prometheus where the exercise needs one) and says "not attempted", "correct",
  or what is wrong.

They live apart from :mod:`labkit` because they are not helpers a notebook teaches:
labkit holds what a notebook shows in plain code before importing it.
"""
