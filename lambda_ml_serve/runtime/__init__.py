"""What runs inside the Lambda image: request parsing, validation, prediction, responses.

Imports stay small here: no click, Jinja2, boto3, pandas or scikit-learn.
"""
