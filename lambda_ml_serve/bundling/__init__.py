"""Turning a registered model into a Lambda image: vendored packages, build context, Docker."""
