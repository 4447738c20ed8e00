"""labcheck: the exercise checkers of the Triton custom-metrics course.

``from labcheck import checks`` in a notebook's exercise cell; each ``checks.check_NN(answer)``
grades the learner's answer on a real Triton (and a real Prometheus where the exercise
needs one) and says "not attempted", "correct", or what is wrong.

They live apart from :mod:`labkit` because they are not helpers a notebook teaches:
labkit holds only what a notebook first shows in plain code.
"""
