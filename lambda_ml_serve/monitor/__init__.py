"""Watch a model: the training data's profile, captured traffic read back, drift measured and reported.

``profile`` summarises training data into the model card (``profile_of``); ``capture`` reads
capture records from files or S3; ``drift`` compares them with the profile; ``report`` writes the
self-contained HTML page and the JSON figures. ``lambda-ml-serve monitor`` strings them together.
"""

from lambda_ml_serve.monitor.drift import DriftReport, compare
from lambda_ml_serve.monitor.profile import PROFILE_KEY, feature_kinds, profile_of

__all__ = ["PROFILE_KEY", "DriftReport", "compare", "feature_kinds", "profile_of"]
