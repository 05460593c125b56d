"""``lambda-ml-serve new --from-model``: a complete plugin project from a model file that exists already.

:mod:`.describe` reads what the file says about its inputs and outputs, :mod:`.data` adds what a
CSV file says about them (examples, observed ranges, metrics), and :mod:`.generate` writes the
project from the ``plugin-from-model`` template.
"""
